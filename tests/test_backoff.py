"""Backoff: 1, 2, 4 ... capped, each jittered by +/-25 %, never above the cap; reset()."""

from __future__ import annotations

import random

import pytest

from collector.backoff import Backoff


def test_doubles_from_initial_to_cap_within_the_jitter_band() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(1234))
    bases = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    delays = [backoff.next_delay() for _ in bases]
    for base, delay in zip(bases, delays, strict=True):
        assert base * 0.75 <= delay <= min(60.0, base * 1.25), (base, delay)
    assert max(delays) <= 60.0
    assert backoff.attempts == len(bases)


def test_jitter_is_the_seeded_random_factor() -> None:
    """Same seed, same delays; the factor is uniform(0.75, 1.25) applied to the base."""
    rng = random.Random(7)
    expected_factors = [rng.uniform(0.75, 1.25) for _ in range(4)]
    backoff = Backoff(0.5, 100.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(4)]
    assert delays == pytest.approx(
        [b * f for b, f in zip([0.5, 1.0, 2.0, 4.0], expected_factors, strict=True)]
    )


def test_jitter_actually_varies_the_delays() -> None:
    """Many clients must not reconnect in lockstep: one seed gives different factors."""
    rng = random.Random(99)
    factors = {round(Backoff(1.0, 1.0, rng=rng).next_delay(), 9) for _ in range(20)}
    assert len(factors) > 10
    assert all(0.75 <= f <= 1.0 for f in factors)  # capped at maximum == initial


def test_never_above_the_cap_even_with_upward_jitter() -> None:
    class MaxRandom(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    backoff = Backoff(1.0, 10.0, rng=MaxRandom())
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == [1.25, 2.5, 5.0, 10.0, 10.0, 10.0, 10.0, 10.0]


def test_many_attempts_do_not_overflow() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(0))
    for _ in range(2000):
        delay = backoff.next_delay()
    assert 45.0 <= delay <= 60.0


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(5))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.next_delay() >= 45.0
    backoff.reset()
    assert backoff.attempts == 0
    assert 0.75 <= backoff.next_delay() <= 1.25
    assert 1.5 <= backoff.next_delay() <= 2.5


def test_zero_jitter_is_exact() -> None:
    backoff = Backoff(2.0, 20.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(6)] == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0]


@pytest.mark.parametrize(
    ("initial", "maximum", "jitter"),
    [(0.0, 1.0, 0.25), (-1.0, 1.0, 0.25), (2.0, 1.0, 0.25), (1.0, 2.0, 1.0), (1.0, 2.0, -0.1)],
)
def test_rejects_bad_parameters(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ValueError, match=r"initial|jitter"):
        Backoff(initial, maximum, jitter=jitter)
