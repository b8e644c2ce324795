"""The writer's first stage: batches of events -> each stream's waiting rows -> flush work.

The router owns the stream keys and the rows that wait for a flush. A stream key is
(exchange, symbol, data_type, UTC hour of ``timestamp_collector``), the hour being
:data:`NO_HOUR` without hourly rotation: every event is routed by its own receive time, so
rows are split at the hour boundary exactly. Each key's rows are appended to columns as
they are routed (:class:`~collector.storage.columns.ColumnBuffer`), on the event loop, so
the flusher's worker thread never walks the events.

Batches wait in the event channel until the doorbell rings or the flush tick comes
(:mod:`collector.doorbell`): the router does not wake for every read of every connection.
Every ``flush_interval_secs`` (Trio time), and at once when ``flush_max_rows`` rows wait,
the waiting rows go to the flusher as one :class:`FlushWork`, over a rendezvous channel:

- a flush's worth of rows is *sent*: while the flusher is busy (journaling the previous
  work, or retrying it on a failing disk) the router waits and takes no batches, so the
  event channel fills and the connections feel it. Memory holds at most two flushes'
  worth of rows: the one being journaled and the one waiting here.
- a tick's rows are *offered*: if the flusher is busy the router goes on taking batches
  when the doorbell rings, and offers again with what has come since, until the flusher
  takes it or a flush's worth waits. So a slow flush does not stop intake below that
  bound, and the next flush starts as soon as the slow one ends.

The router also decides hourly rotation: once the wall clock has left a key's hour, the
next work *retires* the key (its file is complete after that work's rows). A late row of
a retired hour starts the key again, and the flusher opens a new (small) file for it.
Size rotation is the flusher's (it knows the journal sizes).

The router numbers the rows too: each stream (exchange, symbol, data type) has its own
``collector_seq`` counter (:class:`_Numbering`), and every work gives each key's rows the
next consecutive numbers as it is handed over (a withdrawn offer numbers nothing). So the
numbers of a stream increase within a run, and follow the order the rows were
routed in, except that for an order book stream one number is kept free before each
work's rows, for the checkpoint row the flusher may put ahead of them
(:mod:`.checkpoints`); across hour keys of one stream in one work (a late row of the previous hour)
the earlier hour's rows get the lower numbers, which is also the order of their receive
times. Each run starts every stream at its start time in nanoseconds since the epoch
(the wall clock's microseconds times 1000), or just above the highest number found in the
files the start-up recovery finished, if that is higher: a restart jumps ahead, never back,
as long as the wall clock at the restart is later than it was when the previous run
started (a run would need more than one row per nanosecond to catch up with the next
run's start). Values fit ``int64`` until 2262.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from collector.clock import WallClock, system_wall_us
from collector.config import StorageSettings
from collector.doorbell import Doorbell
from collector.events import BookUpdate, Event
from collector.storage.columns import ColumnBuffer

if TYPE_CHECKING:
    from collector.analytics import TradeAnalytics
    from collector.outlets.tap import OutletTap

# What sees each routed batch after the columns took it: the live outlets' tap, the
# analytics, or both (None: nothing, and routing is all).
Observer = Callable[[list[Event]], None]

HOUR_US: Final = 3_600_000_000
# collector_seq of a run's first rows: its start time in nanoseconds (see the docstring).
SEQ_PER_US: Final = 1000
BOOK: Final = BookUpdate.DATA_TYPE
NO_HOUR: Final = -1
# The event loop time the router routes for between two checkpoints, so connections go on
# reading (and stamping what they read) while a backlog is routed. By time, not rows: an
# order book row costs several times a trade row.
TAKE_SLICE_SECS = 0.001
# What the slices are timed with (a test makes routing take a known time).
_slice_clock = time.perf_counter

# (exchange, symbol, data_type, UTC hour index or NO_HOUR)
FileKey = tuple[str, str, str, int]
# A key fixes these columns: they are not stored per row.
KEY_COLUMNS: Final = frozenset({"exchange", "symbol"})


@dataclass(eq=False, slots=True)
class StreamRows:
    """The rows of one stream key routed since the last hand-over, as columns.

    ``first_us`` is the ``timestamp_collector`` of the first of them: a file opened for
    these rows is named after it. ``first_seq`` is the ``collector_seq`` of the first of
    them, set when the work they are in is made (:class:`_Numbering`).
    """

    first_us: int
    columns: ColumnBuffer
    first_seq: int = 0


@dataclass(frozen=True)
class FlushWork:
    """What the router hands the flusher: append ``rows`` to each key's file, then the files
    of the ``retired`` keys are complete. The router never touches ``rows`` again."""

    rows: dict[FileKey, StreamRows] = field(default_factory=dict)
    retired: tuple[FileKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rows or self.retired)


class _Waiting:
    """The rows routed since the last hand-over, by stream key."""

    __slots__ = ("hourly", "rows", "streams")

    def __init__(self, hourly: bool) -> None:
        self.hourly = hourly
        self.streams: dict[FileKey, StreamRows] = {}
        self.rows = 0

    def route(self, batch: list[Event]) -> None:
        """Append each event's row to its key's columns (the hot path: no I/O).

        Raises ``ValueError`` for an event its columns refuse (an adapter bug, see
        :class:`~collector.storage.columns.ColumnBuffer`).
        """
        streams = self.streams
        hourly = self.hourly
        # The events of one read share their receive time: the hour is worked out once.
        last_ts = -1
        hour = NO_HOUR
        for event in batch:
            ts = event.timestamp_collector
            if hourly and ts != last_ts:
                last_ts = ts
                hour = ts // HOUR_US
            key = (event.exchange, event.symbol, event.DATA_TYPE, hour)
            stream = streams.get(key)
            if stream is None:
                stream = streams[key] = StreamRows(ts, ColumnBuffer(event.DATA_TYPE, KEY_COLUMNS))
            stream.columns.add(event)
        self.rows += len(batch)


class _Numbering:
    """Each stream's next ``collector_seq`` (see the module docstring).

    :meth:`number` numbers the rows of a work being made; :meth:`commit` makes that final
    once the work is handed over. A work withdrawn is numbered again when it is made again
    (with the rows taken since), from the same place.
    """

    __slots__ = ("_next", "_pending", "seed")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._next: dict[tuple[str, str, str], int] = {}
        self._pending: dict[tuple[str, str, str], int] = {}

    def number(self, streams: dict[FileKey, StreamRows], hourly: bool) -> None:
        pending: dict[tuple[str, str, str], int] = {}
        following = self._next
        seed = self.seed
        # Several keys of one stream (hours) are numbered earlier hour first.
        keys = sorted(streams, key=_hour) if hourly and len(streams) > 1 else streams
        for key in keys:
            stream = key[:3]
            rows = streams[key]
            first = pending.get(stream)
            if first is None:
                first = following.get(stream, seed)
            if key[2] == BOOK:
                first += 1  # kept for a checkpoint row the flusher may put first
            rows.first_seq = first
            pending[stream] = first + len(rows.columns)
        self._pending = pending

    def commit(self) -> None:
        self._next.update(self._pending)
        self._pending = {}


def _hour(key: FileKey) -> int:
    return key[3]


class _Hours:
    """The hourly keys the flusher has a file for, as far as the router knows, and the
    numbering of the rows handed over."""

    def __init__(self, hourly: bool, wall_clock: WallClock, numbering: _Numbering) -> None:
        self.hourly = hourly
        self.wall_clock = wall_clock
        self.numbering = numbering
        self.open: set[FileKey] = set()

    def work(self, waiting: _Waiting) -> FlushWork:
        """The work for ``waiting``: its rows, numbered, and every key whose hour the wall
        clock has left. Changes nothing but the rows' numbers: see :meth:`handed_over`."""
        self.numbering.number(waiting.streams, self.hourly)
        if not self.hourly:
            return FlushWork(waiting.streams)
        now_hour = self.wall_clock() // HOUR_US
        retired = {key for key in self.open if key[3] < now_hour}
        retired.update(key for key in waiting.streams if key[3] < now_hour)
        return FlushWork(waiting.streams, tuple(sorted(retired)))

    def handed_over(self, work: FlushWork) -> None:
        self.numbering.commit()
        if self.hourly:
            self.open.update(work.rows)
            self.open.difference_update(work.retired)


