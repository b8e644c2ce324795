"""The binary column outlet with the real service and the fake Binance, and the
``export-binary`` command on the Parquet files the same run wrote.

The column files are read back with fixed-width parsing (:mod:`tests.binary_read`) and
compared with the rows of the finished Parquet files; then ``export-binary`` rebuilds them
from those Parquet files and must give the same bytes. Quotes and trades are sent in
phases, each waited for through the outlet's metrics, so every trade's quote is known
(receive times of frames sent together may be equal, and the export orders a quote first
at an equal time). Real Trio clock; every wait bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio

from collector.binary.columns import MD, TRADES
from collector.binary.files import table_dir
from collector.cli import main
from collector.service import EXIT_OK
from tests.binary_read import f32, read_set
from tests.fakes.binance import FakeBinance, book_ticker_frame, depth20_frame
from tests.procs import read_rows
from tests.test_http import fetch_metrics, sample
from tests.test_outlets_service import outlet_settings, wait_for
from tests.test_service import start_service, trades

TIMEOUT = 40.0


async def test_the_column_files_hold_the_stored_trades_and_export_gives_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, live, exported = tmp_path / "data", tmp_path / "live", tmp_path / "exported"
    binary = {"enabled": True, "dir": str(live)}
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            service = await start_service(
                nursery, outlet_settings(fake.url, data_dir, binary=binary)
            )
            await fake.wait_subscribed()

            async def used(data_type: str, count: int) -> None:
                async def done() -> bool:
                    samples = await fetch_metrics(service.port)
                    labels = {"outlet": "binary", "data_type": data_type}
                    return sample(samples, "collector_outlet_delivered_total", **labels) >= count

                await wait_for(done)

            # ETHUSDT: trades before any quote, then after a ticker.
            for frame in trades("ethusdt", range(1, 4)):
                assert await fake.send(frame) == 1
            await used("trades", 3)
            assert await fake.send(book_ticker_frame("ethusdt", 1, 10.5, 1.0, 11.25, 2.0)) == 1
            await used("ticker", 1)
            for frame in trades("ethusdt", range(4, 7)):
                assert await fake.send(frame) == 1
            await used("trades", 6)
            # BTCUSDT: a book snapshot, trades, a new snapshot, trades.
            assert await fake.send(depth20_frame("btcusdt", 5, [(99.0, 1.0)], [(101.0, 1.0)])) == 1
            await used("orderbook", 1)
            for frame in trades("btcusdt", range(1, 21)):
                assert await fake.send(frame) == 1
            await used("trades", 26)
            assert await fake.send(depth20_frame("btcusdt", 6, [(98.0, 1.0)], [(100.5, 1.0)])) == 1
            await used("orderbook", 2)
            for frame in trades("btcusdt", range(21, 41)):
                assert await fake.send(frame) == 1
            await used("trades", 46)
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    stored = read_rows(data_dir, "trades")
    assert len(stored) == 46
    days = {r["timestamp_collector"] // 86_400_000_000 for r in stored}
    for symbol, quotes in (
        ("ETHUSDT", [(math.nan, math.nan)] * 3 + [(10.5, 11.25)] * 3),
        ("BTCUSDT", [(99.0, 101.0)] * 20 + [(98.0, 100.5)] * 20),
    ):
        rows = [r for r in stored if r["symbol"] == symbol]
        md: list[dict[str, object]] = []
        tr: list[dict[str, object]] = []
        for day in sorted(days):
            md += read_set(table_dir(live, "binance", symbol, MD), MD, day)
            tr += read_set(table_dir(live, "binance", symbol, TRADES), TRADES, day)
        assert len(md) == len(tr) == len(rows)
        for row, m, t, (bid, ask) in zip(rows, md, tr, quotes, strict=True):
            secs, micros = divmod(row["timestamp_collector"], 1_000_000)
            side = {"buy": 1, "sell": 2}[row["side"]]
            expected = {"time": secs, "nanos": micros * 1000, "price": f32(row["price"])}
            assert {k: m[k] for k in expected} == expected == {k: t[k] for k in expected}
            assert m["volume"] == t["size"] == f32(row["size"])
            assert m["side"] == t["side"] == side
            assert t["id"] == int(row["trade_id"])
            assert t["maker_order_id"] == t["taker_order_id"] == bytes(16)
            got = (m["best_bid"], m["best_ask"])
            assert got == (f32(bid), f32(ask)) or (
                math.isnan(bid) and all(math.isnan(v) for v in got)  # type: ignore[arg-type]
            )

    assert main(["export-binary", "--data", str(data_dir), "--out", str(exported)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sorted(printed) == ["binance\tBTCUSDT\t40 trades", "binance\tETHUSDT\t6 trades"]
    live_files = sorted(p.relative_to(live) for p in live.rglob("*.bin"))
    exported_files = sorted(p.relative_to(exported) for p in exported.rglob("*.bin"))
    assert live_files == exported_files
    assert len(live_files) == 2 * 15 * len(days)
    for path in live_files:
        assert (live / path).read_bytes() == (exported / path).read_bytes(), path
    assert [p.name for p in exported.iterdir()] == ["binance"]  # no staging left behind
    # A range without trades cannot be answered (1); a time that does not parse is usage (2).
    empty = ["export-binary", "--data", str(data_dir), "--out", str(tmp_path / "none")]
    assert main([*empty, "--to", "2001-01-01"]) == 1
    assert main([*empty, "--from", "yesterday-ish"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors[0].startswith("collector: error: no trades recorded for any symbol")
    assert errors[1].startswith("collector: error: ")
    assert not (tmp_path / "none").exists()
