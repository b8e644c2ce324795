"""Local books checked by an interleaved top-25 CRC32 (OKX ``books``, Bitfinex ``cs``).

Sans-IO: no trio, no clock, no I/O. Both venues define their book checksum the same way:
the best 25 bids and the best 25 asks, interleaved ``bid1 price:bid1 size:ask1 price:ask1
size:bid2 ...`` (a side that runs out is skipped), joined by ``:``, CRC32 as a *signed*
32-bit integer. The numbers are the venue's own text: OKX sends strings; Bitfinex sends
JSON numbers whose text is JavaScript's, with ask amounts negative (as on the wire), so the
session hands over the bytes it received, never a float's ``repr``.

:class:`InterleavedBook` is one symbol's book, kept with each level's wire text (the sorted
sides of :mod:`collector.exchanges.kraken_book`). Sources: OKX's order book channel docs
(``checksum``; deprecated by OKX on 2026-06-23, since when it sends 0), Bitfinex's "WS
checksum" guide (flag 131072); the reference builder is bmoscon/orderbook's
``alternating_checksum``. The formula is confirmed on OKX's recorded frames (tests);
Bitfinex's only on frames built here (no recording carries ``cs`` frames).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Final

from collector.exchanges.kraken_book import BookSide

CHECKSUM_LEVELS: Final = 25

# One level as it came: (price, size, price text, size text).
TextLevel = tuple[float, float, bytes, bytes]


def interleaved_checksum(
    bids: Sequence[tuple[bytes, bytes]], asks: Sequence[tuple[bytes, bytes]]
) -> int:
    """The signed CRC32 of the best 25 bids and asks (best first, as wire text), interleaved."""
    parts: list[bytes] = []
    for i in range(CHECKSUM_LEVELS):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    crc = zlib.crc32(b":".join(parts))
    return crc - (1 << 32) if crc >= 1 << 31 else crc


class InterleavedBook:
    """One symbol's book with each level's wire text, for the interleaved checksum.

    A size of 0 deletes a level. The venue sends a delete for every level it drops, so
    nothing is truncated here.
    """

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = BookSide(descending=True)
        self.asks = BookSide(descending=False)

    def apply(self, bids: Iterable[TextLevel], asks: Iterable[TextLevel]) -> None:
        """Apply levels (a snapshot on an empty book, or one whole update)."""
        for price, size, price_text, size_text in bids:
            self.bids.set(price, size, price_text, size_text)
        for price, size, price_text, size_text in asks:
            self.asks.set(price, size, price_text, size_text)

    def checksum(self) -> int:
        """:func:`interleaved_checksum` of the book as it is now."""
        return interleaved_checksum(self.bids.top(CHECKSUM_LEVELS), self.asks.top(CHECKSUM_LEVELS))

    def crossed(self) -> bool:
        """Whether the best bid is at or above the best ask."""
        bids, asks = self.bids.keys, self.asks.keys
        # Keys are sign * price, ascending: bids' first is -best bid, asks' first the best ask.
        return bool(bids and asks and -bids[0] >= asks[0])

    def best(self) -> tuple[float, float]:
        """(best bid, best ask); a missing side is -inf or inf."""
        bids, asks = self.bids.keys, self.asks.keys
        return (-bids[0] if bids else float("-inf"), asks[0] if asks else float("inf"))
