"""Every finished Parquet file says what it is: ``collector.*`` key-value metadata.

Files are made by the real writer (router -> flusher -> finalizer, virtual time) and by the
real start-up recovery, and read back with pyarrow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import trio
import trio.testing

from collector import __version__
from collector.clock import trio_wall_clock
from collector.config import MarketSettings, StorageSettings
from collector.events import RAW_SYMBOL, BookUpdate, Event, Raw, Trade, levels_from_pairs
from collector.metrics import Metrics
from collector.storage import (
    FileMetadata,
    FileMetadataSource,
    read_file_metadata,
    recover_leftovers,
    run_writer,
)
from collector.storage.columns import to_record_batch
from collector.storage.journal import Journal
from collector.storage.schemas import SCHEMA_VERSIONS, schema_for

NOON = 1_714_564_800_000_000  # 2024-05-01T12:00:00Z, microseconds
LINEAR = MarketSettings(exchange="bybit", symbols=("BTCUSDT",), category="linear", book_depth=50)
MARKETS = {("bybit-linear", "BTCUSDT"): LINEAR}


def trade(ts_us: int, n: int) -> Trade:
    return Trade("bybit-linear", "BTCUSDT", ts_us, ts_us, n, f"t{n}", 100.0, 1.0, "buy")


def book(ts_us: int) -> BookUpdate:
    levels = levels_from_pairs([(100.0, 1.0)])
    return BookUpdate(
        "bybit-linear", "BTCUSDT", ts_us, ts_us, 1, "snapshot", None, None, levels, levels
    )


def raw(ts_us: int) -> Raw:
    return Raw("bybit-linear", RAW_SYMBOL, None, ts_us, None, "bybit-linear-0", "recv", b"{}")


@asynccontextmanager
async def writer(
    data_dir: Path, source: FileMetadataSource
) -> AsyncIterator[tuple[trio.MemorySendChannel[list[Event]], list[Path]]]:
    """A running writer; yields its event channel and the list its finished paths go to
    (complete once the block ends, with the channel closed by the caller)."""
    events_out, events_in = trio.open_memory_channel[list[Event]](16)
    finished_out, finished_in = trio.open_memory_channel[Path](16)
    paths: list[Path] = []

    async def collect() -> None:
        async for path in finished_in:
            paths.append(path)

    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_writer,
                StorageSettings(data_dir=str(data_dir)),
                events_in,
                finished_out,
                Metrics(),
                wall_clock=trio_wall_clock(NOON - round(trio.current_time() * 1_000_000)),
                file_metadata=source,
            )
        )
        nursery.start_soon(collect)
        yield events_out, paths


def journals(root: Path) -> list[Path]:
    return sorted(root.rglob("*.journal.arrows"))


def metadata_by_type(paths: list[Path]) -> dict[str, FileMetadata]:
    found = {}
    for path in paths:
        meta = read_file_metadata(path)
        assert meta.data_type is not None
        found[meta.data_type] = meta
    return found


async def test_every_finished_file_says_what_it_is(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    source = FileMetadataSource(MARKETS, instance="collector-1", shard="1/3")
    async with writer(tmp_path, source) as (events, paths):
        await events.send([trade(NOON, 1), book(NOON + 1), raw(NOON + 2)])
        await events.aclose()
    assert len(paths) == 3

    # As any Parquet reader sees it: plain key-value pairs in the footer.
    [trades_path] = [p for p in paths if "/trades/" in str(p)]
    kv = pq.read_metadata(trades_path).metadata
    assert kv[b"collector.version"] == __version__.encode()
    assert kv[b"collector.schema_version"] == str(SCHEMA_VERSIONS["trades"]).encode()
    assert kv[b"collector.shard"] == b"1/3"
    assert pq.read_schema(trades_path).metadata[b"collector.exchange"] == b"bybit-linear"

    common = FileMetadata(collector_version=__version__, instance="collector-1", shard="1/3")
    assert metadata_by_type(paths) == {
        "trades": msgspec.structs.replace(
            common,
            data_type="trades",
            schema_version=SCHEMA_VERSIONS["trades"],
            exchange="bybit-linear",
            symbol="BTCUSDT",
            category="linear",
        ),
        "orderbook": msgspec.structs.replace(
            common,
            data_type="orderbook",
            schema_version=SCHEMA_VERSIONS["orderbook"],
            exchange="bybit-linear",
            symbol="BTCUSDT",
            category="linear",
            book_depth=50,  # book options on book files only; book_mode unset: absent
        ),
        "raw": msgspec.structs.replace(  # a connection's frames: no market of their own
            common,
            data_type="raw",
            schema_version=SCHEMA_VERSIONS["raw"],
            exchange="bybit-linear",
            symbol=RAW_SYMBOL,
        ),
    }


async def test_a_recovered_file_states_the_run_that_wrote_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A crash leaves the journal; the next run, with other settings, finalizes it with the
    metadata the crashed run recorded, and its own new files with its own."""
    before = FileMetadataSource(MARKETS, instance="box-a", shard="0/2")
    with trio.CancelScope() as crash:
        async with writer(tmp_path, before) as (events, _):
            await events.send([trade(NOON, 1)])
            await trio.sleep(1.5)  # a flush tick: the row is in the journal
            crash.cancel()
    [journal] = journals(tmp_path)

    changed = MarketSettings(exchange="bybit", symbols=("BTCUSDT",), category="linear")
    after = FileMetadataSource(
        {("bybit-linear", "BTCUSDT"): changed}, instance="box-b", shard="1/3"
    )
    async with writer(tmp_path, after) as (events, paths):
        await events.send([book(NOON + 5_000_000)])
        await events.aclose()

    assert not journal.exists()
    by_type = metadata_by_type(paths)
    recovered = by_type["trades"]
    assert (recovered.instance, recovered.shard) == ("box-a", "0/2")
    assert recovered == before.for_stream("bybit-linear", "BTCUSDT", "trades")
    assert (by_type["orderbook"].instance, by_type["orderbook"].book_depth) == ("box-b", None)
    assert (by_type["status"].instance, by_type["status"].shard) == ("box-b", "1/3")


