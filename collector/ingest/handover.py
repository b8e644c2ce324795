"""Planned reconnects without holes: for a moment two connections of one plan, one stream of rows.

A venue that closes every connection at a known age (Binance: 24 h) would leave a hole at
each close. Instead the supervisor opens a *successor* connection before the old one is
due, and this module joins the two so that the files see one unbroken stream:

- :class:`Lane` is one connection attempt's way into the supervisor's
  :class:`~collector.ingest.sink.EventSink`. Outside a handover a lane writes straight
  through (the receive loop checks one attribute per read, nothing per event).
- :class:`Overlap` is one handover. While it lasts, the old connection writes as before
  and the highest sequence it wrote per stream (symbol, data_type) is noted; the
  successor's rows are *held*, not written. Once the successor has subscribed, has no book
  snapshot outstanding, and every stream that had data reaches back to what the old one
  wrote (its first update's coverage starts at or below the old one's last sequence + 1),
  the overlap *switches*, in one step with no checkpoint: a ``handover`` row per symbol,
  then the successor's held rows whose sequence is above what the old one wrote; from
  then on the old connection's rows are not written (it is closed), and the successor's
  rows at or below that point, the rest of the overlap, are dropped until each stream has
  passed it.
- :class:`Watch` wakes the supervisor when an attempt of its chain changes state.

What "no hole" means, by kind of stream (sequences must grow within a stream, which is why
only venues whose rows carry ids declare a lifetime): trades continue after the last id
the old connection wrote; book deltas continue with the first successor delta that covers
the next update id (``first_sequence <= last + 1 < sequence``, the venue's own rule for
joining deltas to a book, so the deltas written stay continuous); snapshots and tickers
continue with the first one newer than what was written. The successor's own book sync (a
REST snapshot, where the venue needs one) must have been applied before the switch; its
snapshot row is written when it is newer than what the old connection wrote, and is the
overlap otherwise. Streams without sequences switch at the switch point: their held rows
are dropped, which can miss or repeat what came within one read of it.

A handover that does not complete (the successor fails, or the old connection ends before
the successor is ready) is *aborted*: the successor's held rows, its ``connected`` rows
among them, are thrown away, and the old connection writes straight through again. Its
end, if it came, is an ordinary disconnect with its ``disconnected`` rows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal

import trio

from collector.clock import WallClock
from collector.events import BookUpdate, Event, Raw, Status, feed_data_type
from collector.exchanges.base import ConnectionPlan
from collector.ingest.sink import EventSink

if TYPE_CHECKING:
    from collector.ingest.dispatcher import Dispatcher

# A stream of a connection: (symbol, data_type), the symbol spelt as the venue does.
StreamKey = tuple[str, str]

# The successor's rows that describe the connection, not the data: replaced by the
# ``handover`` rows at the switch (a reader sees no new connection, because none of the
# data's continuity changed).
_CONNECTION_ROWS: Final = frozenset(("connected", "subscribed", "disconnected"))
# What a retired (replaced) connection still writes: the accounting of what its session
# skipped on purpose, which no other row repeats.
_KEPT_AFTER_RETIREMENT: Final = frozenset(("discarded",))
# How long after a switch the successor's rows are still checked against the switch point.
# The successor reached back to it before the switch, so the rest of the overlap comes at
# once; a stream quiet since then must not keep a filter on the receive path for good.
TAIL_SECS: Final = 60.0
# A stream quiet on both connections since the overlap began has nothing to join, once the
# successor has been subscribed this long (and the old connection kept reading meanwhile,
# not waiting for the writer): an update sent just before the successor subscribed has
# reached the old connection by then.
QUIET_SECS: Final = 5.0


class Watch:
    """Wakes whoever waits on it (the supervisor) when a lane or an overlap changes state.

    Trio-only and single-loop; :meth:`notify` never blocks.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def until(self, predicate: Callable[[], bool], deadline: float = math.inf) -> bool:
        """Wait until ``predicate()`` is true (True) or Trio time reaches ``deadline``
        (False, unless it became true just then)."""
        with trio.move_on_at(deadline):
            while not predicate():
                await self._event.wait()
            return True
        return predicate()


