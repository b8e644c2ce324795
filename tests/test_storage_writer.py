"""run_writer in virtual time: flush ticks, rotation, graceful end, cancellation, disk errors."""

from __future__ import annotations

import errno
import math
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio
import trio.testing

from collector.clock import trio_wall_clock
from collector.config import StorageSettings
from collector.doorbell import Doorbell
from collector.events import (
    RAW_SYMBOL,
    BookUpdate,
    Event,
    Raw,
    Status,
    Ticker,
    Trade,
    level_pairs,
    levels_from_pairs,
)
from collector.metrics import Metrics
from collector.storage import finalize as finalize_module
from collector.storage import finalizer as finalizer_module
from collector.storage import journal as journal_module
from collector.storage import recover_leftovers, run_writer
from collector.storage import recovery as recovery_module
from collector.storage import router as router_module
from collector.storage.columns import to_record_batch
from collector.storage.finalize import finalize_journal
from collector.storage.journal import Journal, open_journal_table
from collector.storage.schemas import schema_for

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(iso: str) -> int:
    """Microseconds since the epoch of an ISO time in UTC (exact integer arithmetic)."""
    return (datetime.fromisoformat(iso).replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


def trade(ts_us: int, n: int, symbol: str = "BTCUSDT", exchange: str = "binance") -> Trade:
    return Trade(exchange, symbol, ts_us - 3, ts_us, n, f"id-{n:06d}", 60000.0 + n, 0.5, "buy")


def expected_row(event: Event) -> dict[str, Any]:
    row: dict[str, Any] = msgspec.structs.asdict(event)
    for name in ("timestamp_exchange", "timestamp_collector"):
        if row[name] is not None:
            row[name] = EPOCH + timedelta(microseconds=row[name])
    for name in ("bids", "asks"):
        if name in row:
            row[name] = [{"price": p, "size": q} for p, q in level_pairs(row[name])]
    return row


def rows(path: Path) -> list[dict[str, Any]]:
    """The event columns of a file's rows (``collector_seq`` is checked by its own tests,
    in tests/test_storage_order.py)."""
    table = pq.read_table(path)
    return list(table.drop_columns(["collector_seq"]).to_pylist())


def files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern))


@dataclass
class Sender:
    """The connections' side as the writer sees it: the event channel and the doorbell,
    rung for every batch sent (as an ``EventSink`` does) unless ``ring`` is off."""

    channel: trio.MemorySendChannel[list[Event]]
    doorbell: Doorbell
    ring: bool = True

    async def send(self, batch: list[Event]) -> None:
        await self.channel.send(batch)
        if self.ring:
            self.doorbell.sent()

    def send_nowait(self, batch: list[Event]) -> None:
        self.channel.send_nowait(batch)
        if self.ring:
            self.doorbell.sent()

    async def aclose(self) -> None:
        await self.channel.aclose()
        self.doorbell.ring()

    def statistics(self) -> Any:
        return self.channel.statistics()


@dataclass
class Harness:
    send: Sender
    finished: trio.MemoryReceiveChannel[Path]
    metrics: Metrics
    data_dir: Path
    nursery: trio.Nursery

    def rows_written(self) -> float:
        return self.metrics.sum_samples("collector_rows_written_total")

    def errors(self, stage: str) -> float:
        return self.metrics.sample("collector_writer_errors_total", {"stage": stage})

    async def finish(self) -> list[Path]:
        """Close the event channel; collect every path until the writer closes ``finished``."""
        await self.send.aclose()
        return [path async for path in self.finished]


