"""A guard for tests whose stage under test runs worker threads under the autojump clock."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio


@asynccontextmanager
async def fail_after_real(seconds: float = 10.0) -> AsyncIterator[None]:
    """Fail the test if its body has not ended after ``seconds`` of real time.

    ``trio.fail_after`` cannot bound these tests: while a worker thread runs, a pending
    deadline of the test is what the autojump clock would jump to. A watchdog thread
    cancels the body instead, so a broken stage fails the test rather than hanging it.
    """
    token = trio.lowlevel.current_trio_token()
    done = threading.Event()
    with trio.CancelScope() as scope:

        def watch() -> None:
            if not done.wait(seconds):
                trio.from_thread.run_sync(scope.cancel, trio_token=token)

        threading.Thread(target=watch, daemon=True).start()
        try:
            yield
        finally:
            done.set()
    if scope.cancelled_caught:
        pytest.fail(f"not done after {seconds} s of real time")
