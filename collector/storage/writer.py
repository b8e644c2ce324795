"""The writer task: batches of events -> journals -> finished Parquet files.

One open file per (exchange, symbol, data_type) and, with hourly rotation, per UTC hour of
``timestamp_collector``: every event is routed by its own receive time, so rows are split at
the hour boundary exactly and no file holds rows of two hours. A late row of an hour whose
file was already finished opens a new (small) file for that hour rather than joining the
current one.

Batches wait in the event channel until the doorbell rings or the flush tick comes
(:mod:`collector.doorbell`): the writer does not wake for every read of every connection.
Every ``flush_interval_secs`` (Trio time), and as soon as ``flush_max_rows`` rows are
waiting, all pending rows are converted to record batches and appended to the journals in
one worker thread, while intake goes on (one flush at a time); then files are rotated: when
the wall clock has left a file's hour, or its journal reached ``max_file_size_mb``. A
rotated file is finalized (journal -> Parquet) in a background task of the writer, in a
worker thread, so intake goes on meanwhile; its path is then sent to ``finished``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

import pyarrow as pa
import trio

from collector import native_memory
from collector.clock import WallClock, system_wall_us
from collector.config import StorageSettings
from collector.doorbell import Doorbell
from collector.events import Event
from collector.metrics import Metrics
from collector.storage.columns import ColumnBuffer
from collector.storage.finalize import finalize_journal
from collector.storage.journal import Journal
from collector.storage.layout import choose_parquet_path, journal_path, stream_dir
from collector.storage.recovery import recover_leftovers, unclean_stop_rows
from collector.storage.schemas import schema_for

logger = logging.getLogger(__name__)

HOUR_US = 3_600_000_000
NO_HOUR = -1
MAX_RETRY_DELAY_SECS = 60.0
# One file is finalized at a time: at the hourly rotation every file is due at once, and two
# in parallel doubled the memory peak (a 10-minute soak crossing the hour: +42 % for a
# second) while gaining little on a 2-core machine, where the event loop needs a core.
FINALIZE_THREADS = 1
# The event loop time the writer routes for between two checkpoints. By time, not rows: a
# 20-level order book row costs several times a trade row (1,000 of them held the loop for
# up to 10 ms, the mixed bench's trade rows' p99 receive delay).
TAKE_SLICE_SECS = 0.001
# What the slices are timed with (a test makes routing take a known time).
_slice_clock = time.perf_counter

# (exchange, symbol, data_type, UTC hour index or NO_HOUR)
FileKey = tuple[str, str, str, int]
# A file's key fixes these columns: they are not stored per row.
_KEY_COLUMNS: Final = frozenset({"exchange", "symbol"})


@dataclass(eq=False)
class _OpenFile:
    """One file being written. ``path`` and ``journal`` exist from its first flush on.

    ``waiting`` holds the rows routed since the last flush began, as columns;
    ``unwritten`` the batches a failed flush could not append, retried first.
    """

    exchange: str
    symbol: str
    data_type: str
    hour: int
    first_us: int
    waiting: ColumnBuffer = field(init=False)
    unwritten: list[pa.RecordBatch] = field(default_factory=list)
    path: Path | None = None
    journal: Journal | None = None
    rows: int = 0

    def __post_init__(self) -> None:
        self.waiting = ColumnBuffer(self.data_type, _KEY_COLUMNS)

    @property
    def has_rows(self) -> bool:
        """Rows wait to be appended to the journal (new ones, or a failed flush's)."""
        return bool(self.unwritten) or len(self.waiting) > 0

    def take_rows(self) -> tuple[ColumnBuffer, list[pa.RecordBatch]]:
        """Hand over what waits to a flush; new rows go to a fresh buffer."""
        taken = self.waiting, self.unwritten
        self.waiting = ColumnBuffer(self.data_type, _KEY_COLUMNS)
        self.unwritten = []
        return taken


class _Writer:
    """State of one ``run_writer`` call. Methods ending in ``_sync`` run in worker threads
    while the task awaits them; nothing else touches an open file at the same time."""

    def __init__(
        self,
        settings: StorageSettings,
        finished: trio.MemorySendChannel[Path],
        metrics: Metrics,
        wall_clock: WallClock,
        server: str | None,
        doorbell: Doorbell,
    ) -> None:
        self.settings = settings
        self.doorbell = doorbell
        self.data_dir = Path(settings.data_dir)
        self.finished = finished
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.server = server
        # The writer's own nursery, for finalizer tasks; set by run_writer once open.
        self.nursery: trio.Nursery | None = None
        self.interval = settings.flush_interval_secs
        self.flush_rows = settings.flush_max_rows
        self.pending_rows = 0  # rows routed and not yet handed to a flush
        self.hourly = settings.rotate_hourly
        self.max_bytes = int(settings.max_file_size_mb * 1024 * 1024)
        self.files: dict[FileKey, _OpenFile] = {}
        self.finalizing: set[_OpenFile] = set()
        # Files due for rotation whose last rows still wait for a flush (new rows of their
        # stream already go to a new file); finalized once those rows are in the journal.
        self.retiring: set[_OpenFile] = set()
        # One flush runs in the background while intake goes on; ``flush_idle`` is set
        # when none is running, ``flush_ok`` says how the last one went, and ``intake`` is
        # the cancel scope around receiving (a failed flush cancels it: intake pauses).
        self.flush_idle = trio.Event()
        self.flush_idle.set()
        self.flush_ok = True
        # A tick came while a flush ran: the next flush starts as soon as that one ends.
        self.flush_due = False
        self.intake: trio.CancelScope | None = None
        self.in_use: set[Path] = set()
        self.flush_limiter = trio.CapacityLimiter(1)
        self.finalize_limiter = trio.CapacityLimiter(FINALIZE_THREADS)

    # ------------------------------------------------------------------ intake

    def route(self, batch: list[Event]) -> None:
        """Append each event's row to its file's columns (the hot path: no I/O)."""
        files = self.files
        hourly = self.hourly
        opened = False
        # The events of one read share their receive time: the hour is worked out once.
        last_ts = -1
        hour = NO_HOUR
        for event in batch:
            ts = event.timestamp_collector
            if hourly and ts != last_ts:
                last_ts = ts
                hour = ts // HOUR_US
            key = (event.exchange, event.symbol, event.DATA_TYPE, hour)
            open_file = files.get(key)
            if open_file is None:
                open_file = files[key] = _OpenFile(*key, first_us=ts)
                opened = True
            open_file.waiting.add(event)
        self.pending_rows += len(batch)
        if opened:
            self._update_open_files()

    def _update_open_files(self) -> None:
        self.metrics.open_files.set(len(self.files) + len(self.retiring) + len(self.finalizing))

    # ------------------------------------------------------------------ flush

    async def flush(self) -> bool:
        """Append every file's pending rows to its journal. Returns whether all succeeded.

        On ``OSError`` the rows of the failed files are kept (and retried by the next call).
        """
        return await self._write(self._take_work())

    def _take_work(self) -> list[tuple[_OpenFile, ColumnBuffer, list[pa.RecordBatch]]]:
        """Hand every file's waiting rows to a flush (``pending_rows`` starts again at 0)."""
        work = [(f, *f.take_rows()) for f in [*self.files.values(), *self.retiring] if f.has_rows]
        self.pending_rows = 0
        return work

    async def _write(
        self, work: list[tuple[_OpenFile, ColumnBuffer, list[pa.RecordBatch]]]
    ) -> bool:
        """Append ``work`` to the journals (see :meth:`flush`)."""
        if not work:
            return True
        failed = await trio.to_thread.run_sync(self._flush_sync, work, limiter=self.flush_limiter)
        for open_file, batches, exc in failed:
            open_file.unwritten = batches + open_file.unwritten
            rows = sum(batch.num_rows for batch in batches)
            self.pending_rows += rows
            logger.warning(
                "flush of %s %s %s failed, %d rows kept for retry: %s",
                open_file.exchange,
                open_file.symbol,
                open_file.data_type,
                rows,
                exc,
            )
            self.metrics.writer_errors.labels(stage="flush").inc()
        return not failed

    def _flush_sync(
        self, work: list[tuple[_OpenFile, ColumnBuffer, list[pa.RecordBatch]]]
    ) -> list[tuple[_OpenFile, list[pa.RecordBatch], OSError]]:
        """Append each file's batches to its journal: first those a failed flush left, then
        its new rows. Returns, per file that failed, the batches not appended."""
        started = time.perf_counter()
        failed: list[tuple[_OpenFile, list[pa.RecordBatch], OSError]] = []
        for open_file, waiting, unwritten in work:
            batches = list(unwritten)
            if len(waiting):
                constants = {"exchange": open_file.exchange, "symbol": open_file.symbol}
                batches.append(waiting.to_record_batch(constants))
            for index, batch in enumerate(batches):
                try:
                    journal = open_file.journal or self._open_journal_sync(open_file)
                    journal.append(batch)
                except OSError as exc:
                    failed.append((open_file, batches[index:], exc))
                    break
                open_file.rows += batch.num_rows
                self.metrics.rows_written.labels(open_file.exchange, open_file.data_type).inc(
                    batch.num_rows
                )
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        return failed

    def _open_journal_sync(self, open_file: _OpenFile) -> Journal:
        start_ms = open_file.first_us // 1000
        directory = stream_dir(
            self.data_dir,
            open_file.exchange,
            open_file.symbol,
            open_file.data_type,
            start_ms,
            self.server,
        )
        directory.mkdir(parents=True, exist_ok=True)
        path = choose_parquet_path(directory, start_ms, self.in_use)
        journal = Journal.create(journal_path(path), schema_for(open_file.data_type))
        self.in_use.add(path)
        open_file.path = path
        open_file.journal = journal
        return journal

    # ------------------------------------------------------------------ rotation

    def rotate(self, *, everything: bool = False) -> None:
        """Retire every file that is due (or all, at the end); finalize retired files whose
        rows are all in their journal.

        A file is due when the wall clock has left its hour or its journal reached
        ``max_file_size_mb``. Retiring takes it out of routing, so new rows of its stream
        open a new file while its own last rows wait for the next flush.
        """
        now_hour = self.wall_clock() // HOUR_US
        for key, open_file in list(self.files.items()):
            journal = open_file.journal
            if (
                everything
                or (self.hourly and open_file.hour < now_hour)
                or (journal is not None and journal.size >= self.max_bytes)
            ):
                del self.files[key]
                self.retiring.add(open_file)
        for open_file in list(self.retiring):
            if open_file.has_rows or open_file.journal is None:
                continue  # its last rows are not in the journal yet: the next flush
            self.retiring.discard(open_file)
            self.finalizing.add(open_file)
            assert self.nursery is not None
            self.nursery.start_soon(self._finalize, open_file)
        self._update_open_files()

    async def _finalize(self, open_file: _OpenFile) -> None:
        delay = self.interval
        while True:
            try:
                size = await trio.to_thread.run_sync(
                    self._finalize_sync, open_file, limiter=self.finalize_limiter
                )
                break
            except OSError as exc:
                logger.warning(
                    "finalize of %s failed, retrying in %.1fs: %s", open_file.path, delay, exc
                )
                self.metrics.writer_errors.labels(stage="finalize").inc()
                await trio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_SECS)
        assert open_file.path is not None
        self.finalizing.discard(open_file)
        self.in_use.discard(open_file.path)
        self._update_open_files()
        if size is None:
            return
        self.metrics.files_finished.labels(open_file.exchange, open_file.data_type).inc()
        self.metrics.bytes_written.inc(size)
        await self.finished.send(open_file.path)

    def _finalize_sync(self, open_file: _OpenFile) -> int | None:
        assert open_file.journal is not None
        assert open_file.path is not None
        started = time.perf_counter()
        open_file.journal.close()
        size = finalize_journal(
            open_file.journal.path,
            open_file.path,
            compression=self.settings.compression,
            compression_level=self.settings.compression_level,
        )
        self.metrics.finalize_seconds.observe(time.perf_counter() - started)
        native_memory.trim()  # a finalize's buffers: back to the OS, not kept in an arena
        return size

    # ------------------------------------------------------------------ task body

    async def take(self, events: trio.MemoryReceiveChannel[list[Event]]) -> bool:
        """Route the batches waiting in ``events``; False once the channel has ended.

        Once it has routed for ``TAKE_SLICE_SECS`` it lets the other tasks run (a
        checkpoint), so the connections go on reading, and stamping what they read, while a
        large backlog is routed: the event loop is held for about a millisecond (and a
        batch) at most here.

        A flush starts whenever ``flush_max_rows`` rows wait and none is running. While one
        runs and ``flush_max_rows`` more rows wait, the rest stay in the channel (:attr:`full`):
        the writer holds at most two flushes' worth of rows, and if it falls behind for good
        the channel fills and the connections drop, and record, what does not fit.
        """
        self.doorbell.taken()
        route = self.route
        clock = _slice_clock
        slice_ends = clock() + TAKE_SLICE_SECS
        try:
            while True:
                if self.full:
                    return True  # the running flush must end first
                if self.pending_rows >= self.flush_rows:
                    self._start_flush()
                route(events.receive_nowait())
                if clock() >= slice_ends:
                    await trio.lowlevel.checkpoint()
                    slice_ends = clock() + TAKE_SLICE_SECS
        except trio.WouldBlock:
            return True
        except trio.EndOfChannel:
            return False

    @property
    def full(self) -> bool:
        """A flush runs and the next one's rows already wait: take nothing until it ends."""
        return self.pending_rows >= self.flush_rows and not self.flush_idle.is_set()

    async def consume(self, events: trio.MemoryReceiveChannel[list[Event]]) -> None:
        """Route batches until ``events`` ends; flush and rotate every interval.

        Batches are taken from the channel when the doorbell rings (see
        :mod:`collector.doorbell`) and at every tick, before its flush: a tick's flush has
        every row received before it. Intake goes on while a flush runs in its worker
        thread, also across a tick: at most one flush runs at a time, and a tick that finds
        one running has the next start as soon as it ends. When ``flush_max_rows`` rows wait
        and no flush runs, one starts at once; while one runs, intake stops once
        ``flush_max_rows`` more wait (see :meth:`take`). So memory holds at most two
        flushes' worth of rows, at any rate.
        """
        deadline = trio.current_time() + self.interval
        while True:
            if self.flush_ok:
                is_open = True  # stays so if the tick comes during a take's checkpoint
                with trio.CancelScope(deadline=deadline) as self.intake:
                    while is_open := await self.take(events):
                        if self.flush_due and self.flush_idle.is_set():
                            self._start_flush()
                        if self.full:
                            await self.flush_idle.wait()
                        else:
                            await self.doorbell.wait()
                self.intake = None
                if not is_open:
                    break
            else:
                # The disk failed the last flush: take no more rows until a flush succeeds,
                # so memory stays bounded; the event channel fills and the connections
                # record what they cannot hand over as `dropped` rows.
                with trio.move_on_at(deadline):
                    if self.flush_idle.is_set():
                        await trio.sleep_forever()  # no flush running: wait for the tick
                    await self.flush_idle.wait()  # resume as soon as a running one succeeds
            if trio.current_time() < deadline:
                continue  # intake paused or resumed before the tick
            if self.flush_ok and not await self.take(events):
                break  # the channel ended: the drain below flushes everything
            if self.flush_idle.is_set():
                self._start_flush()
            else:
                self.flush_due = True  # one flush at a time: this one follows the running one
            now = trio.current_time()
            deadline += self.interval
            if deadline < now:  # flushing overran a whole interval: skip ticks, do not spin
                deadline = now + self.interval
        await self.flush_idle.wait()
        await self.drain()

    def _start_flush(self) -> None:
        self.flush_due = False
        self.flush_idle = trio.Event()
        assert self.nursery is not None
        # The rows are handed over now, not when the task first runs: until then,
        # ``pending_rows`` would still count them, and intake would stop as if a second
        # flush's worth waited (it did, for the whole flush, at every size-triggered one).
        self.nursery.start_soon(self._flush_and_rotate, self._take_work())

    async def _flush_and_rotate(
        self, work: list[tuple[_OpenFile, ColumnBuffer, list[pa.RecordBatch]]]
    ) -> None:
        try:
            self.flush_ok = await self._write(work)
            if not self.flush_ok and self.intake is not None:
                self.intake.cancel()
            self.rotate()
        finally:
            self.flush_idle.set()
            if self.flush_due:
                self.doorbell.ring()  # the writer starts the flush a tick asked for

    async def drain(self) -> None:
        """Flush everything (retrying every interval on disk errors), then finalize all."""
        while True:
            if await self.flush():
                break
            await trio.sleep(self.interval)  # a disk error: retry, without spinning
        self.rotate(everything=True)

    async def send_all(self, paths: list[Path]) -> None:
        for path in paths:
            await self.finished.send(path)

    def close_journals(self) -> None:
        for open_file in [*self.files.values(), *self.retiring, *self.finalizing]:
            if open_file.journal is not None:
                open_file.journal.close()


