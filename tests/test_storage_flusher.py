"""The flusher alone, with test-owned channels: journals, size rotation, retries in place."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import trio
import trio.testing

from collector.config import StorageSettings
from collector.events import Trade
from collector.metrics import Metrics
from collector.storage import journal as journal_module
from collector.storage.columns import ColumnBuffer, to_record_batch
from collector.storage.flusher import RetiredFile, run_flusher
from collector.storage.journal import open_journal_table
from collector.storage.layout import journal_path
from collector.storage.router import HOUR_US, KEY_COLUMNS, FileKey, FlushWork, StreamRows
from collector.storage.schemas import schema_for
from tests.real_time import fail_after_real

HOUR = 476_268  # 2024-05-01T12:00Z as an hour index
NOON = HOUR * HOUR_US
DAY = "2024-05-01"


def trade(ts_us: int, n: int, symbol: str = "BTCUSDT") -> Trade:
    return Trade("binance", symbol, None, ts_us, n, f"id-{n}", 60000.0 + n, 0.5, "buy")


def key(symbol: str = "BTCUSDT") -> FileKey:
    return ("binance", symbol, "trades", HOUR)


def stream(trades: list[Trade]) -> StreamRows:
    columns = ColumnBuffer("trades", KEY_COLUMNS)
    for event in trades:
        columns.add(event)
    return StreamRows(trades[0].timestamp_collector, columns)


def journaled(path: Path) -> list[int]:
    """The ``sequence`` column of the rows in ``path``'s journal."""
    with open_journal_table(journal_path(path)) as table:
        assert table is not None
        return list(table.column("sequence").to_pylist())


@dataclass
class Flusher:
    work: trio.MemorySendChannel[FlushWork]
    retired: trio.MemoryReceiveChannel[RetiredFile]
    metrics: Metrics
    data_dir: Path

    def rows_written(self) -> float:
        return self.metrics.sum_samples("collector_rows_written_total")


@asynccontextmanager
async def open_flusher(tmp_path: Path, **settings: Any) -> AsyncIterator[Flusher]:
    data_dir = tmp_path / "data"
    storage = StorageSettings(data_dir=str(data_dir), **settings)
    metrics = Metrics()
    work_out, work_in = trio.open_memory_channel[FlushWork](0)
    retired_out, retired_in = trio.open_memory_channel[RetiredFile](16)
    async with fail_after_real(), trio.open_nursery() as nursery:
        await nursery.start(partial(run_flusher, storage, work_in, retired_out, metrics))
        with work_out, retired_in:
            yield Flusher(work_out, retired_in, metrics, data_dir)


async def test_rows_are_journaled_and_a_retired_key_passes_its_file_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_flusher(tmp_path) as f:
        await f.work.send(FlushWork({key(): stream([trade(NOON + 5, 0), trade(NOON + 9, 1)])}))
        eth = stream([trade(NOON + 7, 2, "ETHUSDT")])
        await f.work.send(FlushWork({key(): stream([trade(NOON, 3)]), key("ETHUSDT"): eth}))
        await f.work.send(FlushWork(retired=(key(),)))
        passed = await f.retired.receive()
        assert passed == RetiredFile(
            f.data_dir / f"binance/BTCUSDT/trades/{DAY}/{NOON // 1000}.parquet",
            "binance",
            "trades",
        )
        assert journaled(passed.path) == [0, 1, 3]  # in the order of the work
        assert f.rows_written() == 4
        assert f.metrics.sample("collector_open_files") == 2
        # The ETH file stays open until the work ends.
        assert f.retired.statistics().current_buffer_used == 0
        await f.work.aclose()
        [eth_file] = [retired async for retired in f.retired]
    assert journaled(eth_file.path) == [2]


async def test_a_journal_past_the_size_limit_is_passed_on_and_the_next_rows_open_a_new_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    one = to_record_batch("trades", [trade(NOON, 0), trade(NOON, 1)]).serialize().size
    limit = schema_for("trades").serialize().size + one  # reached by the first flush
    async with open_flusher(tmp_path, max_file_size_mb=limit / 1024 / 1024) as f:
        await f.work.send(FlushWork({key(): stream([trade(NOON, 0), trade(NOON, 1)])}))
        first = await f.retired.receive()
        assert journaled(first.path) == [0, 1]
        await f.work.send(FlushWork({key(): stream([trade(NOON + 2000, 2)])}))
        await f.work.aclose()
        [second] = [retired async for retired in f.retired]
    assert second.path == first.path.with_name(f"{(NOON + 2000) // 1000}.parquet")
    assert journaled(second.path) == [2]


async def test_a_failing_disk_is_retried_in_place_and_nothing_later_passes_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = journal_module._pwrite_all
    attempts: list[float] = []

    def fails_four_times(fd: int, data: pa.Buffer, offset: int) -> None:
        if offset == 0:  # the schema: the first write of each attempt to open the journal
            attempts.append(trio.from_thread.run_sync(trio.current_time))
            if len(attempts) <= 4:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(journal_module, "_pwrite_all", fails_four_times)
    taken_at: list[float] = []
    async with open_flusher(tmp_path, flush_interval_secs=1.0) as f, trio.open_nursery() as n:
        t0 = trio.current_time()
        await f.work.send(FlushWork({key(): stream([trade(NOON, 0), trade(NOON, 1)])}))

        async def send_next() -> None:
            await f.work.send(FlushWork({key(): stream([trade(NOON, 2)])}, retired=(key(),)))
            taken_at.append(trio.current_time())

        n.start_soon(send_next)
        passed = await f.retired.receive()
        # A retry every flush interval; the next work is taken only after the last one.
        assert [t - t0 for t in attempts] == [0, 1, 2, 3, 4]
        assert [t - t0 for t in taken_at] == [4]
        assert f.metrics.sample("collector_writer_errors_total", {"stage": "flush"}) == 4
    assert journaled(passed.path) == [0, 1, 2]


async def test_the_end_of_work_passes_every_open_file_on_and_closes_the_channel(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_flusher(tmp_path) as f:
        await f.work.send(
            FlushWork({key(s): stream([trade(NOON, i, s)]) for i, s in enumerate(["A", "B", "C"])})
        )
        await f.work.aclose()
        passed = [retired async for retired in f.retired]
    assert [p.path.parts[-4] for p in passed] == ["A", "B", "C"]
    assert [journaled(p.path) for p in passed] == [[0], [1], [2]]
