"""The binary column format: which columns, what each row is, and how events become rows.

Two tables per (exchange, symbol), each a set of fixed-width little-endian column files
(see :mod:`collector.binary.files` for the files themselves):

``MD`` — one row per trade, with the quote that stood when it arrived:

=========  =====  ==============================================================
column     type   value
=========  =====  ==============================================================
time       u32    receive time (``timestamp_collector``), whole seconds since the epoch
nanos      u32    the sub-second part of that time, in nanoseconds (a multiple of 1000)
price      f32    the trade's price
volume     f32    the trade's size
side       u32    the aggressor side: 1 buy, 2 sell, 0 unknown
best_bid   f32    best bid of the latest quote of the symbol received before the trade
best_ask   f32    best ask of that quote; NaN while no quote is known
=========  =====  ==============================================================

A quote is a ``ticker`` row (its ``bid_price``/``ask_price``; a side the row leaves null
keeps its previous value) or an order book *snapshot* (its first level per side; an empty
side is NaN). Book deltas do not move the quote: a delta alone does not say which level is
best once levels are removed. A venue without a ticker feed and with a book in diff mode so
has quotes only at its (rare) snapshots: record its ticker feed for a useful MD.

``TRADES`` — one row per trade:

==============  ========  =========================================================
column          type      value
==============  ========  =========================================================
id              u64       the venue's trade id where it is a decimal integer below 2^64,
                          else 0 (the Parquet ``trade_id`` keeps every spelling)
time, nanos     u32, u32  as in MD
price           f32       the trade's price
size            f32       the trade's size
side            u32       1 buy, 2 sell, 0 unknown
maker_order_id  16 bytes  the maker's order id as raw bytes (a UUID's 16 bytes);
taker_order_id  16 bytes  zero-filled: no venue's stored trade carries order ids today
==============  ========  =========================================================

Why receive time: it is the clock the files are dated and rotated by (each row goes to the
file of its own UTC day, and receive times only grow within a connection), and every row
has it; the venue's time stays in the Parquet files. Why f32: the readers this format
serves map the columns as 32-bit floats; a price above about 2^24 ticks loses its last
digits there (the Parquet files keep doubles).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable
from typing import Any, Final

import attrs

from collector.events import BookUpdate, Event, Ticker, Trade

MD: Final = "MD"
TRADES: Final = "TRADES"
TABLES: Final = (MD, TRADES)

# The stored data types the binary rows are made from.
DATA_TYPES: Final = frozenset({"trades", "ticker", "orderbook"})

SIDE_UNKNOWN: Final = 0
SIDE_BUY: Final = 1
SIDE_SELL: Final = 2
ORDER_ID_BYTES: Final = 16
_NO_ORDER_ID: Final = bytes(ORDER_ID_BYTES)
_U64_LIMIT: Final = 1 << 64
_NAN: Final = math.nan


@attrs.frozen
class Column:
    """One column: its file name stem, its ``array`` type code (``""``: raw bytes) and
    its width in bytes."""

    name: str
    typecode: str
    width: int


def _fixed(name: str, typecode: str) -> Column:
    width = array(typecode).itemsize
    return Column(name, typecode, width)


# Each table's columns, in the order of the description.
COLUMNS: Final[dict[str, tuple[Column, ...]]] = {
    MD: (
        _fixed("time", "I"),
        _fixed("nanos", "I"),
        _fixed("price", "f"),
        _fixed("volume", "f"),
        _fixed("side", "I"),
        _fixed("best_bid", "f"),
        _fixed("best_ask", "f"),
    ),
    TRADES: (
        _fixed("id", "Q"),
        _fixed("time", "I"),
        _fixed("nanos", "I"),
        _fixed("price", "f"),
        _fixed("size", "f"),
        _fixed("side", "I"),
        Column("maker_order_id", "", ORDER_ID_BYTES),
        Column("taker_order_id", "", ORDER_ID_BYTES),
    ),
}
for _columns in COLUMNS.values():
    for _c in _columns:
        if _c.typecode and array(_c.typecode).itemsize != {"I": 4, "f": 4, "Q": 8}[_c.typecode]:
            raise ImportError(f"array type {_c.typecode!r} has an unexpected width here")
_SWAP: Final = sys.byteorder != "little"


def side_code(side: str | None) -> int:
    """The u32 side: 1 buy, 2 sell, 0 unknown."""
    if side == "buy":
        return SIDE_BUY
    if side == "sell":
        return SIDE_SELL
    return SIDE_UNKNOWN


def trade_id_u64(trade_id: str) -> int:
    """``trade_id`` as a u64 where it is a plain decimal integer below 2^64, else 0."""
    if trade_id.isascii() and trade_id.isdigit():
        value = int(trade_id)
        if value < _U64_LIMIT:
            return value
    return 0


class Rows:
    """The rows of one table of one (exchange, symbol) and UTC day, column by column."""

    __slots__ = ("columns", "count", "table")

    def __init__(self, table: str) -> None:
        self.table = table
        self.count = 0
        self.columns: list[array[Any] | bytearray] = [
            array(c.typecode) if c.typecode else bytearray() for c in COLUMNS[table]
        ]

    def encoded(self) -> list[bytes]:
        """Each column's bytes, little-endian, in :data:`COLUMNS` order."""
        out: list[bytes] = []
        for values in self.columns:
            if _SWAP and isinstance(values, array):
                values = array(values.typecode, values)
                values.byteswap()
            out.append(bytes(values))
        return out


