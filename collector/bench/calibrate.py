"""How much CPU one idle wake-up costs on this machine, right now.

A bare Trio loop sleeps ``PERIOD_SECS`` at a time for ``DURATION_SECS`` and the process's CPU
time is divided by the wake-ups. On a quiet machine this is a few tens of microseconds; on
a shared virtual machine it moves with the neighbours, by several times within one day
(docs/performance.md, "The machine"). At a steady rate the collector wakes once per
arriving read, so this figure explains most of the spread in the steady-rate CPU figures
between runs.
"""

from __future__ import annotations

import time
from typing import Final

import trio

PERIOD_SECS: Final = 0.005  # the load generator's pacing tick at a set rate
DURATION_SECS: Final = 1.0


async def _ticker(period: float, duration: float) -> float:
    wakeups = round(duration / period)
    next_at = trio.current_time()
    started = time.process_time()
    for _ in range(wakeups):
        next_at += period
        await trio.sleep_until(next_at)
    return (time.process_time() - started) / wakeups


def wakeup_cost_us(period: float = PERIOD_SECS, duration: float = DURATION_SECS) -> float:
    """CPU microseconds per wake-up of a bare Trio loop sleeping ``period`` at a time."""
    return round(trio.run(_ticker, period, duration) * 1e6, 1)
