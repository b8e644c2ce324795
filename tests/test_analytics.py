"""Trade analytics (collector.analytics): exact figures for known trades, the intervals'
completion by the wall clock, the router routing their rows (virtual time), and the real
service with the fake Binance: the metrics over HTTP and the ``analytics`` table in Parquet.
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import trio
import trio.testing

from collector.analytics import CLOSE_DELAY_SECS, TradeAnalytics, large_trade_sizes
from collector.clock import trio_wall_clock
from collector.config import ConfigError, StorageSettings
from collector.doorbell import Doorbell
from collector.events import Event, IntervalStats, Side, Status, Trade
from collector.metrics import Metrics
from collector.settings_check import parse_settings
from collector.storage.router import FlushWork, run_router
from tests.fakes.binance import FakeBinance, trade_frame
from tests.procs import _plain_table, read_rows
from tests.test_http import fetch_metrics, sample
from tests.test_service import start_service

MINUTE_US = 60_000_000
NOON = 1_714_564_800_000_000  # 2024-05-01T12:00Z, a whole minute
BTC = ("binance", "BTCUSDT")
ETH = ("binance", "ETHUSDT")


def trade(
    ts_us: int, price: float, size: float, side: Side | None, pair: tuple[str, str] = BTC
) -> Trade:
    return Trade(pair[0], pair[1], None, ts_us, None, f"{ts_us}", price, size, side)


def due(a: TradeAnalytics, now_us: int) -> list[IntervalStats]:
    """``due(a, now_us)``, each checked to be an interval's row."""
    rows = a.rows_due(now_us)
    assert all(isinstance(row, IntervalStats) for row in rows)
    return [row for row in rows if isinstance(row, IntervalStats)]


def metric(metrics: Metrics, name: str, pair: tuple[str, str] = BTC) -> float:
    value = metrics.registry.get_sample_value(
        f"collector_analytics_{name}", {"exchange": pair[0], "symbol": pair[1]}
    )
    assert value is not None
    return value


def analytics(metrics: Metrics, now_us: int, *, table: bool = True) -> TradeAnalytics:
    return TradeAnalytics({BTC: 2.0, ETH: None}, 60, metrics.analytics, table=table, now_us=now_us)


# One minute of BTCUSDT: volume 8, notional 803, so VWAP 100.375 exactly.
MINUTE: list[tuple[float, float, Side | None]] = [
    (100.0, 1.0, "buy"),
    (102.0, 2.0, "sell"),
    (101.0, 2.0, None),
    (99.0, 3.0, "buy"),
]


def test_a_known_minute_gives_exact_figures_in_rows_and_metrics() -> None:
    metrics = Metrics()
    a = analytics(metrics, NOON + 10_000_000)  # started 10 s into the noon minute
    # Series exist from the start: counts at 0, prices unknown.
    assert metric(metrics, "trades") == 0
    assert math.isnan(metric(metrics, "vwap"))
    assert metric(metrics, "large_trades_total") == 0
    assert metric(metrics, "interval_end_seconds") == (NOON + 10_000_000) / 1e6

    start = NOON + MINUTE_US
    a([trade(NOON + 20_000_000, 500.0, 9.0, "buy")])  # in the minute started in: not counted
    a([trade(start + i * 1_000_000, p, s, side) for i, (p, s, side) in enumerate(MINUTE)])
    a([trade(start + 5, 1.0, 1.0, "buy", ("binance", "SOLUSDT"))])  # not configured
    a([Status("binance", "BTCUSDT", None, start + 6, None, "connected")])

    end = start + MINUTE_US
    assert due(a, end) == []
    assert due(a, end + round(CLOSE_DELAY_SECS * 1e6) - 1) == []
    rows = due(a, end + round(CLOSE_DELAY_SECS * 1e6))
    assert rows == [
        IntervalStats(
            *BTC, end, end + 1_000_000, None, start,
            trades=4, volume=8.0, buy_volume=4.0, sell_volume=2.0, buy_sell_ratio=2.0,
            vwap=100.375, high=102.0, low=99.0, large_trades=3, large_trade_size=2.0,
        ),
        IntervalStats(
            *ETH, end, end + 1_000_000, None, start,
            trades=0, volume=0.0, buy_volume=0.0, sell_volume=0.0, buy_sell_ratio=None,
            vwap=None, high=None, low=None, large_trades=0, large_trade_size=None,
        ),
    ]  # fmt: skip
    assert metric(metrics, "vwap") == 100.375
    assert metric(metrics, "high") == 102.0
    assert metric(metrics, "low") == 99.0
    assert metric(metrics, "volume") == 8.0
    assert metric(metrics, "buy_volume") == 4.0
    assert metric(metrics, "sell_volume") == 2.0
    assert metric(metrics, "buy_sell_ratio") == 2.0
    assert metric(metrics, "trades") == 4
    assert metric(metrics, "interval_end_seconds") == end / 1e6
    assert metric(metrics, "large_trades_total") == 3
    assert metric(metrics, "trades", ETH) == 0
    assert math.isnan(metric(metrics, "vwap", ETH))
    assert math.isnan(metric(metrics, "buy_sell_ratio", ETH))


