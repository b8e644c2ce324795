"""The whole service against the fake Kraken v2 server, read back from Parquet.

The service runs in-process (``run_service(..., handle_signals=False)``) with its data
directory in ``tmp_path``; the fake listens on 127.0.0.1. Data tests run on the real clock
with the fake's heartbeats off, so the number of frames the service receives is exact and
a wait can count them. The keepalive tests run in virtual time (``autojump_clock`` and
``trio_wall_clock``) on the connection layer and on the fake alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from collector.clock import trio_wall_clock
from collector.config import MarketSettings, WebSocketSettings
from collector.events import Status
from collector.exchanges.kraken import PING_REQ_ID_BASE, KrakenAdapter
from tests.fakes.kraken import FakeKraken, ticker_frame, trade_frame
from tests.venue_helpers import (
    QUIET_WEBSOCKET,
    drain,
    read_rows,
    received,
    running_service,
    start_supervised,
    venue_settings,
    wait_until,
)

TIMEOUT = 20.0
EPOCH_US = 1_700_000_000_000_000
T0 = 1_699_999_999_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def status_rows(data_dir: Path, symbol: str, event: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in read_rows(data_dir, "kraken", symbol, "status")
        if event is None or r["event"] == event
    ]


BIDS = [("50000.1", "0.50000000"), ("50000.0", "1.25000000")]
ASKS = [("50000.2", "0.10000000"), ("50001.0", "2.00000000")]


# --------------------------------------------------------------------------- data to Parquet


async def test_trades_book_and_ticker_reach_parquet(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeKraken(heartbeat_interval=None)
    await nursery.start(fake.run)
    fake.set_book("BTC/USD", BIDS, ASKS)
    settings = venue_settings(
        "kraken", fake.url, tmp_path, ["BTC/USD", "ETH/USD"], log_level="warning"
    )
    with trio.fail_after(TIMEOUT):
        async with running_service(settings) as handle:
            # status + 6 acks + 1 book snapshot (only BTC/USD has a book).
            await wait_until(lambda: received(handle, "kraken") == 8 and handle.health.ready)
            trades = [
                (101, "50000.1", "0.01000000", "buy", T0),
                (102, "50000.0", "0.20000000", "sell", T0 + 5),
            ]
            assert await fake.send(trade_frame("BTC/USD", trades)) == 1
            assert (
                await fake.send_book_update(
                    "BTC/USD", bids=[("50000.1", "0")], asks=[("50000.3", "0.30000000")]
                )
                == 1
            )
            frame = ticker_frame(
                "ETH/USD", "3000.5", "1.5", "3000.6", "2.5", "3000.55", "1234.5", time_us=T0 + 9
            )
            assert await fake.send(frame) == 1
            await wait_until(lambda: received(handle, "kraken") == 11)

    trade_rows = read_rows(tmp_path, "kraken", "BTC/USD", "trades")
    assert [
        (r["trade_id"], r["sequence"], r["price"], r["size"], r["side"], r["timestamp_exchange"])
        for r in trade_rows
    ] == [
        ("101", 101, 50000.1, 0.01, "buy", ts(T0)),
        ("102", 102, 50000.0, 0.2, "sell", ts(T0 + 5)),
    ]
    assert {r["symbol"] for r in trade_rows} == {"BTC/USD"}
    books = read_rows(tmp_path, "kraken", "BTC/USD", "orderbook")
    assert [(r["kind"], r["sequence"], r["bids"], r["asks"]) for r in books] == [
        (
            "snapshot",
            None,
            [{"price": 50000.1, "size": 0.5}, {"price": 50000.0, "size": 1.25}],
            [{"price": 50000.2, "size": 0.1}, {"price": 50001.0, "size": 2.0}],
        ),
        ("delta", None, [{"price": 50000.1, "size": 0.0}], [{"price": 50000.3, "size": 0.3}]),
    ]
    (ticker,) = read_rows(tmp_path, "kraken", "ETH/USD", "ticker")
    assert ticker | {"timestamp_collector": None} == {
        "exchange": "kraken",
        "symbol": "ETH/USD",
        "timestamp_exchange": ts(T0 + 9),
        "timestamp_collector": None,
        "sequence": None,
        "bid_price": 3000.5,
        "bid_size": 1.5,
        "ask_price": 3000.6,
        "ask_size": 2.5,
        "last_price": 3000.55,
        "volume_24h": 1234.5,
    }
    for symbol in ("BTC/USD", "ETH/USD"):
        events = [r["event"] for r in status_rows(tmp_path, symbol)]
        assert events[0] == "connected"
        assert sorted(events[1:4]) == ["subscribed"] * 3
        assert events[-1] == "disconnected"
        assert "gap" not in events
    assert not (tmp_path / "kraken" / "ETH_USD" / "orderbook").exists()


async def test_checksum_mismatch_and_trade_gap_through_the_fake(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeKraken(heartbeat_interval=None)
    await nursery.start(fake.run)
    fake.set_book("BTC/USD", BIDS, ASKS)
    settings = venue_settings(
        "kraken", fake.url, tmp_path, ["BTC/USD"], log_level="warning", book_depth=25
    )
    with trio.fail_after(TIMEOUT):
        async with running_service(settings) as handle:
            await wait_until(lambda: received(handle, "kraken") == 5 and handle.health.ready)
            book_requests = [m for m in fake.client_messages if '"book"' in m]
            assert len(book_requests) == 1
            assert '"depth":25' in book_requests[0]
            # A trade gap: 1, 2, then 5.
            for trade_id in (1, 2, 5):
                await fake.send(trade_frame("BTC/USD", [(trade_id, "50000.1", "0.1", "buy", T0)]))
            # A book update whose checksum is wrong: the collector resubscribes.
            await fake.send_book_update("BTC/USD", bids=[("49999.5", "3.00000000")], checksum=42)
            await fake.wait_messages(lambda m: m.get("method") == "unsubscribe")
            await fake.wait_messages(
                lambda m: m.get("method") == "subscribe" and m["params"]["channel"] == "book", n=2
            )
            # ack of unsubscribe + ack of subscribe + the new snapshot, after 5 + 3 + 1 frames.
            await wait_until(lambda: received(handle, "kraken") == 5 + 3 + 1 + 3)
            gaps = handle.metrics
            assert (
                gaps.sample(
                    "collector_sequence_gaps_total", {"exchange": "kraken", "data_type": "trades"}
                )
                == 1
            )
            assert (
                gaps.sample(
                    "collector_sequence_gaps_total",
                    {"exchange": "kraken", "data_type": "orderbook"},
                )
                == 1
            )
            # Later updates verify again.
            await fake.send_book_update("BTC/USD", asks=[("50000.2", "0")])
            await wait_until(lambda: received(handle, "kraken") == 13)

    statuses = status_rows(tmp_path, "BTC/USD")
    trade_gap = [r for r in statuses if r["event"] == "gap" and r["data_type"] == "trades"]
    assert [(r["expected_sequence"], r["received_sequence"], r["count"]) for r in trade_gap] == [
        (3, 5, 2)
    ]
    book_gap = [r for r in statuses if r["event"] == "gap" and r["data_type"] == "orderbook"]
    assert len(book_gap) == 1
    assert book_gap[0]["detail"].startswith("book checksum mismatch: venue 42, computed ")
    assert book_gap[0]["detail"].endswith("; resubscribing for a new snapshot")
    (resync,) = [r for r in statuses if r["event"] == "resync"]
    assert resync["data_type"] == "orderbook"
    assert resync["timestamp_collector"] > book_gap[0]["timestamp_collector"]
    books = read_rows(tmp_path, "kraken", "BTC/USD", "orderbook")
    assert [r["kind"] for r in books] == ["snapshot", "delta", "snapshot", "delta"]
    # The second snapshot is the fake's book after the update: the resync rebuilt it.
    assert books[2]["bids"] == [
        {"price": 50000.1, "size": 0.5},
        {"price": 50000.0, "size": 1.25},
        {"price": 49999.5, "size": 3.0},
    ]
    assert [r["trade_id"] for r in read_rows(tmp_path, "kraken", "BTC/USD", "trades")] == [
        "1",
        "2",
        "5",
    ]


async def test_a_refused_symbol_does_not_block_the_others(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeKraken(heartbeat_interval=None, reject_symbols={"FOO/BAR"})
    await nursery.start(fake.run)
    settings = venue_settings(
        "kraken", fake.url, tmp_path, ["BTC/USD", "FOO/BAR"], log_level="warning", feeds=["trades"]
    )
    with trio.fail_after(TIMEOUT):
        async with running_service(settings) as handle:
            await wait_until(lambda: received(handle, "kraken") == 3)
            assert handle.health.ready  # the refusal resolved the pending subscription
            await fake.send(trade_frame("BTC/USD", [(7, "1.5", "2", "sell", T0)]))
            await wait_until(lambda: received(handle, "kraken") == 4)
            assert handle.metrics.sum_samples("collector_subscribe_errors_total") == 1
    (error,) = status_rows(tmp_path, "FOO/BAR", "subscribe_error")
    assert error["data_type"] == "trades"
    assert error["detail"] == "trade FOO/BAR: Currency pair not supported FOO/BAR"
    assert [r["trade_id"] for r in read_rows(tmp_path, "kraken", "BTC/USD", "trades")] == ["7"]


# --------------------------------------------------------------------------- keepalive


async def test_the_client_pings_and_stays_connected_past_the_idle_timeout(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """The connection layer with the Kraken adapter, in virtual time: its application pings
    (every 30 s) keep it past five of the fake's 60 s idle timeouts, on one connection.

    This runs the supervisor rather than the whole service: the writer's worker threads
    would let the autojump clock race ahead while Parquet is written.
    """
    fake = FakeKraken(idle_timeout=60.0, heartbeat_interval=1.0)
    await nursery.start(fake.run)
    market = MarketSettings(
        exchange="kraken", symbols=("BTC/USD",), feeds=("trades",), base_url=fake.url
    )
    with trio.fail_after(1000):
        async with trio.open_nursery() as inner:
            metrics, health, rx = start_supervised(
                inner,
                KrakenAdapter(),
                market,
                trio_wall_clock(EPOCH_US),
                buffer=1024,
                settings=WebSocketSettings(**QUIET_WEBSOCKET),
            )
            await fake.wait_subscribed("trade", ["BTC/USD"])
            start = trio.current_time()
            await trio.sleep(310.0)  # more than five idle timeouts
            assert trio.current_time() - start == pytest.approx(310.0, abs=1e-9)
            assert fake.connections == 1
            assert fake.idle_drops == 0
            assert fake.pings == 10  # every 30 s
            pings = [msgspec.json.decode(m) for m in fake.client_messages if '"ping"' in m]
            # A fresh id each, counted per connection in the pings' own range.
            assert [p["req_id"] for p in pings] == [PING_REQ_ID_BASE + n for n in range(1, 11)]
            assert health.ready
            inner.cancel_scope.cancel()
    with rx:
        events = drain(rx)
    assert [e.event for e in events if isinstance(e, Status)] == [
        "connected",
        "subscribed",
        "disconnected",
    ]
    assert metrics.sum_samples("collector_websocket_disconnects_total") == 0


async def test_the_fake_drops_a_client_that_does_not_ping(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    fake = FakeKraken(idle_timeout=60.0, heartbeat_interval=1.0)
    await nursery.start(fake.run)
    heartbeats = 0
    with trio.fail_after(1000):
        async with open_websocket_url(fake.url + "/v2") as ws:
            start = trio.current_time()
            await ws.send_message(
                '{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"]},"req_id":1}'
            )
            try:
                while True:
                    message = await ws.get_message()
                    heartbeats += message == '{"channel":"heartbeat"}'
            except ConnectionClosed:
                pass
            assert trio.current_time() - start == pytest.approx(60.0, abs=1e-9)
    assert fake.idle_drops == 1
    assert heartbeats >= 58  # the server's heartbeats do not keep the client alive
