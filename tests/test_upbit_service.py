"""The whole service against the fake Upbit server, read back from Parquet."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from collector.clock import trio_wall_clock
from collector.config import MarketSettings, WebSocketSettings
from collector.events import Status
from collector.exchanges.upbit import UpbitAdapter
from tests.fakes.upbit import FakeUpbit, orderbook_message, ticker_message, trade_message
from tests.venue_helpers import (
    QUIET_WEBSOCKET,
    drain,
    read_rows_by_time,
    received,
    running_service,
    start_supervised,
    venue_settings,
    wait_until,
)

EPOCH_US = 1_786_309_548_000_000
T_MS = 1_786_309_548_123


async def test_binary_frames_end_up_in_parquet_and_repeated_trades_are_dropped(
    tmp_path: Path,
) -> None:
    fake = FakeUpbit(unknown_codes=["KRW-NOPE"])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.run)
            settings = venue_settings(
                "upbit", fake.url, tmp_path, ("KRW-BTC", "krw-eth", "KRW-NOPE"), book_depth=15
            )
            async with running_service(settings) as handle:
                await fake.wait_subscribed("trade", ["KRW-BTC", "KRW-ETH"])
                await fake.wait_messages(2)  # the request and LIST_SUBSCRIPTIONS
                # The last trade comes first as a snapshot, then realtime ones.
                first = trade_message("KRW-BTC", 1001, 95_000_000.0, 0.01, T_MS, "BID")
                await fake.send("trade", "KRW-BTC", first)
                await fake.send(
                    "trade",
                    "KRW-BTC",
                    trade_message("KRW-BTC", 1002, 94_999_000.0, 0.25, T_MS + 5, "ASK"),
                )
                await fake.send(
                    "orderbook",
                    "KRW-ETH",
                    orderbook_message(
                        "KRW-ETH",
                        [(4_000_000.0, 1.5), (3_999_000.0, 2.0)],
                        [(4_001_000.0, 0.5), (4_002_000.0, 3.0)],
                        T_MS,
                    ),
                )
                await fake.send(
                    "ticker", "KRW-ETH", ticker_message("KRW-ETH", 4_000_500.0, 1234.5, T_MS)
                )
                await wait_until(lambda: received(handle) >= fake.frames_sent)
                # A reconnect: the venue repeats the last trade as the snapshot.
                await fake.drop()
                await fake.wait_connected(2)
                await fake.wait_subscribed("trade", ["KRW-BTC"])
                await fake.send("trade", "KRW-BTC", first)
                await fake.send(
                    "trade",
                    "KRW-BTC",
                    trade_message("KRW-BTC", 1003, 95_001_000.0, 0.5, T_MS + 9, "BID"),
                )
                await wait_until(lambda: received(handle) >= fake.frames_sent)
                refused = "collector_subscribe_errors_total"
                await wait_until(lambda: handle.metrics.sum_samples(refused) >= 6)
                assert handle.health.ready
            nursery.cancel_scope.cancel()

    requests = [msgspec.json.decode(m) for m in fake.client_messages if m != "PING"]
    assert requests[0][1:] == [
        {"type": "trade", "codes": ["KRW-BTC", "KRW-ETH", "KRW-NOPE"]},
        {"type": "orderbook", "codes": ["KRW-BTC.15", "KRW-ETH.15", "KRW-NOPE.15"]},
        {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH", "KRW-NOPE"]},
        {"format": "DEFAULT"},
    ]
    assert requests[1][1:] == [{"method": "LIST_SUBSCRIPTIONS"}, {"format": "DEFAULT"}]

    trades = read_rows_by_time(tmp_path, "upbit", "KRW-BTC", "trades")
    assert [(r["trade_id"], r["price"], r["size"], r["side"]) for r in trades] == [
        ("1001", 95_000_000.0, 0.01, "buy"),
        ("1002", 94_999_000.0, 0.25, "sell"),
        ("1003", 95_001_000.0, 0.5, "buy"),
    ]
    assert trades[0]["timestamp_exchange"].timestamp() == pytest.approx(T_MS / 1000)
    assert trades[0]["sequence"] == 1001

    [book] = read_rows_by_time(tmp_path, "upbit", "KRW-ETH", "orderbook")
    assert book["kind"] == "snapshot"
    assert book["bids"] == [
        {"price": 4_000_000.0, "size": 1.5},
        {"price": 3_999_000.0, "size": 2.0},
    ]
    assert book["asks"] == [
        {"price": 4_001_000.0, "size": 0.5},
        {"price": 4_002_000.0, "size": 3.0},
    ]
    [tick] = read_rows_by_time(tmp_path, "upbit", "KRW-ETH", "ticker")
    assert (tick["last_price"], tick["volume_24h"], tick["bid_price"]) == (
        4_000_500.0,
        1234.5,
        None,
    )

    nope = read_rows_by_time(tmp_path, "upbit", "KRW-NOPE", "status")
    errors = [r for r in nope if r["event"] == "subscribe_error"]
    assert len(errors) == 6  # 3 feeds, on each of the 2 connections
    assert all("not in LIST_SUBSCRIPTIONS" in r["detail"] for r in errors)
    btc = [r["event"] for r in read_rows_by_time(tmp_path, "upbit", "KRW-BTC", "status")]
    assert btc.count("subscribed") == 6
    assert btc.count("disconnected") == 2


async def test_a_malformed_request_error_refuses_every_subscription(tmp_path: Path) -> None:
    """The venue refuses a request it cannot read with an error naming the reason."""
    from collector.exchanges.upbit import UpbitSession

    market = MarketSettings(exchange="upbit", symbols=("KRW-BTC",), feeds=("trades",))
    [plan] = UpbitAdapter().plan_connections([market])
    session = UpbitSession(plan)
    events = session.parse(b'{"error":{"name":"INVALID_PARAM","message":"bad code"}}', EPOCH_US)
    assert [(e.event, e.detail) for e in events if isinstance(e, Status)] == [
        ("subscribe_error", "trade KRW-BTC: INVALID_PARAM: bad code")
    ]
    assert session.pending_subscriptions == 0


async def test_text_pings_keep_a_quiet_connection_past_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No market data for 10 minutes: PING every 20 s keeps the connection up.

    The fake drops a client that sends nothing for 120 s (the venue's idle timeout). The
    answers ({"status":"UP"}) are no data, so the stale watchdog's timeout is set longer
    than the test. One supervised
    connection in virtual time (the whole service uses worker threads, which would make
    the autojump clock leap ahead).
    """
    fake = FakeUpbit()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        market = MarketSettings(exchange="upbit", symbols=("KRW-BTC",), base_url=fake.url)
        metrics, _, rx = start_supervised(
            nursery,
            UpbitAdapter(),
            market,
            trio_wall_clock(EPOCH_US),
            settings=WebSocketSettings(**QUIET_WEBSOCKET),
        )
        with trio.fail_after(700):
            await fake.wait_subscribed("trade", ["KRW-BTC"])
            await trio.sleep(600)
        assert fake.connections == 1
        assert fake.dropped_idle == 0
        assert fake.pings == 29  # at 20, 40 ... 580 s (the next one is due at 600 s)
        assert metrics.sum_samples("collector_websocket_disconnects_total") == 0
        nursery.cancel_scope.cancel()
    statuses = [e.event for e in drain(rx) if isinstance(e, Status)]
    assert statuses.count("connected") == 1
    assert statuses.count("disconnected") == 1  # the cancellation at the end only


async def test_the_fake_drops_a_client_that_sends_nothing_for_120_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The fake's rule the test above relies on (a plain trio-websocket client)."""
    from trio_websocket import ConnectionClosed, open_websocket_url

    fake = FakeUpbit()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        with trio.fail_after(300):
            async with open_websocket_url(fake.url) as ws:
                await ws.send_message("PING")
                assert await ws.get_message() == b'{"status":"UP"}'
                start = trio.current_time()
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()  # nothing comes: dropped when idle
                assert trio.current_time() - start == pytest.approx(120.0, abs=0.01)
        assert fake.dropped_idle == 1
        nursery.cancel_scope.cancel()
