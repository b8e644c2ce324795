"""Pacing shared by every connection of one venue budget: connection attempts, REST snapshots.

Venues limit per IP, not per connection: Binance spot allows 6,000 REST weight a minute and
some connection attempts a second to the whole process, however many pooled connections it
opens. A :class:`Pacer` is therefore shared by every task that spends one budget (the
connections of an exchange share the connection-attempt pacer; the snapshot fetchers of
every connection to one REST budget share one :class:`RestPacers` entry), and when the
venue answers "too many requests" with a ``Retry-After``, :meth:`Pacer.hold` makes every one
of them wait, not only the task that was refused.

Trio-only, no locks: the tasks that share a pacer run on one thread.
"""

from __future__ import annotations

import math

import trio


class Pacer:
    """Turns at least ``1/per_second`` apart, first come first served, over every task that
    holds this pacer; :meth:`hold` stops all turns for a while (a venue's ``Retry-After``).
    """

    __slots__ = ("_held_until", "_next", "interval", "per_second")

    def __init__(self, per_second: float) -> None:
        if not per_second > 0:
            raise ValueError(f"per_second must be positive (got {per_second})")
        self.per_second = per_second
        self.interval = 1.0 / per_second
        self._next = -math.inf
        self._held_until = -math.inf

    async def wait_turn(self) -> None:
        """Wait until the caller may go (its turn, and no hold). Cancellation gives up the
        wait; the turn it had booked stays spent (the next caller waits one interval more at
        most)."""
        while True:
            at = max(trio.current_time(), self._next, self._held_until)
            self._next = at + self.interval
            await trio.sleep_until(at)
            if trio.current_time() >= self._held_until:
                return
            # A hold came while this turn waited: queue again behind it.

    def hold(self, seconds: float) -> None:
        """No turn starts during the next ``seconds`` (a hold never shortens an earlier one)."""
        self._held_until = max(self._held_until, trio.current_time() + seconds)

    @property
    def held_until(self) -> float:
        """The Trio time the current hold ends (in the past: none)."""
        return self._held_until


class RestPacers:
    """The REST pacers of one service run, one per budget name (an adapter's
    :meth:`~collector.exchanges.base.ExchangeAdapter.snapshot_budget`): every connection
    that fetches against one budget gets the same :class:`Pacer`."""

    __slots__ = ("_pacers",)

    def __init__(self) -> None:
        self._pacers: dict[str, Pacer] = {}

    def get(self, budget: str, per_second: float) -> Pacer:
        """The pacer of ``budget``, made at ``per_second`` by its first caller. A later caller
        giving another rate gets the first one's pacer (one budget has one rate); a mismatch
        is a bug in the adapter's declarations, so it raises ValueError."""
        pacer = self._pacers.get(budget)
        if pacer is None:
            pacer = self._pacers[budget] = Pacer(per_second)
        elif pacer.per_second != per_second:
            raise ValueError(
                f"REST budget {budget!r} paced at {pacer.per_second}/s and at {per_second}/s"
            )
        return pacer
