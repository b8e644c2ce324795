"""Binance spot, USD-M and COIN-M markets in one service, end to end: fake venues on
loopback (USD-M with its routed /public and /market paths), a fake REST API for the book
snapshots and open interest, and the rows read back from Parquet, across a forced
reconnect; and the derivative feeds (mark price, polled open interest, liquidations)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from collector.settings_check import parse_settings
from tests.fakes.binance import (
    FakeBinance,
    agg_trade_frame,
    book_ticker_frame,
    depth_diff_frame,
    force_order_frame,
    mark_price_frame,
    trade_frame,
)
from tests.fakes.binance_rest import FakeBinanceRest
from tests.venue_helpers import read_rows, running_service, wait_until

TIMEOUT = 20.0
T_MS = 1_700_000_000_000
USDM_STREAMS = ["btcusdt@aggTrade", "btcusdt@depth@100ms", "btcusdt@bookTicker"]
COINM_STREAMS = ["btcusd_perp@aggTrade", "btcusd_perp@depth@100ms"]


def depth_requests(rest: FakeBinanceRest, path: str) -> int:
    return sum(r.startswith(path) for r in rest.requests)


async def settle() -> None:
    """Until the service and the fakes wait (a snapshot fetch is a worker thread: the
    cushion lets it come back)."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)


