"""The whole service in-process against the fake Bybit server, read back from Parquet.

Data and gap tests run on Trio's real clock (the writer uses worker threads) and wait on
the fake's events and the service's metrics; the keepalive test runs on the autojump
MockClock with a wall clock derived from it. Every wait is bounded with ``trio.fail_after``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from collector.clock import trio_wall_clock
from collector.service import EXIT_OK
from collector.settings_check import parse_settings
from tests.fakes.base import abort
from tests.fakes.bybit import (
    FakeBybit,
    book_frame,
    liquidation_frame,
    option_ticker_frame,
    option_trade_frame,
    ticker_frame,
    trade_frame,
)
from tests.venue_helpers import (
    QUIET_WEBSOCKET,
    read_rows,
    read_rows_us,
    run_until_stopped,
    settle_frozen,
    venue_settings,
    wait_received,
)

TIMEOUT = 15.0
TS_MS = 1_760_000_000_000
EPOCH_US = 1_760_000_000_000_000


async def test_spot_and_linear_of_one_symbol_reach_parquet_apart(tmp_path: Path) -> None:
    """BTCUSDT in both categories: the linear rows go under the exchange ``bybit-linear``."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBybit()
            await nursery.start(fake.run)
            fake.book_snapshots["orderbook.50.BTCUSDT"] = book_frame(
                "BTCUSDT", "snapshot", [(100.5, 2)], [(101, 3)], 10, TS_MS
            )
            settings = parse_settings(
                {
                    "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                    "storage": {"data_dir": str(tmp_path)},
                    "markets": [
                        {"exchange": "bybit", "category": "linear", "symbols": ["btcusdt"],
                         "base_url": fake.url},
                        {"exchange": "bybit", "category": "spot", "symbols": ["BTCUSDT"],
                         "feeds": ["trades", "ticker"], "base_url": fake.url},
                    ],
                }
            )  # fmt: skip
            handle, stop = await run_until_stopped(nursery, settings)
            await fake.wait_subscribed(
                ["publicTrade.BTCUSDT", "orderbook.50.BTCUSDT", "tickers.BTCUSDT"], "linear"
            )
            await fake.wait_subscribed(["publicTrade.BTCUSDT", "tickers.BTCUSDT"], "spot")
            assert sorted(urlsplit(p).path for p in fake.paths) == [
                "/v5/public/linear",
                "/v5/public/spot",
            ]
            full = {"lastPrice": "100.5", "bid1Price": "100.4", "bid1Size": "1",
                    "ask1Price": "100.6", "ask1Size": "2", "volume24h": "999"}  # fmt: skip
            frames = [
                ("linear", trade_frame("BTCUSDT", "uuid-1", 100.5, 0.25, "Buy", TS_MS + 1, 11)),
                ("spot", trade_frame("BTCUSDT", "2280000001", 100.4, 1.5, "Sell", TS_MS + 2, 12)),
                ("linear", book_frame("BTCUSDT", "delta", [(100.5, 0)], [(101.5, 4)], 11,
                                      TS_MS + 3)),
                ("linear", ticker_frame("BTCUSDT", "snapshot", full, TS_MS + 4, 20)),
                ("linear", ticker_frame("BTCUSDT", "delta", {"bid1Size": "3"}, TS_MS + 5, 21)),
                ("spot", ticker_frame("BTCUSDT", "snapshot",
                                      {"lastPrice": "100.4", "volume24h": "7"}, TS_MS + 6, 22)),
            ]  # fmt: skip
            for category, frame in frames:
                assert await fake.send(frame, category) == 1
            # 2 acks + 1 snapshot + the frames above
            await wait_received(handle, 3 + len(frames))
            received = {
                exchange: handle.metrics.sample(
                    "collector_messages_received_total", {"exchange": exchange}
                )
                for exchange in ("bybit", "bybit-linear")
            }
            assert received == {"bybit": 3, "bybit-linear": 6}
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    def trades(exchange: str) -> list[tuple[Any, ...]]:
        return [
            (t["exchange"], t["timestamp_exchange"].timestamp(), t["sequence"], t["trade_id"],
             t["price"], t["size"], t["side"])
            for t in read_rows(tmp_path, exchange, "BTCUSDT", "trades")
        ]  # fmt: skip

    assert trades("bybit-linear") == [
        ("bybit-linear", (TS_MS + 1) / 1000, 11, "uuid-1", 100.5, 0.25, "buy")
    ]
    assert trades("bybit") == [("bybit", (TS_MS + 2) / 1000, 12, "2280000001", 100.4, 1.5, "sell")]
    books = read_rows(tmp_path, "bybit-linear", "BTCUSDT", "orderbook")
    assert [(b["kind"], b["sequence"], b["bids"], b["asks"]) for b in books] == [
        ("snapshot", 10, [{"price": 100.5, "size": 2.0}], [{"price": 101.0, "size": 3.0}]),
        ("delta", 11, [{"price": 100.5, "size": 0.0}], [{"price": 101.5, "size": 4.0}]),
    ]
    assert read_rows(tmp_path, "bybit", "BTCUSDT", "orderbook") == []  # spot: no book feed
    columns = ("sequence", "bid_price", "bid_size", "ask_price", "ask_size", "last_price",
               "volume_24h")  # fmt: skip
    linear = read_rows(tmp_path, "bybit-linear", "BTCUSDT", "ticker")
    assert [tuple(t[c] for c in columns) for t in linear] == [
        (20, 100.4, 1.0, 100.6, 2.0, 100.5, 999.0),
        (21, 100.4, 3.0, 100.6, 2.0, 100.5, 999.0),  # the delta merged: a complete row
    ]
    spot = read_rows(tmp_path, "bybit", "BTCUSDT", "ticker")
    assert [tuple(t[c] for c in columns) for t in spot] == [
        (22, None, None, None, None, 100.4, 7.0),  # spot tickers carry no bid/ask
    ]
    for exchange in ("bybit", "bybit-linear"):
        status = read_rows(tmp_path, exchange, "BTCUSDT", "status")
        assert {s["exchange"] for s in status} == {exchange}
        assert status[0]["event"] == "connected"