# (exchange, symbol, table, UTC day number) -> its rows
RowKey = tuple[str, str, str, int]


class RowBuilder:
    """Turns stored events into MD and TRADES rows, grouped by (exchange, symbol, table,
    UTC day). Owns the latest quote of each (exchange, symbol): feed it every event in the
    files' order (the live outlet feeds the router's order, the export a merge by receive
    time). Not thread-safe: one caller at a time."""

    def __init__(self) -> None:
        self._quotes: dict[tuple[str, str], tuple[float, float]] = {}

    def quote(self, exchange: str, symbol: str) -> tuple[float, float]:
        """The (best bid, best ask) standing now (NaN where unknown)."""
        return self._quotes.get((exchange, symbol), (_NAN, _NAN))

    def add(self, events: Iterable[Event], into: dict[RowKey, Rows]) -> int:
        """Add the rows of ``events`` to ``into``; the number of trades among them."""
        trades = 0
        quotes = self._quotes
        for event in events:
            kind = type(event)
            if kind is Trade:
                assert isinstance(event, Trade)
                trades += 1
                self._add_trade(event, into)
            elif kind is Ticker:
                assert isinstance(event, Ticker)
                key = (event.exchange, event.symbol)
                bid, ask = quotes.get(key, (_NAN, _NAN))
                quotes[key] = (
                    bid if event.bid_price is None else event.bid_price,
                    ask if event.ask_price is None else event.ask_price,
                )
            elif kind is BookUpdate:
                assert isinstance(event, BookUpdate)
                if event.kind == "snapshot":
                    bids, asks = event.bids, event.asks
                    quotes[event.exchange, event.symbol] = (
                        bids[0] if bids else _NAN,
                        asks[0] if asks else _NAN,
                    )
        return trades

    def _add_trade(self, trade: Trade, into: dict[RowKey, Rows]) -> None:
        us = trade.timestamp_collector
        secs, micros = divmod(us, 1_000_000)
        nanos = micros * 1000
        day = secs // 86_400
        side = side_code(trade.side)
        bid, ask = self.quote(trade.exchange, trade.symbol)
        md_key = (trade.exchange, trade.symbol, MD, day)
        md = into.get(md_key)
        if md is None:
            md = into[md_key] = Rows(MD)
        for values, value in zip(
            md.columns, (secs, nanos, trade.price, trade.size, side, bid, ask), strict=True
        ):
            assert isinstance(values, array)
            values.append(value)
        md.count += 1
        tr_key = (trade.exchange, trade.symbol, TRADES, day)
        tr = into.get(tr_key)
        if tr is None:
            tr = into[tr_key] = Rows(TRADES)
        c = tr.columns
        values_in = (trade_id_u64(trade.trade_id), secs, nanos, trade.price, trade.size, side)
        for values, value in zip(c[:6], values_in, strict=True):
            assert isinstance(values, array)
            values.append(value)
        for raw in c[6:]:
            assert isinstance(raw, bytearray)
            raw += _NO_ORDER_ID
        tr.count += 1
