"""Every order book file stands alone: the writer's books and their ``checkpoint`` rows.

The reference in each test is the plain replay a reader does (a ``snapshot`` or a
``checkpoint`` replaces the book, a ``delta`` sets its levels, size 0 deletes), over every
row written before the checkpoint, in every earlier file.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import trio
import trio.testing

from collector.clock import trio_wall_clock
from collector.config import MarketSettings, StorageSettings
from collector.doorbell import Doorbell
from collector.events import BookUpdate, Event, Status, level_pairs, levels_from_pairs
from collector.metrics import Metrics
from collector.reader import HOLE_EVENTS
from collector.storage import FileMetadataSource, run_writer
from collector.storage import checkpoints as checkpoints_module
from collector.storage.checkpoints import BOOK_HOLE_EVENTS, StreamBook
from collector.storage.columns import ColumnBuffer
from tests.test_storage_writer import Harness, Sender, next_finished, settle, us

Book = tuple[dict[float, float], dict[float, float]]


def replay(rows: Iterable[dict[str, Any]], book: Book | None = None) -> Book:
    """A reader's replay of order book rows (as Parquet gives them back)."""
    bids, asks = book or ({}, {})
    for row in rows:
        if row["kind"] in ("snapshot", "checkpoint"):
            bids.clear()
            asks.clear()
        for side, levels in ((bids, row["bids"]), (asks, row["asks"])):
            for level in levels:
                if level["size"] == 0:
                    side.pop(level["price"], None)
                else:
                    side[level["price"]] = level["size"]
    return bids, asks


def as_levels(book: Book) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    bids, asks = book
    return sorted(bids.items(), reverse=True), sorted(asks.items())