def test_a_journal_without_metadata_gets_only_what_it_proves(tmp_path: Path) -> None:
    """A journal written before files had metadata: the table, its schema version, the
    exchange and the symbol come from the journal itself; nothing is guessed."""
    directory = tmp_path / "binance" / "BTC_USD" / "trades" / "2024-05-01"
    directory.mkdir(parents=True)
    journal = Journal.create(directory / "1714564800000.journal.arrows", schema_for("trades"))
    row = Trade("binance", "BTC/USD", None, NOON, None, "t1", 1.0, 1.0, None)
    journal.append(to_record_batch("trades", [row]))
    journal.close()

    [path] = recover_leftovers(tmp_path, Metrics())

    assert read_file_metadata(path) == FileMetadata(
        data_type="trades",
        schema_version=SCHEMA_VERSIONS["trades"],
        exchange="binance",
        symbol="BTC/USD",  # the row's spelling, not the directory's
    )
    assert pq.read_table(path).column("trade_id").to_pylist() == ["t1"]


def test_metadata_round_trip_and_bad_values() -> None:
    meta = FileMetadata(
        collector_version="1.2.3",
        data_type="orderbook",
        schema_version=2,
        exchange="binance",
        symbol="BTCUSDT",
        book_mode="diff",
        book_depth=20,
        instance="collector-0",
        shard="0/1",
    )
    kv = meta.to_kv()
    assert kv[b"collector.version"] == b"1.2.3"
    assert b"collector.category" not in kv  # absent, not an empty string
    assert FileMetadata.from_kv({**kv, b"ARROW:schema": b"\x00"}) == meta
    assert meta.to_dict()["book_depth"] == 20
    assert "category" not in meta.to_dict()
    bad = FileMetadata.from_kv(
        {b"collector.schema_version": b"two", b"collector.symbol": b"\xff", b"x": b"y"}
    )
    assert bad == FileMetadata()
    assert FileMetadata.from_kv(None) == FileMetadata()
