"""The whole service against a fake Deribit: frames in, Parquet rows out; gaps; keepalive."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from collector.clock import trio_wall_clock
from tests.fakes.deribit import (
    FakeDeribit,
    book_change_frame,
    book_snapshot_frame,
    heartbeat_frame,
    ticker_frame,
    trades_frame,
)
from tests.venue_helpers import (
    QUIET_WEBSOCKET,
    read_rows_us,
    received,
    running_service,
    venue_settings,
    wait_until,
)

PERP = "BTC-PERPETUAL"
OPTION = "BTC-27DEC24-100000-C"
MS = 1_700_000_000_000
EPOCH_US = 1_700_000_000_000_000
CHANNELS = [f"{kind}.{PERP}.100ms" for kind in ("trades", "book", "ticker")]


async def test_frames_become_parquet_rows(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeDeribit()
    fake.books[PERP] = (1000, [(50000.0, 100.0), (49999.5, 20.0)], [(50000.5, 30.0)], MS)
    await nursery.start(fake.run)
    settings = venue_settings("deribit", fake.url, tmp_path, [PERP], log_level="warning")
    async with running_service(settings) as handle:
        with trio.fail_after(10):
            await fake.wait_subscribed(CHANNELS)
            await wait_until(lambda: handle.health.ready)
            await fake.send(
                trades_frame(
                    PERP, [(7, 50000.5, 10.0, "buy", MS + 1), (8, 50000.0, 20.0, "sell", MS + 2)]
                )
            )
            await fake.send(
                book_change_frame(
                    PERP, 1000, 1003, [("delete", 49999.5, 0.0)], [("new", 50001.0, 5.0)], MS + 3
                )
            )
            await fake.send(
                ticker_frame(PERP, MS + 4, 50000.0, 100.0, 50000.5, 30.0, 50000.5, 1234.5)
            )
            # 3 answers (heartbeat + subscribe), the snapshot, and the 3 frames above.
            await wait_until(lambda: received(handle, "deribit") >= 6)
    trades = read_rows_us(tmp_path, "deribit", "trades")
    assert [
        (
            r["symbol"],
            r["timestamp_exchange"],
            r["sequence"],
            r["trade_id"],
            r["price"],
            r["size"],
            r["side"],
        )
        for r in trades
    ] == [
        (PERP, (MS + 1) * 1000, 7, "400000007", 50000.5, 10.0, "buy"),
        (PERP, (MS + 2) * 1000, 8, "400000008", 50000.0, 20.0, "sell"),
    ]
    books = read_rows_us(tmp_path, "deribit", "orderbook")
    assert [
        (r["kind"], r["sequence"], r["prev_sequence"], r["bids"], r["asks"]) for r in books
    ] == [
        (
            "snapshot",
            1000,
            None,
            [{"price": 50000.0, "size": 100.0}, {"price": 49999.5, "size": 20.0}],
            [{"price": 50000.5, "size": 30.0}],
        ),
        ("delta", 1003, 1000, [{"price": 49999.5, "size": 0.0}], [{"price": 50001.0, "size": 5.0}]),
    ]
    [ticker] = read_rows_us(tmp_path, "deribit", "ticker")
    assert (
        ticker["timestamp_exchange"],
        ticker["bid_price"],
        ticker["ask_size"],
        ticker["volume_24h"],
    ) == (
        (MS + 4) * 1000,
        50000.0,
        30.0,
        1234.5,
    )
    events = [(r["event"], r["data_type"]) for r in read_rows_us(tmp_path, "deribit", "status")]
    assert ("connected", None) in events
    assert ("disconnected", None) in events
    assert {("subscribed", "trades"), ("subscribed", "orderbook"), ("subscribed", "ticker")} <= set(
        events
    )
    first = fake.client_messages[0]
    assert '"public/set_heartbeat"' in first
    assert '"interval":15' in first


async def test_book_gap_is_recorded_and_resynced(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeDeribit(unknown_instruments=[OPTION])
    fake.books[PERP] = (1000, [(50000.0, 1.0)], [(50001.0, 1.0)], MS)
    await nursery.start(fake.run)
    settings = venue_settings("deribit", fake.url, tmp_path, [PERP, OPTION], log_level="warning")
    async with running_service(settings) as handle:
        with trio.fail_after(10):
            await fake.wait_subscribed(CHANNELS)
            # The unknown option was refused, so readiness does not wait for it.
            await wait_until(lambda: handle.health.ready)
            fake.books[PERP] = (2000, [(49990.0, 2.0)], [(50010.0, 2.0)], MS + 10)
            await fake.send(
                book_change_frame(PERP, 1000, 1005, [("change", 50000.0, 2.0)], [], MS + 1)
            )
            await fake.send(
                book_change_frame(PERP, 1007, 1009, [("change", 50000.0, 3.0)], [], MS + 2)
            )
            await fake.wait_client_message(lambda m: m.get("method") == "public/unsubscribe")
            await fake.wait_client_message(
                lambda m: (
                    m.get("method") == "public/subscribe"
                    and m["params"]["channels"] == [f"book.{PERP}.100ms"]
                )
            )
            await wait_until(
                lambda: (
                    handle.metrics.sample(
                        "collector_sequence_gaps_total",
                        {"exchange": "deribit", "data_type": "orderbook"},
                    )
                    == 1
                )
            )
            # The fake answers the resubscribe with the new snapshot (change_id 2000).
            await fake.send(
                book_change_frame(PERP, 2000, 2001, [("new", 49991.0, 1.0)], [], MS + 11)
            )
            await wait_until(lambda: received(handle, "deribit") >= 9)
    status = read_rows_us(tmp_path, "deribit", "status")
    [gap] = [r for r in status if r["event"] == "gap"]
    assert (
        gap["symbol"],
        gap["data_type"],
        gap["expected_sequence"],
        gap["received_sequence"],
    ) == (
        PERP,
        "orderbook",
        1005,
        1007,
    )
    [resync] = [r for r in status if r["event"] == "resync"]
    assert (resync["symbol"], resync["received_sequence"]) == (PERP, 2000)
    refused = [r for r in status if r["event"] == "subscribe_error"]
    assert {(r["symbol"], r["data_type"]) for r in refused} == {
        (OPTION, "trades"),
        (OPTION, "orderbook"),
        (OPTION, "ticker"),
    }
    books = read_rows_us(tmp_path, "deribit", "orderbook")
    assert [(r["kind"], r["sequence"]) for r in books] == [
        ("snapshot", 1000),
        ("delta", 1005),
        ("snapshot", 2000),
        ("delta", 2001),
    ]
    assert resync["timestamp_collector"] <= books[2]["timestamp_collector"]
    assert fake.connections == 1


async def test_test_requests_keep_the_connection_past_the_heartbeat_timeout(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeDeribit(test_request_timeout=3.0)
    await nursery.start(fake.run)
    settings = venue_settings(
        "deribit", fake.url, tmp_path, [PERP], log_level="warning", websocket=QUIET_WEBSOCKET
    )
    async with running_service(settings, trio_wall_clock(EPOCH_US), autojump_clock):
        with trio.fail_after(10):
            await fake.wait_subscribed(CHANNELS)
        start = trio.current_time()
        await trio.sleep(120)
        assert trio.current_time() - start == pytest.approx(120, abs=1e-9)
        # A test_request every 15 s, each answered with public/test: never dropped.
        [client] = fake.clients
        assert client.test_requests_sent == 8
        assert client.tests_received == 8
        assert fake.heartbeat_timeouts == 0
        assert fake.connections == 1


async def test_fake_drops_a_client_that_ignores_test_requests(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    fake = FakeDeribit(test_request_timeout=5.0)
    await nursery.start(fake.run)
    with trio.fail_after(60):
        async with open_websocket_url(f"{fake.url}/ws/api/v2") as ws:
            request = (
                '{"jsonrpc":"2.0","id":1,"method":"public/set_heartbeat","params":{"interval":10}}'
            )
            await ws.send_message(request)
            assert '"result":"ok"' in str(await ws.get_message())
            start = trio.current_time()
            assert str(await ws.get_message()) == heartbeat_frame("test_request")
            assert trio.current_time() - start == pytest.approx(10, abs=1e-9)
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert trio.current_time() - start == pytest.approx(15, abs=1e-9)
    assert fake.heartbeat_timeouts == 1


async def test_fake_refuses_a_short_heartbeat_interval_and_other_paths(
    nursery: trio.Nursery,
) -> None:
    fake = FakeDeribit()
    await nursery.start(fake.run)
    with trio.fail_after(5):
        async with open_websocket_url(f"{fake.url}/ws/api/v2") as ws:
            request = (
                '{"jsonrpc":"2.0","id":1,"method":"public/set_heartbeat","params":{"interval":5}}'
            )
            await ws.send_message(request)
            assert '"code":-32602' in str(await ws.get_message())
        with pytest.raises(Exception, match="404"):
            async with open_websocket_url(f"{fake.url}/other"):
                pass


def test_snapshot_builder_shape() -> None:
    frame = book_snapshot_frame(PERP, 5, [(1.0, 2.0)], [(3.0, 4.0)], MS)
    assert '"type":"snapshot"' in frame
    assert '["new",1.0,2.0]' in frame


async def test_derivatives_and_liquidations_become_parquet_rows(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """One ticker channel gives ticker and derivative_ticker rows; a flagged trade gives a
    trade row and a liquidation row."""
    fake = FakeDeribit()
    await nursery.start(fake.run)
    settings = venue_settings(
        "deribit",
        fake.url,
        tmp_path,
        [PERP],
        log_level="warning",
        feeds=["trades", "ticker", "derivatives", "liquidations"],
    )
    async with running_service(settings) as handle:
        with trio.fail_after(10):
            await fake.wait_subscribed([f"trades.{PERP}.100ms", f"ticker.{PERP}.100ms"])
            await wait_until(lambda: handle.health.ready)
            trades = [(7, 50000.5, 10.0, "buy", MS + 1), (8, 50000.0, 20.0, "sell", MS + 2)]
            await fake.send(trades_frame(PERP, trades, liquidations={8: "M"}))
            await fake.send(
                ticker_frame(PERP, MS + 4, 50000.0, 100.0, 50000.5, 30.0, 50000.5, 1234.5)
            )
            # 2 answers (heartbeat + subscribe) and the 2 frames above.
            await wait_until(lambda: received(handle, "deribit") >= 4)
    assert [r["sequence"] for r in read_rows_us(tmp_path, "deribit", "trades")] == [7, 8]
    assert len(read_rows_us(tmp_path, "deribit", "ticker")) == 1
    (row,) = read_rows_us(tmp_path, "deribit", "derivative_ticker")
    assert {k: v for k, v in row.items() if v is not None} == {
        "exchange": "deribit",
        "symbol": PERP,
        "timestamp_exchange": (MS + 4) * 1000,
        "timestamp_collector": row["timestamp_collector"],
        "source": "ticker",
        "last_price": 50000.5,
        "mark_price": 50000.5 - 1.7,
        "index_price": 50000.5 - 20.0,
        "funding_rate": 0.0,
        "funding_8h": 0.00001742,
        "open_interest": 1132329370.0,
        "open_interest_unit": "usd",
        "estimated_settlement_price": 50000.5 - 20.0,
        "settlement_price": 50000.5 * 1.002,
    }
    (liquidation,) = read_rows_us(tmp_path, "deribit", "liquidations")
    assert {k: v for k, v in liquidation.items() if k != "timestamp_collector"} == {
        "exchange": "deribit",
        "symbol": PERP,
        "timestamp_exchange": (MS + 2) * 1000,
        "sequence": 8,
        "liquidation_id": "400000008",
        "side": "buy",  # the maker bought against a sell taker: a short was liquidated
        "position_side": "short",
        "price": 50000.0,
        "price_kind": "trade",
        "size": 20.0,
        "size_unit": "usd",
        "avg_price": None,
        "entry_price": None,
        "status": None,
        "loss": None,
    }
    status = read_rows_us(tmp_path, "deribit", "status")
    assert sorted(s["data_type"] for s in status if s["event"] == "subscribed") == [
        "derivative_ticker",
        "liquidations",
        "ticker",
        "trades",
    ]