class Lane:
    """One connection attempt's way into the supervisor's sink.

    ``overlap`` is None except during a handover (then every row goes through it).
    ``primary`` says whether the attempt speaks for its plan's health (the successor does
    not until the switch, nor the old connection after it). ``run_connection`` sets
    ``up_since`` (Trio time the handshake completed), ``dispatcher`` (so an overlap can
    tell whether the successor has subscribed and has no book snapshot outstanding) and
    ``closing`` (the connection is ending: no switch may happen through it any more).
    """

    __slots__ = ("closing", "dispatcher", "overlap", "primary", "sink", "up_since", "watch")

    def __init__(
        self, sink: EventSink, *, primary: bool = True, watch: Watch | None = None
    ) -> None:
        self.sink = sink
        self.overlap: Overlap | None = None
        self.primary = primary
        self.watch = watch
        self.up_since: float | None = None
        self.dispatcher: Dispatcher | None = None
        self.closing = False

    @property
    def waiting(self) -> bool:
        """Whether a sender of this plan is waiting for room in the channel (the sink's)."""
        return self.sink.waiting

    @property
    def wait_ended_at(self) -> float:
        return self.sink.wait_ended_at

    def mark_up(self) -> None:
        """The handshake completed: note when (the lifetime counts from here)."""
        self.up_since = trio.current_time()
        if self.watch is not None:
            self.watch.notify()

    async def send(self, batch: list[Event], now_us: int) -> None:
        """Write ``batch`` (straight to the sink, or through the handover under way)."""
        overlap = self.overlap
        if overlap is None:
            await self.sink.send(batch, now_us)
        else:
            await overlap.forward(self, batch, now_us)

    async def settle(self, now_us: int) -> None:
        """The connection has done what its last result asked (subscriptions noted,
        snapshots requested): a successor may be ready to take over now."""
        overlap = self.overlap
        if overlap is not None and self is overlap.new:
            rows = overlap.try_switch(now_us)
            if rows:
                await self.sink.send(rows, now_us)


OverlapState = Literal["overlap", "switched", "aborted"]