def row_levels(row: dict[str, Any]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    return (
        [(level["price"], level["size"]) for level in row["bids"]],
        [(level["price"], level["size"]) for level in row["asks"]],
    )


def book_row(
    ts_us: int,
    seq: int | None,
    kind: str,
    bids: list[tuple[float, float]],
    asks: list[tuple[float, float]],
    symbol: str = "BTCUSDT",
) -> BookUpdate:
    return BookUpdate(
        "binance",
        symbol,
        None if seq is None else ts_us - 5,
        ts_us,
        seq,
        kind,  # type: ignore[arg-type]
        seq,
        None if seq is None else seq - 1,
        levels_from_pairs(bids),
        levels_from_pairs(asks),
    )


def random_rows(rng: random.Random, start_us: int, count: int, step_us: int) -> list[BookUpdate]:
    """A snapshot, then deltas (a quarter of their levels deletes), one more snapshot midway."""
    out: list[BookUpdate] = []
    for i in range(count):
        if i in (0, count // 2):
            kind = "snapshot"
            bids = [(100.0 - 0.5 * k, rng.uniform(0.1, 5)) for k in range(1, 30)]
            asks = [(100.0 + 0.5 * k, rng.uniform(0.1, 5)) for k in range(1, 30)]
        else:
            kind = "delta"
            bids = [
                (100.0 - 0.5 * rng.randint(1, 40), 0.0 if rng.random() < 0.25 else rng.random())
                for _ in range(rng.randint(0, 6))
            ]
            asks = [
                (100.0 + 0.5 * rng.randint(1, 40), 0.0 if rng.random() < 0.25 else rng.random())
                for _ in range(rng.randint(0, 6))
            ]
        out.append(book_row(start_us + i * step_us, 1000 + i, kind, bids, asks))
    return out


def as_rows(events: Iterable[BookUpdate]) -> list[dict[str, Any]]:
    return [
        {
            "kind": e.kind,
            "bids": [{"price": p, "size": s} for p, s in level_pairs(e.bids)],
            "asks": [{"price": p, "size": s} for p, s in level_pairs(e.asks)],
        }
        for e in events
    ]


# --------------------------------------------------------------------------- StreamBook


@pytest.mark.parametrize("fold_at", [1, 7, 32_768])
def test_stream_book_equals_the_replay_of_its_rows(
    monkeypatch: pytest.MonkeyPatch, fold_at: int
) -> None:
    """Fed in batches of any size, folded often or never, the book is the replay's."""
    monkeypatch.setattr(checkpoints_module, "MIN_FOLD_LEVELS", fold_at)
    rng = random.Random(fold_at)
    events = random_rows(rng, 1_000_000, 400, 10)
    book = StreamBook()
    fed = 0
    while fed < len(events):
        size = rng.randint(1, 40)
        buffer = ColumnBuffer("orderbook", frozenset({"exchange", "symbol"}))
        for event in events[fed : fed + size]:
            buffer.add(event)
        book.feed(buffer)
        fed = min(fed + size, len(events))
        row = book.checkpoint("binance", "BTCUSDT", events[fed - 1].timestamp_collector + 1)
        assert row is not None
        assert row.kind == "checkpoint"
        assert row.sequence == row.first_sequence == events[fed - 1].sequence
        assert row.timestamp_exchange == events[fed - 1].timestamp_exchange
        want = as_levels(replay(as_rows(events[:fed])))
        assert (level_pairs(row.bids), level_pairs(row.asks)) == want


def test_no_checkpoint_before_the_first_snapshot() -> None:
    book = StreamBook()
    buffer = ColumnBuffer("orderbook", frozenset({"exchange", "symbol"}))
    buffer.add(book_row(10, 5, "delta", [(99.0, 1.0)], [(101.0, 1.0)]))
    book.feed(buffer)
    assert book.checkpoint("binance", "BTCUSDT", 11) is None


def test_checkpoint_keeps_the_last_sequence_the_venue_sent() -> None:
    """A venue without ids (Kraken) leaves ``sequence`` empty; rows without one keep the
    last id seen."""
    book = StreamBook()
    buffer = ColumnBuffer("orderbook", frozenset({"exchange", "symbol"}))
    buffer.add(book_row(10, None, "snapshot", [(99.0, 1.0)], [(101.0, 1.0)]))
    buffer.add(book_row(11, None, "delta", [(98.0, 2.0)], []))
    book.feed(buffer)
    row = book.checkpoint("kraken", "BTC/USD", 12)
    assert row is not None
    assert row.sequence is None
    assert level_pairs(row.bids) == [(99.0, 1.0), (98.0, 2.0)]
    buffer = ColumnBuffer("orderbook", frozenset({"exchange", "symbol"}))
    buffer.add(book_row(13, 7, "delta", [], [(102.0, 1.0)]))
    buffer.add(book_row(14, None, "delta", [], [(101.0, 0.0)]))
    book.feed(buffer)
    row = book.checkpoint("kraken", "BTC/USD", 15)
    assert row is not None
    assert row.sequence == 7
    assert level_pairs(row.asks) == [(102.0, 1.0)]


# --------------------------------------------------------------------------- the writer


@asynccontextmanager
async def open_book_writer(
    tmp_path: Path,
    wall_now_us: int,
    markets: dict[tuple[str, str], MarketSettings] | None = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """run_writer with a wall clock moving with Trio, and the markets' options."""
    data_dir = tmp_path / "data"
    storage = StorageSettings(data_dir=str(data_dir), **settings)
    metrics = Metrics()
    send, receive = trio.open_memory_channel[list[Event]](16)
    doorbell = Doorbell(1)
    finished_send, finished = trio.open_memory_channel[Path](16)
    wall_clock = trio_wall_clock(wall_now_us - round(trio.current_time() * 1_000_000))
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_writer,
                storage,
                receive,
                finished_send,
                metrics,
                wall_clock=wall_clock,
                doorbell=doorbell,
                file_metadata=FileMetadataSource(markets),
            )
        )
        sender = Sender(send, doorbell)
        yield Harness(sender, finished, metrics, data_dir, nursery)
        await sender.aclose()
        async for _ in finished:
            pass


def written_at_least(h: Harness, rows: int) -> bool:
    return h.rows_written() >= rows


def book_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.rglob("orderbook/**/*.parquet"))


