"""Schemas and events -> RecordBatch conversion: every data type round-trips through Parquet."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collector.events import (
    DATA_TYPES,
    RAW_SYMBOL,
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
    level_pairs,
    levels_from_pairs,
)
from collector.storage.columns import to_record_batch
from collector.storage.finalize import write_parquet_atomically
from collector.storage.schemas import EVENT_TYPES, SCHEMA_VERSIONS, SCHEMAS, schema_for

T0 = 1_714_608_000_000_000  # 2024-05-02T00:00:00Z in microseconds
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def expected_row(event: Event, seq: int) -> dict[str, Any]:
    """What reading ``event``, numbered ``seq``, back from Parquet must give (pyarrow's
    Python values)."""
    row: dict[str, Any] = msgspec.structs.asdict(event)
    row["collector_seq"] = seq
    timestamps = [f.name for f in schema_for(event.DATA_TYPE) if pa.types.is_timestamp(f.type)]
    for name in timestamps:
        if row[name] is not None:
            row[name] = EPOCH + timedelta(microseconds=row[name])
    for name in ("bids", "asks"):
        if name in row:
            row[name] = [{"price": p, "size": q} for p, q in level_pairs(row[name])]
    return row


EVENTS: dict[str, list[Event]] = {
    "trades": [
        Trade("binance", "BTCUSDT", T0 - 5, T0, 42, "t1", 64000.5, 0.25, "buy"),
        Trade("binance", "BTCUSDT", None, T0 + 1, None, "t2", 64001.0, 1e-8, None),
        Trade("binance", "BTCUSDT", T0 + 1, T0 + 2, 2**62, "t3", 0.0, 3.0, "sell"),
    ],
    "orderbook": [
        BookUpdate(
            "okx",
            "BTC-USDT",
            T0,
            T0 + 10,
            100,
            "snapshot",
            100,
            None,
            levels_from_pairs([(64000.0, 1.5), (63999.5, 2.0), (63999.0, 0.1)]),
            levels_from_pairs([(64000.5, 0.3)]),
        ),
        BookUpdate(
            "okx",
            "BTC-USDT",
            None,
            T0 + 11,
            None,
            "delta",
            None,
            None,
            levels_from_pairs([]),
            levels_from_pairs([]),
        ),
        BookUpdate(
            "okx",
            "BTC-USDT",
            T0 + 2,
            T0 + 12,
            103,
            "delta",
            101,
            100,
            levels_from_pairs([]),
            levels_from_pairs([(64001.0, 0.0)]),
        ),
    ],
    "ticker": [
        Ticker("kraken", "BTC/USD", T0, T0 + 3, 7, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0),
        Ticker("kraken", "BTC/USD", None, T0 + 4, None, 1.5, None, 3.5, None, None, None),
    ],
    "derivative_ticker": [
        DerivativeTicker(
            "bybit-linear",
            "BTCUSDT",
            T0,
            T0 + 5,
            9,
            "tickers",
            last_price=1.0,
            mark_price=2.0,
            index_price=3.0,
            funding_rate=-0.0001,
            funding_timestamp=T0 + 10,
            funding_interval_h=8.0,
            open_interest=12.5,
            open_interest_unit="base",
            open_interest_value=25.0,
            estimated_settlement_price=2.5,
        ),
        DerivativeTicker(
            "deribit",
            "BTC-27DEC24-100000-C",
            None,
            T0 + 6,
            None,
            "ticker",
            funding_8h=1e-5,
            next_funding_timestamp=T0 + 20,
            predicted_funding_rate=0.0002,
            settlement_price=0.01,
            mark_iv=0.55,
            bid_iv=0.5,
            ask_iv=0.6,
            delta=0.3,
            gamma=1e-5,
            vega=12.0,
            theta=-3.0,
            rho=0.1,
            underlying_price=65000.0,
            underlying_index="BTC-27DEC24",
        ),
        DerivativeTicker("deribit", "BTC-PERPETUAL", None, T0 + 7, None, "ticker"),
    ],
    "liquidations": [
        Liquidation(
            "bybit-linear",
            "BTCUSDT",
            T0,
            T0 + 8,
            None,
            None,
            "sell",
            "long",
            64000.0,
            "bankruptcy",
            0.5,
            "base",
        ),
        Liquidation(
            "deribit",
            "BTC-PERPETUAL",
            T0 + 1,
            T0 + 9,
            77,
            "403691824",
            "buy",
            "short",
            64001.0,
            "trade",
            100.0,
            "usd",
            avg_price=64000.5,
            entry_price=63000.0,
            status="FILLED",
            loss=0.0,
        ),
        Liquidation(
            "x", "Y", None, T0 + 10, None, None, None, None, 1.0, "order", 2.0, "contracts"
        ),
    ],
    "instruments": [
        Instrument(
            "binance-coinm",
            "BTCUSD_250926",
            T0 - 3,
            T0 + 11,
            None,
            kind="future",
            base_asset="BTC",
            quote_asset="USD",
            settle_asset="BTC",
            inverse=True,
            size_unit="contracts",
            contract_size=100.0,
            contract_unit="USD",
            tick_size=0.1,
            lot_size=1.0,
            min_size=1.0,
            expiry=T0 + 10**12,
            status="TRADING",
        ),
        Instrument(
            "okx",
            "BTC-USD-250926-100000-C",
            None,
            T0 + 12,
            None,
            kind="option",
            base_asset="BTC",
            quote_asset="BTC",
            settle_asset="BTC",
            inverse=False,
            size_unit="contracts",
            contract_size=0.01,
            contract_unit="BTC",
            expiry=T0 + 10**12,
            strike=100000.0,
            option_kind="call",
        ),
        Instrument(
            "binance", "BTCUSDT", None, T0 + 13, None, "spot", "BTC", "USDT", None, None, "base"
        ),
    ],
    "analytics": [
        IntervalStats(
            "binance",
            "BTCUSDT",
            T0,
            T0 + 5,
            None,
            T0 - 60_000_000,
            3,
            2.5,
            1.5,
            1.0,
            1.5,
            64000.25,
            64010.0,
            63990.0,
            1,
            1.0,
        ),
        IntervalStats(
            "binance",
            "ETHUSDT",
            T0,
            T0 + 5,
            None,
            T0 - 60_000_000,
            0,
            0.0,
            0.0,
            0.0,
            None,
            None,
            None,
            None,
            0,
            None,
        ),
    ],
    "status": [
        Status("bybit", "BTCUSDT", None, T0, None, "connected"),
        Status(
            "bybit",
            "BTCUSDT",
            T0 - 1,
            T0 + 1,
            9,
            "gap",
            data_type="orderbook",
            expected_sequence=5,
            received_sequence=9,
            count=4,
            detail="missed 4 updates",
        ),
    ],
    "raw": [
        Raw("deribit", RAW_SYMBOL, None, T0, None, "conn-1", "recv", b'{"a": 1}'),
        Raw("deribit", RAW_SYMBOL, None, T0 + 1, None, "conn-1", "send", b"\x00\xff binary"),
        Raw("deribit", RAW_SYMBOL, None, T0 + 2, None, "conn-2", "recv", b""),
        Raw("deribit", RAW_SYMBOL, None, T0 + 3, T0, "conn-2", "rest", b"{}", "http://x/y"),
    ],
}


@pytest.mark.parametrize("data_type", sorted(SCHEMAS))
def test_columns_follow_event_struct_fields(data_type: str) -> None:
    common = ["exchange", "symbol", "timestamp_exchange", "timestamp_collector", "sequence"]
    names = schema_for(data_type).names
    assert names == [*EVENT_TYPES[data_type].__struct_fields__, "collector_seq"]
    assert names[:5] == common
    assert schema_for(data_type).field("collector_seq").type == pa.int64()
    assert not schema_for(data_type).field("collector_seq").nullable
    assert schema_for(data_type).field("timestamp_collector").type == pa.timestamp("us", tz="UTC")
    assert not schema_for(data_type).field("timestamp_collector").nullable
    assert schema_for(data_type).field("timestamp_exchange").nullable
    assert schema_for(data_type).field("sequence").type == pa.int64()


def test_orderbook_levels_type() -> None:
    level = pa.struct([pa.field("price", pa.float64()), pa.field("size", pa.float64())])
    assert schema_for("orderbook").field("bids").type == pa.list_(level)
    assert schema_for("orderbook").field("asks").type == pa.list_(level)


@pytest.mark.parametrize("data_type", sorted(EVENTS))
def test_round_trip_through_parquet(data_type: str, tmp_path: Path) -> None:
    events = EVENTS[data_type]
    batch = to_record_batch(data_type, events, first_seq=2**61)
    assert batch.schema == schema_for(data_type)
    path = tmp_path / "x.parquet"
    write_parquet_atomically(pa.Table.from_batches([batch]), path)

    table = pq.read_table(path)
    assert table.schema.names == schema_for(data_type).names
    assert table.schema.field("timestamp_collector").type == pa.timestamp("us", tz="UTC")
    assert table.to_pylist() == [expected_row(e, 2**61 + i) for i, e in enumerate(events)]


def test_orderbook_levels_keep_per_row_boundaries() -> None:
    batch = to_record_batch("orderbook", EVENTS["orderbook"])
    bids = batch.column("bids")
    assert bids.offsets.to_pylist() == [0, 3, 3, 3]
    assert bids.values.field("price").to_pylist() == [64000.0, 63999.5, 63999.0]
    assert batch.column("asks").to_pylist() == [
        [{"price": 64000.5, "size": 0.3}],
        [],
        [{"price": 64001.0, "size": 0.0}],
    ]


def test_every_data_type_has_round_trip_rows() -> None:
    assert sorted(EVENTS) == sorted(SCHEMAS) == sorted(DATA_TYPES)


def test_null_in_required_column_is_rejected() -> None:
    bad = Trade("binance", "BTCUSDT", None, T0, None, "t1", None, 1.0, "buy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="price"):
        to_record_batch("trades", [bad])


def test_empty_list_gives_empty_batch() -> None:
    batch = to_record_batch("trades", [])
    assert batch.num_rows == 0
    assert batch.schema == schema_for("trades")


def fingerprint(schema: pa.Schema) -> str:
    """The columns as a reader sees them: names, types and nullability, in order."""
    columns = [(f.name, str(f.type), f.nullable) for f in schema]
    return hashlib.sha256(repr(columns).encode()).hexdigest()[:16]


# A schema changed without a version bump fails here. When a table's schema changes: bump
# its SCHEMA_VERSIONS entry (see collector/storage/schemas.py for when) and record both here.
PINNED: dict[str, tuple[int, str]] = {
    "trades": (2, "a64dc9932eb9f35d"),
    "orderbook": (3, "b5079bf97fcbeef3"),
    "ticker": (2, "fca7b561fc643bd3"),
    "derivative_ticker": (2, "2e6e65107e83144d"),
    "liquidations": (2, "e3ef0f5b3f78eb00"),
    "instruments": (2, "9974c78f50078063"),
    "analytics": (2, "1a31f79522b23ca1"),
    "status": (2, "afbecc1b03ca21f7"),
    "raw": (3, "4ad481dccb4c3325"),
}


def test_every_table_has_a_schema_version_pinned_to_its_columns() -> None:
    assert set(SCHEMA_VERSIONS) == set(SCHEMAS)
    actual = {
        name: (SCHEMA_VERSIONS[name], fingerprint(schema)) for name, schema in SCHEMAS.items()
    }
    assert actual == PINNED
