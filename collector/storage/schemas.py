"""Arrow schemas of the stored tables (conversion from events: :mod:`.columns`).

One schema per data type (``Event.DATA_TYPE``). Column order is the field order of the
event structs in :mod:`collector.events`; every table starts with the common columns
``exchange``, ``symbol``, ``timestamp_exchange``, ``timestamp_collector``, ``sequence``.
Timestamps are ``timestamp[us, tz=UTC]``; prices and sizes ``float64``.

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

# The version of each table's schema (see the module docstring for when it is bumped).
SCHEMA_VERSIONS: Final[dict[str, int]] = {
    Trade.DATA_TYPE: 1,
    BookUpdate.DATA_TYPE: 2,  # 2: kind "checkpoint" (the writer's book at each file start)
    Ticker.DATA_TYPE: 1,
    DerivativeTicker.DATA_TYPE: 1,
    Liquidation.DATA_TYPE: 1,
    Instrument.DATA_TYPE: 1,
    IntervalStats.DATA_TYPE: 1,
    Status.DATA_TYPE: 1,
    Raw.DATA_TYPE: 2,
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


def schema_for(data_type: str) -> pa.Schema:
    """The Arrow schema of ``data_type`` (raises ``KeyError`` for an unknown one)."""
    return SCHEMAS[data_type]
