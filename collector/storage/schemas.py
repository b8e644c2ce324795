"""Arrow schemas of the stored tables, and events -> ``pyarrow.RecordBatch`` conversion.

One schema per data type (``Event.DATA_TYPE``). Column order is the field order of the
event structs in :mod:`collector.events`; every table starts with the common columns
``exchange``, ``symbol``, ``timestamp_exchange``, ``timestamp_collector``, ``sequence``.
Timestamps are ``timestamp[us, tz=UTC]``; prices and sizes ``float64``.

Conversion is the writer's hot path: each column is built with one pass over the events
and one ``pa.array`` call per column per batch, order book levels included (nested lists of
``(price, size)`` tuples, converted in C++). No per-row dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Final

import pyarrow as pa

from collector.events import BookUpdate, Event, Level, Raw, Status, Ticker, Trade

TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
LEVEL: Final = pa.struct([pa.field("price", pa.float64()), pa.field("size", pa.float64())])
LEVELS: Final = pa.list_(LEVEL)

_COMMON: Final[list[pa.Field]] = [
    pa.field("exchange", pa.string(), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("timestamp_exchange", TIMESTAMP),
    pa.field("timestamp_collector", TIMESTAMP, nullable=False),
    pa.field("sequence", pa.int64()),
]

SCHEMAS: Final[dict[str, pa.Schema]] = {
    Trade.DATA_TYPE: pa.schema(
        [
            *_COMMON,
            pa.field("trade_id", pa.string(), nullable=False),
            pa.field("price", pa.float64(), nullable=False),
            pa.field("size", pa.float64(), nullable=False),
            pa.field("side", pa.string()),
        ]
    ),
    BookUpdate.DATA_TYPE: pa.schema(
        [
            *_COMMON,
            pa.field("kind", pa.string(), nullable=False),
            pa.field("first_sequence", pa.int64()),
            pa.field("prev_sequence", pa.int64()),
            pa.field("bids", LEVELS, nullable=False),
            pa.field("asks", LEVELS, nullable=False),
        ]
    ),
    Ticker.DATA_TYPE: pa.schema(
        [
            *_COMMON,
            pa.field("bid_price", pa.float64()),
            pa.field("bid_size", pa.float64()),
            pa.field("ask_price", pa.float64()),
            pa.field("ask_size", pa.float64()),
            pa.field("last_price", pa.float64()),
            pa.field("volume_24h", pa.float64()),
        ]
    ),
    Status.DATA_TYPE: pa.schema(
        [
            *_COMMON,
            pa.field("event", pa.string(), nullable=False),
            pa.field("data_type", pa.string()),
            pa.field("expected_sequence", pa.int64()),
            pa.field("received_sequence", pa.int64()),
            pa.field("count", pa.int64()),
            pa.field("detail", pa.string()),
        ]
    ),
    Raw.DATA_TYPE: pa.schema(
        [
            *_COMMON,
            pa.field("connection", pa.string(), nullable=False),
            pa.field("direction", pa.string(), nullable=False),
            pa.field("payload", pa.binary(), nullable=False),
        ]
    ),
}

# Columns with few distinct values per file: the only ones Parquet dictionary-encodes.
# Trying a dictionary on timestamps, ids, prices or levels cost twice the CPU of the whole
# write (the encoder hashes every value before it falls back) for files no smaller, often
# larger (zstd compresses the plain values well): measured on Bybit's recorded traffic and
# on the bench's trades.
DICTIONARY_COLUMNS: Final = frozenset(
    {"exchange", "symbol", "side", "kind", "event", "data_type", "connection", "direction"}
)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` to write dictionary-encoded (see ``DICTIONARY_COLUMNS``)."""
    return [field.name for field in schema if field.name in DICTIONARY_COLUMNS]


EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.DATA_TYPE: cls for cls in (Trade, BookUpdate, Ticker, Status, Raw)
}


def schema_for(data_type: str) -> pa.Schema:
    """The Arrow schema of ``data_type`` (raises ``KeyError`` for an unknown one)."""
    return SCHEMAS[data_type]


def _levels(column: list[list[Level]]) -> pa.Array:
    """``list<struct<price, size>>`` from one list of ``(price, size)`` tuples per row.

    One ``pa.array`` call converts the nested lists in C++: for 20 levels a row it costs
    0.9 us a row, against 1.55 us for flat price and size lists built in Python first.
    """
    return pa.array(column, type=LEVELS)


def _column(field: pa.Field, values: list[Any]) -> pa.Array:
    if field.type == TIMESTAMP:
        # int64 then a zero-copy view is faster than converting ints to timestamps.
        return pa.array(values, type=pa.int64()).view(TIMESTAMP)
    if field.type == LEVELS:
        return _levels(values)
    return pa.array(values, type=field.type)


_GETTERS: Final[dict[str, list[tuple[pa.Field, Callable[[Any], Any]]]]] = {
    data_type: [(field, attrgetter(field.name)) for field in schema]
    for data_type, schema in SCHEMAS.items()
}

# Columns are built from slices of this many events, one column after another, then
# joined: a slice's events stay in the CPU cache across its columns (measured on a flush of
# 300k trades: 270 ns per event instead of 440, and 950 instead of 1450 when the events lie
# scattered in memory, as they do after a while).
_SLICE: Final = 8192


def to_record_batch(
    data_type: str, events: Sequence[Event], *, constants: Mapping[str, Any] | None = None
) -> pa.RecordBatch:
    """Convert events that all have ``DATA_TYPE == data_type`` into one record batch.

    ``constants`` names columns whose value the caller knows every event shares (the
    writer's file key: ``exchange``, ``symbol``); those are not read from the events.

    Raises ``ValueError`` if a non-nullable column would hold a null (an adapter bug:
    better to fail here than to write a journal that can never become Parquet).
    """
    schema = SCHEMAS[data_type]
    count = len(events)
    constants = constants or {}
    read = [(f, g) for f, g in _GETTERS[data_type] if f.name not in constants]
    pieces: list[list[pa.Array]] = [[] for _ in read]
    for start in range(0, count, _SLICE):
        part = events[start : start + _SLICE] if count > _SLICE else events
        for column, (field, getter) in zip(pieces, read, strict=True):
            column.append(_column(field, list(map(getter, part))))
    built = {
        field.name: (column[0] if len(column) == 1 else pa.concat_arrays(column))
        for (field, _), column in zip(read, pieces, strict=True)
        if column
    }
    arrays: list[pa.Array] = []
    for field in schema:
        if field.name in constants:
            array = pa.repeat(pa.scalar(constants[field.name], type=field.type), count)
        elif count:
            array = built[field.name]
        else:
            array = _column(field, [])
        if not field.nullable and array.null_count:
            raise ValueError(f"{data_type}: null in non-nullable column {field.name!r}")
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