def check_files_stand_alone(paths: list[Path]) -> list[list[dict[str, Any]]]:
    """Each file after the first starts with a checkpoint equal to the replay of every
    earlier file; no other row is a checkpoint unless asked for. Returns the files' rows."""
    tables = [pq.read_table(path).to_pylist() for path in paths]
    history: list[dict[str, Any]] = []
    for index, table in enumerate(tables):
        if index:
            first = table[0]
            assert first["kind"] == "checkpoint", paths[index]
            assert row_levels(first) == as_levels(replay(history))
            # Stamped with the receive time of the file's first venue row.
            assert first["timestamp_collector"] == table[1]["timestamp_collector"]
            assert first["sequence"] == history[-1]["sequence"]
        history += table
    return tables


async def test_each_new_hourly_file_starts_with_the_book_so_far(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    start = us("2024-05-01T22:59:30")
    # Two rows a second for two hours and a bit: three hourly files.
    events = random_rows(random.Random(3), start, 2 * 3700, 500_000)
    async with open_book_writer(tmp_path, start) as h:
        t0 = trio.current_time()
        for second in range(3700):
            await trio.sleep_until(t0 + second)
            await h.send.send(list(events[2 * second : 2 * second + 2]))
        await trio.sleep_until(t0 + 3702)
        await settle(autojump_clock, lambda: h.rows_written() >= len(events))
        await h.finish()
    paths = book_files(h.data_dir)
    assert len(paths) == 3
    tables = check_files_stand_alone(paths)
    assert tables[0][0]["kind"] == "snapshot"  # the first file: no book before it
    kinds = [row["kind"] for table in tables for row in table]
    assert kinds.count("checkpoint") == 2
    assert sum(len(t) for t in tables) == len(events) + 2


async def test_size_rotated_files_start_with_a_checkpoint(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    start = us("2024-05-01T12:00:00")
    events = random_rows(random.Random(5), start, 60, 1000)
    async with open_book_writer(tmp_path, start, max_file_size_mb=2 / 1024) as h:
        t0 = trio.current_time()
        for i in range(0, len(events), 4):
            await h.send.send(list(events[i : i + 4]))
            await trio.sleep_until(t0 + 1 + i)  # a flush per batch
            await settle(autojump_clock, partial(written_at_least, h, i + 4))
        paths = []
        for _ in range(2):
            paths.append(await next_finished(autojump_clock, h))
        await h.finish()
    paths = book_files(h.data_dir)
    assert len(paths) >= 3
    check_files_stand_alone(paths)


async def test_market_interval_adds_checkpoints_inside_a_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    start = us("2024-05-01T12:00:00")
    market = MarketSettings(
        exchange="binance", symbols=("BTCUSDT",), book_snapshot_interval_secs=10.0
    )
    events = random_rows(random.Random(8), start, 40, 1_000_000)  # one row a second
    async with open_book_writer(tmp_path, start, {("binance", "BTCUSDT"): market}) as h:
        t0 = trio.current_time()
        for i, event in enumerate(events):
            await h.send.send([event])
            await trio.sleep_until(t0 + i + 1)  # a flush per row (and the checkpoints so far)
            await settle(
                autojump_clock, partial(written_at_least, h, i + 1 + (i >= 10) + (i >= 30))
            )
        await settle(autojump_clock, lambda: h.rows_written() >= len(events))
        await h.finish()
    [path] = book_files(h.data_dir)
    table = pq.read_table(path).to_pylist()
    history: list[dict[str, Any]] = []
    stamps = []
    for row in table:
        if row["kind"] == "checkpoint":
            assert row_levels(row) == as_levels(replay(history))
            stamps.append(row["timestamp_collector"])
        history.append(row)
    # Snapshots at rows 0 and 20 restart the count (none is written just before one, which
    # states the whole book itself); a checkpoint 10 s after each.
    seconds = [(stamp - table[0]["timestamp_collector"]).total_seconds() for stamp in stamps]
    assert seconds == [10.0, 30.0]


def test_hole_events_are_the_readers() -> None:
    assert BOOK_HOLE_EVENTS == HOLE_EVENTS


def test_a_hole_forgets_the_book_until_the_next_full_one() -> None:
    """After a hole (noted before the rows, as the flusher does) no checkpoint states a book
    the reader would not have; a snapshot after it, or a checkpoint row, restores it."""
    book = StreamBook()
    buffer = ColumnBuffer("orderbook", frozenset({"exchange", "symbol"}))
    buffer.add(book_row(10, 1, "snapshot", [(99.0, 1.0)], [(101.0, 1.0)]))
    buffer.add(book_row(20, 2, "delta", [(98.0, 1.0)], []))
    book.note_hole(30)  # a later hole: rows before it still apply
    book.feed(buffer)
    row = book.checkpoint("binance", "BTCUSDT", 25)
    assert row is not None
    assert level_pairs(row.bids) == [(99.0, 1.0), (98.0, 1.0)]
    assert book.checkpoint("binance", "BTCUSDT", 30) is None  # at the hole: unknown
    buffer = ColumnBuffer("orderbook", frozenset({"exchange", "symbol"}))
    buffer.add(book_row(40, 3, "delta", [(97.0, 1.0)], []))
    book.feed(buffer)
    assert book.checkpoint("binance", "BTCUSDT", 41) is None  # deltas do not restore it
    buffer = ColumnBuffer("orderbook", frozenset({"exchange", "symbol"}))
    book.note_hole(50)
    buffer.add(book_row(50, 4, "snapshot", [(90.0, 2.0)], [(91.0, 2.0)]))  # same microsecond
    buffer.add(book_row(60, 5, "delta", [(89.0, 1.0)], []))
    book.feed(buffer)
    row = book.checkpoint("binance", "BTCUSDT", 61)
    assert row is not None
    assert level_pairs(row.bids) == [(90.0, 2.0), (89.0, 1.0)]
    book.note_hole(70)
    buffer = ColumnBuffer("orderbook", frozenset({"exchange", "symbol"}))
    buffer.add(book_row(80, None, "checkpoint", [(80.0, 1.0)], [(81.0, 1.0)]))
    book.feed(buffer)
    row = book.checkpoint("binance", "BTCUSDT", 81)
    assert row is not None
    assert level_pairs(row.asks) == [(81.0, 1.0)]


async def test_a_gap_row_leaves_the_next_file_without_a_checkpoint(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A book gap before the hour ends, no snapshot since: the new hour's file starts with
    the venue's deltas (the reader says the book is unknown), not with a stale book."""
    start = us("2024-05-01T22:59:50")
    events: list[Event] = [
        book_row(start, 1, "snapshot", [(99.0, 1.0)], [(101.0, 1.0)]),
        book_row(start + 1_000_000, 2, "delta", [(98.0, 1.0)], []),
        Status("binance", "BTCUSDT", None, start + 2_000_000, None, "gap", "orderbook"),
        book_row(start + 3_000_000, 4, "delta", [(97.0, 1.0)], []),
        book_row(us("2024-05-01T23:00:01"), 5, "delta", [(96.0, 1.0)], []),
    ]
    async with open_book_writer(tmp_path, start) as h:
        t0 = trio.current_time()
        await h.send.send(events)
        await trio.sleep_until(t0 + 20)
        await settle(autojump_clock, lambda: h.rows_written() >= len(events))
        await h.finish()
    _, second = book_files(h.data_dir)
    assert [r["kind"] for r in pq.read_table(second).to_pylist()] == ["delta"]
