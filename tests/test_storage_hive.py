"""``storage.layout = "hive"``: written by the writer, read by the reader like the default
layout, read by DuckDB's and pyarrow's Hive partitioning without a partition shadowing a
column, and uploaded under keys that mirror it."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest
import trio

from collector.events import Event, Status, Trade
from collector.reader import DataReader
from collector.storage.layout import HIVE_NAMES, parse_place, relative_key, stream_dir
from collector.storage.schemas import SCHEMAS
from collector.upload.keys import DEFAULT_KEY_TEMPLATE, object_key, parse_relative
from tests.reader_data import Scenario, record, scenario, us

T = us("2024-05-01T12:00:00")


@pytest.fixture(scope="module")
def data() -> Scenario:
    return scenario()


@pytest.fixture(scope="module")
def both(data: Scenario, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The scenario recorded in the default layout and in the hive layout."""
    root = tmp_path_factory.mktemp("hive")
    trio.run(record, root / "default", data.events)
    trio.run(partial(record, root / "hive", data.events, layout="hive"))
    return root / "default", root / "hive"


def test_no_table_has_a_column_named_like_a_partition() -> None:
    partitions = set(HIVE_NAMES.values())
    for name, schema in SCHEMAS.items():
        assert not partitions & set(schema.names), name


def test_the_writer_files_each_table_first_under_hive_directories(both: tuple[Path, Path]) -> None:
    _, hive = both
    tops = sorted(p.name for p in hive.iterdir())
    assert tops
    assert all(name.startswith("table=") for name in tops)
    assert "table=status" in tops
    assert "table=trades" in tops
    trades = sorted((hive / "table=trades").rglob("*.parquet"))
    assert trades
    for path in trades:
        parts = path.relative_to(hive).parts
        assert [p.split("=")[0] for p in parts[:-1]] == ["table", "venue", "market", "date"]
    # A symbol's directory name is sanitized like in the default layout.
    assert (hive / "table=trades/venue=coinbase/market=BTC_USD").is_dir()
    assert not list(hive.rglob("*.journal.arrows"))


def test_the_reader_gives_the_same_catalog_and_rows_for_both_layouts(
    both: tuple[Path, Path],
) -> None:
    default, hive = DataReader(both[0]), DataReader(both[1])
    assert hive.catalog() == default.catalog()
    assert hive.catalog(data_type="status") == default.catalog(data_type="status")
    for table in ("trades", "orderbook", "ticker", "status"):
        assert hive.table(table).equals(default.table(table)), table
    assert hive.table("trades", exchange="coinbase", symbol="BTC/USD").equals(
        default.table("trades", exchange="coinbase", symbol="BTC/USD")
    )
    assert hive.table("trades", symbol="BTCUSDT").equals(default.table("trades", symbol="BTCUSDT"))


def test_a_directory_with_both_layouts_reads_as_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    before: list[Event] = [
        Trade("binance", "BTCUSDT", None, T + n, None, f"a{n}", 1.0, 1.0, None) for n in range(2)
    ]
    after: list[Event] = [
        Trade("binance", "BTCUSDT", None, T + 10 + n, None, f"b{n}", 1.0, 1.0, None)
        for n in range(2)
    ]
    trio.run(record, data, before)
    trio.run(partial(record, data, after, layout="hive"))
    reader = DataReader(data)
    [stream] = reader.catalog()
    assert stream.files == 2
    assert reader.table("trades").column("trade_id").to_pylist() == ["a0", "a1", "b0", "b1"]


