"""The connection's side of the event channel: never blocks, counts and records drops."""

from __future__ import annotations

import logging
from collections import Counter

import trio

from collector.doorbell import Doorbell
from collector.events import Event, Status
from collector.metrics import Metrics

log = logging.getLogger(__name__)

# How long a connection's last drop record may wait for room in the channel at close.
CLOSE_SEND_TIMEOUT_SECS = 1.0


class EventSink:
    """Sends batches of events without ever waiting for storage, and rings the writer's
    doorbell (if any) for each batch sent and when it closes.

    If the channel is full the batch is dropped and counted; as soon as a later batch
    fits, ``dropped`` status rows (one per symbol, with the count and the time span) go
    first, so the hole is recorded in the data itself.
    """

    def __init__(
        self,
        channel: trio.MemorySendChannel[list[Event]],
        exchange: str,
        metrics: Metrics,
        doorbell: Doorbell | None = None,
    ) -> None:
        self.channel = channel
        self.doorbell = doorbell
        self.exchange = exchange
        self._dropped_metric = metrics.messages_dropped.labels(exchange)
        self._dropped: Counter[str] = Counter()
        self._first_drop_us = 0
        self._last_drop_us = 0
        self.total_dropped = 0

    def send(self, batch: list[Event], now_us: int) -> bool:
        """Send one batch (not re-used by the caller afterwards). True if it was accepted."""
        if self._dropped:
            batch = self._drop_rows(now_us) + batch
        try:
            self.channel.send_nowait(batch)
        except (trio.WouldBlock, trio.BrokenResourceError):
            # Full, or nobody reads any more (the writer is gone, e.g. cancelled at the
            # shutdown deadline): either way the events are lost, never an error here.
            self._record_drop(batch, now_us)
            return False
        self._dropped.clear()
        if self.doorbell is not None:
            self.doorbell.sent()
        return True

    def _record_drop(self, batch: list[Event], now_us: int) -> None:
        lost = [e for e in batch if not (type(e) is Status and e.event == "dropped")]
        if not self._dropped:
            self._first_drop_us = now_us
        self._last_drop_us = now_us
        self._dropped.update(e.symbol for e in lost)
        self.total_dropped += len(lost)
        self._dropped_metric.inc(len(lost))

    def _drop_rows(self, now_us: int) -> list[Event]:
        detail = (
            f"event channel full: events dropped between {self._first_drop_us} and "
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
        """Send any pending drop record, then close this channel clone.

        The record waits up to ``max_wait_secs`` seconds for room in the channel (shielded: this
        runs while the connection is being cancelled, and the writer keeps draining until
        every sender has closed), so a hole made while the channel was full is still written
        down at shutdown. Only if the writer is gone, or takes nothing for that long, is
        the record lost, with a warning.
        """
        if self._dropped:
            rows = self._drop_rows(now_us)
            try:
                with trio.CancelScope(shield=True), trio.move_on_after(max_wait_secs):
                    if self.doorbell is not None:
                        self.doorbell.ring()  # the channel was full: the writer takes some
                    await self.channel.send(rows)
                    self._dropped.clear()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            if self._dropped:
                log.warning(
                    "could not record %d dropped events in the data (the writer took nothing "
                    "for %ss at close)",
                    sum(self._dropped.values()),
                    max_wait_secs,
                    extra={"exchange": self.exchange},
                )
        self.channel.close()
        if self.doorbell is not None:
            self.doorbell.ring()  # the writer sees the channel end without waiting a tick
