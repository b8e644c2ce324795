"""Crossed-book detection for delta books (sans-IO: no trio, no clock, no I/O).

A delta book is crossed when, after a whole update is applied, its best bid is at or above
its best ask: some update was lost or misapplied, and every row built on that book is wrong
until a fresh snapshot replaces it. :class:`CrossCheck` keeps just enough of one symbol's
book to tell, after each update, whether that happened; the session that owns it resyncs
the symbol when it has.

Why it is shaped this way (the cost; figures in docs/performance.md): a local book with the
best bid and ask kept exact per level (a dict plus heaps, a Python call per level) costs
about as much as the rest of a diff-depth frame's parse. Here every step per update runs in
C: each side is a plain ``dict`` of price -> size filled with ``dict.update`` (a size 0
stays in the dict as 0.0 and counts as absent), and the new best of the update's own levels
is one ``max``/``min`` over them. The best price of each side is then kept as a *bound*:

- ``best_bid`` is never below the true best bid (a new bid above it raises it; a bid
  removed can only lower the true best), ``best_ask`` never above the true best ask;
- only when the bounds meet (``best_bid >= best_ask``) can the book be crossed, and only
  then are the sides whose best level is gone (size 0 in the dict) scanned for their true
  best (one pass in C, which also drops the 0.0 entries once they are half of the side).

A crossing needs a level set by this update on at least one side (an uncrossed book stays
uncrossed when levels are only removed or resized), so an update whose levels stay away
from the other side's best costs no scan. The scans come when the top of the book moves
(a best level removed, then the other side reaching the old price).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress
from typing import Final

from collector.events import Levels

_NO_BID: Final = float("-inf")
_NO_ASK: Final = float("inf")
# Drop the 0.0 entries of a side while scanning it once it holds more than this many and
# twice as many as after the last drop.
_COMPACT_MIN: Final = 64


def _best_bid(side: dict[float, float]) -> float:
    return max(compress(side, side.values()), default=_NO_BID)


def _best_ask(side: dict[float, float]) -> float:
    return min(compress(side, side.values()), default=_NO_ASK)


class CrossCheck:
    """One symbol's delta book, kept only to detect a crossed book after each update.

    :meth:`snapshot` starts the book, :meth:`apply` applies one whole update (both sides),
    and both return whether the book is now crossed (best bid >= best ask). Levels are the
    flat :data:`~collector.events.Levels` of a :class:`~collector.events.BookUpdate` (price,
    size, ...; size 0 removes). Never raises for well-formed levels.
    """

    __slots__ = ("ask_compact_at", "asks", "best_ask", "best_bid", "bid_compact_at", "bids")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.best_bid = _NO_BID  # an upper bound of the true best bid (exact after a scan)
        self.best_ask = _NO_ASK  # a lower bound of the true best ask (exact after a scan)
        self.bid_compact_at = _COMPACT_MIN
        self.ask_compact_at = _COMPACT_MIN

    def snapshot(self, bids: Levels, asks: Levels) -> bool:
        """Replace the book with a snapshot's levels; True if the snapshot itself is crossed."""
        self.bids = dict(zip(bids[0::2], bids[1::2], strict=True))
        self.asks = dict(zip(asks[0::2], asks[1::2], strict=True))
        self.best_bid = _best_bid(self.bids)
        self.best_ask = _best_ask(self.asks)
        self.bid_compact_at = max(_COMPACT_MIN, 2 * len(self.bids))
        self.ask_compact_at = max(_COMPACT_MIN, 2 * len(self.asks))
        return self.best_bid >= self.best_ask

    def apply(self, bids: Levels, asks: Levels) -> bool:
        """Apply one whole update; True if the book is crossed after it."""
        if bids:
            prices = bids[0::2]
            sizes = bids[1::2]
            self.bids.update(zip(prices, sizes, strict=True))
            top = max(compress(prices, sizes), default=_NO_BID)
            if top > self.best_bid:
                self.best_bid = top
        if asks:
            prices = asks[0::2]
            sizes = asks[1::2]
            self.asks.update(zip(prices, sizes, strict=True))
            top = min(compress(prices, sizes), default=_NO_ASK)
            if top < self.best_ask:
                self.best_ask = top
        if self.best_bid < self.best_ask:
            return False
        return self._settle()

    def apply_sorted_pairs(
        self, bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]]
    ) -> bool:
        """:meth:`apply` for sides given as ``(price, size)`` pairs (as a decoder gave them),
        each side sorted by price in either direction; True if the book is crossed.

        The cheapest form (the diff-depth path of Binance, whose frames sort each side:
        spot bids high to low, futures low to high, asks low to high; confirmed on the
        recordings): the pairs go into the dicts as they are, and the side's best new
        price is at one of its ends. That end may be a removed level: the bound is then
        looser than it need be (never wrong), which at worst costs a scan.
        """
        if bids:
            self.bids.update(bids)
            top = bids[0][0]
            last = bids[-1][0]
            if last > top:
                top = last
            if top > self.best_bid:
                self.best_bid = top
        if asks:
            self.asks.update(asks)
            top = asks[0][0]
            last = asks[-1][0]
            if last < top:
                top = last
            if top < self.best_ask:
                self.best_ask = top
        if self.best_bid < self.best_ask:
            return False
        return self._settle()

    def _settle(self) -> bool:
        """The bounds meet: make the stale ones exact; whether the book is crossed."""
        if not self.bids.get(self.best_bid):
            if len(self.bids) > self.bid_compact_at:
                self.bids = {price: size for price, size in self.bids.items() if size}
                self.bid_compact_at = max(_COMPACT_MIN, 2 * len(self.bids))
            self.best_bid = _best_bid(self.bids)
        if not self.asks.get(self.best_ask):
            if len(self.asks) > self.ask_compact_at:
                self.asks = {price: size for price, size in self.asks.items() if size}
                self.ask_compact_at = max(_COMPACT_MIN, 2 * len(self.asks))
            self.best_ask = _best_ask(self.asks)
        return self.best_bid >= self.best_ask

    def describe(self) -> str:
        """The crossing, for a status row's detail (after a True result)."""
        return f"crossed book: best bid {self.best_bid!r} >= best ask {self.best_ask!r}"