class Overlap:
    """One handover from ``old`` to ``new`` (two lanes of one plan, one sink); see the
    module docstring. Attaches itself to both lanes.

    Called only from the two connections' tasks (:meth:`forward`, :meth:`Lane.settle`)
    and the supervisor (:meth:`abort`); every change of state happens without a
    checkpoint, so the two connections always see one state. ``switched`` and ``aborted``
    are final; the supervisor is woken (``watch``) when either is reached.
    """

    def __init__(
        self,
        old: Lane,
        new: Lane,
        plan: ConnectionPlan,
        wall_clock: WallClock,
        *,
        watch: Watch | None = None,
        detail: str = "planned reconnect",
    ) -> None:
        self.old = old
        self.new = new
        self.exchange = plan.exchange
        self.symbols = plan.symbols
        self.streams: tuple[StreamKey, ...] = tuple(
            dict.fromkeys((s.symbol, feed_data_type(s.feed)) for s in plan.subscriptions)
        )
        self.wall_clock = wall_clock
        self.watch = watch
        self.detail = detail
        self.state: OverlapState = "overlap"
        # The old connection: the highest sequence it wrote per stream since the overlap began.
        self.written: dict[StreamKey, int] = {}
        # Streams with data from either connection since the overlap began.
        self.active: set[StreamKey] = set()
        # The successor: where its first update of each stream starts (None: no sequence),
        # the streams it was refused, and its rows not written yet.
        self.start: dict[StreamKey, int | None] = {}
        self.refused: set[StreamKey] = set()
        self.held: list[Event] = []
        # Trio time the successor was first seen subscribed (every subscription resolved).
        self.subscribed_at: float | None = None
        # After the switch: the successor's rows of a stream at or below this are the
        # overlap, until one is above it.
        self.tail: dict[StreamKey, int] = {}
        self.tail_until = math.inf
        # What the switch settled, for tests and logs: the rows held and not written.
        self.overlap_dropped = 0
        old.overlap = self
        new.overlap = self

    @property
    def switched(self) -> bool:
        return self.state == "switched"

    # ----------------------------------------------------------------- the two connections

    async def forward(self, lane: Lane, batch: list[Event], now_us: int) -> None:
        """Write, hold or drop one batch of ``lane`` (one of the two), as the state says."""
        if lane is self.old:
            if self.state == "switched":
                kept: list[Event] = [
                    e for e in batch if type(e) is Status and e.event in _KEPT_AFTER_RETIREMENT
                ]
                if kept:
                    await lane.sink.send(kept, now_us)
                return
            if self.state == "overlap":
                self._note_written(batch)
                batch += self.try_switch(now_us)
            await lane.sink.send(batch, now_us)
            return
        if self.state == "overlap":
            self._note_held(batch)
            self.held += batch
        elif self.state == "switched":
            rows = self._past_tail(batch)
            if rows:
                await lane.sink.send(rows, now_us)
        # aborted: the successor is being closed; nothing of it is written.

    def try_switch(self, now_us: int) -> list[Event]:
        """Switch if the successor is ready: the rows to write (``handover`` rows first,
        then the successor's held rows past the overlap), else an empty list."""
        if not self._ready():
            return []
        return self._switch(now_us)

    async def poll(self) -> None:
        """Switch if the successor is ready (the supervisor's call, when quiet streams
        may have settled with no row coming to ask)."""
        rows = self.try_switch(self.wall_clock())
        if rows:
            await self.new.sink.send(rows, self.wall_clock())

    def abort(self) -> None:
        """End a handover that did not complete (the supervisor's call): the successor's
        held rows are thrown away, the old connection writes straight through again."""
        if self.state != "overlap":
            return
        self.state = "aborted"
        self.held.clear()
        self.old.overlap = None
        if self.watch is not None:
            self.watch.notify()

    # ----------------------------------------------------------------- bookkeeping

    def _note_written(self, batch: list[Event]) -> None:
        written = self.written
        active = self.active
        for event in batch:
            kind = type(event)
            if kind is Status or kind is Raw:
                continue
            key = (event.symbol, kind.DATA_TYPE)
            active.add(key)
            seq = event.sequence
            if seq is not None and seq > written.get(key, seq - 1):
                written[key] = seq

    def _note_held(self, batch: list[Event]) -> None:
        start = self.start
        for event in batch:
            kind = type(event)
            if kind is Raw:
                continue
            if type(event) is Status:
                if event.event == "subscribe_error" and event.data_type is not None:
                    self.refused.add((event.symbol, event.data_type))
                continue
            key = (event.symbol, kind.DATA_TYPE)
            self.active.add(key)
            if key not in start:
                # Where its coverage starts: a delta covers first_sequence..sequence.
                if type(event) is BookUpdate and event.kind == "delta":
                    first = event.first_sequence
                    start[key] = event.sequence if first is None else first
                else:
                    start[key] = event.sequence

    def _ready(self) -> bool:
        """The successor has subscribed, has no book snapshot outstanding, and reaches back
        to what the old connection wrote on every stream that had data. A stream quiet on
        both since the overlap began has nothing to join once :data:`QUIET_SECS` passed
        after the successor subscribed (the supervisor asks again, :meth:`poll`, since no
        row may come to ask)."""
        if self.state != "overlap" or self.old.closing or self.new.closing:
            return False
        dispatcher = self.new.dispatcher
        if dispatcher is None or not dispatcher.subscribed:
            return False
        now = trio.current_time()
        if self.subscribed_at is None:
            self.subscribed_at = now
        if dispatcher.awaiting:
            return False
        sink = self.old.sink
        settled = (
            not sink.waiting and now >= max(self.subscribed_at, sink.wait_ended_at) + QUIET_SECS
        )
        for key in self.streams:
            if key in self.refused:
                continue
            if key not in self.active:
                if settled:
                    continue  # quiet on both: nothing to join
                return False
            if key not in self.start:
                return False  # only the old connection has data for it yet
            first = self.start[key]
            if first is None:
                continue  # no sequence: joins at the switch point
            last = self.written.get(key)
            if last is None or first > last + 1:
                return False  # the old connection has not written up to there yet
        return True

    def _switch(self, now_us: int) -> list[Event]:
        self.state = "switched"
        written = self.written
        rows: list[Event] = []
        dropped: Counter[str] = Counter()
        passed: set[StreamKey] = set()
        for event in self.held:
            kind = type(event)
            if kind is Raw:
                rows.append(event)  # the successor's frames, as received: all kept
                continue
            if type(event) is Status:
                if event.event in _CONNECTION_ROWS:
                    continue
                if event.event == "resync" and event.data_type is not None:
                    last = written.get((event.symbol, event.data_type))
                    seq = event.received_sequence
                    if last is not None and seq is not None and seq <= last:
                        continue  # the resync of a snapshot that is part of the overlap
                rows.append(event)
                continue
            key = (event.symbol, kind.DATA_TYPE)
            seq = event.sequence
            last = written.get(key)
            if seq is None or (last is not None and seq <= last):
                dropped[event.symbol] += 1
                continue
            passed.add(key)
            rows.append(event)
        self.held = []
        self.overlap_dropped = sum(dropped.values())
        self.tail = {key: last for key, last in written.items() if key not in passed}
        self.tail_until = trio.current_time() + TAIL_SECS
        handovers: list[Event] = [
            Status(
                self.exchange,
                symbol,
                None,
                now_us,
                None,
                "handover",
                count=dropped[symbol],
                detail=self._describe(symbol),
            )
            for symbol in self.symbols
        ]
        self.old.primary = False
        self.new.primary = True
        if not self.tail:
            self.new.overlap = None
        if self.watch is not None:
            self.watch.notify()
        return handovers + rows

    def _describe(self, symbol: str) -> str:
        points = ", ".join(
            f"{data_type} after {self.written[(sym, data_type)]}"
            for sym, data_type in sorted(self.written)
            if sym == symbol
        )
        return f"{self.detail}: a new connection took over" + (f" ({points})" if points else "")

    def _past_tail(self, batch: list[Event]) -> list[Event]:
        """The successor's rows after the switch, without the rest of the overlap."""
        tail = self.tail
        if trio.current_time() >= self.tail_until:
            tail.clear()  # a stream that stayed quiet since the switch: nothing left to drop
        rows: list[Event] = []
        for event in batch:
            kind = type(event)
            if kind is Status or kind is Raw:
                rows.append(event)
                continue
            key = (event.symbol, kind.DATA_TYPE)
            last = tail.get(key)
            if last is not None:
                seq = event.sequence
                if seq is not None and seq <= last:
                    continue
                del tail[key]
            rows.append(event)
        if not tail:
            self.new.overlap = None  # every stream has passed the switch point
        return rows
