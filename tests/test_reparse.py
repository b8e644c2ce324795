"""Re-parse from raw: record through the whole service with the raw feed on (Binance trades
and a diff book with REST snapshots, across a reconnect), then rebuild the tables from the
raw rows alone and compare them with what the service wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from collector.cli import main
from collector.config import Settings
from collector.planning import plan_service
from collector.reader import DataReader
from collector.reparse import ReparseError, run_reparse
from collector.settings_check import parse_settings
from tests.fakes.binance import FakeBinance, depth_diff_frame, trade_frame
from tests.fakes.binance_rest import FakeBinanceRest
from tests.procs import without_order
from tests.test_service import start_service

TIMEOUT = 20.0
T0 = 1_700_000_000_000_000
SNAPSHOT_PATH = "/api/v3/depth?symbol=BTCUSDT&limit=1000"
# Rows the connection task writes, not the session: a replay does not rebuild them.
CONNECTION_EVENTS = {"connected", "disconnected", "discarded", "silent", "handover", "poll_error"}


def recording_settings(data_dir: Path, ws_url: str, rest_url: str) -> Settings:
    return parse_settings(
        {
            "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
            "storage": {"data_dir": str(data_dir)},
            "websocket": {"initial_retry_delay_secs": 0.05},
            "markets": [
                {
                    "exchange": "binance",
                    "symbols": ["btcusdt"],
                    "feeds": ["trades", "orderbook", "raw"],
                    "book_mode": "diff",
                    "base_url": ws_url,
                    "rest_url": rest_url,
                }
            ],
        }
    )


def rows(location: Path, data_type: str) -> list[dict[str, Any]]:
    """Every row of ``data_type``, in receive order (ties in written order), without
    ``collector_seq`` (the writer's numbering of its own run: a reparse numbers afresh),
    once it is checked to increase in written order."""
    table = DataReader(location).table(data_type)
    found = [row for row in without_order(table.to_pylist()) if row.pop("date") is not None]
    return sorted(found, key=lambda r: r["timestamp_collector"])


async def record(data_dir: Path) -> Settings:
    """Run the service against the fakes: a REST snapshot joins the deltas, a gap asks for
    another, then the venue drops the connection and the next attempt syncs afresh."""
    ws, rest = FakeBinance(), FakeBinanceRest()
    rest.set_book("BTCUSDT", 105, bids=[(100.0, 5.0), (99.0, 1.0)], asks=[(101.0, 2.0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(ws.run)
        await nursery.start(rest.run)
        settings = recording_settings(data_dir, ws.url, rest.url)
        service = await start_service(nursery, settings)
        with trio.fail_after(TIMEOUT):
            await ws.wait_subscribed(["btcusdt@depth@100ms", "btcusdt@trade"])
            await ws.send(depth_diff_frame("btcusdt", 95, 100, [(100.0, 4.0)], [], T0))
            await ws.send(trade_frame("btcusdt", 1, 100.5, 0.25, T0 + 1, True))
            await ws.send(depth_diff_frame("btcusdt", 101, 110, [(100.0, 5.0)], [], T0 + 2))
            await rest.wait_requests(1)
            await trio.testing.wait_all_tasks_blocked(0.05)
            await ws.send(depth_diff_frame("btcusdt", 111, 120, [], [(101.0, 0.0)], T0 + 3))
            await ws.send(trade_frame("btcusdt", 2, 100.25, 1.5, T0 + 4, False))
            # 121..129 never come: a gap, and a fresh snapshot.
            rest.set_book("BTCUSDT", 135, bids=[(100.0, 1.0)], asks=[(102.0, 3.0)])
            await ws.send(depth_diff_frame("btcusdt", 130, 140, [(99.0, 0.0)], [], T0 + 5))
            await rest.wait_requests(2)
            await trio.testing.wait_all_tasks_blocked(0.05)
            await ws.send(depth_diff_frame("btcusdt", 141, 150, [(98.0, 7.0)], [], T0 + 6))
            await trio.testing.wait_all_tasks_blocked(0.05)

            await ws.drop()  # the next attempt gets a session of its own
            rest.set_book("BTCUSDT", 305, bids=[(97.0, 2.0)], asks=[(103.0, 1.0)])
            await ws.wait_connected(2)
            await ws.wait_subscribed(["btcusdt@depth@100ms", "btcusdt@trade"])
            await ws.send(depth_diff_frame("btcusdt", 300, 310, [(97.0, 2.5)], [], T0 + 7))
            await rest.wait_requests(3)
            await trio.testing.wait_all_tasks_blocked(0.05)
            await ws.send(depth_diff_frame("btcusdt", 311, 320, [], [(103.0, 4.0)], T0 + 8))
            await ws.send(trade_frame("btcusdt", 3, 101.0, 2.0, T0 + 9, True))
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert await service.stop() == 0
        nursery.cancel_scope.cancel()
    assert rest.requests == [SNAPSHOT_PATH] * 3
    return settings


async def test_reparse_rebuilds_the_recorded_tables_from_the_raw_feed(tmp_path: Path) -> None:
    data_dir, out_dir = tmp_path / "data", tmp_path / "reparsed"
    settings = await record(data_dir)

    raw = rows(data_dir, "raw")
    rest_rows = [r for r in raw if r["direction"] == "rest"]
    assert len(rest_rows) == 3
    assert {r["url"] for r in rest_rows} == {rest_rows[0]["url"]}
    assert rest_rows[0]["url"].endswith(SNAPSHOT_PATH)
    opens = [r for r in raw if r["direction"] == "open"]
    assert len(opens) == 2  # one per connection attempt, each naming its attempt
    assert {r["sequence"] for r in raw} == {r["sequence"] for r in opens}

    with trio.fail_after(TIMEOUT):
        report = await run_reparse(plan_service(settings), DataReader(data_dir).source, out_dir)
    assert (report.attempts, report.bodies, report.unmatched, report.unplanned) == (2, 3, 0, 0)

    for data_type in ("trades", "orderbook"):
        recorded, rebuilt = rows(data_dir, data_type), rows(out_dir, data_type)
        assert rebuilt == recorded, data_type
    books = rows(out_dir, "orderbook")
    snapshots = [(r["first_sequence"], r["sequence"]) for r in books if r["kind"] == "snapshot"]
    # Each snapshot came after a delta past it: the row holds that delta too.
    assert snapshots == [(105, 110), (135, 140), (305, 310)]
    assert len(rows(out_dir, "trades")) == 3

    recorded_status = [r for r in rows(data_dir, "status") if r["event"] not in CONNECTION_EVENTS]
    rebuilt_status = rows(out_dir, "status")
    assert {r["event"] for r in recorded_status} >= {"gap", "resync", "subscribed"}
    assert rebuilt_status == recorded_status
    assert not (out_dir / "binance" / "_all").exists()  # no raw rows are written again


async def test_reparse_refuses_to_write_into_the_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = recording_settings(data_dir, "ws://127.0.0.1:9", "http://127.0.0.1:9")
    source = DataReader(data_dir).source
    for out in (data_dir, data_dir / "sub", tmp_path):
        with pytest.raises(ReparseError, match="overlaps the data directory"):
            await run_reparse(plan_service(settings), source, out)
    assert list(data_dir.iterdir()) == []


def test_the_reparse_command_refuses_an_output_that_is_the_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "settings.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{data_dir}"\n'
        '[[markets]]\nexchange = "binance"\nsymbols = ["BTCUSDT"]\nfeeds = ["trades", "raw"]\n'
    )
    code = main(["reparse", "--config", str(config), "--out", str(data_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("collector: error: ")
    assert "overlaps the data directory" in err
