"""Blocking client calls in worker threads that stop when their Trio task is cancelled.

A Trio task cannot interrupt a worker thread; the thread must notice by itself. Each
outlet gives its threads a ``threading.Event`` to look at between steps, and
:func:`stop_on_cancel` sets it once the outlet's scope is cancelled (or ends).
"""

from __future__ import annotations

import threading

import trio


async def stop_on_cancel(stop: threading.Event) -> None:
    """Sleep until cancelled, then set ``stop``: run it in the nursery of the tasks whose
    threads watch ``stop``, so a cancellation reaches the threads."""
    try:
        await trio.sleep_forever()
    finally:
        stop.set()
