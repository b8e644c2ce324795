"""Arrow schemas of the stored tables (conversion from events: :mod:`.columns`).

One schema per data type (``Event.DATA_TYPE``). Column order is the field order of the
event structs in :mod:`collector.events`, then :data:`ORDER_COLUMN`; every table starts
with the common columns ``exchange``, ``symbol``, ``timestamp_exchange``,
``timestamp_collector``, ``sequence``. Timestamps are ``timestamp[us, tz=UTC]``; prices and
sizes ``float64``.

Every table ends with ``collector_seq`` (:data:`ORDER_COLUMN`, ``int64``, never null): the
order the writer received a stream's rows in, strictly increasing per stream (exchange,
symbol, table) across files, rotations and restarts. It is not in the events: the writer's
router numbers each stream's rows as it hands them to the flusher
(:mod:`.router`, which says how restarts keep it increasing). It exists because the
venue's ``sequence`` is absent on some venues and ``timestamp_collector`` is shared by
every row of one read, so without it the update order of a book lives only in the files'
physical row order, which a reader is free to lose.

Each table has a schema version (:data:`SCHEMA_VERSIONS`), written into every file's
metadata (:mod:`.metadata`) so a reader knows which columns and meanings to expect. Bump
policy: a table's version goes up by one with any change a reader could notice: a column
added, removed, renamed or retyped, a nullability change, or a change in what a column's
values mean (units, sign, which clock). Nothing else bumps it (compression, row groups,
dictionary encoding). Versions are per table: a change to one table bumps that one only.
``tests/test_storage_schemas.py`` pins each schema's fingerprint to its version, so a
schema changed without a bump fails there.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from collector.events import (
    BookUpdate,
    DerivativeTicker,
    Event,
    Instrument,
    IntervalStats,
    Liquidation,
    Raw,
    Status,
    Ticker,
    Trade,
)

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

# The writer's ordering key, last in every table (see the module docstring).
ORDER_COLUMN: Final = "collector_seq"
_ORDER: Final = pa.field(ORDER_COLUMN, pa.int64(), nullable=False)

_EVENT_SCHEMAS: Final[dict[str, pa.Schema]] = {
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
    DerivativeTicker.DATA_TYPE: pa.schema(
        [
            *_COMMON,
            pa.field("source", pa.string(), nullable=False),
            *(
                pa.field(name, pa.float64())
                for name in ("last_price", "mark_price", "index_price", "funding_rate")
            ),
            pa.field("funding_timestamp", TIMESTAMP),
            pa.field("next_funding_timestamp", TIMESTAMP),
            *(
                pa.field(name, pa.float64())
                for name in (
                    "funding_interval_h",
                    "predicted_funding_rate",
                    "funding_8h",
                    "open_interest",
                )
            ),
            pa.field("open_interest_unit", pa.string()),
            *(
                pa.field(name, pa.float64())
                for name in (
                    "open_interest_value",
                    "estimated_settlement_price",
                    "settlement_price",
                    "mark_iv",
                    "bid_iv",
                    "ask_iv",
                    "delta",
                    "gamma",
                    "vega",
                    "theta",
                    "rho",
                    "underlying_price",
                )
            ),
            pa.field("underlying_index", pa.string()),
        ]
    ),
    Liquidation.DATA_TYPE: pa.schema(
        [
            *_COMMON,
            pa.field("liquidation_id", pa.string()),
            pa.field("side", pa.string()),
            pa.field("position_side", pa.string()),
            pa.field("price", pa.float64(), nullable=False),
            pa.field("price_kind", pa.string(), nullable=False),
            pa.field("size", pa.float64(), nullable=False),
            pa.field("size_unit", pa.string(), nullable=False),
            pa.field("avg_price", pa.float64()),
            pa.field("entry_price", pa.float64()),
            pa.field("status", pa.string()),
            pa.field("loss", pa.float64()),
        ]
    ),
    Instrument.DATA_TYPE: pa.schema(
        [
            *_COMMON,
            pa.field("kind", pa.string(), nullable=False),
            pa.field("base_asset", pa.string(), nullable=False),
            pa.field("quote_asset", pa.string(), nullable=False),
            pa.field("settle_asset", pa.string()),
            pa.field("inverse", pa.bool_()),
            pa.field("size_unit", pa.string(), nullable=False),
            pa.field("contract_size", pa.float64()),
            pa.field("contract_unit", pa.string()),
            pa.field("tick_size", pa.float64()),
            pa.field("lot_size", pa.float64()),
            pa.field("min_size", pa.float64()),
            pa.field("expiry", TIMESTAMP),
            pa.field("strike", pa.float64()),
            pa.field("option_kind", pa.string()),
            pa.field("status", pa.string()),
        ]
    ),
    IntervalStats.DATA_TYPE: pa.schema(
        [
            *_COMMON,
            pa.field("interval_start", TIMESTAMP, nullable=False),
            pa.field("trades", pa.int64(), nullable=False),
            pa.field("volume", pa.float64(), nullable=False),
            pa.field("buy_volume", pa.float64(), nullable=False),
            pa.field("sell_volume", pa.float64(), nullable=False),
            pa.field("buy_sell_ratio", pa.float64()),
            pa.field("vwap", pa.float64()),
            pa.field("high", pa.float64()),
            pa.field("low", pa.float64()),
            pa.field("large_trades", pa.int64(), nullable=False),
            pa.field("large_trade_size", pa.float64()),
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
            pa.field("url", pa.string()),
        ]
    ),
}

SCHEMAS: Final[dict[str, pa.Schema]] = {
    name: schema.append(_ORDER) for name, schema in _EVENT_SCHEMAS.items()
}

# The version of each table's schema (see the module docstring for when it is bumped).
# ``collector_seq`` came with version 2 of every table but orderbook (3) and raw (3).
SCHEMA_VERSIONS: Final[dict[str, int]] = {
    Trade.DATA_TYPE: 2,
    # 2: kind "checkpoint" (the writer's book at each file start); 3: collector_seq
    BookUpdate.DATA_TYPE: 3,
    Ticker.DATA_TYPE: 2,
    DerivativeTicker.DATA_TYPE: 2,
    Liquidation.DATA_TYPE: 2,
    Instrument.DATA_TYPE: 2,
    IntervalStats.DATA_TYPE: 2,
    Status.DATA_TYPE: 2,
    Raw.DATA_TYPE: 3,  # 2: the url column and direction "rest"; 3: collector_seq
}

# Columns with few distinct values per file: the only ones Parquet dictionary-encodes.
# Trying a dictionary on timestamps, ids, prices or levels cost more CPU than the rest of
# the write (the encoder hashes every value before it falls back) for files no smaller,
# often larger (zstd compresses the plain values well): measured on Bybit's recorded
# traffic and on the bench's trades (docs/performance.md).
DICTIONARY_COLUMNS: Final = frozenset(
    {
        "exchange",
        "symbol",
        "side",
        "kind",
        "event",
        "data_type",
        "connection",
        "direction",
        "source",
        "open_interest_unit",
        "underlying_index",
        "position_side",
        "price_kind",
        "size_unit",
        "status",
        "base_asset",
        "quote_asset",
        "settle_asset",
        "contract_unit",
        "option_kind",
    }
)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` to write dictionary-encoded (see ``DICTIONARY_COLUMNS``)."""
    return [field.name for field in schema if field.name in DICTIONARY_COLUMNS]


