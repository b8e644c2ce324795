"""ColumnBuffer: rows kept as columns from routing on, and the record batch built from them."""

from __future__ import annotations

import gc
import random
import sys
import weakref
from array import array
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from collector.events import BookUpdate, Status, Ticker, Trade, levels_from_pairs
from collector.storage.columns import ColumnBuffer, to_record_batch
from collector.storage.schemas import LEVELS, SCHEMAS

T0 = 1_714_608_000_000_000
KEY = frozenset({"exchange", "symbol"})
CONSTANTS = {"exchange": "kraken", "symbol": "BTC/USD"}
flat = levels_from_pairs


def ticker(n: int, bid: float | None, last: float | None) -> Ticker:
    return Ticker(
        "kraken", "BTC/USD", None if n % 2 else T0 + n, T0 + n, n, bid, 1.0, 2.0, 3.0, last, None
    )


def test_numbers_and_nulls_land_in_their_rows() -> None:
    buffer = ColumnBuffer("ticker", KEY)
    rows = [ticker(0, 1.5, None), ticker(1, None, 7.0), ticker(2, 2.5, None), ticker(3, None, None)]
    for row in rows:
        buffer.add(row)
    assert len(buffer) == 4
    batch = buffer.to_record_batch(CONSTANTS)
    assert batch.schema == SCHEMAS["ticker"]
    assert batch.column("bid_price").to_pylist() == [1.5, None, 2.5, None]
    assert batch.column("last_price").to_pylist() == [None, 7.0, None, None]
    assert batch.column("volume_24h").null_count == 4  # every row null
    assert batch.column("timestamp_exchange").cast(pa.int64()).to_pylist() == [
        T0,
        None,
        T0 + 2,
        None,
    ]
    assert batch.column("sequence").to_pylist() == [0, 1, 2, 3]
    assert batch.column("exchange").to_pylist() == ["kraken"] * 4


def test_a_null_in_a_required_column_is_refused_and_nothing_of_the_row_is_kept() -> None:
    buffer = ColumnBuffer("trades", KEY)
    buffer.add(Trade("kraken", "BTC/USD", T0, T0, 1, "a", 1.0, 2.0, "buy"))
    bad = Trade("kraken", "BTC/USD", T0, T0, 2, "b", 1.0, None, "buy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trades: null in non-nullable column 'size'"):
        buffer.add(bad)
    buffer.add(Trade("kraken", "BTC/USD", None, T0 + 1, None, "c", 3.0, 4.0, None))
    batch = buffer.to_record_batch(CONSTANTS)
    assert batch.column("trade_id").to_pylist() == ["a", "c"]
    assert batch.column("sequence").to_pylist() == [1, None]
    assert batch.column("size").to_pylist() == [2.0, 4.0]


