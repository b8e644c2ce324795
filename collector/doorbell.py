"""The writer's doorbell: connections wake the writer when enough batches wait, not per batch.

Every read of every connection puts one batch of events on the bounded event channel. If
the writer waited in ``receive()``, each batch would wake it: one more task step and one
more pass of Trio's scheduler per read, hundreds of times a second at a steady rate, only
to append a few events to lists. Instead the writer takes every waiting batch at its flush
tick, and earlier when rung: a sink rings once ``ring_at`` batches wait since the writer
last took them (a fraction of the channel, so a burst never fills it before the writer
comes), and when its connection closes (so the writer sees the end of the channel at once).
"""

from __future__ import annotations

import trio


class Doorbell:
    """Counts batches sent since the writer last took them; wakes it at ``ring_at``."""

    def __init__(self, ring_at: int) -> None:
        if ring_at < 1:
            raise ValueError(f"ring_at must be at least 1, not {ring_at}")
        self.ring_at = ring_at
        self.waiting = 0
        self._lot = trio.lowlevel.ParkingLot()

    def sent(self) -> None:
        """A batch went on the channel (never blocks; rings once ``ring_at`` wait)."""
        self.waiting += 1
        if self.waiting >= self.ring_at and self._lot:
            self._lot.unpark_all()

    def ring(self) -> None:
        """Wake the writer now (e.g. a sender closed its end of the channel)."""
        self._lot.unpark_all()

    def taken(self) -> None:
        """The writer took every waiting batch."""
        self.waiting = 0

    async def wait(self) -> None:
        """Sleep until rung (the writer bounds this with its flush tick)."""
        await self._lot.park()


def ring_at_for(channel_size: int) -> int:
    """The service's threshold: an eighth of the event channel (at least one batch)."""
    return max(1, channel_size // 8)
