"""Capped, jittered exponential backoff: between reconnects (ingest) and S3 retries (upload)."""

from __future__ import annotations

import random


class Backoff:
    """Delays of ``initial * 2**n`` capped at ``maximum``, each scaled by a random factor
    in ``[1 - jitter, 1 + jitter]`` and then capped again, so no delay exceeds ``maximum``.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        jitter: float = 0.25,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the base delay."""
        base = min(self.maximum, self.initial * 2.0 ** min(self.attempts, 62))
        self.attempts += 1
        factor = self._rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return min(self.maximum, base * factor)

    def reset(self) -> None:
        """Start again from the initial delay (after a healthy period)."""
        self.attempts = 0
