"""Order book replay: the top of the book at each update, or every T, between two times.

The ``orderbook`` table holds three kinds of rows: ``snapshot`` (the venue's whole visible
book), ``checkpoint`` (the whole book as the collector held it, written at the head of its
files) and ``delta`` (changed levels; size 0 removes a level). A replay of ``(start, end)``:

1. finds the latest snapshot or checkpoint received at or before ``start`` (reading only
   the ``kind`` and time columns, newest file first) and starts there;
2. applies the rows in order of receive time, the status rows of the symbol merged in
   (a status row goes before a book row received in the same microsecond: a ``resync`` row
   precedes the snapshot it announces);
3. at every hole of the order book (:data:`~collector.reader.holes.HOLE_EVENTS` rows whose
   ``data_type`` is ``orderbook`` or null) forgets the book and says so with a
   :class:`BookReset`; deltas then cannot apply and are skipped until the next snapshot or
   checkpoint, which restores the book. A checkpoint equal to the known book (the writer
   keeps the same book by the same rules, and restates it at each file's head) is no
   update: it yields no view.

It yields, first, the book as of ``start`` (every row received up to and including
``start`` applied): a :class:`BookView`, or a :class:`BookReset` if the book is not known
then (no snapshot before it, or a hole since the last one; its ``time`` is when the book
became unknown). Then, for the rows received after ``start`` and before ``end``: a
:class:`BookView` after each update that leaves a known book and a :class:`BookReset` at each
hole; or, with ``every``, a :class:`BookView` at ``start + every``, ``start + 2 * every``
... (each as of that time; none while the book is unknown) and the resets as they come.
Samples stop at the last row read: past it the data does not say the book stood still.

Memory: the book, plus one record batch of one file at a time (read with pyarrow's
dataset fragments, row groups outside the range skipped by their statistics).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from collector.reader.catalog import TIMESTAMP_COLUMN, DataFile, list_files
from collector.reader.errors import UsageError
from collector.reader.holes import HOLE_EVENTS, ORDERBOOK, status_rows
from collector.reader.source import Source
from collector.reader.tables import time_filter
from collector.reader.times import from_us, iso
from collector.storage.schemas import TIMESTAMP

CHECKPOINT: Final = "checkpoint"
FULL_BOOK_KINDS: Final = frozenset({"snapshot", CHECKPOINT})
NO_SNAPSHOT: Final = "no_snapshot"
_BOOK_COLUMNS: Final = ["timestamp_collector", "sequence", "kind", "bids", "asks"]

Level = tuple[float, float]


@dataclass(frozen=True)
class BookView:
    """The top of the book as of ``time``: ``bids`` best (highest) first, ``asks`` best
    (lowest) first, as (price, size). ``updated``, ``sequence`` and ``kind`` are those of the
    last row applied (``time`` is later than ``updated`` for the first view and samples)."""

    time: datetime
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    updated: datetime
    sequence: int | None
    kind: str

    def to_dict(self) -> dict[str, Any]:
        """Plain data (times as ISO 8601 strings), e.g. for JSON."""
        return {
            "time": _iso(self.time),
            "updated": _iso(self.updated),
            "sequence": self.sequence,
            "kind": self.kind,
            "bids": [list(level) for level in self.bids],
            "asks": [list(level) for level in self.asks],
        }


@dataclass(frozen=True)
class BookReset:
    """From ``time`` the book is unknown, until the next snapshot or checkpoint. ``event`` is
    the status event that made it so (``disconnected``, ``gap`` ...), or ``no_snapshot``
    when no snapshot or checkpoint had been received yet; ``detail`` says more."""

    time: datetime
    event: str
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"time": _iso(self.time), "reset": self.event, "detail": self.detail}


BookItem = BookView | BookReset


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Side:
    """One side of a book: size by price, and the prices in ascending order."""

    __slots__ = ("best_high", "prices", "sizes")

    def __init__(self, best_high: bool) -> None:
        self.best_high = best_high
        self.sizes: dict[float, float] = {}
        self.prices: list[float] = []

    def replace(self, prices: Sequence[float], sizes: Sequence[float]) -> None:
        self.sizes = {p: s for p, s in zip(prices, sizes, strict=True) if s != 0}
        self.prices = sorted(self.sizes)

    def holds(self, prices: Sequence[float], sizes: Sequence[float]) -> bool:
        """Whether this side is exactly these levels (a full book's, sizes never 0)."""
        return len(prices) == len(self.sizes) and all(
            self.sizes.get(p) == s for p, s in zip(prices, sizes, strict=True)
        )

    def apply(self, prices: Sequence[float], sizes: Sequence[float]) -> None:
        book, ladder = self.sizes, self.prices
        for price, size in zip(prices, sizes, strict=True):
            if size == 0:
                if book.pop(price, None) is not None:
                    del ladder[bisect_left(ladder, price)]
            else:
                if price not in book:
                    insort(ladder, price)
                book[price] = size

    def top(self, depth: int | None) -> tuple[Level, ...]:
        ladder = self.prices
        if self.best_high:
            chosen = ladder[::-1] if depth is None else ladder[: -depth - 1 : -1]
        else:
            chosen = ladder if depth is None else ladder[:depth]
        return tuple((price, self.sizes[price]) for price in chosen)


class _Book:
    """The book being replayed, and what the last applied row was."""

    def __init__(self) -> None:
        self.bids = _Side(best_high=True)
        self.asks = _Side(best_high=False)
        self.known = False
        self.updated = 0
        self.sequence: int | None = None
        self.kind = ""

    def forget(self) -> None:
        self.known = False
        self.bids.replace((), ())
        self.asks.replace((), ())

    def apply(self, row: _BookRow) -> bool:
        """Apply ``row``; whether it changed a known book (a delta to an unknown one does not
        apply)."""
        _, _, kind, sequence, bid_prices, bid_sizes, ask_prices, ask_sizes = row
        if (
            kind == CHECKPOINT
            and self.known
            and self.bids.holds(bid_prices, bid_sizes)
            and self.asks.holds(ask_prices, ask_sizes)
        ):
            return False  # the collector restating the book the rows gave: no update
        if kind in FULL_BOOK_KINDS:
            self.bids.replace(bid_prices, bid_sizes)
            self.asks.replace(ask_prices, ask_sizes)
            self.known = True
        elif self.known:
            self.bids.apply(bid_prices, bid_sizes)
            self.asks.apply(ask_prices, ask_sizes)
        else:
            return False
        self.updated, self.sequence, self.kind = row[0], sequence, kind
        return True

    def view(self, at_us: int, depth: int | None) -> BookView:
        return BookView(
            time=from_us(at_us),
            bids=self.bids.top(depth),
            asks=self.asks.top(depth),
            updated=from_us(self.updated),
            sequence=self.sequence,
            kind=self.kind,
        )


# (time, 1, kind, sequence, bid prices, bid sizes, ask prices, ask sizes)
_BookRow = tuple[int, int, str, "int | None", list[float], list[float], list[float], list[float]]
# (time, 0, event, detail, resets the book)
_StatusRow = tuple[int, int, str, "str | None", bool]


def _fragment(source: Source, file: DataFile) -> ds.Fragment:
    return ds.ParquetFileFormat().make_fragment(file.path, source.filesystem)


def _symbol_filter(exchange: str, symbol: str) -> pc.Expression:
    return (pc.field("exchange") == exchange) & (pc.field("symbol") == symbol)


def _anchor(
    source: Source, files: Sequence[DataFile], exchange: str, symbol: str, start_us: int
) -> tuple[int, int] | None:
    """(index in ``files``, time) of the latest snapshot or checkpoint received at or before
    ``start_us``, looking through the files newest first; ``None`` if there is none."""
    wanted = (
        _symbol_filter(exchange, symbol)
        & (pc.field(TIMESTAMP_COLUMN) <= pa.scalar(start_us, TIMESTAMP))
        & pc.field("kind").isin(list(FULL_BOOK_KINDS))
    )
    for index in range(len(files) - 1, -1, -1):
        if files[index].start_ms * 1000 > start_us:
            continue
        found = _fragment(source, files[index]).to_table(columns=[TIMESTAMP_COLUMN], filter=wanted)
        if found.num_rows:
            latest = pc.max(found.column(TIMESTAMP_COLUMN).cast(pa.int64())).as_py()
            return index, int(latest)
    return None


def _file_rows(source: Source, file: DataFile, row_filter: pc.Expression) -> Iterator[_BookRow]:
    """The book rows of ``file`` that pass ``row_filter``, in the order written."""
    for batch in _fragment(source, file).to_batches(columns=_BOOK_COLUMNS, filter=row_filter):
        times = batch.column(0).cast(pa.int64()).to_pylist()
        sequences = batch.column(1).to_pylist()
        kinds = batch.column(2).to_pylist()
        bids = _levels(batch.column(3))
        asks = _levels(batch.column(4))
        for i, time in enumerate(times):
            yield (time, 1, kinds[i], sequences[i], *bids(i), *asks(i))


def _levels(column: pa.Array) -> Callable[[int], tuple[list[float], list[float]]]:
    """A function giving row ``i``'s (prices, sizes) of a ``list<struct<price, size>>``
    column, the values converted to Python once per batch."""
    offsets = column.offsets.to_pylist()
    prices = column.values.field("price").to_pylist()
    sizes = column.values.field("size").to_pylist()

    def row(i: int) -> tuple[list[float], list[float]]:
        lo, hi = offsets[i], offsets[i + 1]
        return prices[lo:hi], sizes[lo:hi]

    return row


def _status_items(
    source: Source, exchange: str, symbol: str, from_us_: int, end_us: int
) -> list[_StatusRow]:
    rows = status_rows(source, end_us=end_us, exchange=exchange, symbol=symbol)
    items: list[_StatusRow] = []
    for row in rows:
        at = row["timestamp_collector"]
        if at < from_us_:
            continue
        resets = row["event"] in HOLE_EVENTS and row["data_type"] in (None, ORDERBOOK)
        items.append((at, 0, row["event"], row["detail"], resets))
    items.sort(key=lambda item: item[0])
    return items


def replay_book(
    source: Source,
    exchange: str,
    symbol: str,
    start_us: int,
    end_us: int,
    *,
    depth: int | None = 10,
    every_us: int | None = None,
) -> Iterator[BookItem]:
    """Replay ``exchange``/``symbol``'s book over ``(start_us, end_us)`` (see the module
    docstring for what is yielded). ``depth``: levels per side (``None``: all);
    ``every_us``: sample every that many microseconds instead of at each update.

    Lazy: files are listed and read as the iterator is consumed (blocking I/O; in an async
    program, run it in a worker thread). Raises :class:`UsageError` for ``end_us`` before
    ``start_us``, a depth below 1 or a sampling interval below 1 us; ``OSError`` and
    ``pyarrow.ArrowInvalid`` from the files.
    """
    if end_us < start_us:
        raise UsageError(f"the end {iso(end_us)} is before the start {iso(start_us)}")
    if depth is not None and depth < 1:
        raise UsageError(f"depth must be at least 1, not {depth}")
    if every_us is not None and every_us < 1:
        raise UsageError("the sampling interval must be positive")
    return _replay(source, exchange, symbol, start_us, end_us, depth, every_us)


def _replay(
    source: Source,
    exchange: str,
    symbol: str,
    start_us: int,
    end_us: int,
    depth: int | None,
    every_us: int | None,
) -> Iterator[BookItem]:
    files = list_files(
        source, exchange=exchange, symbol=symbol, data_type=ORDERBOOK, before_us=end_us
    )
    anchor = _anchor(source, files, exchange, symbol, start_us)
    if anchor is None:
        # Nothing before start can be applied: begin with the file that may hold start.
        first_file = max(
            (i for i, f in enumerate(files) if f.start_ms * 1000 <= start_us), default=0
        )
        from_time = start_us + 1
    else:
        first_file, from_time = anchor
    times = time_filter(from_time, end_us)
    assert times is not None
    row_filter = _symbol_filter(exchange, symbol) & times
    book_rows = (row for f in files[first_file:] for row in _file_rows(source, f, row_filter))
    statuses = _status_items(source, exchange, symbol, from_time, end_us)
    merged: Iterator[_BookRow | _StatusRow] = heapq.merge(
        statuses, book_rows, key=lambda item: (item[0], item[1])
    )

    book = _Book()
    reset: BookReset | None = (
        BookReset(
            from_us(start_us), NO_SNAPSHOT, "no snapshot or checkpoint at or before this time"
        )
        if anchor is None
        else None
    )
    started = False  # whether the view at start has been given
    next_sample = start_us + every_us if every_us is not None else None
    last_at = start_us
    for item in merged:
        at = last_at = item[0]
        if not started and at > start_us:
            started = True
            yield book.view(start_us, depth) if book.known else _unknown(reset, start_us)
        if next_sample is not None and every_us is not None:
            while next_sample < at and next_sample < end_us:
                if book.known:
                    yield book.view(next_sample, depth)
                next_sample += every_us
        if item[1] == 0:
            _, _, event, detail, resets = cast(_StatusRow, item)
            if resets:
                book.forget()
                reset = BookReset(from_us(at), event, detail)
                if started:
                    yield reset
            continue
        if book.apply(cast(_BookRow, item)) and started and every_us is None:
            yield book.view(at, depth)
    if not started:
        yield book.view(start_us, depth) if book.known else _unknown(reset, start_us)
    if next_sample is not None and every_us is not None:
        while next_sample <= last_at and next_sample < end_us:
            if book.known:
                yield book.view(next_sample, depth)
            next_sample += every_us


def _unknown(reset: BookReset | None, start_us: int) -> BookReset:
    return reset or BookReset(from_us(start_us), NO_SNAPSHOT, None)


def book_at(
    source: Source, exchange: str, symbol: str, at_us: int, *, depth: int | None = 10
) -> BookItem:
    """The book as of ``at_us`` (every row received up to and including it applied): the
    first item of :func:`replay_book`."""
    return next(iter(replay_book(source, exchange, symbol, at_us, at_us + 1, depth=depth)))
