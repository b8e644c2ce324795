"""The fake Binance server itself behaves like the venue (checked with a plain client)."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.uri import parse_uri

from tests.fakes.binance import (
    FakeBinance,
    book_ticker_frame,
    depth20_frame,
    depth_diff_frame,
    trade_frame,
)

TIMEOUT = 5.0


def subscribe(streams: list[str], request_id: int) -> str:
    return json.dumps({"method": "SUBSCRIBE", "params": streams, "id": request_id})


async def start(nursery: trio.Nursery, **kwargs: object) -> FakeBinance:
    fake = FakeBinance(**kwargs)  # type: ignore[arg-type]
    await nursery.start(fake.run)
    return fake


async def test_subscribe_ack_then_data_for_subscribed_streams_only(nursery: trio.Nursery) -> None:
    fake = await start(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"{fake.url}/stream?timeUnit=MICROSECOND") as ws:
            await ws.send_message(subscribe(["btcusdt@trade", "btcusdt@depth20@100ms"], 1))
            assert json.loads(await ws.get_message()) == {"result": None, "id": 1}
            await fake.wait_subscribed(["btcusdt@trade", "btcusdt@depth20@100ms"])
            assert fake.paths == ["/stream?timeUnit=MICROSECOND"]
            assert fake.clients[0].time_unit == "MICROSECOND"

            # Not subscribed: not delivered.
            assert await fake.send(trade_frame("ethusdt", 1, 1.0, 1.0, 0, False)) == 0
            assert await fake.send(trade_frame("BTCUSDT", 7, "100.5", "0.25", 1_700_000, True)) == 1
            frame = json.loads(await ws.get_message())
            assert frame == {
                "stream": "btcusdt@trade",
                "data": {
                    "e": "trade",
                    "E": 1_700_000,
                    "s": "BTCUSDT",
                    "t": 7,
                    "p": "100.5",
                    "q": "0.25",
                    "T": 1_700_000,
                    "m": True,
                    "M": True,
                },
            }
            await fake.send(depth20_frame("btcusdt", 42, [(100.0, 1.5)], [(101.0, 2.0)]))
            assert json.loads(await ws.get_message()) == {
                "stream": "btcusdt@depth20@100ms",
                "data": {
                    "lastUpdateId": 42,
                    "bids": [["100.00000000", "1.50000000"]],
                    "asks": [["101.00000000", "2.00000000"]],
                },
            }
            await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            assert json.loads(await ws.get_message()) == {
                "result": ["btcusdt@depth20@100ms", "btcusdt@trade"],
                "id": 2,
            }
    assert fake.client_messages[0] == subscribe(["btcusdt@trade", "btcusdt@depth20@100ms"], 1)


async def test_reject_streams_get_the_flat_error_and_nothing_is_subscribed(
    nursery: trio.Nursery,
) -> None:
    fake = await start(nursery, reject_streams={"badcoin@trade"})
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"{fake.url}/stream") as ws:
            await ws.send_message(subscribe(["btcusdt@trade", "badcoin@trade"], 5))
            assert json.loads(await ws.get_message()) == {
                "code": 2,
                "msg": "Invalid request: invalid stream",
                "id": 5,
            }
            # A malformed stream name (uppercase symbol) is refused as well.
            await ws.send_message(subscribe(["BTCUSDT@trade"], 6))
            assert json.loads(await ws.get_message())["code"] == 2
            await ws.send_message("not json")
            assert json.loads(await ws.get_message()) == {
                "code": 3,
                "msg": "Invalid JSON",
                "id": None,
            }
            assert fake.clients[0].streams == set()


async def test_more_than_five_messages_per_second_closes_the_connection(
    nursery: trio.Nursery,
) -> None:
    fake = await start(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"{fake.url}/stream") as ws:
            for i in range(5):
                await ws.send_message(subscribe([f"sym{i}usdt@trade"], i))
                assert json.loads(await ws.get_message())["id"] == i
            await ws.send_message(subscribe(["sym5usdt@trade"], 5))
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1008
    assert fake.rate_limited == 1
    assert len(fake.client_messages) == 6


async def test_urls_streams_broadcast_drop_and_reconnect(nursery: trio.Nursery) -> None:
    fake = await start(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(
            f"{fake.url}/stream?streams=btcusdt@bookTicker/btcusdt@depth@100ms"
        ) as ws:
            await fake.wait_connected(1)
            await fake.send(book_ticker_frame("btcusdt", 9, 1.0, 2.0, 3.0, 4.0))
            assert json.loads(await ws.get_message())["data"] == {
                "u": 9,
                "s": "BTCUSDT",
                "b": "1.00000000",
                "B": "2.00000000",
                "a": "3.00000000",
                "A": "4.00000000",
            }
            await fake.send(depth_diff_frame("btcusdt", 5, 8, [(1.0, 0.0)], [], 123))
            data = json.loads(await ws.get_message())["data"]
            assert (data["U"], data["u"], data["b"], data["a"]) == (
                5,
                8,
                [["1.00000000", "0.00000000"]],
                [],
            )
            await fake.send_server_shutdown(1_000, wrapped=True)
            assert json.loads(await ws.get_message()) == {
                "stream": "!serverShutdown",
                "data": {"e": "serverShutdown", "E": 1_000},
            }
            await fake.send_garbage("{oops")
            assert await ws.get_message() == "{oops"
            await fake.drop()
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1006  # abnormal closure: no close frame
        await fake.wait_disconnected()
        async with open_websocket_url(f"{fake.url}/stream"):
            await fake.wait_connected(2)
    assert fake.connections == 2


async def test_other_paths_are_refused(nursery: trio.Nursery) -> None:
    fake = await start(nursery)
    with trio.fail_after(TIMEOUT), pytest.raises(Exception, match="404"):
        async with open_websocket_url(f"{fake.url}/ws/btcusdt@trade"):
            pass  # pragma: no cover


async def test_pings_answered_keep_the_client(nursery: trio.Nursery) -> None:
    fake = await start(nursery, ping_interval=0.01, pong_timeout=5.0)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"{fake.url}/stream") as ws:
            # trio-websocket answers pings by itself.
            await fake._wait_for(lambda: fake.pongs >= 3)
            assert not ws.closed
    assert fake.ping_timeouts == 0


async def test_a_client_that_does_not_pong_is_dropped(nursery: trio.Nursery) -> None:
    fake = await start(nursery, ping_interval=0.01, pong_timeout=0.05)
    # A sans-IO client whose queued pongs are never written to the socket.
    uri = parse_uri(f"{fake.url}/stream")
    protocol = ClientProtocol(uri)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", uri.port)
        async with stream:
            protocol.send_request(protocol.connect())
            for data in protocol.data_to_send():
                await stream.send_all(data)
            pings = 0
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break  # the server closed the TCP connection
                protocol.receive_data(data)
                for event in protocol.events_received():
                    if getattr(event, "opcode", None) is Opcode.PING:
                        pings += 1
                protocol.data_to_send()  # discard: handshake done, pongs never sent
    assert pings >= 1
    assert fake.ping_timeouts == 1