async def run_writer(
    settings: StorageSettings,
    events: trio.MemoryReceiveChannel[list[Event]],
    finished: trio.MemorySendChannel[Path],
    metrics: Metrics,
    *,
    wall_clock: WallClock = system_wall_us,
    home_server_name: str | None = None,
    doorbell: Doorbell | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Store every event received on ``events`` in finished Parquet files under ``data_dir``.

    Owns and closes both channel ends: ``events`` (batches of events, any types and symbols,
    taken when ``doorbell`` rings and at every flush tick; the senders ring it, see
    :mod:`collector.doorbell`; without one, batches are taken at the ticks only) and
    ``finished`` (the path of each finished ``.parquet`` file, for the uploader; it is a
    bounded channel, so a slow consumer slows finalization, never intake of rows already
    flushed). At start it finalizes what a previous run left (:func:`recover_leftovers`, in
    a worker thread), calls ``task_status.started()``, then sends those paths too.

    Ends when ``events`` is closed: everything is flushed and finalized, every path is sent,
    ``finished`` is closed. Disk errors (``OSError``) are logged, counted in
    ``writer_errors{stage}`` and retried (flush: next interval; finalize: capped backoff),
    so the drain after end-of-stream lasts until the disk recovers or the caller cancels.
    While flushes fail no new batches are taken (backpressure onto the bounded channel,
    where producers drop and record what does not fit), so memory stays bounded.

    Cancellation: nothing more is written; open journals are closed and stay on disk for
    :func:`recover_leftovers` at the next start (rows not yet flushed, at most one flush
    interval's worth, are lost). A worker thread that is already running completes first
    (finalization is atomic: no half-written ``.parquet``); a file it finished is not sent to
    ``finished`` and is picked up as a leftover by the uploader.

    Raises whatever is not a disk error (a bug, e.g. a ``ValueError`` for an event with a
    null in a required column), and ``trio.BrokenResourceError`` if the receiver of
    ``finished`` went away; errors after start come wrapped in an ``ExceptionGroup`` (the
    writer's own nursery runs the finalizer tasks).
    """
    with events, finished:
        writer = _Writer(
            settings, finished, metrics, wall_clock, home_server_name, doorbell or Doorbell(1)
        )
        recovered = await trio.to_thread.run_sync(
            partial(
                recover_leftovers,
                settings.data_dir,
                metrics,
                compression=settings.compression,
                compression_level=settings.compression_level,
            ),
            limiter=writer.finalize_limiter,
        )
        if recovered:
            stops: list[Event] = list(await trio.to_thread.run_sync(unclean_stop_rows, recovered))
            writer.route(stops)
        try:
            async with trio.open_nursery() as nursery:
                writer.nursery = nursery
                task_status.started()
                nursery.start_soon(writer.send_all, recovered)
                await writer.consume(events)
        finally:
            # Also on cancellation or error. Worker threads have all returned by now.
            writer.close_journals()
