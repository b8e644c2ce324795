"""The writer's order books: each book stream's current book, for ``checkpoint`` rows.

Every order book file stands alone: its first row is a ``checkpoint`` (a
:class:`~collector.events.BookUpdate` with ``kind = "checkpoint"``) holding the whole book
as the stream's earlier rows left it, so a reader needs no older file to know the book at
any moment inside this one. A market may ask for more checkpoints inside a file
(``book_snapshot_interval_secs``).

Why the writer keeps these books, not the venue sessions: a file starts where the writer
says (hourly rotation in the router, size rotation in the flusher), and the rows are
already normalized when they reach it (a ``snapshot`` replaces the book, a ``delta`` sets
its levels, size 0 deletes one), so one venue-agnostic book per stream covers every venue,
rotation and restart alike. A checkpoint is exactly the book a reader gets by replaying the
stream's rows in order with the symbol's status rows: a hole (:data:`BOOK_HOLE_EVENTS`, for
the book or the whole connection) forgets the book until the next full one (a ``snapshot``
or ``checkpoint``), as the reader does; no venue rule is applied (no truncation to a
subscribed depth). Without a known book there is no checkpoint. The flusher hands each
work's hole rows over (:meth:`StreamBook.note_hole`) before its book rows.

Cost (the reason for the shape): the flusher's worker thread feeds each flushed batch in
without any work per level: the batch's level arrays from its last ``snapshot`` on are
added, by reference (the writer never changes a flushed buffer), to a *pending* log per
side, and the log is folded into the sorted *base* book by one vectorized Arrow pass
(``group_by(price).last(size)``, a few tens of ns a level, mostly outside the GIL) when it
has grown past twice the base (or :data:`MIN_FOLD_LEVELS`), and whenever a checkpoint is
due. So memory stays within a small multiple of the book plus the pending levels.

Sans-IO: no trio, no clock; the flusher calls it from its worker thread only.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right, insort
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from collector.events import BookUpdate, levels_from_values
from collector.storage.columns import ColumnBuffer

# Fold the pending levels of a side once there are more than this many (or twice the base).
MIN_FOLD_LEVELS: Final = 32_768
CHECKPOINT: Final = "checkpoint"
# Rows that state the whole book: each replaces it.
FULL_BOOK_KINDS: Final = frozenset({"snapshot", CHECKPOINT})
# Status events that are holes in a book (with ``data_type`` ``orderbook`` or none): after
# one the book is unknown until the next full book (the reader's rule too:
# ``collector.reader.holes.HOLE_EVENTS``, kept equal by a test).
BOOK_HOLE_EVENTS: Final = frozenset(
    {"disconnected", "gap", "dropped", "silent", "subscribe_error", "unsubscribed"}
)


def _wrap(values: array[float], begin: int) -> pa.Array:
    """A float64 Arrow array over ``values[begin:]``'s memory (no copy: ``values`` must not
    change)."""
    whole = pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(values)])
    return whole.slice(begin)


_EMPTY: Final = pa.array([], pa.float64())


class _Side:
    """One side: ``prices``/``sizes`` sorted best first (live levels only), then the
    ``pending`` levels in arrival order (size 0 deletes): chunks of the flushed columns'
    own arrays, referenced, not copied (the writer never changes a flushed buffer)."""

    __slots__ = ("descending", "pending", "pending_levels", "prices", "sizes")

    def __init__(self, *, descending: bool) -> None:
        self.descending = descending
        self.prices: pa.Array = _EMPTY
        self.sizes: pa.Array = _EMPTY
        self.pending: list[tuple[array[float], array[float], int]] = []
        self.pending_levels = 0

    def clear(self) -> None:
        self.prices = self.sizes = _EMPTY
        self.pending = []
        self.pending_levels = 0

    def add(self, prices: array[float], sizes: array[float], begin: int) -> None:
        """Append the levels from ``begin`` on; fold when the pending log has grown."""
        count = len(prices) - begin
        if count <= 0:
            return
        self.pending.append((prices, sizes, begin))
        self.pending_levels += count
        if self.pending_levels > max(MIN_FOLD_LEVELS, 2 * len(self.prices)):
            self.fold()

    def fold(self) -> None:
        """Apply the pending levels to the base: the last size per price wins, size 0
        removes the level, the result sorted best first."""
        if not self.pending:
            return
        prices = pa.concat_arrays([self.prices, *(_wrap(p, b) for p, _, b in self.pending)])
        sizes = pa.concat_arrays([self.sizes, *(_wrap(s, b) for _, s, b in self.pending)])
        last = (
            pa.table({"price": prices, "size": sizes})
            .group_by("price", use_threads=False)  # ordered: "last" is the latest row
            .aggregate([("size", "last")])
        )
        last = last.filter(pc.not_equal(last["size_last"], 0.0))
        last = last.sort_by([("price", "descending" if self.descending else "ascending")])
        self.prices = last["price"].combine_chunks()
        self.sizes = last["size_last"].combine_chunks()
        self.pending = []
        self.pending_levels = 0

    def levels(self) -> array[float]:
        """The folded book as flat levels (price, size, ...), best first."""
        self.fold()
        flat = [0.0] * (2 * len(self.prices))
        flat[0::2] = self.prices.to_pylist()
        flat[1::2] = self.sizes.to_pylist()
        return levels_from_values(flat)


class StreamBook:
    """The book of one (exchange, symbol) as its ``orderbook`` rows so far leave it.

    ``known``: a ``snapshot`` has been applied (before one there is no book to state).
    ``sequence`` and ``timestamp_exchange`` are those of the latest applied row that has
    one; ``last_full_us`` the ``timestamp_collector`` of the latest row that stated the whole
    book (a venue ``snapshot`` or a checkpoint), from which a market's checkpoint interval
    counts.
    """

    __slots__ = (
        "asks",
        "bids",
        "holes",
        "known",
        "last_full_us",
        "sequence",
        "timestamp_exchange",
    )

    def __init__(self) -> None:
        self.bids = _Side(descending=True)
        self.asks = _Side(descending=False)
        self.known = False
        self.sequence: int | None = None
        self.timestamp_exchange: int | None = None
        self.last_full_us: int | None = None
        # The times of the holes noted whose rows have not been fed yet, ascending.
        self.holes: list[int] = []

    def note_hole(self, at_us: int) -> None:
        """A hole of this book at ``at_us``: rows received at or after it need a full book
        first (a status row goes before a book row of the same microsecond)."""
        insort(self.holes, at_us)

    def _take_holes(self, until_us: int) -> int | None:
        """The latest noted hole at or before ``until_us`` (None: none), forgetting those."""
        index = bisect_right(self.holes, until_us)
        if not index:
            return None
        latest = self.holes[index - 1]
        del self.holes[:index]
        return latest

    def _forget(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.known = False

    def feed(self, rows: ColumnBuffer) -> None:
        """Apply ``rows`` (an ``orderbook`` buffer, in stream order) to the book."""
        kinds: list[str] = rows.column("kind")
        count = len(kinds)
        if not count:
            return
        full = max(_last_index(kinds, kind) for kind in FULL_BOOK_KINDS)
        times = rows.number_column("timestamp_collector")[0]
        hole = self._take_holes(times[-1])
        if hole is not None and (full < 0 or times[full] < hole):
            self._forget()  # a hole with no full book after it (yet)
            return
        start = 0
        if full >= 0:
            self.bids.clear()
            self.asks.clear()
            self.known = True
            self.last_full_us = int(times[full])
            start = full
        elif not self.known:
            return
        for side, name in ((self.bids, "bids"), (self.asks, "asks")):
            levels = rows.levels_column(name)
            side.add(levels.prices, levels.sizes, levels.offsets[start])
        sequence = _last_value(rows, "sequence", start)
        if sequence is not None:
            self.sequence = sequence
        exchange_us = _last_value(rows, "timestamp_exchange", start)
        if exchange_us is not None:
            self.timestamp_exchange = exchange_us

    def checkpoint(self, exchange: str, symbol: str, timestamp_collector: int) -> BookUpdate | None:
        """The book as a ``checkpoint`` row stamped ``timestamp_collector``, or None before
        the first snapshot. Its ``sequence`` (and ``first_sequence``) is the last applied
        update id where the venue sends one; ``timestamp_exchange`` the latest venue time."""
        if self._take_holes(timestamp_collector) is not None:
            self._forget()
        if not self.known:
            return None
        self.last_full_us = timestamp_collector
        return BookUpdate(
            exchange,
            symbol,
            self.timestamp_exchange,
            timestamp_collector,
            self.sequence,
            CHECKPOINT,
            self.sequence,
            None,
            self.bids.levels(),
            self.asks.levels(),
        )


def _last_index(values: list[str], value: str) -> int:
    """The index of the last ``value`` in ``values``, -1 if there is none."""
    if value not in values:
        return -1
    return len(values) - 1 - values[::-1].index(value)


def _last_value(rows: ColumnBuffer, name: str, start: int) -> int | None:
    """The value of integer column ``name`` in the last row at or after ``start`` that has
    one (None: none has)."""
    values, nulls = rows.number_column(name)
    if not nulls:
        return int(values[-1])
    if len(nulls) == len(values):
        return None  # the venue sends none (the usual case when one row lacks it)
    null_rows = set(nulls)
    for row in range(len(values) - 1, start - 1, -1):
        if row not in null_rows:
            return int(values[row])
    return None
