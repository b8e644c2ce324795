"""Journal -> finished Parquet file, atomically.

The rows are written to the hidden ``.{start_ms}.parquet.tmp`` in the same directory, the
temporary file is fsynced, renamed over the final ``{start_ms}.parquet`` with ``os.replace``,
the directory is fsynced, and only then is the journal deleted. A crash at any point leaves
either the journal (finalized again at the next start) or the finished file, possibly with
a journal that recovery recognizes as already done; never a half-written ``.parquet``.

The Parquet file takes the journal's schema with its metadata, so the ``collector.*``
key-value metadata the flusher put in the journal's header (:mod:`.metadata`) ends up in
the file's footer.

Everything here blocks: run it in a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from collector.storage.journal import iter_journal_batches
from collector.storage.layout import temp_path
from collector.storage.schemas import column_encodings, dictionary_columns


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet_atomically(
    table: pa.Table, final: Path, *, compression: str = "zstd", compression_level: int | None = None
) -> int:
    """Write ``table`` to ``final`` through a fsynced temporary file; return its size in bytes.

    On any error the temporary file is removed and ``final`` is untouched.
    """
    tmp = temp_path(final)
    try:
        pq.write_table(
            table,
            str(tmp),
            compression=compression,
            compression_level=compression_level,
            use_dictionary=dictionary_columns(table.schema),
            column_encoding=column_encodings(table.schema),
        )
        return _fsync_and_publish(tmp, final)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


# Rows per Parquet row group (at most; a journal's batches are gathered up to this). Bounds
# the memory of finalizing to about one row group, whatever the file's size; half the
# previous 131,072 lowered the peak with no change in file size (docs/performance.md).
ROW_GROUP_ROWS = 65_536


def finalize_journal(
    journal: Path,
    final: Path,
    *,
    compression: str = "zstd",
    compression_level: int | None = None,
    complete_schema: Callable[[pa.Schema, pa.RecordBatch], pa.Schema] | None = None,
) -> int | None:
    """Write the complete batches of ``journal`` to ``final``, then delete the journal.

    Streams: batches are read one at a time and written as row groups of up to
    :data:`ROW_GROUP_ROWS` rows, so memory does not grow with the file. The file's schema,
    key-value metadata included, is the journal's, or what ``complete_schema`` makes of it
    and the first batch (recovery: :func:`.metadata.complete_schema`). Returns the
    Parquet file's size, or ``None`` if the journal held no complete batch (it is deleted
    and no file is written). Raises ``OSError`` on a disk error (the journal is kept,
    ``final`` is not created).
    """
    tmp = temp_path(final)
    writer: pq.ParquetWriter | None = None
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    try:
        for schema, batch in iter_journal_batches(journal):
            if writer is None:
                if complete_schema is not None:
                    schema = complete_schema(schema, batch)
                writer = pq.ParquetWriter(
                    str(tmp),
                    schema,
                    compression=compression,
                    compression_level=compression_level,
                    use_dictionary=dictionary_columns(schema),
                    column_encoding=column_encodings(schema),
                )
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= ROW_GROUP_ROWS:
                # Whole row groups now; the remainder starts the next one.
                table = pa.Table.from_batches(pending)
                full = pending_rows - pending_rows % ROW_GROUP_ROWS
                writer.write_table(table.slice(0, full), row_group_size=ROW_GROUP_ROWS)
                pending = table.slice(full).to_batches()
                pending_rows -= full
        if writer is None:
            journal.unlink()
            return None
        if pending:
            writer.write_table(pa.Table.from_batches(pending), row_group_size=pending_rows)
        writer.close()
        writer = None
        size = _fsync_and_publish(tmp, final)
    except BaseException:
        if writer is not None:
            with suppress(Exception):
                writer.close()
        with suppress(OSError):
            tmp.unlink()
        raise
    journal.unlink()
    return size


def _fsync_and_publish(tmp: Path, final: Path) -> int:
    """fsync ``tmp``, rename it to ``final``, fsync the directory; return the size."""
    fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return size
