"""What a connection does with a session's results: the receive loop's one helper.

The session returns :class:`~collector.exchanges.base.Actions` from every call; the
:class:`Dispatcher` carries them out without blocking the receive loop: frames to the
paced sender's outbox, snapshot requests to the REST fetcher, the first completed
subscription to health, and a reconnect request as the error that ends the connection.
"""

from __future__ import annotations

import trio

from collector.exchanges.base import Actions, SnapshotRequest
from collector.health import HealthState
from collector.ingest.errors import OutboxOverflow, VenueRequestedReconnect


class Dispatcher:
    """Does what a session's results ask, for the receive loop: frames go to the paced
    sender, REST snapshot requests to the fetcher, the first ``subscribed`` to health, a
    reconnect request ends the connection. Never blocks: a session that asks for more than
    the connection holds ends it (OutboxOverflow).

    ``awaiting`` counts the snapshots requested whose bodies have not been handed to the
    session yet, so the receive loop looks for bodies only while some are due (most
    connections never ask for one, and looking costs an exception per read).
    """

    __slots__ = ("_health", "_name", "_outbox", "_snapshots", "awaiting", "subscribed")

    def __init__(
        self,
        name: str,
        health: HealthState,
        outbox: trio.MemorySendChannel[str],
        snapshots: trio.MemorySendChannel[SnapshotRequest],
    ) -> None:
        self._name = name
        self._health = health
        self._outbox = outbox
        self._snapshots = snapshots
        self.subscribed = False
        self.awaiting = 0

    def follow(self, actions: Actions) -> None:
        """Queue ``actions``' frames and snapshot requests, note a completed subscription;
        raises VenueRequestedReconnect when the session asks for a reconnect."""
        if actions.send or actions.fetch:
            try:
                for frame in actions.send:
                    self._outbox.send_nowait(frame)
                for request in actions.fetch:
                    self._snapshots.send_nowait(request)
                    self.awaiting += 1
            except trio.WouldBlock:
                size = self._outbox.statistics().max_buffer_size
                raise OutboxOverflow(
                    f"the session queued more than {size} frames or snapshot requests"
                ) from None
        if actions.subscribed and not self.subscribed:
            self.subscribed = True
            self._health.set_subscribed(self._name)
        if actions.reconnect is not None:
            raise VenueRequestedReconnect(actions.reconnect)
