"""Journal appends, reading back complete batches, and atomic finalization."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collector.events import Trade
from collector.storage import journal as journal_module
from collector.storage.columns import to_record_batch
from collector.storage.finalize import finalize_journal
from collector.storage.journal import Journal, open_journal_table
from collector.storage.schemas import schema_for

T0 = 1_714_608_000_000_000


def trades(first: int, count: int) -> list[Trade]:
    return [
        Trade("binance", "BTCUSDT", None, T0 + i, i, f"id-{i:06d}", 100.0 + i, 1.0, "buy")
        for i in range(first, first + count)
    ]


def ids(table: pa.Table | None) -> list[str]:
    assert table is not None
    return [str(v) for v in table.column("trade_id").to_pylist()]


def test_appends_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "1.journal.arrows"
    journal = Journal.create(path, schema_for("trades"))
    assert path.stat().st_size == journal.size
    for first, count in ((0, 3), (3, 2), (5, 1)):
        written = journal.append(to_record_batch("trades", trades(first, count)))
        assert written > 0
    journal.close()
    journal.close()  # idempotent
    assert path.stat().st_size == journal.size
    with open_journal_table(path) as table:
        assert ids(table) == [f"id-{i:06d}" for i in range(6)]
        assert table is not None
        assert table.schema == schema_for("trades")


def test_journal_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "1.journal.arrows"
    path.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        Journal.create(path, schema_for("trades"))
    assert path.read_bytes() == b"someone else's"


def test_journal_without_rows_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "1.journal.arrows"
    Journal.create(path, schema_for("trades")).close()
    with open_journal_table(path) as table:
        assert table is None
    size = path.stat().st_size
    for cut in (1, size // 2, size):
        with path.open("r+b") as f:
            f.truncate(size - cut)
        with open_journal_table(path) as table:
            assert table is None


def test_failed_append_is_truncated_before_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "1.journal.arrows"
    journal = Journal.create(path, schema_for("trades"))
    journal.append(to_record_batch("trades", trades(0, 2)))
    good_size = journal.size

    real = journal_module._pwrite_all

    def half_then_enospc(fd: int, data: pa.Buffer, offset: int) -> None:
        real(fd, data.slice(0, data.size // 2), offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module, "_pwrite_all", half_then_enospc)
    with pytest.raises(OSError, match="No space"):
        journal.append(to_record_batch("trades", trades(2, 2)))
    assert journal.size == good_size
    assert path.stat().st_size > good_size  # a partial batch is on disk now

    monkeypatch.setattr(journal_module, "_pwrite_all", real)
    journal.append(to_record_batch("trades", trades(2, 2)))
    journal.close()
    assert path.stat().st_size == journal.size
    with open_journal_table(path) as table:
        assert ids(table) == [f"id-{i:06d}" for i in range(4)]


def test_finalize_writes_parquet_and_deletes_journal(tmp_path: Path) -> None:
    path = tmp_path / "1.journal.arrows"
    journal = Journal.create(path, schema_for("trades"))
    journal.append(to_record_batch("trades", trades(0, 2)))
    journal.append(to_record_batch("trades", trades(2, 1)))
    journal.close()
    final = tmp_path / "1.parquet"

    size = finalize_journal(path, final, compression="zstd", compression_level=3)

    assert size == final.stat().st_size
    assert not path.exists()
    assert sorted(os.listdir(tmp_path)) == ["1.parquet"]
    assert ids(pq.read_table(final)) == ["id-000000", "id-000001", "id-000002"]
    compression = pq.read_metadata(final).row_group(0).column(0).compression
    assert compression == "ZSTD"


@pytest.mark.parametrize(("setting", "codec"), [("snappy", "SNAPPY"), ("none", "UNCOMPRESSED")])
def test_finalize_uses_compression_setting(tmp_path: Path, setting: str, codec: str) -> None:
    path = tmp_path / "1.journal.arrows"
    journal = Journal.create(path, schema_for("trades"))
    journal.append(to_record_batch("trades", trades(0, 2)))
    journal.close()
    final = tmp_path / "1.parquet"
    finalize_journal(path, final, compression=setting)
    assert pq.read_metadata(final).row_group(0).column(0).compression == codec


def test_finalize_failure_keeps_journal_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "1.journal.arrows"
    journal = Journal.create(path, schema_for("trades"))
    journal.append(to_record_batch("trades", trades(0, 2)))
    journal.close()
    before = path.read_bytes()

    def replace_fails(src: str, dst: str) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(OSError, match="I/O error"):
        finalize_journal(path, tmp_path / "1.parquet")
    assert sorted(os.listdir(tmp_path)) == ["1.journal.arrows"]
    assert path.read_bytes() == before
