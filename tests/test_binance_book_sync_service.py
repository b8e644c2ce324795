"""Binance diff depth through the whole service: deltas over the fake WebSocket, the book
snapshot over the fake REST API, both in Parquet with the status rows that tie them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import trio
import trio.testing

from collector.settings_check import parse_settings
from tests.fakes.binance import FakeBinance, depth_diff_frame
from tests.fakes.binance_rest import FakeBinanceRest
from tests.test_service import start_service

TIMEOUT = 15.0
T0 = 1_700_000_000_000_000


def read_rows(data_dir: Path, data_type: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(data_dir.rglob(f"binance/BTCUSDT/{data_type}/**/*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


async def test_diff_depth_records_deltas_and_a_rest_snapshot_that_joins_them(
    tmp_path: Path,
) -> None:
    ws, rest = FakeBinance(), FakeBinanceRest()
    rest.fail_next = [429]  # the first snapshot request is refused: it must be retried
    rest.set_book("BTCUSDT", 105, bids=[(100.0, 5.0), (99.0, 1.0)], asks=[(101.0, 2.0)])
    data_dir = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        await nursery.start(ws.run)
        await nursery.start(rest.run)
        settings = parse_settings(
            {
                "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                "storage": {"data_dir": str(data_dir)},
                "markets": [
                    {
                        "exchange": "binance",
                        "symbols": ["btcusdt"],
                        "feeds": ["orderbook"],
                        "book_mode": "diff",
                        "base_url": ws.url,
                        "rest_url": rest.url,
                    }
                ],
            }
        )
        service = await start_service(nursery, settings)
        with trio.fail_after(TIMEOUT):
            await ws.wait_subscribed(["btcusdt@depth@100ms"])
            await ws.send(depth_diff_frame("btcusdt", 95, 100, [(100.0, 4.0)], [], T0))
            await ws.send(depth_diff_frame("btcusdt", 101, 110, [(100.0, 5.0)], [], T0 + 1))
            await rest.wait_requests(2)  # refused once (HTTP 429), then answered
            await trio.testing.wait_all_tasks_blocked(0.05)
            await ws.send(depth_diff_frame("btcusdt", 111, 120, [], [(101.0, 0.0)], T0 + 2))
            await ws.send(depth_diff_frame("btcusdt", 130, 140, [(99.0, 0.0)], [], T0 + 3))
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert await service.stop() == 0
        nursery.cancel_scope.cancel()

    # Refused, retried; a third may have been asked for after the gap before shutdown.
    assert rest.requests[:2] == ["/api/v3/depth?symbol=BTCUSDT&limit=1000"] * 2
    books = read_rows(data_dir, "orderbook")
    deltas = [(r["first_sequence"], r["sequence"]) for r in books if r["kind"] == "delta"]
    assert deltas == [(95, 100), (101, 110), (111, 120), (130, 140)]
    [snapshot] = [r for r in books if r["kind"] == "snapshot"]
    # Delta 101..110 came before the snapshot and is not in it: the row holds it (as of 110).
    assert (snapshot["first_sequence"], snapshot["sequence"]) == (105, 110)
    assert snapshot["bids"] == [{"price": 100.0, "size": 5.0}, {"price": 99.0, "size": 1.0}]
    assert snapshot["asks"] == [{"price": 101.0, "size": 2.0}]

    status = read_rows(data_dir, "status")
    [resync] = [r for r in status if r["event"] == "resync"]
    assert (resync["data_type"], resync["received_sequence"]) == ("orderbook", 105)
    # 121..129 never arrived: a gap row, and the gap asks for a fresh snapshot.
    [gap] = [r for r in status if r["event"] == "gap"]
    assert (gap["expected_sequence"], gap["received_sequence"], gap["count"]) == (121, 130, 9)


async def test_a_crossed_book_fetches_a_new_snapshot_and_goes_on(tmp_path: Path) -> None:
    """A delta that crosses the book: a gap row saying so, a second REST snapshot of that
    symbol with a resync row naming the reason, the metric by reason, and the deltas after
    it checked against the new book."""
    ws, rest = FakeBinance(), FakeBinanceRest()
    rest.set_book("BTCUSDT", 105, bids=[(100.0, 5.0)], asks=[(101.0, 2.0)])
    data_dir = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        await nursery.start(ws.run)
        await nursery.start(rest.run)
        settings = parse_settings(
            {
                "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                "storage": {"data_dir": str(data_dir)},
                "markets": [
                    {
                        "exchange": "binance",
                        "symbols": ["btcusdt"],
                        "feeds": ["orderbook"],
                        "book_mode": "diff",
                        "base_url": ws.url,
                        "rest_url": rest.url,
                    }
                ],
            }
        )
        service = await start_service(nursery, settings)
        with trio.fail_after(TIMEOUT):
            await ws.wait_subscribed(["btcusdt@depth@100ms"])
            await rest.wait_requests(1)
            await trio.testing.wait_all_tasks_blocked(0.05)
            await ws.send(depth_diff_frame("btcusdt", 100, 110, [(100.0, 4.0)], [], T0))
            rest.set_book("BTCUSDT", 115, bids=[(100.5, 1.0)], asks=[(101.0, 2.0)])
            await ws.send(depth_diff_frame("btcusdt", 111, 112, [(101.0, 1.0)], [], T0 + 1))
            await rest.wait_requests(2)
            await trio.testing.wait_all_tasks_blocked(0.05)
            await ws.send(depth_diff_frame("btcusdt", 113, 120, [(100.5, 3.0)], [], T0 + 2))
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert service.handle is not None
            metrics = service.handle.metrics
            crossed = {"exchange": "binance", "reason": "crossed"}
            assert metrics.sample("collector_book_resyncs_total", crossed) == 1
            checksum = {"exchange": "binance", "reason": "checksum"}
            assert metrics.sample("collector_book_resyncs_total", checksum) == 0
            assert await service.stop() == 0
        nursery.cancel_scope.cancel()

    assert len(rest.requests) == 2
    status = read_rows(data_dir, "status")
    [gap] = [r for r in status if r["event"] == "gap"]
    assert (gap["data_type"], gap["detail"]) == (
        "orderbook",
        "crossed book: best bid 101.0 >= best ask 101.0; fetching a new REST snapshot",
    )
    resyncs = [r["detail"] for r in status if r["event"] == "resync"]
    assert resyncs == [
        "REST depth snapshot lastUpdateId=105",
        "REST depth snapshot lastUpdateId=115 after a crossed book",
    ]
    books = read_rows(data_dir, "orderbook")
    assert [(r["kind"], r["sequence"]) for r in books] == [
        ("snapshot", 105),
        ("delta", 110),
        ("delta", 112),
        ("snapshot", 115),
        ("delta", 120),
    ]