def _observer(tap: OutletTap | None, analytics: TradeAnalytics | None) -> Observer | None:
    """The one call that hands a routed batch to the outlets' ``tap`` and the
    ``analytics``, whichever are there (None: neither)."""
    if tap is None or analytics is None:
        return tap or analytics

    def both(batch: list[Event]) -> None:
        analytics(batch)
        tap(batch)

    return both


def _observed(route: Observer, observe: Observer) -> Observer:
    """``route``, then ``observe`` the batch (after: a batch the columns refuse is not
    published or counted)."""

    def route_and_observe(batch: list[Event]) -> None:
        route(batch)
        observe(batch)

    return route_and_observe


async def _take(
    events: trio.MemoryReceiveChannel[list[Event]],
    waiting: _Waiting,
    doorbell: Doorbell,
    flush_rows: int,
    observe: Observer | None = None,
) -> bool:
    """Route the batches waiting in ``events`` until none is left or ``flush_rows`` rows
    wait; False once the channel has ended. With ``observe``, each routed batch is handed
    to it too (the outlets' tap, the analytics); without, routing is all: no cost for
    what is not there.

    Once it has routed for ``TAKE_SLICE_SECS`` it lets the other tasks run (a checkpoint),
    so the connections go on reading while a large backlog is routed: the event loop is
    held for about a slice (and a batch) at most here.
    """
    doorbell.taken()
    route = waiting.route if observe is None else _observed(waiting.route, observe)
    clock = _slice_clock
    slice_ends = clock() + TAKE_SLICE_SECS
    try:
        while waiting.rows < flush_rows:
            route(events.receive_nowait())
            if clock() >= slice_ends:
                await trio.lowlevel.checkpoint()
                slice_ends = clock() + TAKE_SLICE_SECS
    except trio.WouldBlock:
        return True
    except trio.EndOfChannel:
        return False
    return True


