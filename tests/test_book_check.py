"""The crossed-book check (collector/exchanges/book_check.py) against a plain book."""

from __future__ import annotations

import random

from collector.events import levels_from_pairs
from collector.exchanges.book_check import CrossCheck


def test_snapshot_and_updates() -> None:
    check = CrossCheck()
    assert not check.snapshot(levels_from_pairs([(100, 1), (99, 1)]), levels_from_pairs([(101, 1)]))
    # Removing levels never crosses: the best ask goes, the bound stays (no scan needed).
    assert not check.apply(levels_from_pairs([(100, 0)]), levels_from_pairs([(101, 0)]))
    # The ask side is empty now; a new ask above the best bid is fine.
    assert not check.apply(levels_from_pairs([]), levels_from_pairs([(100.5, 2)]))
    # A bid at the best ask crosses.
    assert check.apply(levels_from_pairs([(100.5, 1)]), levels_from_pairs([]))
    assert check.describe() == "crossed book: best bid 100.5 >= best ask 100.5"


def test_an_update_that_crosses_and_uncrosses_within_itself_is_fine() -> None:
    check = CrossCheck()
    check.snapshot(levels_from_pairs([(100, 1)]), levels_from_pairs([(101, 1)]))
    # The bid reaches 101 in the same update that removes the ask at 101 and adds 102.
    assert not check.apply(levels_from_pairs([(101, 1)]), levels_from_pairs([(101, 0), (102, 1)]))
    assert (check.best_bid, check.best_ask) == (101, 102)


def test_a_crossed_snapshot() -> None:
    check = CrossCheck()
    assert check.snapshot(levels_from_pairs([(101, 1)]), levels_from_pairs([(100, 1)]))


def test_agrees_with_a_plain_book_on_a_moving_market() -> None:
    """10,000 random updates around a drifting mid, each compared with a brute-force book;
    now and then an update is corrupted (a bid placed above the best ask)."""
    rng = random.Random(7)
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    check = CrossCheck()
    paired = CrossCheck()  # fed sorted pairs, as Binance's frames are
    mid = 1000.0
    crossings = 0
    for step in range(10_000):
        if step % 500 == 0:
            bids = {mid - i: 1.0 for i in range(1, 40)}
            asks = {mid + i: 1.0 for i in range(1, 40)}
            for fresh in (check, paired):
                assert not fresh.snapshot(
                    levels_from_pairs(sorted(bids.items())), levels_from_pairs(sorted(asks.items()))
                )
        mid += rng.choice((-1.0, 0.0, 1.0))
        new_bids: dict[float, float] = {}
        new_asks: dict[float, float] = {}
        for _ in range(rng.randint(1, 8)):
            price = mid - rng.randint(1, 30)
            new_bids[price] = 0.0 if rng.random() < 0.4 else rng.random()
            price = mid + rng.randint(1, 30)
            new_asks[price] = 0.0 if rng.random() < 0.4 else rng.random()
        # The venue keeps its own book uncrossed: levels beyond the new mid go.
        for price in [p for p in bids if p >= mid]:
            new_bids[price] = 0.0
        for price in [p for p in asks if p <= mid]:
            new_asks[price] = 0.0
        if rng.random() < 0.01:
            new_bids[mid + rng.randint(1, 5)] = 1.0  # corrupted
        for book, update in ((bids, new_bids), (asks, new_asks)):
            for price, size in update.items():
                if size:
                    book[price] = size
                else:
                    book.pop(price, None)
        expected = bool(bids and asks and max(bids) >= min(asks))
        got = check.apply(
            levels_from_pairs(list(new_bids.items())), levels_from_pairs(list(new_asks.items()))
        )
        assert got == expected, step
        # Spot sorts bids high to low, futures low to high: either way.
        bid_pairs = sorted(new_bids.items(), reverse=step % 2 == 0)
        assert paired.apply_sorted_pairs(bid_pairs, sorted(new_asks.items())) == expected, step
        if expected:
            crossings += 1
            assert (check.best_bid, check.best_ask) == (max(bids), min(asks))
            # Resynced: a fresh, uncrossed book.
            for price in [p for p in bids if p >= mid]:
                del bids[price]
            for fresh in (check, paired):
                assert not fresh.snapshot(
                    levels_from_pairs(list(bids.items())), levels_from_pairs(list(asks.items()))
                )
    assert crossings > 20
    # The 0.0 entries are dropped as the sides are scanned: the dicts stay near the book.
    assert len(check.bids) < 4 * max(64, len(bids))
