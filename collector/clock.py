"""Wall-clock time for data timestamps, injectable so tests can drive it from Trio's clock.

Scheduling (timeouts, flush ticks, backoff) always uses ``trio.current_time()``; only the
timestamps written into rows and the UTC hour of rotation come from a ``WallClock``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

WallClock = Callable[[], int]
"""Returns microseconds since the Unix epoch, UTC."""


def system_wall_us() -> int:
    return time.time_ns() // 1000


def trio_wall_clock(epoch_us: int) -> WallClock:
    """A wall clock that reads ``epoch_us`` when Trio's clock reads 0 and moves with it.

    With ``trio.testing.MockClock`` this makes wall time virtual too.
    """

    def now() -> int:
        return epoch_us + int(trio.current_time() * 1_000_000)

    return now