def column_encodings(schema: pa.Schema) -> dict[str, str]:
    """The Parquet encodings other than the default for ``schema``'s columns:
    ``collector_seq`` delta-encoded (consecutive numbers: 65,536 of them take about 0.8 KB
    instead of 67 KB plain with zstd). Every common reader reads it (DuckDB, pyarrow,
    Polars, Spark)."""
    return {ORDER_COLUMN: "DELTA_BINARY_PACKED"} if ORDER_COLUMN in schema.names else {}


EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.DATA_TYPE: cls
    for cls in (
        Trade,
        BookUpdate,
        Ticker,
        DerivativeTicker,
        Liquidation,
        Instrument,
        IntervalStats,
        Status,
        Raw,
    )
}


def previous_schema_version(schema: pa.Schema) -> tuple[str, int] | None:
    """The (table, version) of a schema an earlier version wrote, where it is one we know:
    today's columns without ``collector_seq`` are the version before the current one (for
    ``orderbook``, version 2; its version 1 had the same columns); ``None`` otherwise."""
    for name, before in _EVENT_SCHEMAS.items():
        if before.equals(schema, check_metadata=False):
            return name, SCHEMA_VERSIONS[name] - 1
    return None


def schema_for(data_type: str) -> pa.Schema:
    """The Arrow schema of ``data_type`` (raises ``KeyError`` for an unknown one)."""
    return SCHEMAS[data_type]