async def test_book_gap_is_recorded_and_resubscribed_for_a_fresh_snapshot(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBybit()
            await nursery.start(fake.run)
            topic = "orderbook.50.BTCUSDT"
            fake.book_snapshots[topic] = book_frame("BTCUSDT", "snapshot", [(1, 1)], [], 10, TS_MS)
            settings = venue_settings(
                "bybit", fake.url, tmp_path, ["BTCUSDT"], category="spot", feeds=["orderbook"]
            )
            handle, stop = await run_until_stopped(nursery, settings)
            await fake.wait_subscribed([topic])
            await fake.send(book_frame("BTCUSDT", "delta", [(1, 2)], [], 11, TS_MS + 1))
            fake.book_snapshots[topic] = book_frame("BTCUSDT", "snapshot", [(2, 2)], [], 40, TS_MS)
            await fake.send(book_frame("BTCUSDT", "delta", [(1, 3)], [], 14, TS_MS + 2))
            await fake.wait_for_message(lambda m: '"op":"unsubscribe"' in m)
            # ack + snapshot + 2 deltas + unsubscribe answer + subscribe answer + snapshot
            await wait_received(handle, 7)
            gaps = handle.metrics.sample(
                "collector_sequence_gaps_total", {"exchange": "bybit", "data_type": "orderbook"}
            )
            assert gaps == 1
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    ops = [msgspec.json.decode(m) for m in fake.client_messages]
    assert [(o["op"], o.get("args")) for o in ops if o["op"] != "ping"] == [
        ("subscribe", [topic]),
        ("unsubscribe", [topic]),
        ("subscribe", [topic]),
    ]
    status = read_rows(tmp_path, "bybit", "BTCUSDT", "status")
    assert [
        (s["event"], s["expected_sequence"], s["received_sequence"], s["count"])
        for s in status
        if s["event"] in ("gap", "resync")
    ] == [("gap", 12, 14, 2), ("resync", None, 40, None)]
    books = read_rows(tmp_path, "bybit", "BTCUSDT", "orderbook")
    assert [(b["kind"], b["sequence"]) for b in books] == [
        ("snapshot", 10),
        ("delta", 11),
        ("delta", 14),
        ("snapshot", 40),
    ]


async def test_refused_topic_is_recorded_and_others_keep_flowing(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBybit(reject={"NOPEUSDT"})
            await nursery.start(fake.run)
            settings = venue_settings(
                "bybit",
                fake.url,
                tmp_path,
                ["NOPEUSDT", "BTCUSDT"],
                category="spot",
                feeds=["trades"],
            )
            handle, stop = await run_until_stopped(nursery, settings)
            await fake.wait_subscribed(["publicTrade.BTCUSDT"])
            await fake.send(trade_frame("BTCUSDT", "7", 1.5, 2, "Sell", TS_MS, 1))
            await wait_received(handle, 3)
            assert handle.health.connections["bybit-spot-0"].subscribed_once
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    errors = [
        s
        for s in read_rows(tmp_path, "bybit", "NOPEUSDT", "status")
        if s["event"] == "subscribe_error"
    ]
    assert [e["detail"] for e in errors] == [
        "publicTrade.NOPEUSDT: error:handler not found,topic:publicTrade.NOPEUSDT"
    ]
    assert [t["trade_id"] for t in read_rows(tmp_path, "bybit", "BTCUSDT", "trades")] == ["7"]


async def test_op_pings_keep_the_connection_alive(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = math.inf  # frozen while the service starts
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            fake = FakeBybit(ping_timeout=30.0)
            await nursery.start(fake.run)
            settings = venue_settings(
                "bybit",
                fake.url,
                tmp_path,
                ["BTCUSDT"],
                category="linear",
                feeds=["trades"],
                websocket=QUIET_WEBSOCKET,
            )
            handle, stop = await run_until_stopped(
                nursery, settings, wall_clock=trio_wall_clock(EPOCH_US)
            )
            await fake.wait_subscribed(["publicTrade.BTCUSDT"])
            autojump_clock.jump(settings.storage.flush_interval_secs)
            written = {"exchange": "bybit-linear", "data_type": "status"}
            await settle_frozen(
                autojump_clock,
                lambda: handle.metrics.sample("collector_rows_written_total", written) >= 2,
            )
            # Now nothing needs a thread: let virtual time run, with no data at all.
            autojump_clock.autojump_threshold = 0
            await trio.sleep(125)  # four times the fake's ping deadline
            assert fake.connections == 1
            assert fake.ping_drops == 0
            assert len(fake.clients) == 1
            # one {"op":"ping"} every 20 s, each answered with a pong
            assert fake.pings == 6
            autojump_clock.autojump_threshold = math.inf  # shutdown finalizes in threads
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()
    status = read_rows(tmp_path, "bybit-linear", "BTCUSDT", "status")
    assert [s["event"] for s in status] == ["connected", "subscribed", "disconnected"]
    assert status[0]["timestamp_collector"].timestamp() * 1e6 == pytest.approx(EPOCH_US, abs=2e6)


async def test_the_fake_drops_a_client_that_sends_no_ping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fake = FakeBybit(ping_timeout=30.0)
            await nursery.start(fake.run)
            async with open_websocket_url(f"{fake.url}/v5/public/spot") as ws:
                await fake.wait_connected()
                start = trio.current_time()
                await ws.send_message('{"req_id":"1","op":"subscribe","args":["tickers.BTCUSDT"]}')
                assert '"success":true' in await ws.get_message()
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()  # data does not count: only pings do
                assert trio.current_time() - start == pytest.approx(30.0)
            assert fake.ping_drops == 1
            nursery.cancel_scope.cancel()


async def test_derivatives_and_liquidations_of_linear_and_inverse_reach_parquet(
    tmp_path: Path,
) -> None:
    """Merged derivative rows and inverted liquidation sides, end to end; after a reconnect
    the ticker state starts again from the venue's new snapshot (nothing carried over)."""
    first = {"lastPrice": "100", "markPrice": "100.5", "indexPrice": "100.4",
             "fundingRate": "0.0001", "nextFundingTime": str(TS_MS + 3_600_000),
             "fundingIntervalHour": "8", "openInterest": "12", "openInterestValue": "1206",
             "bid1Price": "99.9"}  # fmt: skip
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBybit()
            await nursery.start(fake.run)
            # The venue sends a tickers snapshot right after the subscribe answer.
            fake.book_snapshots["tickers.BTCUSDT"] = ticker_frame(
                "BTCUSDT", "snapshot", first, TS_MS, 1
            )
            feeds = ["derivatives", "liquidations"]
            settings = parse_settings(
                {
                    "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                    "storage": {"data_dir": str(tmp_path)},
                    "markets": [
                        {"exchange": "bybit", "category": "linear", "symbols": ["BTCUSDT"],
                         "feeds": feeds, "base_url": fake.url},
                        {"exchange": "bybit", "category": "inverse", "symbols": ["btcusd"],
                         "feeds": feeds, "base_url": fake.url},
                    ],
                }
            )  # fmt: skip
            handle, stop = await run_until_stopped(nursery, settings)
            await fake.wait_subscribed(["tickers.BTCUSDT", "allLiquidation.BTCUSDT"], "linear")
            await fake.wait_subscribed(["tickers.BTCUSD", "allLiquidation.BTCUSD"], "inverse")
            frames = [
                ("linear", ticker_frame("BTCUSDT", "delta", {"bid1Price": "99"}, TS_MS + 1, 2)),
                ("linear", ticker_frame("BTCUSDT", "delta", {"markPrice": "101"}, TS_MS + 2, 3)),
                ("linear", liquidation_frame("BTCUSDT", [(TS_MS + 3, "Buy", "0.5", "99.5")])),
                ("inverse", ticker_frame("BTCUSD", "snapshot",
                                         {"markPrice": "65000", "openInterest": "1000000"},
                                         TS_MS + 4, 4)),
                ("inverse", liquidation_frame("BTCUSD", [(TS_MS + 5, "Sell", "2000", "65100")])),
            ]  # fmt: skip
            for category, frame in frames:
                assert await fake.send(frame, category) == 1
            await wait_received(handle, 5, "bybit-linear")  # ack, snapshot, 3 frames
            await wait_received(handle, 3, "bybit-inverse")  # ack, 2 frames
            # A hole: the linear connection drops. Its next snapshot lacks most fields.
            fake.book_snapshots["tickers.BTCUSDT"] = ticker_frame(
                "BTCUSDT", "snapshot", {"markPrice": "102", "openInterest": "13"}, TS_MS + 10, 10
            )
            for client in list(fake.clients):
                if client.category == "linear":
                    await abort(client.conn)
            await wait_received(handle, 7, "bybit-linear")  # + ack, snapshot
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    columns = ("timestamp_exchange", "sequence", "source", "last_price", "mark_price",
               "index_price", "funding_rate", "funding_timestamp", "funding_interval_h",
               "open_interest", "open_interest_unit", "open_interest_value")  # fmt: skip
    linear = read_rows_us(tmp_path, "bybit-linear", "derivative_ticker")
    funding_at = datetime.fromtimestamp((TS_MS + 3_600_000) / 1000, UTC)
    assert [tuple(r[c] for c in columns) for r in linear] == [
        (TS_MS * 1000, 1, "tickers", 100.0, 100.5, 100.4, 0.0001, funding_at, 8.0, 12.0, "base",
         1206.0),
        # the bid-only delta wrote no row; the mark price delta is merged
        ((TS_MS + 2) * 1000, 3, "tickers", 100.0, 101.0, 100.4, 0.0001, funding_at, 8.0, 12.0,
         "base", 1206.0),
        # after the reconnect: the new snapshot alone
        ((TS_MS + 10) * 1000, 10, "tickers", None, 102.0, None, None, None, None, 13.0, "base",
         None),
    ]  # fmt: skip
    inverse = read_rows_us(tmp_path, "bybit-inverse", "derivative_ticker")
    assert [tuple(r[c] for c in columns) for r in inverse] == [
        ((TS_MS + 4) * 1000, 4, "tickers", None, 65000.0, None, None, None, None, 1e6, "usd", None)
    ]
    liquidation_columns = ("exchange", "symbol", "timestamp_exchange", "liquidation_id", "side",
                           "position_side", "price", "price_kind", "size", "size_unit")  # fmt: skip
    liquidations = [
        tuple(r[c] for c in liquidation_columns)
        for exchange in ("bybit-linear", "bybit-inverse")
        for r in read_rows_us(tmp_path, exchange, "liquidations")
    ]
    assert liquidations == [
        ("bybit-linear", "BTCUSDT", (TS_MS + 3) * 1000, None, "sell", "long", 99.5,
         "bankruptcy", 0.5, "base"),
        ("bybit-inverse", "BTCUSD", (TS_MS + 5) * 1000, None, "buy", "short", 65100.0,
         "bankruptcy", 2000.0, "usd"),
    ]  # fmt: skip
    status = read_rows(tmp_path, "bybit-linear", "BTCUSDT", "status")
    assert [(s["event"], s["data_type"]) for s in status] == [
        ("connected", None),
        ("subscribed", "derivative_ticker"),
        ("subscribed", "liquidations"),
        ("disconnected", None),
        ("connected", None),
        ("subscribed", "derivative_ticker"),
        ("subscribed", "liquidations"),
        ("disconnected", None),
    ]


async def test_options_trades_book_and_greeks_reach_parquet_as_bybit_option(
    tmp_path: Path,
) -> None:
    """Two BTC options on the option endpoint: one ``publicTrade.BTC`` subscription whose
    trades of other options are left out, a depth-25 book, and the ticker's greeks."""
    call, put = "BTC-27DEC24-100000-C", "BTC-27DEC24-90000-P-USDT"
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBybit()
            await nursery.start(fake.run)
            fake.book_snapshots[f"orderbook.25.{call}"] = book_frame(
                call, "snapshot", [(405, 1.5)], [(415, 2)], 1, TS_MS, depth=25
            )
            quote = {"bidPrice": "405", "bidSize": "1.5", "bidIv": "0.61", "askPrice": "415",
                     "askSize": "2", "askIv": "0.63", "lastPrice": "410", "markPrice": "411.5",
                     "indexPrice": "95000", "markPriceIv": "0.62", "underlyingPrice": "95120",
                     "openInterest": "12.34", "volume24h": "3.5", "delta": "0.41",
                     "gamma": "0.00003", "vega": "61.2", "theta": "-95.5",
                     "predictedDeliveryPrice": "0"}  # fmt: skip
            fake.book_snapshots[f"tickers.{call}"] = option_ticker_frame(call, quote, TS_MS + 1)
            settings = parse_settings(
                {
                    "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                    "storage": {"data_dir": str(tmp_path)},
                    "markets": [
                        {"exchange": "bybit", "category": "option", "symbols": [call],
                         "feeds": ["trades", "orderbook", "ticker", "derivatives"],
                         "base_url": fake.url},
                        {"exchange": "bybit", "category": "option", "symbols": [put.lower()],
                         "feeds": ["trades"], "base_url": fake.url},
                    ],
                }
            )  # fmt: skip
            handle, stop = await run_until_stopped(nursery, settings)
            await fake.wait_subscribed(
                ["publicTrade.BTC", f"orderbook.25.{call}", f"tickers.{call}"], "option"
            )
            assert [urlsplit(p).path for p in fake.paths] == ["/v5/public/option"]
            trades = option_trade_frame(
                "BTC",
                [(call, "opt-1", 410, 0.5, "Buy", TS_MS + 2),
                 ("BTC-27DEC24-80000-C", "opt-2", 990, 1, "Sell", TS_MS + 2),
                 (put, "opt-3", 55.5, 0.01, "Sell", TS_MS + 3)],
                TS_MS + 4,
            )  # fmt: skip
            assert await fake.send(trades, "option") == 1
            delta = book_frame(call, "delta", [(405, 0)], [(412, 1)], 2, TS_MS + 5, depth=25)
            assert await fake.send(delta, "option") == 1
            await wait_received(handle, 5, "bybit-option")  # ack, 2 snapshots, 2 frames
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    trade_columns = ("exchange", "symbol", "timestamp_exchange", "trade_id", "price", "size",
                     "side")  # fmt: skip
    assert [tuple(r[c] for c in trade_columns) for r in read_rows_us(
        tmp_path, "bybit-option", "trades")] == [
        ("bybit-option", call, (TS_MS + 2) * 1000, "opt-1", 410.0, 0.5, "buy"),
        ("bybit-option", put, (TS_MS + 3) * 1000, "opt-3", 55.5, 0.01, "sell"),
    ]  # fmt: skip
    books = read_rows(tmp_path, "bybit-option", call, "orderbook")
    assert [(b["kind"], b["sequence"], b["bids"], b["asks"]) for b in books] == [
        ("snapshot", 1, [{"price": 405.0, "size": 1.5}], [{"price": 415.0, "size": 2.0}]),
        ("delta", 2, [{"price": 405.0, "size": 0.0}], [{"price": 412.0, "size": 1.0}]),
    ]
    (ticker,) = read_rows_us(tmp_path, "bybit-option", "ticker")
    assert {k: v for k, v in ticker.items() if k != "timestamp_collector"} == {
        "exchange": "bybit-option", "symbol": call, "timestamp_exchange": (TS_MS + 1) * 1000,
        "sequence": None, "bid_price": 405.0, "bid_size": 1.5, "ask_price": 415.0,
        "ask_size": 2.0, "last_price": 410.0, "volume_24h": 3.5,
    }  # fmt: skip
    (row,) = read_rows_us(tmp_path, "bybit-option", "derivative_ticker")
    values = {k: v for k, v in row.items() if v is not None and k != "timestamp_collector"}
    assert values == {
        "exchange": "bybit-option", "symbol": call, "timestamp_exchange": (TS_MS + 1) * 1000,
        "source": "tickers", "last_price": 410.0, "mark_price": 411.5, "index_price": 95000.0,
        "open_interest": 12.34, "open_interest_unit": "base", "mark_iv": 0.62, "bid_iv": 0.61,
        "ask_iv": 0.63, "delta": 0.41, "gamma": 0.00003, "vega": 61.2, "theta": -95.5,
        "underlying_price": 95120.0,
    }  # fmt: skip
    status = read_rows(tmp_path, "bybit-option", put, "status")
    assert [(s["event"], s["data_type"]) for s in status] == [
        ("connected", None), ("subscribed", "trades"), ("disconnected", None),
    ]  # fmt: skip