@asynccontextmanager
async def open_writer(
    tmp_path: Path,
    wall_now_us: int,
    *,
    server: str | None = None,
    ring_at: int = 1,
    open_files: int = 0,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """Start run_writer with a wall clock that reads ``wall_now_us`` now and moves with Trio,
    and a doorbell that rings once ``ring_at`` batches wait."""
    data_dir = tmp_path / "data"
    storage = StorageSettings(data_dir=str(data_dir), **settings)
    metrics = Metrics()
    send, receive = trio.open_memory_channel[list[Event]](16)
    doorbell = Doorbell(ring_at)
    finished_send, finished = trio.open_memory_channel[Path](16)
    wall_clock = trio_wall_clock(wall_now_us - round(trio.current_time() * 1_000_000))
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_writer,
                storage,
                receive,
                finished_send,
                metrics,
                wall_clock=wall_clock,
                home_server_name=server,
                doorbell=doorbell,
                open_files=open_files,
            )
        )
        sender = Sender(send, doorbell)
        yield Harness(sender, finished, metrics, data_dir, nursery)
        await sender.aclose()
        async for _ in finished:
            pass


async def settle(clock: trio.testing.MockClock, predicate: Callable[[], bool]) -> None:
    """Let the writer and its worker threads run until ``predicate`` holds, with Trio's
    clock frozen: worker threads take no virtual time, so flush ticks stay exactly at
    ``t0 + k * interval``. (The autojump clock would otherwise jump while a thread runs.)"""
    threshold = clock.autojump_threshold
    clock.autojump_threshold = math.inf
    try:
        give_up = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < give_up, "condition not reached"
            await trio.to_thread.run_sync(time.sleep, 0.001)
    finally:
        clock.autojump_threshold = threshold


async def next_finished(clock: trio.testing.MockClock, h: Harness) -> Path:
    """The next finished path, waited for with Trio's clock frozen (see ``settle``)."""
    await settle(clock, lambda: h.finished.statistics().current_buffer_used > 0)
    return h.finished.receive_nowait()


NOON = us("2024-05-01T12:00:00")


async def test_rows_reach_journal_after_one_flush_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    batch: list[Event] = [trade(NOON + i, i) for i in range(3)]
    async with open_writer(tmp_path, NOON, flush_interval_secs=2.0) as h:
        t0 = trio.current_time()
        await h.send.send(batch)
        await trio.sleep_until(t0 + 1.999)
        assert files(h.data_dir, "*.journal.arrows") == []
        assert h.rows_written() == 0

        await trio.sleep_until(t0 + 2.0)
        await settle(autojump_clock, lambda: h.rows_written() == 3)
        assert trio.current_time() == t0 + 2.0
        [journal] = files(h.data_dir, "*.journal.arrows")
        assert (
            journal == h.data_dir / "binance/BTCUSDT/trades/2024-05-01/1714564800000.journal.arrows"
        )
        with open_journal_table(journal) as table:
            assert table is not None
            assert table.drop_columns(["collector_seq"]).to_pylist() == [
                expected_row(e) for e in batch
            ]
        assert files(h.data_dir, "*.parquet") == []
        assert h.metrics.sample("collector_open_files") == 1

        [path] = await h.finish()
    assert path == journal.with_name("1714564800000.parquet")
    assert rows(path) == [expected_row(e) for e in batch]
    assert files(h.data_dir, "*.journal.arrows") == []