def test_a_late_trade_counts_in_the_next_interval_and_quiet_ones_report_zero() -> None:
    metrics = Metrics()
    a = analytics(metrics, NOON)
    first = NOON + MINUTE_US
    a([trade(first + 1, 100.0, 1.0, "sell")])
    done = first + MINUTE_US + 2_000_000
    assert [r.trades for r in due(a, done)] == [1, 0]
    # Received before the end of the first minute, routed after it was completed.
    a([trade(first + MINUTE_US - 1, 110.0, 3.0, "buy")])
    assert metric(metrics, "late_trades_total") == 0
    rows = due(a, done + MINUTE_US)
    btc = rows[0]
    assert (btc.interval_start, btc.trades, btc.vwap, btc.large_trades) == (
        first + MINUTE_US,
        1,
        110.0,
        1,
    )
    assert btc.buy_sell_ratio is None  # no selling volume
    assert metric(metrics, "late_trades_total") == 1
    assert metric(metrics, "large_trades_total") == 1
    # Three quiet minutes: three zero rows per pair, oldest first.
    rows = due(a, done + 4 * MINUTE_US)
    assert [(r.symbol, r.trades) for r in rows] == [("BTCUSDT", 0), ("ETHUSDT", 0)] * 3
    assert [r.interval_start for r in rows[::2]] == [first + k * MINUTE_US for k in (2, 3, 4)]
    assert math.isnan(metric(metrics, "vwap"))
    assert metric(metrics, "trades") == 0


def test_without_the_table_the_metrics_are_set_and_no_rows_come() -> None:
    metrics = Metrics()
    a = analytics(metrics, NOON, table=False)
    a([trade(NOON + MINUTE_US, 100.0, 1.0, "buy")])
    assert due(a, NOON + 3 * MINUTE_US) == []
    # 12:03 less the delay: only 12:01 is complete.
    assert metric(metrics, "trades") == 1
    assert metric(metrics, "interval_end_seconds") == (NOON + 2 * MINUTE_US) / 1e6