def test_a_value_of_the_wrong_type_is_refused_and_the_columns_stay_aligned() -> None:
    buffer = ColumnBuffer("status", KEY)
    good = Status("kraken", "BTC/USD", None, T0, None, "gap", "trades", 5, 9, 4, "missed")
    buffer.add(good)
    # A string where a count belongs: the row is cut back after half of it was appended.
    bad = Status("kraken", "BTC/USD", None, T0 + 1, 3, "gap", "trades", 5, "9", 4, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot store"):
        buffer.add(bad)
    buffer.add(Status("kraken", "BTC/USD", T0, T0 + 2, None, "connected"))
    batch = buffer.to_record_batch(CONSTANTS)
    assert batch.num_rows == 2
    assert batch.column("sequence").to_pylist() == [None, None]
    assert batch.column("received_sequence").to_pylist() == [9, None]
    assert batch.column("event").to_pylist() == ["gap", "connected"]


def test_the_columns_a_file_key_fixes_need_their_values() -> None:
    buffer = ColumnBuffer("trades", KEY)
    with pytest.raises(ValueError, match="symbol"):
        buffer.to_record_batch({"exchange": "kraken"})
    with pytest.raises(ValueError, match="no such columns"):
        ColumnBuffer("trades", frozenset({"venue"}))


def test_an_empty_buffer_gives_an_empty_batch() -> None:
    batch = ColumnBuffer("orderbook", KEY).to_record_batch(CONSTANTS)
    assert batch.num_rows == 0
    assert batch.schema == SCHEMAS["orderbook"]


def test_levels_and_number_columns_together() -> None:
    rows = [
        BookUpdate("okx", "X", T0, T0, 7, "snapshot", 7, None, flat([(1.0, 2.0)]), flat([])),
        BookUpdate(
            "okx", "X", None, T0 + 1, 8, "delta", 8, 7, flat([]), flat([(3.0, 0.0), (4.0, 1.0)])
        ),
    ]
    batch = to_record_batch("orderbook", rows)
    assert batch.column("prev_sequence").to_pylist() == [None, 7]
    assert batch.column("asks").to_pylist() == [
        [],
        [{"price": 3.0, "size": 0.0}, {"price": 4.0, "size": 1.0}],
    ]


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_gc")
def test_a_dropped_buffer_frees_its_columns_without_the_garbage_collector() -> None:
    # The service runs with high GC thresholds: a buffer in a reference cycle would hold
    # a flush's worth of rows until a full collection (seen as RSS growing 2.4 MB/s).
    buffer = ColumnBuffer("trades", KEY)
    buffer.add(Trade("kraken", "BTC/USD", T0, T0, 1, "a", 1.0, 2.0, "buy"))
    batch = buffer.to_record_batch(CONSTANTS)
    column = weakref.ref(buffer._columns[0])
    del buffer
    assert column() is not None  # the batch still shares its memory
    del batch
    assert column() is None


def test_order_book_levels_match_arrows_own_conversion() -> None:
    rng = random.Random(7)
    bids = [
        [(rng.uniform(1, 1e5), rng.uniform(0, 9)) for _ in range(rng.randrange(0, 25))]
        for _ in range(300)
    ]
    asks = [[(float(rng.randrange(100)), 0.0) for _ in range(rng.randrange(0, 3))] for _ in bids]
    rows = [
        BookUpdate("okx", "X", T0 + n, T0 + n, n, "delta", n, n - 1, flat(b), flat(a))
        for n, (b, a) in enumerate(zip(bids, asks, strict=True))
    ]
    batch = to_record_batch("orderbook", rows)
    assert batch.column("bids").equals(pa.array(bids, type=LEVELS))
    assert batch.column("asks").equals(pa.array(asks, type=LEVELS))
    assert batch.column("sequence").to_pylist() == list(range(300))


@pytest.mark.parametrize(
    ("bad_bids", "bad_asks", "kind", "message"),
    [
        (flat([(1.0, 2.0)]), flat([]), None, "null in non-nullable column 'kind'"),
        (flat([(1.0, 2.0)]), None, "delta", "null in non-nullable column 'asks'"),
        (array("d", [1.0, 2.0, 3.0]), flat([]), "delta", "odd length"),  # not pairs
        (flat([(1.0, 2.0)]), array("q", [3, 4]), "delta", "cannot store"),  # not float64
        # Levels as a list of pairs (or any other form): refused, naming the one form.
        (
            flat([(1.0, 2.0)]),
            [(3.0, 4.0)],
            "delta",
            r"'asks': levels must be one flat array\('d'\)",
        ),
        ((1.0, 2.0), flat([]), "delta", r"'bids': levels must be .*, not tuple"),
    ],
)
def test_a_bad_order_book_row_is_refused_and_nothing_of_it_is_kept(
    bad_bids: Any, bad_asks: Any, kind: Any, message: str
) -> None:
    buffer = ColumnBuffer("orderbook", KEY)
    buffer.add(
        BookUpdate(
            "okx", "X", T0, T0, 7, "snapshot", 7, None, flat([(1.0, 2.0)]), flat([(3.0, 1.0)])
        )
    )
    with pytest.raises(ValueError, match=message):
        buffer.add(BookUpdate("okx", "X", T0, T0 + 1, 8, kind, 8, 7, bad_bids, bad_asks))
    buffer.add(BookUpdate("okx", "X", T0, T0 + 2, 9, "delta", 9, 8, flat([]), flat([(5.0, 6.0)])))
    batch = buffer.to_record_batch(CONSTANTS)
    assert batch.column("sequence").to_pylist() == [7, 9]
    assert batch.column("bids").to_pylist() == [[{"price": 1.0, "size": 2.0}], []]
    assert batch.column("asks").to_pylist() == [
        [{"price": 3.0, "size": 1.0}],
        [{"price": 5.0, "size": 6.0}],
    ]


def test_a_routed_order_book_row_keeps_no_python_level_objects_alive() -> None:
    # Kept alive until the flush, a busy book's level objects made the garbage collector's
    # young passes stall the event loop; the buffer copies the numbers out.
    bids, asks = flat([(1.0, 2.0), (0.5, 3.0)]), flat([])
    before = sys.getrefcount(bids), sys.getrefcount(asks)
    buffer = ColumnBuffer("orderbook", KEY)
    buffer.add(BookUpdate("okx", "X", T0, T0, 7, "snapshot", 7, None, bids, asks))
    assert (sys.getrefcount(bids), sys.getrefcount(asks)) == before
    assert buffer.to_record_batch(CONSTANTS).column("bids").to_pylist() == [
        [{"price": 1.0, "size": 2.0}, {"price": 0.5, "size": 3.0}]
    ]