def test_duckdb_hive_partitioning_adds_the_partitions_beside_the_real_columns(
    both: tuple[Path, Path], data: Scenario
) -> None:
    _, hive = both
    con = duckdb.connect()
    status = con.sql(
        f"SELECT * FROM read_parquet('{hive}/table=status/**/*.parquet', hive_partitioning=true)"
    )
    columns = status.columns
    assert {"table", "venue", "market", "date"} <= set(columns)
    assert {"exchange", "symbol", "data_type", "collector_seq"} <= set(columns)
    rows = con.sql(
        f'SELECT "table", data_type, exchange, venue FROM read_parquet('
        f"'{hive}/table=status/**/*.parquet', hive_partitioning=true) ORDER BY collector_seq"
    ).fetchall()
    statuses = [e for e in data.events if isinstance(e, Status)]
    # The status rows keep their own data_type (the feed they are about), not "status".
    assert sorted(map(str, (r[1] for r in rows))) == sorted(
        map(str, (s.data_type for s in statuses))
    )
    assert any(r[1] not in (None, "status") for r in rows)
    assert {r[0] for r in rows} == {"status"}
    assert all(r[2] == r[3] for r in rows if "/" not in r[2])
    # A read of everything keeps the tables apart by the partition.
    counts = dict(
        con.sql(
            f"SELECT \"table\", count(*) FROM read_parquet('{hive}/**/*.parquet', "
            "hive_partitioning=true, union_by_name=true) GROUP BY 1"
        ).fetchall()
    )
    default = DataReader(both[0])
    for table in ("trades", "orderbook", "ticker", "status"):
        assert counts[table] == default.table(table).num_rows > 0, table


def test_pyarrow_hive_partitioning_reads_a_table_directory(both: tuple[Path, Path]) -> None:
    default, hive = both
    dataset = ds.dataset(hive / "table=status", format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert {"venue", "market", "date", "data_type", "exchange"} <= set(table.column_names)
    expected = DataReader(default).table("status")
    assert sorted(table.column("collector_seq").to_pylist()) == sorted(
        expected.column("collector_seq").to_pylist()
    )
    assert sorted(map(str, table.column("data_type").to_pylist())) == sorted(
        map(str, expected.column("data_type").to_pylist())
    )


def test_hive_paths_parse_and_default_names_never_look_like_hive(tmp_path: Path) -> None:
    directory = stream_dir(tmp_path, "binance", "BTC/USD", "status", T // 1000, "srv=1", "hive")
    relative = relative_key(directory / "1.parquet", tmp_path)
    assert (
        relative
        == "table=status/venue=binance/market=BTC_USD/server=srv_1/date=2024-05-01/1.parquet"
    )
    place = parse_place(relative.split("/"))
    assert place is not None
    assert place.layout == "hive"
    assert (place.exchange, place.symbol, place.data_type, place.server) == (
        "binance",
        "BTC_USD",
        "status",
        "srv_1",
    )
    default = stream_dir(tmp_path, "a=b", "c=d", "status", T // 1000)
    assert "=" not in default.relative_to(tmp_path).as_posix()
    # A mix of the two is not a file of either layout.
    assert (
        parse_place(["table=trades", "binance", "BTCUSDT", "date=2024-05-01", "1.parquet"]) is None
    )
    assert (
        parse_place(["table=trades", "venue=x", "symbol=y", "date=2024-05-01", "1.parquet"]) is None
    )


def test_s3_keys_mirror_the_hive_layout() -> None:
    relative = "table=trades/venue=binance/market=BTCUSDT/date=2024-05-01/1714564800000.parquet"
    assert (
        object_key(relative, prefix="/archive/")
        == "archive/table=trades/venue=binance/market=BTCUSDT/date=2024-05-01/1714564800000.parquet"
    )
    with_server = relative.replace("/date=", "/server=eu1/date=")
    assert object_key(with_server, offset=2) == (
        "table=trades/venue=binance/market=BTCUSDT/server=eu1/date=2024-05-01/1714564800002.parquet"
    )
    parts = parse_relative(with_server)
    assert (parts.exchange, parts.symbol, parts.data_type, parts.server) == (
        "binance",
        "BTCUSDT",
        "trades",
        "eu1",
    )
    # The default layout keeps its keys; a custom template takes the parts of either layout.
    assert object_key(
        "binance/BTCUSDT/trades/2024-05-01/1.parquet", template=DEFAULT_KEY_TEMPLATE
    ) == ("binance/BTCUSDT/trades/2024-05-01/1.parquet")
    custom = "{data_type}/{date}/{exchange}-{symbol}-{name}"
    assert (
        object_key(relative, template=custom)
        == object_key("binance/BTCUSDT/trades/2024-05-01/1714564800000.parquet", template=custom)
        == "trades/2024-05-01/binance-BTCUSDT-1714564800000.parquet"
    )
