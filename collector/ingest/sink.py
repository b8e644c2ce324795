"""The connection's side of the event channel: waits for room, drops only when the writer is gone."""

from __future__ import annotations

import logging
from collections import Counter

import trio

from collector.doorbell import Doorbell
from collector.events import Event, Status
from collector.health import HealthState
from collector.metrics import Metrics

log = logging.getLogger(__name__)

# How long a connection's last rows may wait for room in the channel while it closes
# (shielded: it is being cancelled). Past it they are held for the next send, or dropped
# and counted at the sink's close.
CLOSE_SEND_TIMEOUT_SECS = 1.0


class EventSink:
    """Sends one connection's batches to the writer, waiting for room when the channel is full.

    Owns its clone of the event channel (closed by :meth:`aclose`) and one connection's
    writer-wait accounting. A batch is put on the channel at once when it fits (no
    checkpoint, no task switch: the path every read takes). When the channel is full the
    sender rings the writer's doorbell and waits for room: the receive loop stops reading,
    and the kernel's and the venue's buffers hold what comes meanwhile, so memory stays
    bounded by the channel while nothing received is thrown away. Each wait is measured
    (``collector_writer_wait_seconds_total`` when it ends, ``collector_writer_waiting_seconds``
    while it lasts) and reported to ``health`` (degraded once a wait lasts long).

    A send cancelled while it waits delivered nothing (Trio's cancelled ``send`` never
    does): its events are held and go first in the next send, or at :meth:`aclose`.

    Only what truly cannot be held is dropped: events for a channel whose writer is gone
    (cancelled at the shutdown deadline), or held events the writer takes nothing of within
    the bounded wait at close. They are counted in ``collector_messages_dropped_total``
    and recorded as ``dropped`` status rows (one per symbol, with the count and the time
    span) in front of the next batch that goes through.
    """

    def __init__(
        self,
        channel: trio.MemorySendChannel[list[Event]],
        exchange: str,
        metrics: Metrics,
        doorbell: Doorbell | None = None,
        *,
        connection: str = "",
        health: HealthState | None = None,
        removed: set[str] | None = None,
    ) -> None:
        self.channel = channel
        self.removed: set[str] = set() if removed is None else removed
        self.doorbell = doorbell
        self.exchange = exchange
        self.connection = connection
        self._health = health
        self._dropped_metric = metrics.messages_dropped.labels(exchange)
        self._dropped: Counter[str] = Counter()
        self._first_drop_us = 0
        self._last_drop_us = 0
        self.total_dropped = 0
        # Events of sends cancelled while they waited: they go first in the next send.
        self._held: list[Event] = []
        # Writer waits: how many senders wait now, since when (Trio time) the first of
        # them waits, and when the last wait ended (the total is the metric's).
        self._waiters = 0
        self._wait_since: float | None = None
        self.wait_ended_at = -float("inf")
        self._wait_metric = metrics.writer_wait_seconds.labels(exchange, connection)
        metrics.writer_waiting_seconds.labels(exchange, connection).set_function(self.current_wait)

    @property
    def waiting(self) -> bool:
        """Whether a sender of this connection is waiting for room in the channel now."""
        return self._waiters > 0

    def current_wait(self) -> float:
        """Seconds the connection has been waiting for the writer (0 when it is not)."""
        since = self._wait_since
        return 0.0 if since is None else max(0.0, trio.current_time() - since)

    async def send(self, batch: list[Event], now_us: int) -> None:
        """Send one batch (not re-used by the caller afterwards), waiting while the channel
        is full. Never raises for a gone writer (the events are dropped and counted);
        Cancelled leaves the batch held for the next send."""
        if self.removed:
            batch = without_removed(batch, self.removed)
        if self._held:
            batch = self._held + batch
            self._held = []
        if self._dropped:
            batch = self._drop_rows(now_us) + batch
        try:
            self.channel.send_nowait(batch)
        except trio.WouldBlock:
            await self._wait_for_room(batch, now_us)
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # Nobody reads any more (the writer is gone, e.g. cancelled at the shutdown
            # deadline): the events are lost, never an error here.
            self._record_drop(batch, now_us)
            return
        self._dropped.clear()
        if self.doorbell is not None:
            self.doorbell.sent()

    async def _wait_for_room(self, batch: list[Event], now_us: int) -> None:
        if self.doorbell is not None:
            self.doorbell.ring()  # the channel is full: the writer takes batches now
        self._begin_wait()
        try:
            await self.channel.send(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._record_drop(batch, now_us)
            return
        except trio.Cancelled:
            # Nothing was delivered. The drop rows are made again from the counts.
            self._held = [e for e in batch if not _is_drop_row(e)] + self._held
            raise
        finally:
            self._end_wait()
        self._dropped.clear()
        if self.doorbell is not None:
            self.doorbell.sent()

    def _begin_wait(self) -> None:
        self._waiters += 1
        if self._waiters == 1:
            self._wait_since = trio.current_time()
            if self._health is not None:
                self._health.set_writer_wait(self.connection, self._wait_since)

    def _end_wait(self) -> None:
        self._waiters -= 1
        if self._waiters == 0 and self._wait_since is not None:
            now = trio.current_time()
            waited = now - self._wait_since
            self._wait_since = None
            self.wait_ended_at = now
            self._wait_metric.inc(waited)
            if self._health is not None:
                self._health.clear_writer_wait(self.connection)

    def _record_drop(self, batch: list[Event], now_us: int) -> None:
        lost = [e for e in batch if not _is_drop_row(e)]
        if not lost:
            return
        if not self._dropped:
            self._first_drop_us = now_us
        self._last_drop_us = now_us
        self._dropped.update(e.symbol for e in lost)
        self.total_dropped += len(lost)
        self._dropped_metric.inc(len(lost))

    def _drop_rows(self, now_us: int) -> list[Event]:
        detail = (
            f"the writer had stopped: events dropped between {self._first_drop_us} and "
            f"{self._last_drop_us} (us since epoch)"
        )
        return [
            Status(
                self.exchange,
                symbol,
                None,
                self._first_drop_us,
                None,
                "dropped",
                None,
                None,
                None,
                count,
                detail,
            )
            for symbol, count in sorted(self._dropped.items())
        ]

    async def aclose(self, now_us: int, max_wait_secs: float = CLOSE_SEND_TIMEOUT_SECS) -> None:
        """Send the held events and any pending drop record, then close this channel clone.

        They wait up to ``max_wait_secs`` seconds for room in the channel (shielded: this
        runs while the connection is being cancelled, and the writer keeps draining until
        every sender has closed). Held events the writer takes nothing of in that time are
        dropped and counted; a drop record that cannot be written is lost, with a warning.
        """
        if self._held or self._dropped:
            with trio.CancelScope(shield=True), trio.move_on_after(max_wait_secs):
                await self.send([], now_us)
            if self._held:
                self._record_drop(self._held, now_us)
                self._held = []
            if self._dropped:
                log.warning(
                    "could not record %d dropped events in the data (the writer is gone or "
                    "took nothing for %ss at close)",
                    sum(self._dropped.values()),
                    max_wait_secs,
                    extra={"exchange": self.exchange, "connection": self.connection},
                )
        self.channel.close()
        if self.doorbell is not None:
            self.doorbell.ring()  # the writer sees the channel end without waiting a tick


def without_removed(batch: list[Event], removed: set[str]) -> list[Event]:
    """``batch`` less the rows of ``removed`` symbols, but for their ``unsubscribed`` rows
    (the last row a removed symbol gets)."""
    return [
        e
        for e in batch
        if e.symbol not in removed or (type(e) is Status and e.event == "unsubscribed")
    ]


def _is_drop_row(event: Event) -> bool:
    return type(event) is Status and event.event == "dropped"