async def test_spot_usdm_and_coinm_markets_record_apart_and_resync_after_a_reconnect(
    tmp_path: Path,
) -> None:
    spot, usdm, coinm = FakeBinance(), FakeBinance(category="usdm"), FakeBinance(category="coinm")
    rest = FakeBinanceRest()
    rest.set_book("BTCUSDT", 100, bids=[(65000.0, 2.0)], asks=[(65001.0, 1.0)])
    rest.set_book("BTCUSD_PERP", 500, bids=[(64990.0, 30.0)], asks=[(64991.0, 10.0)])
    data_dir = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        for fake in (spot, usdm, coinm, rest):
            await nursery.start(fake.run)
        settings = parse_settings(
            {
                "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                "storage": {"data_dir": str(data_dir)},
                "websocket": {"initial_retry_delay_secs": 0.05},
                "markets": [
                    {
                        "exchange": "binance",
                        "symbols": ["BTCUSDT"],
                        "feeds": ["trades"],
                        "base_url": spot.url,
                    },
                    {
                        "exchange": "binance",
                        "category": "usdm",
                        "symbols": ["btcusdt"],
                        "book_mode": "diff",
                        "base_url": usdm.url,
                        "rest_url": rest.url,
                    },
                    {
                        "exchange": "binance",
                        "category": "coinm",
                        "symbols": ["btcusd_perp"],
                        "feeds": ["trades", "orderbook"],
                        "book_mode": "diff",
                        "base_url": coinm.url,
                        "rest_url": rest.url,
                    },
                ],
            }
        )
        async with running_service(settings):
            with trio.fail_after(TIMEOUT):
                await spot.wait_subscribed(["btcusdt@trade"])
                await usdm.wait_subscribed(USDM_STREAMS)
                await coinm.wait_subscribed(COINM_STREAMS)
                # Each USD-M stream on the path that pushes it.
                assert {c.route: sorted(c.streams) for c in usdm.clients} == {
                    "market": ["btcusdt@aggTrade"],
                    "public": ["btcusdt@bookTicker", "btcusdt@depth@100ms"],
                }
                assert [c.path for c in coinm.clients] == ["/stream"]

                await spot.send(trade_frame("BTCUSDT", 1, "65010", "0.5", T_MS * 1000, False))
                await usdm.send(agg_trade_frame("BTCUSDT", 10, "65000.5", "0.2", T_MS, True))
                await usdm.send(book_ticker_frame("BTCUSDT", 98, 65000, 2, 65001, 1, time_ms=T_MS))
                await usdm.send(depth_diff_frame("BTCUSDT", 95, 99, [], [], T_MS, prev_id=90))
                await coinm.send(agg_trade_frame("BTCUSD_PERP", 7, "64990.5", "3", T_MS, False))
                await coinm.send(
                    depth_diff_frame("BTCUSD_PERP", 480, 490, [], [], T_MS, prev_id=470)
                )
                await wait_until(
                    lambda: (
                        depth_requests(rest, "/fapi/v1/depth") == 1
                        and depth_requests(rest, "/dapi/v1/depth") == 1
                    )
                )
                await settle()
                # U skips past lastUpdateId + 1; pu joins the snapshot (100, 500).
                await usdm.send(
                    depth_diff_frame("BTCUSDT", 105, 110, [(65000.0, 0.0)], [], T_MS, prev_id=99)
                )
                await coinm.send(
                    depth_diff_frame("BTCUSD_PERP", 495, 510, [], [], T_MS, prev_id=490)
                )
                await settle()

                # A forced reconnect of both USD-M connections: the book is synced afresh.
                rest.set_book("BTCUSDT", 200, bids=[(65100.0, 1.0)], asks=[(65101.0, 1.0)])
                await usdm.drop()
                await usdm.wait_connected(4)
                await usdm.wait_subscribed(USDM_STREAMS)
                await usdm.send(agg_trade_frame("BTCUSDT", 11, "65100.5", "0.1", T_MS + 9, False))
                await usdm.send(depth_diff_frame("BTCUSDT", 190, 199, [], [], T_MS, prev_id=180))
                await wait_until(lambda: depth_requests(rest, "/fapi/v1/depth") == 2)
                await settle()
                await usdm.send(depth_diff_frame("BTCUSDT", 204, 210, [], [], T_MS, prev_id=199))
                await settle()
        nursery.cancel_scope.cancel()

    [spot_trade] = read_rows(data_dir, "binance", "BTCUSDT", "trades")
    assert (spot_trade["exchange"], spot_trade["trade_id"]) == ("binance", "1")
    assert read_rows(data_dir, "binance", "BTCUSDT", "orderbook") == []

    trades = read_rows(data_dir, "binance-usdm", "BTCUSDT", "trades")
    assert [(t["exchange"], t["trade_id"], t["side"]) for t in trades] == [
        ("binance-usdm", "10", "sell"),
        ("binance-usdm", "11", "buy"),
    ]
    [ticker] = read_rows(data_dir, "binance-usdm", "BTCUSDT", "ticker")
    assert (ticker["sequence"], ticker["bid_price"], ticker["ask_size"]) == (98, 65000.0, 1.0)
    books = read_rows(data_dir, "binance-usdm", "BTCUSDT", "orderbook")
    ids = [(b["first_sequence"], b["sequence"], b["prev_sequence"]) for b in books]
    deltas = [i for i, b in zip(ids, books, strict=True) if b["kind"] == "delta"]
    # A delta the snapshot already holds (u <= lastUpdateId) is written only when it came
    # before the snapshot; after it, it is dropped (a reader would rewind the book with it).
    # Which came first here is up to the fake REST's speed.
    assert [d for d in deltas if d[1] > 100 and d != (190, 199, 180)] == [
        (105, 110, 99),
        (204, 210, 199),
    ]
    assert set(deltas) <= {(95, 99, 90), (105, 110, 99), (190, 199, 180), (204, 210, 199)}
    snapshots = [i for i, b in zip(ids, books, strict=True) if b["kind"] == "snapshot"]
    assert snapshots == [(100, 100, None), (200, 200, None)]
    # Each snapshot is recorded before the delta that joins it (readers replay in order).
    assert ids.index((100, 100, None)) < ids.index((105, 110, 99))
    assert ids.index((200, 200, None)) < ids.index((204, 210, 199))
    status = read_rows(data_dir, "binance-usdm", "BTCUSDT", "status")
    events = [s["event"] for s in status]
    assert "gap" not in events
    assert [s["received_sequence"] for s in status if s["event"] == "resync"] == [100, 200]
    assert events.count("disconnected") >= 2  # both routes dropped (and then the stop)
    assert depth_requests(rest, "/api/v3/depth") == 0  # spot asked for no book

    coinm_books = read_rows(data_dir, "binance-coinm", "BTCUSD_PERP", "orderbook")
    # 480..490 is in the snapshot: written only if it came first (see above).
    assert [(b["sequence"], b["kind"]) for b in coinm_books if b["sequence"] != 490] == [
        (500, "snapshot"),
        (510, "delta"),
    ]
    assert coinm_books[-1]["sequence"] == 510  # after the snapshot it joins
    [coinm_trade] = read_rows(data_dir, "binance-coinm", "BTCUSD_PERP", "trades")
    assert (coinm_trade["exchange"], coinm_trade["size"]) == ("binance-coinm", 3.0)
    coinm_status = read_rows(data_dir, "binance-coinm", "BTCUSD_PERP", "status")
    assert "gap" not in [s["event"] for s in coinm_status]