async def _offer(
    work_out: trio.MemorySendChannel[FlushWork],
    work: FlushWork,
    doorbell: Doorbell,
    deadline: float,
) -> bool:
    """Hand ``work`` to the flusher unless the doorbell rings or ``deadline`` comes first;
    whether it was handed over.

    A withdrawn offer delivered nothing (a cancelled send never does): the router keeps
    the rows and offers them again, with whatever it took meanwhile.
    """
    try:
        work_out.send_nowait(work)
        return True
    except trio.WouldBlock:
        pass  # the flusher is busy
    sent = False

    async def send(scope: trio.CancelScope) -> None:
        nonlocal sent
        await work_out.send(work)
        sent = True
        scope.cancel()

    with trio.move_on_at(deadline):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, nursery.cancel_scope)
            # Parked at once, with nothing run since the last take: no ring is missed.
            await doorbell.wait()
            nursery.cancel_scope.cancel()
    return sent


async def run_router(
    settings: StorageSettings,
    events: trio.MemoryReceiveChannel[list[Event]],
    work_out: trio.MemorySendChannel[FlushWork],
    *,
    wall_clock: WallClock = system_wall_us,
    doorbell: Doorbell | None = None,
    first_rows: Sequence[Event] = (),
    tap: OutletTap | None = None,
    analytics: TradeAnalytics | None = None,
    min_seq: int = 0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Route the batches of ``events`` into :class:`FlushWork` sent on ``work_out``.

    Every stream's ``collector_seq`` starts at the wall clock's time in nanoseconds when
    the router starts, or at ``min_seq`` if that is higher (the writer passes one above
    the highest number in the files it recovered; see the module docstring).

    With a ``tap`` (:mod:`collector.outlets.tap`), every routed batch, ``first_rows``
    included, is offered to the live outlets as it is routed, and the ``outlet_overflow``
    status rows the tap has due are routed (and offered) after each take. The router
    closes the tap when it ends, however it ends, so the outlets drain and stop. With
    ``analytics`` (:mod:`collector.analytics`), every routed batch is added to the
    running figures, and after each take the rows of the intervals completed by then (by
    ``wall_clock``) are routed like the others (and offered to the outlets).

    Owns and closes both channel ends. ``work_out`` should be a rendezvous channel (size
    0): the router's memory bound and its backpressure rest on a send that waits for the
    flusher (see the module docstring). ``first_rows`` are routed before
    ``task_status.started()`` (the writer's rows for an unclean stop). Batches are taken
    when ``doorbell`` rings and at every flush tick (without a doorbell, at the ticks only).

    When ``events`` ends, the rows still waiting are sent as a last work and ``work_out`` is
    closed; the router does not retire the keys that are still open then: the flusher
    finishes every file when its input ends.

    Cancellation: rows not yet handed over are lost (they were never journaled). Raises
    ``ValueError`` for an event its columns refuse (an adapter bug), and
    ``trio.BrokenResourceError`` if the flusher went away.
    """
    interval = settings.flush_interval_secs
    flush_rows = settings.flush_max_rows
    hourly = settings.rotate_hourly
    doorbell = doorbell or Doorbell(1)
    with events, work_out, _closing(tap):
        hours = _Hours(hourly, wall_clock, _Numbering(max(wall_clock() * SEQ_PER_US, min_seq)))
        waiting = _Waiting(hourly)
        observe = _observer(tap, analytics)
        if first_rows:
            _route(waiting, list(first_rows), observe)
        task_status.started()
        deadline = trio.current_time() + interval
        due = False  # a tick came and its rows are not handed over yet
        while True:
            is_open = await _take(events, waiting, doorbell, flush_rows, observe)
            if tap is not None and tap.pending:
                overflow_rows = tap.status_rows(wall_clock())
                if overflow_rows:
                    _route(waiting, overflow_rows, observe)
            if analytics is not None:
                interval_rows = analytics.rows_due(wall_clock())
                if interval_rows:
                    _route(waiting, interval_rows, tap)
            if waiting.rows >= flush_rows:
                # A flush's worth: wait for the flusher, taking nothing meanwhile.
                work = hours.work(waiting)
                await work_out.send(work)
                hours.handed_over(work)
                waiting = _Waiting(hourly)
                continue
            if not is_open:
                break
            now = trio.current_time()
            if now >= deadline:
                due = True
                deadline += interval
                if deadline < now:  # the router waited a whole interval: skip, do not spin
                    deadline = now + interval
            if due:
                work = hours.work(waiting)
                if not work:
                    due = False
                else:
                    if await _offer(work_out, work, doorbell, deadline):
                        hours.handed_over(work)
                        waiting = _Waiting(hourly)
                        due = False
                    # Handed over, rung, or the next tick: take what waits first.
                    continue
            with trio.move_on_at(deadline):
                await doorbell.wait()
        work = hours.work(waiting)
        if work:
            await work_out.send(work)


def _route(waiting: _Waiting, batch: list[Event], observe: Observer | None) -> None:
    waiting.route(batch)
    if observe is not None:
        observe(batch)


@contextmanager
def _closing(tap: OutletTap | None) -> Iterator[None]:
    try:
        yield
    finally:
        if tap is not None:
            tap.close()
