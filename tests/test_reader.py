"""The reader against data written by the real writer: catalog, tables, holes, book replay.

The data (:mod:`tests.reader_data`) is written once per module by ``run_writer``; every test
reads it back through :class:`collector.reader.DataReader` and compares with the events that
went in.
"""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio

from collector.events import BookUpdate, Event, Status, Ticker, Trade
from collector.reader import BookReset, BookView, DataReader, ReaderError, UsageError
from collector.reader.times import from_us, to_us
from collector.storage import read_file_metadata
from tests.reader_data import (
    CHECKPOINT,
    DISCONNECT,
    END,
    GAP,
    RECONNECT,
    RESYNC,
    SILENT,
    SILENT_RECONNECT,
    START,
    Scenario,
    record,
    reference_items,
    scenario,
    us,
)

MINUTE = 60_000_000


@pytest.fixture(scope="module")
def data() -> Scenario:
    return scenario()


@pytest.fixture(scope="module")
def recorded(data: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("reader") / "data"
    paths = trio.run(record, directory, data.events)
    assert len(paths) > 10  # hourly files of several tables and two days
    return directory


@pytest.fixture
def reader(recorded: Path) -> DataReader:
    return DataReader(recorded)


def as_items(items: Any) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in items:
        if isinstance(item, BookView):
            out.append(("view", to_us(item.time), item.bids, item.asks))
        else:
            assert isinstance(item, BookReset)
            out.append(("reset", to_us(item.time), item.event))
    return out


# ------------------------------------------------------------------------------- catalog


def test_catalog_lists_every_stream_with_exact_names_and_times(
    reader: DataReader, data: Scenario
) -> None:
    streams = {(s.exchange, s.symbol, s.data_type): s for s in reader.catalog()}
    coinbase = [key for key in streams if key[0] == "coinbase"]
    assert set(streams) - set(coinbase) == {
        ("binance", "BTCUSDT", "trades"),
        ("binance", "BTCUSDT", "orderbook"),
        ("binance", "BTCUSDT", "ticker"),
        ("binance", "BTCUSDT", "status"),
    }
    # Two spellings share the directory BTC_USD: one stream, named by its newest file.
    [(_, symbol, table)] = coinbase
    assert (symbol in ("BTC/USD", "BTC_USD"), table) == (True, "trades")
    trades = streams["binance", "BTCUSDT", "trades"]
    times = [t.timestamp_collector for t in data.of(Trade)]
    assert (to_us(trades.first), to_us(trades.last)) == (min(times), max(times))
    assert trades.files == 4  # hours 22, 23, 00 and 01 (the last trade is just past 01:00)
    assert [s.data_type for s in reader.catalog(exchange="binance", data_type="orderbook")] == [
        "orderbook"
    ]
    # A range after the last trade leaves the trades out.
    late = reader.catalog(start=from_us(max(times) + 1))
    assert ("binance", "BTCUSDT", "trades") not in {
        (s.exchange, s.symbol, s.data_type) for s in late
    }


def test_missing_directory_and_bad_times_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no data directory"):
        DataReader(tmp_path / "nowhere")
    reader = DataReader(tmp_path)
    with pytest.raises(UsageError, match="not a time"):
        reader.table("trades", start="yesterday")
    with pytest.raises(UsageError, match="before the start"):
        reader.table("trades", start="2024-05-02", end="2024-05-01")
    assert reader.table("trades").num_rows == 0  # nothing recorded: an empty table


# -------------------------------------------------------------------------------- tables


def test_table_returns_exactly_the_rows_of_the_range_with_path_columns(
    reader: DataReader, data: Scenario
) -> None:
    start, end = us("2024-05-01T23:50:00"), us("2024-05-02T00:10:00")
    table = reader.table("trades", start=from_us(start), end=from_us(end))
    expected = [t for t in data.of(Trade) if start <= t.timestamp_collector < end]
    assert table.num_rows == len(expected) > 0
    assert table.column("trade_id").to_pylist() == [t.trade_id for t in expected]
    dates = table.column("date").to_pylist()
    assert set(dates) == {date(2024, 5, 1), date(2024, 5, 2)}  # across midnight
    assert table.column("data_type").unique().to_pylist() == ["trades"]
    assert table.schema.field("date").type == pa.date32()
    # Epoch milliseconds and ISO strings select the same rows.
    same = reader.table("trades", start=start // 1000, end="2024-05-02T00:10:00Z")
    assert same.column("trade_id").to_pylist() == [t.trade_id for t in expected]
    only = reader.table("trades", start=start, end=end, columns=["price", "date"])
    assert only.column_names == ["price", "date"]


def test_any_table_reads_status_keeps_its_own_data_type_column(
    reader: DataReader, data: Scenario
) -> None:
    status = reader.table("status", exchange="binance", symbol="BTCUSDT")
    assert status.column("event").to_pylist() == [s.event for s in data.of(Status)]
    assert status.column("data_type").to_pylist() == [s.data_type for s in data.of(Status)]
    tickers = reader.table("ticker")
    assert tickers.num_rows == len(data.of(Ticker)) > 0


def test_symbols_that_share_a_directory_are_told_apart_by_the_rows(reader: DataReader) -> None:
    slash = reader.table("trades", exchange="coinbase", symbol="BTC/USD")
    underscore = reader.table("trades", exchange="coinbase", symbol="BTC_USD")
    assert slash.column("trade_id").to_pylist() == ["BTC/USD-0", "BTC/USD-1", "BTC/USD-2"]
    assert underscore.column("trade_id").to_pylist() == ["BTC_USD-0", "BTC_USD-1", "BTC_USD-2"]
    assert reader.table("trades", exchange="coinbase").num_rows == 6


def test_a_table_the_reader_does_not_know_is_read_from_its_files(tmp_path: Path) -> None:
    """Tables are directories: a new one (here written directly in the layout) reads
    like any other, with the newest file's schema (older files get nulls)."""
    directory = tmp_path / "data" / "bybit-linear" / "BTCUSDT" / "liquidations" / "2024-05-01"
    directory.mkdir(parents=True)
    ts = pa.timestamp("us", tz="UTC")
    old = pa.table({"exchange": ["bybit-linear"], "symbol": ["BTCUSDT"],
                    "timestamp_collector": pa.array([us("2024-05-01T10:00:00")], ts),
                    "price": [1.0]})  # fmt: skip
    new = old.append_column("side", pa.array(["sell"])).set_column(
        2, "timestamp_collector", pa.array([us("2024-05-01T11:00:00")], ts)
    )
    pq.write_table(old, directory / f"{us('2024-05-01T10:00:00') // 1000}.parquet")
    pq.write_table(new, directory / f"{us('2024-05-01T11:00:00') // 1000}.parquet")
    table = DataReader(tmp_path / "data").table("liquidations")
    assert table.column("side").to_pylist() == [None, "sell"]
    assert table.column("data_type").to_pylist() == ["liquidations"] * 2
    later = DataReader(tmp_path / "data").table("liquidations", start="2024-05-01T10:30Z")
    assert later.column("price").to_pylist() == [1.0]
    assert later.num_rows == 1


def test_duckdb_relation_gives_the_same_rows_and_runs_again(reader: DataReader) -> None:
    start, end = "2024-05-01T23:00:00Z", "2024-05-02T00:30:00Z"
    table = reader.table("trades", start=start, end=end)
    rel = reader.relation("trades", start=start, end=end)
    counted = rel.aggregate("date, count(*) AS n").order("date").fetchall()
    dates = table.column("date").to_pylist()
    assert counted == [(d, dates.count(d)) for d in sorted(set(dates))]
    assert rel.count("*").fetchall() == [(table.num_rows,)]  # a relation runs again
    ids = rel.order("timestamp_collector").project("trade_id").fetchall()
    assert [i for (i,) in ids] == table.column("trade_id").to_pylist()
    exact = reader.relation("trades", exchange="coinbase", symbol="BTC/USD")
    assert exact.count("*").fetchall() == [(3,)]


def test_relation_without_duckdb_names_the_extra(
    reader: DataReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb -> ImportError
    with pytest.raises(ReaderError, match=r"\[reader\] extra"):
        reader.relation("trades")
    assert reader.table("trades").num_rows > 0  # everything else needs no DuckDB


# --------------------------------------------------------------------------------- holes


def test_holes_list_each_kind_with_its_span(reader: DataReader) -> None:
    holes = reader.holes(exchange="binance", symbol="BTCUSDT")
    spans = [
        (h.event, h.data_type, to_us(h.start), None if h.end is None else to_us(h.end), h.count)
        for h in holes
    ]
    assert spans == [
        ("subscribe_error", "ticker", START + 1, None, None),  # never subscribed again
        ("gap", "trades", us("2024-05-01T22:10:00"), us("2024-05-01T22:10:00"), 3),
        ("disconnected", None, DISCONNECT, RECONNECT, None),
        ("gap", "orderbook", GAP, RESYNC, 4),  # the book is unusable until the resync
        ("silent", "trades", SILENT - 60_000_000, SILENT_RECONNECT, None),
        ("disconnected", None, SILENT + 1, SILENT_RECONNECT, None),
        ("dropped", None, us("2024-05-02T00:49:58"), us("2024-05-02T00:49:59.5"), 5),
    ]
    assert holes[3].detail == "u is not the previous u + 1"
    assert (holes[3].expected_sequence, holes[3].received_sequence) == (5, 9)
    # Discards, the handover, resync, connects: no holes. All symbols: the same here.
    assert reader.holes() == holes


def test_holes_of_a_range_include_one_that_began_before_it(reader: DataReader) -> None:
    def events(start: int, end: int) -> list[tuple[str, int]]:
        found = reader.holes(start=from_us(start), end=from_us(end))
        # The refused ticker feed is never subscribed again: open, in every later range.
        assert (found[0].event, found[0].end) == ("subscribe_error", None)
        return [(h.event, to_us(h.start)) for h in found[1:]]

    assert events(DISCONNECT + MINUTE, GAP) == [("disconnected", DISCONNECT)]
    assert events(RECONNECT + 1, GAP) == []
    assert events(GAP, GAP + 1) == [("gap", GAP)]
    assert events(GAP - 1, GAP) == []  # [start, end): the gap is at the end, outside


# ---------------------------------------------------------------------------------- books


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(START, END + MINUTE, id="everything"),
        pytest.param(START + 30 * MINUTE, DISCONNECT + 5 * MINUTE, id="from-the-first-snapshot"),
        pytest.param(DISCONNECT + MINUTE, RECONNECT + MINUTE, id="starts-in-a-disconnect"),
        pytest.param(GAP + 1_000_000, CHECKPOINT + MINUTE, id="starts-in-a-gap-to-checkpoint"),
        pytest.param(CHECKPOINT + 5 * MINUTE, CHECKPOINT + 25 * MINUTE, id="from-checkpoint"),
    ],
)
def test_book_replay_matches_a_reference_rebuild(
    reader: DataReader, data: Scenario, start: int, end: int
) -> None:
    replayed = as_items(reader.book("binance", "BTCUSDT", from_us(start), from_us(end), depth=5))
    expected = reference_items(data.events, start, end, depth=5)
    assert replayed == expected
    kinds = {item[0] for item in replayed}
    assert "view" in kinds


def test_book_replay_says_where_it_resets(reader: DataReader) -> None:
    items = list(reader.book("binance", "BTCUSDT", from_us(START), from_us(END + MINUTE), depth=3))
    resets = [(to_us(i.time), i.event) for i in items if isinstance(i, BookReset)]
    assert resets == [
        (START, "no_snapshot"),  # before the first snapshot
        (DISCONNECT, "disconnected"),
        (GAP, "gap"),
        # SILENT: the trades feed went silent, not the book: no reset until the disconnect
        (SILENT + 1, "disconnected"),
        (us("2024-05-02T00:49:58"), "dropped"),
    ]
    after_gap = [i for i in items if isinstance(i, BookView) and GAP < to_us(i.time) < RESYNC]
    assert after_gap == []  # deltas between the gap and the resync are not applied
    [checkpoint] = [i for i in items if isinstance(i, BookView) and i.kind == "checkpoint"]
    assert to_us(checkpoint.time) == CHECKPOINT


def test_book_sampled_every_interval_is_the_book_as_of_each_sample(
    reader: DataReader, data: Scenario
) -> None:
    start, end = RECONNECT - 2 * MINUTE, RECONNECT + 3 * MINUTE
    every = timedelta(seconds=20)
    items = list(
        reader.book("binance", "BTCUSDT", from_us(start), from_us(end), depth=4, every=every)
    )
    first, *rest = items
    assert isinstance(first, BookView)
    assert to_us(first.time) == start
    views = [i for i in rest if isinstance(i, BookView)]
    resets = [i for i in rest if isinstance(i, BookReset)]
    assert [to_us(r.time) for r in resets] == [DISCONNECT]
    step = 20_000_000
    # No sample while the book is unknown: from the disconnect until the snapshot after it.
    expected_times = [
        t for t in range(start + step, end, step) if not DISCONNECT <= t < RECONNECT + 500_000
    ]
    assert [to_us(v.time) for v in views] == expected_times
    for view in views:
        at = to_us(view.time)
        [reference] = reference_items(data.events, at, at + 1, depth=4)
        assert ("view", at, view.bids, view.asks) == reference


def test_book_at_a_time(reader: DataReader, data: Scenario) -> None:
    at = us("2024-05-01T23:12:34")
    view = reader.book_at("binance", "BTCUSDT", from_us(at), depth=2)
    assert isinstance(view, BookView)
    assert [("view", at, view.bids, view.asks)] == reference_items(data.events, at, at + 1, 2)
    deltas = [b for b in data.of(BookUpdate) if b.timestamp_collector <= at]
    assert to_us(view.updated) == deltas[-1].timestamp_collector
    assert view.sequence == deltas[-1].sequence
    before = reader.book_at("binance", "BTCUSDT", from_us(START + 5))
    assert isinstance(before, BookReset)
    assert before.event == "no_snapshot"
    during = reader.book_at("binance", "BTCUSDT", from_us(DISCONNECT + MINUTE))
    assert isinstance(during, BookReset)
    assert (during.event, to_us(during.time)) == ("disconnected", DISCONNECT)
    with pytest.raises(UsageError, match="depth"):
        reader.book_at("binance", "BTCUSDT", from_us(at), depth=0)


def test_files_carry_the_metadata_the_reader_relies_on(reader: DataReader) -> None:
    """The catalog takes exact names from the footer: check they are there."""
    [first, *_] = reader.files("orderbook", exchange="binance", symbol="BTCUSDT")
    meta = read_file_metadata(first.path)
    assert (meta.exchange, meta.symbol, meta.data_type) == ("binance", "BTCUSDT", "orderbook")


def _events_sorted(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: e.timestamp_collector)