async def test_usdm_and_coinm_derivative_feeds_are_recorded_with_polled_open_interest(
    tmp_path: Path,
) -> None:
    usdm, coinm, rest = (
        FakeBinance(category="usdm"),
        FakeBinance(category="coinm"),
        FakeBinanceRest(),
    )
    rest.open_interest["BTCUSDT"] = (10659.509, T_MS - 100)
    rest.open_interest["BTCUSD_PERP"] = (512000.0, T_MS - 100)
    data_dir = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        for fake in (usdm, coinm, rest):
            await nursery.start(fake.run)
        derivative_market = {
            "exchange": "binance",
            "feeds": ["trades", "derivatives", "liquidations"],
            "rest_url": rest.url,
            "open_interest_interval_secs": 5,
        }
        settings = parse_settings(
            {
                "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                "storage": {"data_dir": str(data_dir)},
                "markets": [
                    derivative_market
                    | {"category": "usdm", "symbols": ["BTCUSDT"], "base_url": usdm.url},
                    derivative_market
                    | {"category": "coinm", "symbols": ["BTCUSD_PERP"], "base_url": coinm.url},
                ],
            }
        )
        usdm_streams = ["btcusdt@aggTrade", "btcusdt@markPrice@1s", "btcusdt@forceOrder"]
        async with running_service(settings):
            with trio.fail_after(TIMEOUT):
                await usdm.wait_subscribed(usdm_streams)
                await coinm.wait_subscribed(["btcusd_perp@markPrice@1s", "btcusd_perp@forceOrder"])
                # Every derivative stream of USD-M is on its /market path, with the trades.
                assert [(c.route, sorted(c.streams)) for c in usdm.clients] == [
                    ("market", sorted(usdm_streams))
                ]
                await wait_until(lambda: sum("openInterest" in r for r in rest.requests) >= 2)
                await settle()
                await usdm.send(
                    mark_price_frame(
                        "BTCUSDT", T_MS, "65010.5", "65000", "65001", "0.0001", T_MS + 3_600_000
                    )
                )
                await coinm.send(
                    mark_price_frame(
                        "BTCUSD_PERP", T_MS, "65020", "65003", "65004", "-0.0002", T_MS + 3_600_000
                    )
                )
                await usdm.send(force_order_frame("BTCUSDT", "SELL", "64000", "0.5", T_MS + 10))
                await coinm.send(force_order_frame("BTCUSD_PERP", "BUY", "66000", "12", T_MS + 20))
                await settle()
                # The next poll (5 s on) writes an openInterest row of its own.
                rest.open_interest["BTCUSDT"] = (10700.0, T_MS + 5000)
                polls = sum("/fapi/v1/openInterest" in r for r in rest.requests)
                await wait_until(
                    lambda: sum("/fapi/v1/openInterest" in r for r in rest.requests) > polls
                )
                await settle()
                await usdm.send(
                    mark_price_frame(
                        "BTCUSDT",
                        T_MS + 1000,
                        "65011",
                        "65001",
                        "65002",
                        "0.0001",
                        T_MS + 3_600_000,
                    )
                )
                await settle()
        nursery.cancel_scope.cancel()

    rows = read_rows(data_dir, "binance-usdm", "BTCUSDT", "derivative_ticker")
    summary = [
        (r["source"], r["sequence"], r["mark_price"], r["open_interest"], r["open_interest_unit"])
        for r in rows
    ]
    assert summary == [
        ("markPrice", T_MS, 65010.5, 10659.509, "base"),
        ("openInterest", T_MS, 65010.5, 10700.0, "base"),
        ("markPrice", T_MS + 1000, 65011.0, 10700.0, "base"),
    ]
    first = rows[0]
    assert (first["index_price"], first["funding_rate"], first["estimated_settlement_price"]) == (
        65000.0,
        0.0001,
        65001.0,
    )
    assert first["funding_timestamp"].timestamp() * 1000 == T_MS + 3_600_000
    [coinm_row] = read_rows(data_dir, "binance-coinm", "BTCUSD_PERP", "derivative_ticker")
    assert (coinm_row["mark_price"], coinm_row["funding_rate"]) == (65020.0, -0.0002)
    assert (coinm_row["open_interest"], coinm_row["open_interest_unit"]) == (512000.0, "contracts")

    [liquidation] = read_rows(data_dir, "binance-usdm", "BTCUSDT", "liquidations")
    assert (
        liquidation["side"],
        liquidation["position_side"],
        liquidation["price"],
        liquidation["price_kind"],
        liquidation["size"],
        liquidation["size_unit"],
        liquidation["status"],
    ) == ("sell", "long", 64000.0, "order", 0.5, "base", "FILLED")
    [coinm_liquidation] = read_rows(data_dir, "binance-coinm", "BTCUSD_PERP", "liquidations")
    assert (
        coinm_liquidation["side"],
        coinm_liquidation["size"],
        coinm_liquidation["size_unit"],
    ) == (
        "buy",
        12.0,
        "contracts",
    )
    status = read_rows(data_dir, "binance-usdm", "BTCUSDT", "status")
    assert "poll_error" not in [s["event"] for s in status]
