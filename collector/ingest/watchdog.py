"""Liveness of one connection: when data last came, on the whole and per stream.

Only data counts: a read whose frames gave the session's events (market data, or the
status rows of subscription replies). Reads that carried only WebSocket pings and pongs,
and venue heartbeats and pongs (frames that parse to no events), do not, so a venue that
keeps pinging while its data has stopped is still found out.

:class:`Activity` is written by the receive loop, once per read that carried data, and
read by :func:`run_watchdog`, a task beside it that raises
:class:`~collector.ingest.errors.StaleConnection` when the connection, or one of its
streams with a ``silence_timeout_secs``, went without data for too long.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Final, NoReturn

import trio

from collector.clock import WallClock
from collector.events import SPORADIC_DATA_TYPES, Event, Status, feed_data_type
from collector.exchanges.base import ConnectionPlan, Subscription
from collector.ingest.errors import StaleConnection
from collector.ingest.handover import Lane

# A stream of a connection: (symbol, data_type), the symbol spelt as the venue does.
StreamKey = tuple[str, str]

_stream_key: Final = attrgetter("symbol", "DATA_TYPE")


def _subscription_key(sub: Subscription) -> StreamKey:
    return (sub.symbol, feed_data_type(sub.feed))


# Data types that are no stream of their own: status rows (a subscription reply counts for
# the connection, not as the stream's data) and raw frames.
_NOT_STREAMS: Final = frozenset(("status", "raw"))


class Activity:
    """When a connection's data last came: ``last_data`` for the connection and
    ``streams`` per (symbol, data_type), in Trio time, for the watchdog; ``received_us``
    per stream, in wall time, for the ``collector_last_data_timestamp_seconds`` metric
    (the exchange's mapping from :meth:`Metrics.last_data
    <collector.metrics.Metrics.last_data>`, read at scrape time); and the streams the venue
    refused for good (``refused``: the watchdog never waits for their data).

    Only the receive loop writes it, through :meth:`saw`: one pass over a read's events in
    C (``set(map(attrgetter))``), then two dict stores per stream seen, not per event (a
    busy read carries many events of few streams). No gauge is set on this path: a
    labelled gauge's lookup and lock cost more than the pass itself.

    ``sporadic_only``: every subscription of the connection is a sporadic data type
    (:data:`~collector.events.SPORADIC_DATA_TYPES`, e.g. only liquidations), whose silence
    says nothing; then any frame counts as life for the connection (the venue's pongs and
    heartbeats), and the receive loop notes reads without events too.
    """

    __slots__ = (
        "_replanned",
        "joined",
        "last_data",
        "plan",
        "received_us",
        "refused",
        "sporadic_only",
        "streams",
    )

    def __init__(
        self, now: float, received_us: dict[StreamKey, int], *, sporadic_only: bool = False
    ) -> None:
        self.last_data = now
        self.streams: dict[StreamKey, float] = {}
        self.received_us = received_us
        self.refused: set[StreamKey] = set()
        self.sporadic_only = sporadic_only
        # The connection's plan, as changed at run time (None: not known), and
        # when each stream that joined it since started (its silence counts from then).
        self.plan: ConnectionPlan | None = None
        self.joined: dict[StreamKey, float] = {}
        self._replanned = trio.Event()

    @classmethod
    def for_plan(
        cls, now: float, received_us: dict[StreamKey, int], plan: ConnectionPlan
    ) -> Activity:
        """The activity of ``plan``'s connection (``sporadic_only`` from its subscriptions)."""
        sporadic = bool(plan.subscriptions) and all(
            feed_data_type(sub.feed) in SPORADIC_DATA_TYPES for sub in plan.subscriptions
        )
        activity = cls(now, received_us, sporadic_only=sporadic)
        activity.plan = plan
        return activity

    def saw(self, events: list[Event], start: int, now: float, received_us: int) -> None:
        """Note a read that carried data: ``events[start:]`` are the session's events of it
        (the rows before ``start``, raw frames, are not data), ``now`` the Trio time and
        ``received_us`` the wall time of the read."""
        self.last_data = now
        streams = self.streams
        wall = self.received_us
        for key in set(map(_stream_key, events if start == 0 else events[start:])):
            if key[1] not in _NOT_STREAMS:
                streams[key] = now
                wall[key] = received_us

    def replan(self, plan: ConnectionPlan, now: float) -> None:
        """The connection's plan changed while it runs (symbols joined or left at run time,
        ``now`` the Trio time the session took it): the watchdog watches ``plan``'s streams
        from now on, a joined stream's silence counted from ``now``. Called by the receive
        loop; wakes the watchdog."""
        before = self.plan.subscriptions if self.plan is not None else ()
        known = {_subscription_key(sub) for sub in before}
        for sub in plan.subscriptions:
            key = _subscription_key(sub)
            if key not in known and key not in self.streams:
                self.joined.setdefault(key, now)
        self.plan = plan
        self._replanned.set()

    async def wait_replanned(self, deadline: float) -> None:
        """Until :meth:`replan` was called since the last wait, or ``deadline`` (Trio time)."""
        with trio.move_on_at(deadline):
            await self._replanned.wait()
        if self._replanned.is_set():
            self._replanned = trio.Event()

    def note_refusals(self, statuses: tuple[Status, ...]) -> None:
        """Remember the streams of the ``subscribe_error`` rows among ``statuses``: a
        stream refused for good sends nothing, and that is no silence."""
        for row in statuses:
            if row.event == "subscribe_error" and row.data_type is not None:
                self.refused.add((row.symbol, row.data_type))


async def run_watchdog(
    activity: Activity,
    message_timeout_secs: float,
    plan: ConnectionPlan,
    sink: Lane,
    wall_clock: WallClock,
) -> NoReturn:
    """Raise StaleConnection once the connection had no data for ``message_timeout_secs``,
    or one of its subscriptions with a ``silence_timeout_secs`` had none for that long.

    A silent stream first gets a ``silent`` status row (its symbol and feed, how long it
    was silent), then its connection is replaced: the new connection subscribes afresh,
    which is the one remedy that works on every venue. (Resubscribing just that stream
    would keep the others flowing, but needs each venue's unsubscribe and resubscribe
    frames.) A stream's time starts when the connection starts, or, for a stream that joined
    the running connection (:meth:`Activity.replan`, symbols added at run time), when the
    session took the change; a stream refused for good is never waited for. A change of
    plan wakes this task, so a joined stream is watched at once.

    Waiting for the writer is not the venue's silence: the connection does not read then,
    so whether the venue sends cannot be seen. The watchdog is suspended while ``sink``
    waits, and the end of a wait counts as data for the connection and every stream: what
    the kernel held meanwhile is read right after, and a venue that really fell silent is
    caught one limit later.

    Runs until it raises or its nursery is cancelled. The receive loop only notes the time
    of each read with data; this task wakes about once per limit to look (moving a cancel
    scope's deadline on every read cost a deadline heap update per read, on the path that
    runs hundreds of times a second).
    """
    started = activity.last_data
    current = plan
    watched = _watched(current)
    shortest = min([message_timeout_secs, *(limit for _, _, limit in watched)])
    while True:
        if activity.plan is not None and activity.plan is not current:
            current = activity.plan  # symbols joined or left the running connection
            watched = _watched(current)
            shortest = min([message_timeout_secs, *(limit for _, _, limit in watched)])
        now = trio.current_time()
        if sink.waiting:
            await trio.sleep_until(now + shortest)  # look again later: a wait ends as data
            continue
        resumed = sink.wait_ended_at
        due = max(activity.last_data, resumed) + message_timeout_secs
        if now >= due:
            raise StaleConnection(f"no data for {message_timeout_secs}s")
        silent: list[tuple[Subscription, float]] = []
        removed = sink.sink.removed  # symbols removed at run time are not waited for
        joined = activity.joined
        for sub, key, limit in watched:
            if key in activity.refused or key[0] in removed:
                continue
            since = activity.streams.get(key)
            if since is None:
                since = joined.get(key, started)
            stream_due = max(since, resumed) + limit
            if now >= stream_due:
                silent.append((sub, limit))
            else:
                due = min(due, stream_due)
        if silent:
            await _write_silent_rows(silent, plan.exchange, sink, wall_clock())
            described = ", ".join(f"{sub.symbol} {sub.feed} for {limit}s" for sub, limit in silent)
            raise StaleConnection(f"no data on {described}")
        await activity.wait_replanned(due)


def _watched(plan: ConnectionPlan) -> list[tuple[Subscription, StreamKey, float]]:
    """``plan``'s subscriptions with a ``silence_timeout_secs`` whose silence means
    something (not sporadic data types), with their stream keys and limits."""
    return [
        (sub, _subscription_key(sub), sub.silence_timeout_secs)
        for sub in plan.subscriptions
        if sub.silence_timeout_secs is not None
        and feed_data_type(sub.feed) not in SPORADIC_DATA_TYPES
    ]


async def _write_silent_rows(
    silent: list[tuple[Subscription, float]], exchange: str, sink: Lane, now_us: int
) -> None:
    await sink.send(
        [
            Status(
                exchange,
                sub.symbol,
                None,
                now_us,
                None,
                "silent",
                feed_data_type(sub.feed),
                detail=f"no {sub.feed} data for {limit}s (silence_timeout_secs): reconnecting",
            )
            for sub, limit in silent
        ],
        now_us,
    )