async def test_the_router_routes_interval_rows_as_minutes_complete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    wall_clock = trio_wall_clock(NOON + 30_000_000)  # half a minute into noon
    a = TradeAnalytics({BTC: None}, 60, metrics.analytics, table=True, now_us=wall_clock())
    events_send, events = trio.open_memory_channel[list[Event]](16)
    work_out, work_in = trio.open_memory_channel[FlushWork](0)
    doorbell = Doorbell(1)
    storage = StorageSettings(flush_interval_secs=1.0)
    got: list[dict[str, Any]] = []
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            run = partial(
                run_router, storage, events, work_out, wall_clock=wall_clock, doorbell=doorbell
            )
            await nursery.start(partial(run, analytics=a))
            with events_send, work_in:
                await trio.sleep(31)  # into 12:01
                for price, size, side in MINUTE:
                    await events_send.send([trade(wall_clock(), price, size, side)])
                    doorbell.sent()
                    await trio.sleep(1)
                # By 12:02:01 and a tick: the minute is complete and its row flushed.
                while not got:
                    work = await work_in.receive()
                    for file_key, rows in work.rows.items():
                        if file_key[2] == "analytics":
                            batch = rows.columns.to_record_batch(
                                {"exchange": file_key[0], "symbol": file_key[1]}
                            )
                            table = pa.Table.from_batches([batch])
                            got += _plain_table(table).to_pylist()
            nursery.cancel_scope.cancel()
    assert len(got) == 1
    row = got[0]
    assert row["interval_start"] == NOON + MINUTE_US
    assert row["timestamp_exchange"] == NOON + 2 * MINUTE_US
    # Completed at the first take after 12:02:01 (a tick at the latest).
    assert row["timestamp_collector"] >= NOON + 2 * MINUTE_US + 1_000_000
    assert row["timestamp_collector"] <= NOON + 2 * MINUTE_US + 2_000_000
    assert (row["trades"], row["vwap"], row["buy_sell_ratio"]) == (4, 100.375, 2.0)


def test_thresholds_per_market_or_per_symbol_and_only_markets_with_trades() -> None:
    settings = parse_settings(
        {
            "markets": [
                {"exchange": "binance", "symbols": ["btcusdt", "ethusdt"], "large_trade_size": 5},
                {
                    "exchange": "bybit",
                    "category": "spot",
                    "symbols": ["BTCUSDT", "ETHUSDT"],
                    "large_trade_size": {"ETHUSDT": 50},
                },
                {"exchange": "okx", "symbols": ["BTC-USDT"], "feeds": ["ticker"]},
            ]
        }
    )
    assert large_trade_sizes(settings.markets) == {
        ("binance", "BTCUSDT"): 5.0,
        ("binance", "ETHUSDT"): 5.0,
        ("bybit", "BTCUSDT"): None,
        ("bybit", "ETHUSDT"): 50.0,
    }


