"""One outlet's own bounded buffer: where the stored events wait for a live outlet.

The files' backpressure is the event channel (a full channel stops the connections
reading); an outlet must never add to it. So the router offers each routed batch to every
outlet's buffer without waiting (:meth:`OutletBuffer.offer`): a batch that does not fit
is refused, and the tap counts it as dropped for that outlet alone.
"""

from __future__ import annotations

from collections import deque

import trio

from collector.events import Event


class OutletBuffer:
    """A FIFO of event batches bounded in events, filled by the router (on the event loop,
    never waiting) and emptied by one outlet task.

    ``capacity`` bounds the events waiting here; the batch the outlet took last is its own
    (so at most twice ``capacity`` events are held for an outlet, plus its client's queue).
    Batches are kept as the router routed them (the lists are not re-used by anybody), in
    order: an outlet sees each key's events in the order of the files.
    """

    def __init__(self, name: str, capacity: int, data_types: frozenset[str]) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.name = name
        self.capacity = capacity
        # The data types the outlet publishes: the others are not counted when dropped.
        self.data_types = data_types
        self.size = 0
        self._batches: deque[list[Event]] = deque()
        self._closed = False
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, batch: list[Event]) -> bool:
        """Append ``batch`` if its events fit; whether it was taken. Never waits, never
        raises (a closed buffer takes nothing)."""
        n = len(batch)
        if self._closed or self.size + n > self.capacity:
            return False
        self._batches.append(batch)
        self.size += n
        if self._lot:
            self._lot.unpark_all()
        return True

    def close(self) -> None:
        """No more batches come: the outlet takes what waits, then sees the end."""
        self._closed = True
        self._lot.unpark_all()

    async def take(self) -> list[list[Event]]:
        """Every batch waiting, oldest first; waits while there is none. An empty list
        means the buffer is closed and drained. Cancellation takes nothing."""
        while not self._batches and not self._closed:
            await self._lot.park()
        if self._batches:
            await trio.lowlevel.checkpoint()
        batches = list(self._batches)
        self._batches.clear()
        self.size = 0
        return batches
