"""``collector_seq``: every stream's rows carry the order the writer received them in,
strictly increasing across files, rotations and restarts (collector/storage/router.py)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
import trio
import trio.testing

from collector.events import Event, Status
from collector.storage.router import SEQ_PER_US
from tests.test_storage_writer import (
    NOON,
    Harness,
    files,
    next_finished,
    open_writer,
    settle,
    trade,
    us,
)


def rows_are(h: Harness, count: int) -> bool:
    return h.rows_written() == count


def seqs(path: Path) -> list[int]:
    return list(pq.read_table(path, columns=["collector_seq"]).column(0).to_pylist())


def ids(path: Path) -> list[str]:
    return list(pq.read_table(path, columns=["trade_id"]).column(0).to_pylist())


async def test_rows_of_one_read_share_a_receive_time_but_not_a_number(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Three reads; every row of a read has the same timestamp_collector.
    reads: list[list[Event]] = [[trade(NOON + r, 3 * r + i) for i in range(3)] for r in range(3)]
    async with open_writer(tmp_path, NOON) as h:
        for batch in reads:
            await h.send.send(batch)
        [path] = await h.finish()
    assert ids(path) == [f"id-{n:06d}" for n in range(9)]
    # The run's numbers start at its start time in nanoseconds and count up by one.
    assert seqs(path) == [NOON * SEQ_PER_US + n for n in range(9)]
    # Delta-encoded: consecutive numbers take next to nothing.
    meta = pq.read_metadata(path)
    index = meta.schema.to_arrow_schema().get_field_index("collector_seq")
    assert "DELTA_BINARY_PACKED" in meta.row_group(0).column(index).encodings


async def test_numbers_run_on_across_hourly_rotation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    before = [us("2024-05-01T23:59:59.700"), us("2024-05-01T23:59:59.999999")]
    after = [us("2024-05-02T00:00:00"), us("2024-05-02T00:00:00.400")]
    start = us("2024-05-01T23:59:58.500")
    async with open_writer(tmp_path, start) as h:
        t0 = trio.current_time()
        # One batch across midnight, interleaved; then more rows in the new hour, and a
        # status row (its own stream, numbered on its own).
        await h.send.send([trade(before[0], 0), trade(after[0], 2), trade(before[1], 1)])
        await h.send.send(
            [trade(after[1], 3), Status("binance", "BTCUSDT", None, after[1], None, "connected")]
        )
        await trio.sleep_until(t0 + 2.0)
        first = await next_finished(autojump_clock, h)
        await h.send.send([trade(after[1] + 1, 4)])
        rest = await h.finish()
    [second] = [p for p in rest if "/trades/" in p.as_posix()]
    [status] = [p for p in rest if "/status/" in p.as_posix()]
    base = start * SEQ_PER_US
    # The earlier hour's rows come first within a work (their receive times are earlier).
    assert ids(first) == ["id-000000", "id-000001"]
    assert seqs(first) == [base, base + 1]
    assert ids(second) == ["id-000002", "id-000003", "id-000004"]
    assert seqs(second) == [base + 2, base + 3, base + 4]
    assert seqs(status) == [base]


async def test_numbers_run_on_across_size_rotation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_writer(tmp_path, NOON, max_file_size_mb=1e-9) as h:
        t0 = trio.current_time()
        for n in range(3):
            await h.send.send([trade(NOON + n, 2 * n), trade(NOON + n, 2 * n + 1)])
            await trio.sleep_until(t0 + n + 1.0)
            await settle(autojump_clock, partial(rows_are, h, 2 * n + 2))
        paths = await h.finish()
    trades = sorted(p for p in paths if "/trades/" in p.as_posix())
    assert len(trades) == 3
    numbers = [seq for path in trades for seq in seqs(path)]
    assert numbers == [NOON * SEQ_PER_US + n for n in range(6)]


async def test_a_clean_restart_numbers_above_the_previous_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_writer(tmp_path, NOON) as h:
        for n in range(5):
            await h.send.send([trade(NOON + n, n)])
        [first] = await h.finish()
    # The next run starts one second later: every number is higher than the first run's.
    async with open_writer(tmp_path, NOON + 1_000_000) as h2:
        await h2.send.send([trade(NOON + 1_000_000, 5)])
        [second] = await h2.finish()
    assert max(seqs(first)) < min(seqs(second)) == (NOON + 1_000_000) * SEQ_PER_US


async def test_after_a_crash_numbers_stay_above_the_recovered_files_even_if_the_clock_went_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_writer(tmp_path, NOON) as h:
        await h.send.send([trade(NOON + n, n) for n in range(4)])
        await trio.sleep_until(trio.current_time() + 1.0)
        await settle(autojump_clock, lambda: h.rows_written() == 4)
        h.nursery.cancel_scope.cancel()  # killed: the journal stays for recovery
    assert len(files(h.data_dir, "*.journal.arrows")) == 1

    # The wall clock is an hour behind the crashed run's start now.
    behind = NOON - 3_600_000_000
    async with open_writer(tmp_path, behind) as h2:
        recovered = await next_finished(autojump_clock, h2)
        await h2.send.send([trade(behind, 10), trade(behind, 11)])
        paths = await h2.finish()
    old = seqs(recovered)
    assert old == [NOON * SEQ_PER_US + n for n in range(4)]
    [new] = [p for p in paths if "/trades/" in p.as_posix()]
    assert ids(new) == ["id-000010", "id-000011"]
    assert seqs(new) == [old[-1] + 1, old[-1] + 2]