@pytest.mark.parametrize(
    ("market", "analytics", "message"),
    [
        ({"large_trade_size": {"solusdt": 1}}, {}, "large_trade_size: solusdt not in this"),
        ({"large_trade_size": 0}, {}, "large_trade_size"),
        ({}, {"interval_secs": 0}, "analytics.interval_secs"),
    ],
)
def test_bad_analytics_settings_are_refused_naming_the_key(
    market: dict[str, Any], analytics: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(
            {
                "analytics": analytics,
                "markets": [{"exchange": "binance", "symbols": ["btcusdt"], **market}],
            }
        )


# --------------------------------------------------------------------------- the service

TIMEOUT = 30.0
SENT = {
    # symbol: (price, quantity, buyer is maker: the aggressor sold)
    "btcusdt": [(100.0, 0.5, False), (101.5, 2.0, True), (99.5, 1.25, False), (100.25, 4.0, True)],
    "ethusdt": [(10.0, 3.0, True), (10.5, 1.0, False)],
}


async def test_the_service_exports_and_stores_what_the_stored_trades_give(
    tmp_path: Path,
) -> None:
    """Real clock (the writer uses threads): one-second intervals, so the trades may fall
    in one or two of them; the rows must be exactly what the stored trades give."""
    data_dir = tmp_path / "data"
    large = 1.5
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = parse_settings(
                {
                    "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                    "storage": {"data_dir": str(data_dir)},
                    "analytics": {"enabled": True, "interval_secs": 1, "table": True},
                    "markets": [
                        {
                            "exchange": "binance",
                            "symbols": ["btcusdt", "ethusdt"],
                            "feeds": ["trades"],
                            "base_url": fake.url,
                            "large_trade_size": {"btcusdt": large},
                        }
                    ],
                }
            )
            service = await start_service(nursery, settings)
            samples = await fetch_metrics(service.port)
            labels = {"exchange": "binance", "symbol": "BTCUSDT"}
            assert sample(samples, "collector_analytics_large_trades_total", **labels) == 0
            assert sample(samples, "collector_analytics_trades", **labels) == 0
            written = {"exchange": "binance", "data_type": "analytics"}
            assert sample(samples, "collector_rows_written_total", **written) == 0
            await fake.wait_subscribed()
            # The second the service started in is not reported: send once one was.
            started = sample(samples, "collector_analytics_interval_end_seconds", **labels)
            while sample(samples, "collector_analytics_interval_end_seconds", **labels) == started:
                await trio.sleep(0.05)
                samples = await fetch_metrics(service.port)
            for symbol, sent in SENT.items():
                for i, (price, qty, maker) in enumerate(sent):
                    frame = trade_frame(symbol, i + 1, price, qty, 1_700_000_000_000_000, maker)
                    assert await fake.send(frame) == 1
            # Both large BTCUSDT trades counted once their intervals completed.
            while True:
                samples = await fetch_metrics(service.port)
                if sample(samples, "collector_analytics_large_trades_total", **labels) >= 2:
                    break
                await trio.sleep(0.05)
            scraped = {
                name: sample(samples, f"collector_analytics_{name}", **labels)
                for name in ("interval_end_seconds", "trades", "volume", "vwap", "high", "low")
            }
            assert await service.stop() == 0
            nursery.cancel_scope.cancel()

    stored_trades = read_rows(data_dir, "trades")
    rows = read_rows(data_dir, "analytics")
    assert len(stored_trades) == 6
    # Recompute each (symbol, interval) from the stored trades by receive time.
    by_interval: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for t in stored_trades:
        start_us = t["timestamp_collector"] // 1_000_000 * 1_000_000
        by_interval[t["symbol"], start_us].append(t)
    reported = {(r["symbol"], r["interval_start"]): r for r in rows}
    for (symbol, start_us), trades in by_interval.items():
        row = reported[symbol, start_us]
        volume = sum(t["size"] for t in trades)
        assert row["trades"] == len(trades)
        assert row["volume"] == pytest.approx(volume)
        assert row["vwap"] == pytest.approx(sum(t["price"] * t["size"] for t in trades) / volume)
        assert row["high"] == max(t["price"] for t in trades)
        assert row["low"] == min(t["price"] for t in trades)
        assert row["buy_volume"] == pytest.approx(
            sum(t["size"] for t in trades if t["side"] == "buy")
        )
        assert row["sell_volume"] == pytest.approx(
            sum(t["size"] for t in trades if t["side"] == "sell")
        )
        threshold = large if symbol == "BTCUSDT" else None
        assert row["large_trade_size"] == threshold
        assert row["large_trades"] == sum(
            1 for t in trades if threshold is not None and t["size"] >= threshold
        )
        assert row["timestamp_exchange"] - row["interval_start"] == 1_000_000
    # Every other reported interval of a pair is quiet.
    assert sum(r["trades"] for r in rows) == 6
    # The scrape showed one completed interval's figures: the row of that interval.
    end_us = round(scraped["interval_end_seconds"] * 1e6)
    (row,) = [
        r for r in rows
        if r["symbol"] == "BTCUSDT" and r["timestamp_exchange"] == end_us
    ]  # fmt: skip
    assert scraped["trades"] == row["trades"]
    assert scraped["volume"] == row["volume"]
    if row["trades"]:
        assert (scraped["vwap"], scraped["high"], scraped["low"]) == (
            row["vwap"],
            row["high"],
            row["low"],
        )
    else:
        assert math.isnan(scraped["vwap"])


def test_a_batch_mixing_pairs_times_and_types_counts_each_trade_once_where_it_belongs() -> None:
    """The hot path looks figures up once per run of one pair and receive time: runs that
    interleave must give what the trades one by one give."""
    minute = NOON + MINUTE_US
    sol = ("binance", "SOLUSDT")
    mixed: list[Event] = [
        trade(minute, 100.0, 2.0, "buy"),
        trade(minute, 10.0, 1.0, "sell", ETH),
        trade(minute, 101.0, 1.0, "sell"),
        Status("binance", "BTCUSDT", None, minute, None, "connected"),
        trade(minute, 102.0, 3.0, None),
        trade(minute, 5.0, 9.0, "buy", sol),
        trade(minute + 1, 103.0, 1.0, "buy"),
        trade(minute + 1, 11.0, 2.0, "buy", ETH),
        trade(minute + MINUTE_US, 104.0, 4.0, "sell"),  # the next minute
    ]
    together = analytics(Metrics(), NOON)
    together(mixed)
    alone = analytics(Metrics(), NOON)
    for event in mixed:
        alone([event])
    end = NOON + 3 * MINUTE_US + round(CLOSE_DELAY_SECS * 1e6)
    rows = due(together, end)
    assert rows == due(alone, end)
    assert [(r.symbol, r.interval_start, r.trades, r.volume, r.large_trades) for r in rows] == [
        ("BTCUSDT", minute, 4, 7.0, 2),
        ("ETHUSDT", minute, 2, 3.0, 0),
        ("BTCUSDT", minute + MINUTE_US, 1, 4.0, 1),
        ("ETHUSDT", minute + MINUTE_US, 0, 0.0, 0),
    ]


def series_symbols(metrics: Metrics, name: str = "trades") -> set[str]:
    return {
        sample.labels["symbol"]
        for family in metrics.registry.collect()
        if family.name == f"collector_analytics_{name}"
        for sample in family.samples
    }


def test_top_n_bounds_the_series_to_the_largest_notional_and_rows_cover_every_pair() -> None:
    metrics = Metrics()
    sol = ("binance", "SOLUSDT")
    a = TradeAnalytics(
        {BTC: 1.0, ETH: 1.0, sol: 1.0},
        60,
        metrics.analytics,
        table=True,
        now_us=NOON + 10_000_000,
        top_n=2,
    )
    assert series_symbols(metrics) == set()  # none before the first completed interval
    minute = NOON + MINUTE_US
    # Notional: BTC 100 x 1 = 100, ETH 100 x 1 + 10 x 20 = 300,
    # SOL 1 x 50 = 50 (the largest size, the smallest notional).
    a([trade(minute, 100.0, 1.0, "buy"), trade(minute, 100.0, 1.0, "buy", ETH)])
    a([trade(minute + 1, 10.0, 20.0, "sell", ETH), trade(minute + 2, 1.0, 50.0, "buy", sol)])
    rows = due(a, NOON + 2 * MINUTE_US + 1_000_000)
    assert {row.symbol for row in rows} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert series_symbols(metrics) == {"BTCUSDT", "ETHUSDT"}
    assert series_symbols(metrics, "large_trades") == {"BTCUSDT", "ETHUSDT"}
    assert metric(metrics, "trades", ETH) == 2
    assert metric(metrics, "large_trades_total", ETH) == 2

    # The next minute SOL trades most: ETH's series go, SOL's come (from 0).
    minute += MINUTE_US
    a([trade(minute, 1.0, 1000.0, "buy", sol), trade(minute + 1, 100.0, 1.0, "buy")])
    due(a, NOON + 3 * MINUTE_US + 1_000_000)
    assert series_symbols(metrics) == {"BTCUSDT", "SOLUSDT"}
    assert metric(metrics, "volume", sol) == 1000.0
    assert metric(metrics, "large_trades_total", sol) == 1

    # A quiet minute: ties by pair.
    due(a, NOON + 4 * MINUTE_US + 1_000_000)
    assert series_symbols(metrics) == {"BTCUSDT", "ETHUSDT"}
    a.uncover([BTC])
    assert series_symbols(metrics) == {"ETHUSDT"}
