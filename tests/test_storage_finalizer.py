"""The finalizer alone, with test-owned channels: Parquet files and their paths, in order."""

from __future__ import annotations

import errno
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import trio
import trio.testing

from collector.config import StorageSettings
from collector.events import Trade
from collector.metrics import Metrics
from collector.storage import finalizer as finalizer_module
from collector.storage.columns import to_record_batch
from collector.storage.finalize import finalize_journal
from collector.storage.finalizer import run_finalizer
from collector.storage.flusher import RetiredFile
from collector.storage.journal import Journal
from collector.storage.layout import journal_path
from collector.storage.schemas import schema_for
from tests.real_time import fail_after_real

NOON = 1_714_564_800_000_000


def trade(n: int) -> Trade:
    return Trade("binance", "BTCUSDT", None, NOON + n, n, f"id-{n}", 60000.0 + n, 0.5, "buy")


def retired_file(tmp_path: Path, name: str, sequences: list[int]) -> RetiredFile:
    """A closed journal holding one batch of ``sequences`` (none: only the schema)."""
    path = tmp_path / f"{name}.parquet"
    journal = Journal.create(journal_path(path), schema_for("trades"))
    if sequences:
        journal.append(to_record_batch("trades", [trade(n) for n in sequences]))
    journal.close()
    return RetiredFile(path, "binance", "trades")


def sequences(path: Path) -> list[int]:
    return list(pq.read_table(path).column("sequence").to_pylist())


async def test_files_are_finalized_and_sent_in_order_after_the_recovered_ones(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    metrics = Metrics()
    metrics.open_files.set(3)
    retired_out, retired_in = trio.open_memory_channel[RetiredFile](16)
    finished_out, finished = trio.open_memory_channel[Path](16)
    files = [
        retired_file(tmp_path, "b", [1, 2]),
        retired_file(tmp_path, "empty", []),
        retired_file(tmp_path, "a", [3]),
    ]
    recovered = tmp_path / "recovered.parquet"
    async with fail_after_real(), trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_finalizer,
                StorageSettings(),
                retired_in,
                finished_out,
                metrics,
                recovered=[recovered],
            )
        )
        with retired_out:
            for file in files:
                await retired_out.send(file)
        sent = [path async for path in finished]  # ends when the finalizer closes it
    assert sent == [recovered, files[0].path, files[2].path]  # the empty journal: no file
    assert [sequences(files[0].path), sequences(files[2].path)] == [[1, 2], [3]]
    assert not any(journal_path(file.path).exists() for file in files)
    assert not files[1].path.exists()
    assert metrics.sample("collector_open_files") == 0
    assert metrics.sum_samples("collector_files_finished_total") == 2
    assert metrics.sample("collector_parquet_bytes_written_total") == sum(
        file.path.stat().st_size for file in (files[0], files[2])
    )


async def test_a_disk_error_is_retried_with_a_growing_delay_and_the_next_file_waits(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = finalize_journal
    attempts: list[tuple[str, float]] = []

    def fails_three_times(journal: Path, final: Path, **kwargs: Any) -> int | None:
        attempts.append((final.stem, trio.from_thread.run_sync(trio.current_time)))
        if len(attempts) <= 3:
            raise OSError(errno.EIO, "I/O error")
        return real(journal, final, **kwargs)

    monkeypatch.setattr(finalizer_module, "finalize_journal", fails_three_times)
    monkeypatch.setattr(finalizer_module, "MAX_RETRY_DELAY_SECS", 1.5)
    metrics = Metrics()
    retired_out, retired_in = trio.open_memory_channel[RetiredFile](16)
    finished_out, finished = trio.open_memory_channel[Path](16)
    first, second = retired_file(tmp_path, "1", [1]), retired_file(tmp_path, "2", [2])
    async with fail_after_real(), trio.open_nursery() as nursery:
        settings = StorageSettings(flush_interval_secs=0.5)
        await nursery.start(partial(run_finalizer, settings, retired_in, finished_out, metrics))
        t0 = trio.current_time()
        with retired_out:
            await retired_out.send(first)
            await retired_out.send(second)
        sent = [path async for path in finished]
    assert [(name, t - t0) for name, t in attempts] == [
        ("1", 0),
        ("1", 0.5),  # one flush interval
        ("1", 1.5),  # twice that
        ("1", 3.0),  # capped
        ("2", 3.0),
    ]
    assert sent == [first.path, second.path]
    assert metrics.sample("collector_writer_errors_total", {"stage": "finalize"}) == 3
    assert sequences(first.path) == [1]
