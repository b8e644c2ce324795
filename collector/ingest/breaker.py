"""The parse-error circuit breaker of a connection's receive loop.

A venue that starts sending frames the adapter cannot read (a format change, a wrong
endpoint) should not be recorded as a stream of skipped frames for hours: once most recent
frames fail, the connection ends (``TooManyParseErrors``) and the reconnect, with its status
rows, makes the problem visible. A single bad frame is only skipped and counted.
"""

from __future__ import annotations

from collections import deque
from itertools import repeat


class ParseBreaker:
    """Trips when more than half of the last ``window`` frames failed to parse."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._recent: deque[bool] = deque(maxlen=window)
        self._failures = 0

    def record(self, ok: bool) -> bool:
        """Record one frame's outcome; True when the breaker trips."""
        if len(self._recent) == self.window and not self._recent[0]:
            self._failures -= 1
        self._recent.append(ok)
        if not ok:
            self._failures += 1
        return self._failures * 2 > self.window

    def record_ok_run(self, count: int) -> None:
        """Record ``count`` successful frames at once (the common case)."""
        recent = self._recent
        if not self._failures:
            # Every recorded frame was good: only the window's fill level can change.
            room = self.window - len(recent)
            if room > 0:
                recent.extend(repeat(True, min(count, room)))
            return
        for _ in range(min(count, self.window)):
            self.record(True)
