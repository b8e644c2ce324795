"""Kraken's local order book and checksum (collector.exchanges.kraken_book), without a session."""

from __future__ import annotations

import ast
import random
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from collector.exchanges.kraken_book import OrderBook, book_checksum, checksum_digits
from tests.fakes.kraken import kraken_checksum
from tests.samples import read_f2, require_sample

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "decimals", "digits"),
    [
        (b"45285.2", 0, b"452852"),  # the guide's own examples
        (b"0.00100000", 0, b"100000"),
        (b"45281.0", 1, b"452810"),
        (b"45281", 1, b"452810"),  # a trimmed integer-valued price
        (b"1e-05", 8, b"1000"),  # exponent form written out
        (b"1.0E-7", 8, b"10"),
    ],
)
def test_checksum_digits(text: bytes, decimals: int, digits: bytes) -> None:
    assert checksum_digits(text, decimals) == digits


def test_recorded_v1_books_verify_with_the_same_checksum_code() -> None:
    """cryptofeed's 2021 v1 capture (book-1000, 10 pairs): v1 computes the checksum exactly
    like v2 (Kraken's guide), from quoted full-precision decimals. Rebuilding every book with
    :class:`OrderBook` (depth 1000, applied in order, truncated per message) verifies all 4269
    update checksums of real traffic."""
    capture = read_f2(require_sample("cryptofeed-v3/KRAKEN.jsonl.zst"))
    books: dict[str, OrderBook] = {}
    verified = 0
    for record in capture.received("KRAKEN.ws.50"):
        message = msgspec.json.decode(record.payload)
        if not isinstance(message, list):
            continue  # heartbeat, systemStatus, subscriptionStatus
        pair = message[-1]
        checksum = None
        for part in message[1:-2]:
            if "as" in part or "bs" in part:
                books[pair] = OrderBook(1000)
            book = books[pair]
            for key, side in (
                ("as", book.asks),
                ("a", book.asks),
                ("bs", book.bids),
                ("b", book.bids),
            ):
                for level in part.get(key, []):
                    book_side = side
                    book_side.set(
                        float(level[0]), float(level[1]), level[0].encode(), level[1].encode()
                    )
            checksum = int(part["c"]) if "c" in part else checksum
        books[pair].truncate()
        if checksum is not None:
            assert books[pair].checksum() == checksum, (pair, record.received_us)
            verified += 1
    assert verified == 4269
    assert len(books) == 10
    xbt_chf = books["XBT/CHF"]
    assert len(xbt_chf.bids) <= 1000
    assert len(xbt_chf.asks) <= 1000


def test_cached_checksum_equals_the_reference_over_random_changes() -> None:
    """:meth:`OrderBook.checksum` (cached per level) against :func:`book_checksum` and the
    fake's Decimal implementation, with trimmed texts whose precision shows up late."""

    rng = random.Random(7)
    book = OrderBook(25)
    bids: dict[float, tuple[bytes, bytes]] = {}
    asks: dict[float, tuple[bytes, bytes]] = {}
    for step in range(2000):
        is_bid = rng.random() < 0.5
        price = round((rng.randint(900, 1000) if is_bid else rng.randint(1001, 1100)) / 10, 1)
        qty = 0.0 if rng.random() < 0.3 else rng.randint(1, 10**6) / 10 ** rng.randint(0, 6)
        price_text = repr(price).encode()  # trimmed, like the docs' example
        qty_text = (b"0" if qty == 0 else repr(qty).encode()) if step > 50 else b"1.5"
        qty = float(qty_text)
        side, mirror = (book.bids, bids) if is_bid else (book.asks, asks)
        side.set(price, qty, price_text, qty_text)
        if qty == 0:
            mirror.pop(price, None)
        else:
            mirror[price] = (price_text, qty_text)
        book.truncate()
        for mirror_side, reverse in ((bids, True), (asks, False)):
            for p in sorted(mirror_side, reverse=reverse)[25:]:
                del mirror_side[p]
        best_bids = [bids[p] for p in sorted(bids, reverse=True)]
        best_asks = [asks[p] for p in sorted(asks)]
        got = book.checksum()  # learns the decimals first
        assert got == book_checksum(best_asks, best_bids, book.price_decimals, book.qty_decimals)
    # With the final precision known, the Decimal implementation agrees on padded text.
    pad = [
        (
            format(Decimal(p.decode()), f".{book.price_decimals}f"),
            format(Decimal(q.decode()), f".{book.qty_decimals}f"),
        )
        for p, q in best_bids
    ]
    pad_asks = [
        (
            format(Decimal(p.decode()), f".{book.price_decimals}f"),
            format(Decimal(q.decode()), f".{book.qty_decimals}f"),
        )
        for p, q in best_asks
    ]
    assert book.checksum() == kraken_checksum(pad, pad_asks)
    assert book.qty_decimals == 6


def test_the_book_module_imports_only_pure_standard_modules() -> None:
    source = (REPO / "collector" / "exchanges" / "kraken_book.py").read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "bisect", "collections", "decimal", "typing", "zlib"}
