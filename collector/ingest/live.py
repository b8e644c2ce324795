"""A running connection's plan changes, handed to its receive loop (the session's owner).

:mod:`collector.control` changes what a connection subscribes while it runs, on a venue
whose sessions can (``ExchangeAdapter.live_subscriptions``). Only the receive loop may
call the session, so the change is left in the attempt's :class:`PlanInbox` and the loop
takes it at its next read, before that read's frames (a WebSocket ping is sent when a
change is left, so that even a quiet connection reads the venue's pong at once):
``Session.change_plan`` returns the subscribe and unsubscribe frames, which go out paced
like every other frame. Only the newest plan counts (each is the whole plan), so an inbox
holds one.
"""

from __future__ import annotations

import trio

from collector.exchanges.base import ConnectionPlan


class PlanInbox:
    """One connection attempt's pending plan change (None: none). Registered on its
    connection's list of inboxes (``ConnectionControl.inboxes``) from the moment its
    session exists until the attempt ends, so a change is never lost between the two:
    one that comes before the session subscribed is applied after its first frames."""

    __slots__ = ("_changed", "plan")

    def __init__(self) -> None:
        self.plan: ConnectionPlan | None = None
        self._changed = trio.Event()

    def put(self, plan: ConnectionPlan) -> None:
        """Leave ``plan`` (the whole new plan) for the receive loop, and wake the waiter."""
        self.plan = plan
        self._changed.set()

    async def wait_changed(self) -> None:
        """Until a plan is left after the last wait returned (at once if one was left
        since)."""
        await self._changed.wait()
        self._changed = trio.Event()

    def take(self) -> ConnectionPlan | None:
        plan, self.plan = self.plan, None
        return plan
