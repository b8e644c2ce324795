"""recover_leftovers: what a crashed run left becomes finished Parquet, exactly once."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from collector.events import Trade
from collector.metrics import Metrics
from collector.storage import finalize as finalize_module
from collector.storage import recover_leftovers
from collector.storage.columns import to_record_batch
from collector.storage.finalize import write_parquet_atomically
from collector.storage.journal import Journal, open_journal_table
from collector.storage.schemas import schema_for

T0 = 1_714_608_000_000_000


def trades(first: int, count: int) -> list[Trade]:
    return [
        Trade("binance", "BTCUSDT", None, T0 + i, i, f"id-{i:06d}", 100.0 + i, 1.0, "sell")
        for i in range(first, first + count)
    ]


def ids(path: Path) -> list[str]:
    return [str(v) for v in pq.read_table(path).column("trade_id").to_pylist()]


def write_journal(
    directory: Path, start_ms: int, batches: list[list[Trade]]
) -> tuple[Path, list[int]]:
    """A real journal; returns its path and its size after each batch."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{start_ms}.journal.arrows"
    journal = Journal.create(path, schema_for("trades"))
    sizes = [journal.size]
    for rows in batches:
        journal.append(to_record_batch("trades", rows))
        sizes.append(journal.size)
    journal.close()
    return path, sizes


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("cut", ["one byte", "half the batch", "all but one byte"])
def test_truncated_last_batch_is_ignored(tmp_path: Path, cut: str) -> None:
    day = tmp_path / "binance" / "BTCUSDT" / "trades" / "2024-05-02"
    path, sizes = write_journal(day, 1714608000000, [trades(0, 2), trades(2, 3), trades(5, 4)])
    last = sizes[3] - sizes[2]
    keep = {
        "one byte": sizes[3] - 1,
        "half the batch": sizes[2] + last // 2,
        "all but one byte": sizes[2] + 1,
    }
    with path.open("r+b") as f:
        f.truncate(keep[cut])
    metrics = Metrics()

    finished = recover_leftovers(tmp_path, metrics)

    final = day / "1714608000000.parquet"
    assert finished == [final]
    assert ids(final) == [f"id-{i:06d}" for i in range(5)]
    assert all_files(tmp_path) == ["binance/BTCUSDT/trades/2024-05-02/1714608000000.parquet"]
    assert metrics.sample("collector_files_recovered_total") == 1
    assert metrics.sample("collector_parquet_bytes_written_total") == final.stat().st_size


def test_final_file_already_exists(tmp_path: Path) -> None:
    """A crash between the rename and the journal's deletion: keep the file, drop the journal."""
    journal, _ = write_journal(tmp_path, 5, [trades(0, 3)])
    final = tmp_path / "5.parquet"
    with open_journal_table(journal) as table:
        assert table is not None
        write_parquet_atomically(table, final)
    before = final.read_bytes()
    mtime = final.stat().st_mtime_ns

    finished = recover_leftovers(tmp_path, Metrics())

    assert finished == [final]
    assert all_files(tmp_path) == ["5.parquet"]
    assert final.read_bytes() == before
    assert final.stat().st_mtime_ns == mtime
    assert ids(final) == ["id-000000", "id-000001", "id-000002"]


def test_unreadable_final_file_is_rewritten_from_journal(tmp_path: Path) -> None:
    write_journal(tmp_path, 5, [trades(0, 2)])
    (tmp_path / "5.parquet").write_bytes(b"not parquet at all")

    finished = recover_leftovers(tmp_path, Metrics())

    assert finished == [tmp_path / "5.parquet"]
    assert ids(tmp_path / "5.parquet") == ["id-000000", "id-000001"]
    assert all_files(tmp_path) == ["5.parquet"]


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    day = tmp_path / "okx" / "BTC-USDT" / "trades" / "2024-05-02"
    day.mkdir(parents=True)
    (day / ".7.parquet.tmp").write_bytes(b"half a parquet file")
    (day / "6.parquet").write_bytes(b"a finished file from before")
    write_journal(day, 8, [trades(0, 1)])
    # A crash mid-finalize: the journal is complete, its temporary file is half written.
    (day / ".8.parquet.tmp").write_bytes(b"half")

    finished = recover_leftovers(tmp_path, Metrics())

    assert finished == [day / "8.parquet"]
    assert sorted(os.listdir(day)) == ["6.parquet", "8.parquet"]
    assert (day / "6.parquet").read_bytes() == b"a finished file from before"
    assert ids(day / "8.parquet") == ["id-000000"]


def test_journal_without_complete_batch_is_deleted(tmp_path: Path) -> None:
    write_journal(tmp_path, 1, [])  # the schema only
    cut, sizes = write_journal(tmp_path, 2, [trades(0, 2)])
    with cut.open("r+b") as f:
        f.truncate(sizes[1] - 1)
    (tmp_path / "3.journal.arrows").write_bytes(b"")
    metrics = Metrics()

    assert recover_leftovers(tmp_path, metrics) == []
    assert all_files(tmp_path) == []
    assert metrics.sample("collector_files_recovered_total") == 0


def test_missing_data_dir(tmp_path: Path) -> None:
    assert recover_leftovers(tmp_path / "nothing", Metrics()) == []


def test_large_journal_is_finalized_in_uniform_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finalizing streams the journal: row groups of ROW_GROUP_ROWS, every row in order."""
    monkeypatch.setattr(finalize_module, "ROW_GROUP_ROWS", 1000)
    sizes = [700, 700, 700, 50, 900]  # 3050 rows in journal batches of uneven size
    batches, first = [], 0
    for n in sizes:
        batches.append(trades(first, n))
        first += n
    journal, _ = write_journal(tmp_path / "d", 1, batches)
    final = tmp_path / "d" / "1.parquet"
    size = finalize_module.finalize_journal(journal, final)
    assert size == final.stat().st_size
    assert not journal.exists()
    meta = pq.ParquetFile(final).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [
        1000,
        1000,
        1000,
        50,
    ]
    assert ids(final) == [f"id-{i:06d}" for i in range(3050)]
