"""Kraken's local order book and its CRC32 checksum (sans-IO: no trio, no clock, no I/O).

Kraken v2 books carry no sequence number; integrity is the CRC32 ``checksum`` of the top
10 levels sent with the snapshot and with every update. :class:`OrderBook` is one symbol's
book at the subscribed depth (levels applied in message order, size 0 deletes, truncated to
the depth after each message, as Kraken's guide says), kept with each level's wire text so
that :meth:`OrderBook.checksum` can be compared with the venue's.

The checksum (Kraken's v2 guide, identical to v1): for the 10 best asks (low to high) then
the 10 best bids (high to low), the price text and then the qty text, each with ``.``
removed and leading zeros stripped, concatenated; CRC32 as an unsigned 32-bit integer. The
text must be the venue's exact decimal text (the JSON number's bytes), never a float's
``repr``. Kraken says the wire carries full precision (trailing zeros included, e.g.
``0.10000000``). Its own book-page example however shows trimmed numbers (``18097.1547``)
whose checksum only matches when each number is padded to the pair's precision; so each
number is padded with zeros to the most decimals seen in that field for that symbol (a no-op
on full-precision text).
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from collections.abc import Sequence
from decimal import Decimal
from typing import Final

# Levels per side that the checksum covers.
CHECKSUM_LEVELS: Final = 10


def _decimals(text: bytes) -> int:
    dot = text.find(b".")
    return 0 if dot < 0 else len(text) - dot - 1


def checksum_digits(text: bytes, decimals: int = 0) -> bytes:
    """One number for the checksum: ``.`` removed, leading zeros stripped.

    ``text`` is first padded with zeros to ``decimals`` decimals (no-op on full-precision
    text); exponent forms (``1e-05``) are written out first.
    """
    if b"e" in text or b"E" in text:
        text = format(Decimal(text.decode()), "f").encode()
    dot = text.find(b".")
    if dot < 0:
        whole, frac = text, b""
    else:
        whole, frac = text[:dot], text[dot + 1 :]
    if len(frac) < decimals:
        frac = frac.ljust(decimals, b"0")
    return (whole + frac).lstrip(b"0")


def book_checksum(
    asks: Sequence[tuple[bytes, bytes]],
    bids: Sequence[tuple[bytes, bytes]],
    price_decimals: int = 0,
    qty_decimals: int = 0,
) -> int:
    """Kraken's CRC32 over the best asks (low to high) then the best bids (high to low).

    Each level is ``(price_text, qty_text)``; only the first 10 of each side count.
    """
    parts = [
        checksum_digits(price, price_decimals) + checksum_digits(qty, qty_decimals)
        for price, qty in (*asks[:CHECKSUM_LEVELS], *bids[:CHECKSUM_LEVELS])
    ]
    return zlib.crc32(b"".join(parts))


class BookSide:
    """One side of a book: levels by price, kept sorted best first, with their wire text.

    ``digits`` caches each level's checksum text (price then qty digits) under the book's
    current decimals; a changed level drops its entry.
    """

    __slots__ = ("digits", "keys", "levels", "sign")

    def __init__(self, *, descending: bool) -> None:
        self.sign = -1.0 if descending else 1.0
        self.keys: list[float] = []  # sign * price, ascending (so best first)
        self.levels: dict[float, tuple[bytes, bytes]] = {}
        self.digits: dict[float, bytes] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def set(self, price: float, size: float, price_text: bytes, size_text: bytes) -> None:
        """Apply one level: size 0 deletes it, anything else inserts or replaces it."""
        key = self.sign * price
        levels = self.levels
        self.digits.pop(key, None)
        if size == 0.0:
            if key in levels:
                del levels[key]
                del self.keys[bisect_left(self.keys, key)]
        else:
            if key not in levels:
                insort(self.keys, key)
            levels[key] = (price_text, size_text)

    def truncate(self, depth: int) -> None:
        """Keep the best ``depth`` levels (the venue sends no deletes for levels beyond it)."""
        keys = self.keys
        if len(keys) > depth:
            levels = self.levels
            digits = self.digits
            for key in keys[depth:]:
                del levels[key]
                digits.pop(key, None)
            del keys[depth:]

    def top(self, n: int) -> list[tuple[bytes, bytes]]:
        """The best ``n`` levels as ``(price_text, size_text)``, best first."""
        levels = self.levels
        return [levels[key] for key in self.keys[:n]]


class OrderBook:
    """A local copy of one symbol's book at the subscribed depth, for checksum checks."""

    __slots__ = ("asks", "bids", "depth", "price_decimals", "qty_decimals")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.asks = BookSide(descending=False)
        self.bids = BookSide(descending=True)
        # The most decimals seen in each field: the pair's precision on trimmed text.
        self.price_decimals = 0
        self.qty_decimals = 0

    def truncate(self) -> None:
        self.asks.truncate(self.depth)
        self.bids.truncate(self.depth)

    def checksum(self) -> int:
        """:func:`book_checksum` of the top 10 levels, reusing the text of unchanged levels."""
        sides = (self.asks, self.bids)
        tops = [side.keys[:CHECKSUM_LEVELS] for side in sides]
        price_decimals = self.price_decimals
        qty_decimals = self.qty_decimals
        for side, keys in zip(sides, tops, strict=True):
            digits, levels = side.digits, side.levels
            for key in keys:
                if key not in digits:
                    price, qty = levels[key]
                    price_decimals = max(price_decimals, _decimals(price))
                    qty_decimals = max(qty_decimals, _decimals(qty))
        if price_decimals != self.price_decimals or qty_decimals != self.qty_decimals:
            self.price_decimals = price_decimals
            self.qty_decimals = qty_decimals
            for side in sides:
                side.digits.clear()
        parts: list[bytes] = []
        for side, keys in zip(sides, tops, strict=True):
            digits, levels = side.digits, side.levels
            for key in keys:
                text = digits.get(key)
                if text is None:
                    price, qty = levels[key]
                    text = digits[key] = checksum_digits(price, price_decimals) + checksum_digits(
                        qty, qty_decimals
                    )
                parts.append(text)
        return zlib.crc32(b"".join(parts))