async def test_flush_starts_early_once_flush_max_rows_wait(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_writer(tmp_path, NOON, flush_interval_secs=10.0, flush_max_rows=5) as h:
        t0 = trio.current_time()
        await h.send.send([trade(NOON + i, i) for i in range(4)])
        await trio.sleep(1)
        assert h.rows_written() == 0  # 4 rows wait: below the limit, the tick is 10 s away

        await h.send.send([trade(NOON + i, i) for i in range(4, 6)])  # 6 >= 5: flush now
        await settle(autojump_clock, lambda: h.rows_written() == 6)
        assert trio.current_time() == t0 + 1
        [journal] = files(h.data_dir, "*.journal.arrows")
        with open_journal_table(journal) as table:
            assert table is not None
            assert table.column("sequence").to_pylist() == list(range(6))

        await h.send.send([trade(NOON + 6, 6)])  # one row: it waits for the tick again
        await trio.sleep_until(t0 + 9.999)
        assert h.rows_written() == 6
        await trio.sleep_until(t0 + 10)
        await settle(autojump_clock, lambda: h.rows_written() == 7)


async def test_batches_wait_in_the_channel_until_the_doorbell_rings(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_writer(
        tmp_path, NOON, ring_at=3, flush_interval_secs=10.0, flush_max_rows=5
    ) as h:
        t0 = trio.current_time()
        await h.send.send([trade(NOON + i, i) for i in range(2)])
        await h.send.send([trade(NOON + i, i) for i in range(2, 4)])
        await trio.sleep(1)
        assert h.send.statistics().current_buffer_used == 2  # not taken: no ring, no tick

        await h.send.send([trade(NOON + 4, 4)])  # the third batch rings: all are taken
        assert h.send.statistics().current_buffer_used == 3
        await settle(autojump_clock, lambda: h.rows_written() == 5)  # 5 rows: flushed early
        assert h.send.statistics().current_buffer_used == 0
        assert trio.current_time() == t0 + 1


async def test_a_large_backlog_is_routed_in_slices_that_let_other_tasks_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While the writer routes what waits, connections must go on reading (and stamping
    # what they read): it yields to the scheduler once it has routed for TAKE_SLICE_SECS.
    # Here each batch takes 0.6 ms to route (a fake slice clock). Counted as the routing
    # task's steps (a checkpoint always ends a step), which does not depend on the order
    # Trio runs the tasks of a batch in.
    now = [0.0]
    monkeypatch.setattr(router_module, "TAKE_SLICE_SECS", 0.001)
    monkeypatch.setattr(router_module, "_slice_clock", lambda: now[0])
    steps: Counter[trio.lowlevel.Task] = Counter()

    class CountSteps(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            steps[task] += 1

    seen: list[int] = []
    original = router_module._Waiting.route

    def route(self: Any, batch: list[Event]) -> None:
        seen.append(steps[trio.lowlevel.current_task()])
        original(self, batch)
        now[0] += 0.0006

    monkeypatch.setattr(router_module._Waiting, "route", route)
    batches: list[list[Event]] = [
        [trade(NOON + i, i) for i in range(b * 600, (b + 1) * 600)] for b in range(4)
    ]
    instrument = CountSteps()
    trio.lowlevel.add_instrument(instrument)
    try:
        async with open_writer(
            tmp_path, NOON, ring_at=4, flush_interval_secs=60.0, flush_max_rows=100_000
        ) as h:
            for batch in batches:
                await h.send.send(batch)  # the fourth rings: 2,400 rows to route
            await settle(autojump_clock, lambda: len(seen) == 4)
    finally:
        trio.lowlevel.remove_instrument(instrument)
    # Two batches (1.2 ms) in one step, a checkpoint, then the other two in the next.
    assert seen[0] == seen[1] < seen[2] == seen[3]


async def test_unrung_batches_are_taken_at_the_tick_and_flushed_by_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_writer(tmp_path, NOON, flush_interval_secs=2.0) as h:
        h.send.ring = False
        t0 = trio.current_time()
        await h.send.send([trade(NOON + i, i) for i in range(3)])
        await trio.sleep_until(t0 + 1.999)
        assert h.send.statistics().current_buffer_used == 1
        await trio.sleep_until(t0 + 2.0)
        await settle(autojump_clock, lambda: h.rows_written() == 3)
        assert trio.current_time() == t0 + 2.0


async def test_closing_the_channel_ends_the_writer_without_waiting_for_a_tick(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_writer(tmp_path, NOON, flush_interval_secs=60.0, ring_at=100) as h:
        t0 = trio.current_time()
        await h.send.send([trade(NOON, 1)])
        [path] = await h.finish()
        assert trio.current_time() == t0
    assert rows(path) == [expected_row(trade(NOON, 1))]


async def test_graceful_end_finishes_every_file_of_every_type(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    t = NOON
    book = BookUpdate(
        "binance",
        "BTCUSDT",
        t,
        t + 4,
        10,
        "snapshot",
        8,
        None,
        levels_from_pairs([(1.5, 2.0), (1.0, 3.0)]),
        levels_from_pairs([]),
    )
    events: list[Event] = [
        trade(t + 1, 1),
        Trade("binance", "BTCUSDT", None, t + 2, None, "x", 1.0, 2.0, None),
        book,
        Ticker("binance", "BTCUSDT", None, t + 5, None, 1.0, None, 2.0, 3.0, None, 99.5),
        Status("binance", "BTCUSDT", None, t + 6, None, "gap", "orderbook", 5, 9, 4, "lost"),
        Status("binance", "BTCUSDT", None, t + 7, None, "connected"),
        Raw("binance", RAW_SYMBOL, None, t + 8, None, "c1", "recv", b"\x00{}"),
        trade(t + 9, 9, symbol="BTC/USD", exchange="kraken"),
        trade(t + 10, 10),
    ]
    async with open_writer(tmp_path, NOON) as h:
        await h.send.send(events[:4])
        await h.send.send(events[4:])
        paths = await h.finish()
        end = trio.current_time()

    day = "2024-05-01"
    ms = t // 1000
    expected: dict[Path, list[Event]] = {
        h.data_dir / f"binance/BTCUSDT/trades/{day}/{ms}.parquet": [
            events[0],
            events[1],
            events[8],
        ],
        h.data_dir / f"binance/BTCUSDT/orderbook/{day}/{ms}.parquet": [book],
        h.data_dir / f"binance/BTCUSDT/ticker/{day}/{ms}.parquet": [events[3]],
        h.data_dir / f"binance/BTCUSDT/status/{day}/{ms}.parquet": [events[4], events[5]],
        h.data_dir / f"binance/_all/raw/{day}/{ms}.parquet": [events[6]],
        h.data_dir / f"kraken/BTC_USD/trades/{day}/{ms}.parquet": [events[7]],
    }
    assert sorted(paths) == sorted(expected)
    for path, stored in expected.items():
        assert rows(path) == [expected_row(e) for e in stored]
        assert pq.read_schema(path).names == schema_for(path.parent.parent.name).names
    assert [p for p in files(h.data_dir, "*") if p.is_file()] == sorted(expected)
    assert end < 1.0  # the drain does not wait for a flush tick
    assert h.metrics.sum_samples("collector_files_finished_total") == 6
    assert h.rows_written() == len(events)
    assert h.metrics.sample("collector_open_files") == 0


async def test_home_server_name_in_path(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_writer(tmp_path, NOON, server="tokyo-1") as h:
        await h.send.send([trade(NOON, 1)])
        [path] = await h.finish()
    assert path == h.data_dir / "binance/BTCUSDT/trades/tokyo-1/2024-05-01/1714564800000.parquet"
    assert rows(path) == [expected_row(trade(NOON, 1))]


async def test_hourly_rotation_splits_a_batch_at_the_boundary(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    before = [us("2024-05-01T23:59:59.700"), us("2024-05-01T23:59:59.999999")]
    after = [us("2024-05-02T00:00:00"), us("2024-05-02T00:00:00.400")]
    # One batch spanning midnight, interleaved: routing goes by each row's own time.
    batch: list[Event] = [
        trade(before[0], 0),
        trade(after[0], 2),
        trade(before[1], 1),
        trade(after[1], 3),
    ]
    async with open_writer(tmp_path, us("2024-05-01T23:59:58.500")) as h:
        t0 = trio.current_time()
        await h.send.send(batch)
        await trio.sleep_until(t0 + 1.0)
        await settle(autojump_clock, lambda: h.rows_written() == 4)
        assert files(h.data_dir, "*.parquet") == []  # wall clock still in the old hour
        # The wall clock leaves the hour at t0 + 1.5; the old file rotates at the next tick.
        await trio.sleep_until(t0 + 2.0)
        first = await next_finished(autojump_clock, h)
        assert trio.current_time() == t0 + 2.0
        day1 = h.data_dir / "binance/BTCUSDT/trades/2024-05-01"
        day2 = h.data_dir / "binance/BTCUSDT/trades/2024-05-02"
        assert first == day1 / f"{before[0] // 1000}.parquet"
        assert rows(first) == [expected_row(batch[0]), expected_row(batch[2])]
        # The new hour's file is still open.
        assert files(day2, "*") == [day2 / f"{after[0] // 1000}.journal.arrows"]

        rest = await h.finish()
    assert rest == [day2 / f"{after[0] // 1000}.parquet"]
    assert rows(rest[0]) == [expected_row(batch[1]), expected_row(batch[3])]
    assert files(h.data_dir, "*.journal.arrows") == []


@pytest.mark.parametrize("room_for_every_file", [True, False])
async def test_a_rotation_of_more_files_than_the_buffer_never_holds_up_journaling(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    room_for_every_file: bool,
) -> None:
    """Every file of the plan retires at the hour at once; the retired files' channel has
    room for them all (``open_files``), so while the finalizer works through them the
    next hour's rows are still journaled. (A whole spot market has 6,000 files; with room
    for 4,096 its rotation stopped every connection for over 30 s.) Without that room the
    flusher waits for the finalizer: shown with the finalizer held."""
    from collector.storage import writer as writer_module

    monkeypatch.setattr(writer_module, "RETIRED_FILES_BUFFER", 1)
    release = threading.Event()
    real_finalize = finalize_journal

    def held_finalize(*args: Any, **kwargs: Any) -> int | None:
        release.wait(10)
        return real_finalize(*args, **kwargs)

    monkeypatch.setattr(finalizer_module, "finalize_journal", held_finalize)
    symbols = [f"S{i}USDT" for i in range(10)]
    hour = us("2024-05-01T12:59:59")
    async with open_writer(
        tmp_path, hour, open_files=len(symbols) if room_for_every_file else 0
    ) as h:
        t0 = trio.current_time()
        await h.send.send([trade(hour, i, symbol) for i, symbol in enumerate(symbols)])
        await trio.sleep_until(t0 + 1.0)
        await settle(autojump_clock, lambda: h.rows_written() == len(symbols))
        # Past the boundary: every file retires at the next tick; the finalizer holds.
        await trio.sleep_until(t0 + 2.5)
        after = us("2024-05-01T13:00:01")
        await h.send.send([trade(after, 100 + i, s) for i, s in enumerate(symbols)])
        await trio.sleep_until(t0 + 4.0)
        try:
            journaled = 2 * len(symbols)
            if room_for_every_file:
                await settle(autojump_clock, lambda: h.rows_written() == journaled)
            else:
                await trio.to_thread.run_sync(time.sleep, 0.2)
                assert h.rows_written() < journaled  # the flusher waits for the finalizer
        finally:
            release.set()
        paths = await h.finish()
    assert len(paths) == 2 * len(symbols)
    assert h.rows_written() == 2 * len(symbols)


async def test_no_hourly_rotation_when_disabled(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    batch: list[Event] = [trade(us("2024-05-01T23:59:59"), 0), trade(us("2024-05-02T00:00:01"), 1)]
    async with open_writer(tmp_path, us("2024-05-01T23:59:59"), rotate_hourly=False) as h:
        t0 = trio.current_time()
        await h.send.send(batch)
        await trio.sleep_until(t0 + 1.0)
        await settle(autojump_clock, lambda: h.rows_written() == 2)
        await trio.sleep_until(t0 + 3.0)  # ticks at 2 and 3 (wall clock in the next hour)
        assert files(h.data_dir, "*.parquet") == []
        [path] = await h.finish()
    assert rows(path) == [expected_row(e) for e in batch]


async def test_size_rotation(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    batches: list[list[Event]] = [
        [trade(NOON + 10 * b + i, 10 * b + i) for i in range(3)] for b in range(3)
    ]
    header = schema_for("trades").serialize().size
    one_batch = to_record_batch("trades", batches[0]).serialize().size
    # One flushed batch stays under the limit, two reach it.
    limit = header + one_batch + one_batch // 2
    async with open_writer(tmp_path, NOON, max_file_size_mb=limit / 1024 / 1024) as h:
        t0 = trio.current_time()
        await h.send.send(batches[0])
        await trio.sleep_until(t0 + 1.0)
        await settle(autojump_clock, lambda: h.rows_written() == 3)
        assert files(h.data_dir, "*.parquet") == []
        await h.send.send(batches[1])
        await trio.sleep_until(t0 + 2.0)
        first = await next_finished(autojump_clock, h)
        assert rows(first) == [expected_row(e) for e in batches[0] + batches[1]]
        await h.send.send(batches[2])
        rest = await h.finish()
    assert first.name == f"{NOON // 1000}.parquet"
    assert rest == [first.with_name(f"{(NOON + 20) // 1000 + 1}.parquet")]  # name bumped
    assert rows(rest[0]) == [expected_row(e) for e in batches[2]]


async def test_cancel_leaves_journals_that_recovery_finalizes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    flushed: list[Event] = [*(trade(NOON + i, i) for i in range(4)), trade(NOON + 9, 9, "ETHUSDT")]
    async with open_writer(tmp_path, NOON) as h:
        await h.send.send(flushed)
        await trio.sleep_until(trio.current_time() + 1.0)
        await settle(autojump_clock, lambda: h.rows_written() == 5)
        await h.send.send([trade(NOON + 50, 50)])  # never flushed
        h.nursery.cancel_scope.cancel()

    assert files(h.data_dir, "*.parquet") == []
    journals = files(h.data_dir, "*.journal.arrows")
    assert [j.relative_to(h.data_dir).parts[1] for j in journals] == ["BTCUSDT", "ETHUSDT"]

    metrics = Metrics()
    recovered = recover_leftovers(h.data_dir, metrics)
    assert sorted(recovered) == [j.with_name(f"{NOON // 1000}.parquet") for j in journals]
    assert rows(recovered[0]) + rows(recovered[1]) == [expected_row(e) for e in flushed]
    assert files(h.data_dir, "*.journal.arrows") == []
    assert metrics.sample("collector_files_recovered_total") == 2


async def test_start_recovers_leftovers_and_sends_them(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_writer(tmp_path, NOON) as h:
        await h.send.send([trade(NOON, 1)])
        await trio.sleep_until(trio.current_time() + 1.0)
        await settle(autojump_clock, lambda: h.rows_written() == 1)
        h.nursery.cancel_scope.cancel()
    [journal] = files(h.data_dir, "*.journal.arrows")

    async with open_writer(tmp_path, NOON + 10_000_000) as h2:
        recovered = await next_finished(autojump_clock, h2)
        assert recovered == journal.with_name(f"{NOON // 1000}.parquet")
        assert rows(recovered) == [expected_row(trade(NOON, 1))]
        assert h2.metrics.sample("collector_files_recovered_total") == 1
        # A new file of the same stream gets its own name.
        await h2.send.send([trade(NOON, 2)])
        finished = await h2.finish()
    [new] = [p for p in finished if "trades" in p.parts]
    assert new == recovered.with_name(f"{NOON // 1000 + 1}.parquet")
    assert rows(new) == [expected_row(trade(NOON, 2))]
    # The killed run wrote no `disconnected` row: the restart adds one, at its last row.
    [status_file] = [p for p in finished if "status" in p.parts]
    assert rows(status_file) == [
        expected_row(
            Status(
                "binance",
                "BTCUSDT",
                None,
                NOON,
                None,
                "disconnected",
                detail=recovery_module.UNCLEAN_STOP_DETAIL,
            )
        )
    ]


def test_unclean_stop_rows_take_each_symbols_last_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(finalize_module, "ROW_GROUP_ROWS", 2)  # several row groups a file

    def recovered(name: str, data_type: str, batches: list[list[Event]]) -> Path:
        journal = Journal.create(tmp_path / f"{name}.journal.arrows", schema_for(data_type))
        for batch in batches:
            journal.append(to_record_batch(data_type, batch))
        journal.close()
        finalize_journal(tmp_path / f"{name}.journal.arrows", tmp_path / f"{name}.parquet")
        return tmp_path / f"{name}.parquet"

    btc = recovered("btc", "trades", [[trade(NOON + 5, 1), trade(NOON + 9, 2)], [trade(NOON, 3)]])
    eth = recovered("eth", "trades", [[trade(NOON + 4, 1, "ETHUSDT")]])
    btc_status = recovered(
        "btc-status", "status", [[Status("binance", "BTCUSDT", None, NOON + 6, None, "connected")]]
    )
    raw = Raw("binance", RAW_SYMBOL, None, NOON + 20, None, "binance-0", "recv", b"{}")
    raw_file = recovered("raw", "raw", [[raw]])

    stops = recovery_module.unclean_stop_rows([btc, eth, btc_status, raw_file])
    assert [(s.symbol, s.timestamp_collector, s.event) for s in stops] == [
        ("BTCUSDT", NOON + 9, "disconnected"),  # the latest of its files, not the last row
        ("ETHUSDT", NOON + 4, "disconnected"),
    ]  # raw frames belong to a connection, not a symbol: no row for `_all`


async def test_disk_error_during_flush_is_counted_and_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = journal_module._pwrite_all
    calls = 0

    def second_write_fails_halfway(fd: int, data: pa.Buffer, offset: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first batch, after the schema
            real(fd, data.slice(0, data.size // 2), offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(journal_module, "_pwrite_all", second_write_fails_halfway)
    batch: list[Event] = [trade(NOON + i, i) for i in range(3)]
    async with open_writer(tmp_path, NOON) as h:
        t0 = trio.current_time()
        await h.send.send(batch)
        await trio.sleep_until(t0 + 1.0)
        await settle(autojump_clock, lambda: h.errors("flush") == 1)
        assert h.rows_written() == 0

        await trio.sleep_until(t0 + 1.999)  # no retry before the next tick: no spinning
        assert h.errors("flush") == 1
        assert h.rows_written() == 0
        await trio.sleep_until(t0 + 2.0)
        await settle(autojump_clock, lambda: h.rows_written() == 3)
        assert h.errors("flush") == 1
        [path] = await h.finish()
    assert rows(path) == [expected_row(e) for e in batch]


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Journal writes wait until the returned event is set: a slow disk, a flush that hangs."""
    real = journal_module._pwrite_all
    gate = threading.Event()

    def slow_write(fd: int, data: pa.Buffer, offset: int) -> None:
        gate.wait(timeout=10)
        real(fd, data, offset)

    monkeypatch.setattr(journal_module, "_pwrite_all", slow_write)
    yield gate
    gate.set()  # a failed test leaves no worker thread waiting


async def test_a_tick_during_a_slow_flush_keeps_intake_going_and_flushes_next(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, slow_disk: threading.Event
) -> None:
    gate = slow_disk
    first: list[Event] = [trade(NOON + i, i) for i in range(3)]
    later: list[Event] = [trade(NOON + 10 + i, 10 + i) for i in range(4)]
    async with open_writer(tmp_path, NOON, flush_interval_secs=1.0) as h:
        t0 = trio.current_time()
        await h.send.send(first)
        await trio.sleep_until(t0 + 1.5)  # the tick at 1.0 started a flush: it hangs
        assert h.rows_written() == 0
        await h.send.send(later[:2])
        await trio.sleep_until(t0 + 2.5)  # the tick at 2.0 came while it still hangs
        await h.send.send(later[2:])
        await trio.sleep(0.1)
        assert h.send.statistics().current_buffer_used == 0  # intake went on
        assert h.rows_written() == 0
        gate.set()
        # The hung flush ends, and the one the tick at 2.0 asked for starts at once.
        await settle(autojump_clock, lambda: h.rows_written() == 7)
        assert trio.current_time() == t0 + 2.6
        [path] = await h.finish()
    assert rows(path) == [expected_row(e) for e in first + later]


async def test_intake_stops_at_two_flushes_worth_of_rows_while_a_flush_runs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, slow_disk: threading.Event
) -> None:
    gate = slow_disk
    events: list[Event] = [trade(NOON + i, i) for i in range(13)]
    async with open_writer(tmp_path, NOON, flush_interval_secs=60.0, flush_max_rows=5) as h:
        await h.send.send(events[:5])  # 5 rows: a flush starts, and hangs
        await h.send.send(events[5:10])  # the next flush's rows: taken
        await h.send.send(events[10:])  # more: left in the channel while the flush runs
        await trio.sleep(1)
        assert h.send.statistics().current_buffer_used == 1
        assert h.rows_written() == 0
        gate.set()
        # The first flush ends; the second starts at once and the waiting batch is taken.
        await settle(autojump_clock, lambda: h.rows_written() == 10)
        assert h.send.statistics().current_buffer_used == 0
        [path] = await h.finish()
    assert rows(path) == [expected_row(e) for e in events]


async def test_intake_goes_on_while_a_flush_started_for_its_size_runs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, slow_disk: threading.Event
) -> None:
    gate = slow_disk
    # The rows a flush takes no longer count as waiting. They did until its task first ran,
    # and intake stopped for that whole flush: at full speed the channel filled and dropped.
    async with open_writer(tmp_path, NOON, flush_interval_secs=60.0, flush_max_rows=5) as h:
        await h.send.send([trade(NOON + i, i) for i in range(5)])  # a flush starts, hangs
        await trio.sleep(1)
        await h.send.send([trade(NOON + i, i) for i in range(5, 8)])
        await trio.sleep(1)
        assert h.send.statistics().current_buffer_used == 0  # taken during the flush
        assert h.rows_written() == 0
        gate.set()
        await settle(autojump_clock, lambda: h.rows_written() == 5)
        [path] = await h.finish()
    assert len(rows(path)) == 8


async def test_no_batches_are_taken_while_the_disk_fails(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = journal_module._pwrite_all
    failing = True

    def write_unless_failing(fd: int, data: pa.Buffer, offset: int) -> None:
        if failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(journal_module, "_pwrite_all", write_unless_failing)
    first: list[Event] = [trade(NOON + i, i) for i in range(3)]
    later: list[Event] = [trade(NOON + 10 + i, 10 + i) for i in range(4)]  # a flush's worth
    rest: list[Event] = [trade(NOON + 20 + i, 20 + i) for i in range(2)]
    async with open_writer(tmp_path, NOON, flush_max_rows=4) as h:
        t0 = trio.current_time()
        await h.send.send(first)
        await trio.sleep_until(t0 + 1.0)
        await settle(autojump_clock, lambda: h.errors("flush") == 1)
        # The failed rows stay with the flusher, which retries them in place; the writer
        # takes one more flush's worth (the bound on its memory), then no more batches.
        h.send.send_nowait(later)
        h.send.send_nowait(rest)
        await trio.sleep_until(t0 + 1.999)
        # Intake paused: the batch waits in the (bounded) channel, not in the writer's memory.
        assert h.send.statistics().current_buffer_used == 1
        assert h.rows_written() == 0
        failing = False
        await trio.sleep_until(t0 + 2.0)
        # The retry, one flush interval after the failure; then the flush's worth that
        # waited, and the batch left in the channel, taken at once and flushed for the tick.
        await settle(autojump_clock, lambda: h.rows_written() == 9)
        assert trio.current_time() == t0 + 2.0
        assert h.send.statistics().current_buffer_used == 0
        [path] = await h.finish()
    assert rows(path) == [expected_row(e) for e in first + later + rest]


async def test_disk_error_during_finalize_is_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = finalize_journal
    calls = 0

    def first_call_fails(journal: Path, final: Path, **kwargs: Any) -> int | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(errno.EIO, "I/O error")
        return real(journal, final, **kwargs)

    monkeypatch.setattr(finalizer_module, "finalize_journal", first_call_fails)
    batch: list[Event] = [trade(NOON + i, i) for i in range(2)]
    async with open_writer(tmp_path, NOON, flush_interval_secs=0.5) as h:
        t0 = trio.current_time()
        await h.send.send(batch)
        [path] = await h.finish()
        assert trio.current_time() >= t0 + 0.5  # waited before the retry
    assert calls == 2
    assert h.errors("finalize") == 1
    assert rows(path) == [expected_row(e) for e in batch]
    assert files(h.data_dir, "*.journal.arrows") == []


async def test_a_bug_propagates(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    bad = Trade("binance", "BTCUSDT", None, NOON, None, "x", None, 1.0, "buy")  # type: ignore[arg-type]
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="price"), flatten_subgroups=True):
        async with open_writer(tmp_path, NOON) as h:
            await h.send.send([bad])
            await trio.sleep(5)
