"""Journal -> finished Parquet file, atomically.

The rows are written to the hidden ``.{start_ms}.parquet.tmp`` in the same directory, the
temporary file is fsynced, renamed over the final ``{start_ms}.parquet`` with ``os.replace``,
the directory is fsynced, and only then is the journal deleted. A crash at any point leaves
either the journal (finalized again at the next start) or the finished file, possibly with
a journal that recovery recognizes as already done; never a half-written ``.parquet``.

Everything here blocks: run it in a worker thread.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from collector.storage.journal import open_journal_table
from collector.storage.layout import temp_path


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
            table, str(tmp), compression=compression, compression_level=compression_level
        )
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)
    return size


def finalize_journal(
    journal: Path, final: Path, *, compression: str = "zstd", compression_level: int | None = None
) -> int | None:
    """Write the complete batches of ``journal`` to ``final``, then delete the journal.

    Returns the Parquet file's size, or ``None`` if the journal held no complete batch (it
    is deleted and no file is written). Raises ``OSError`` on a disk error (the journal is
    kept, ``final`` is not created).
    """
    with open_journal_table(journal) as table:
        size = (
            None
            if table is None
            else write_parquet_atomically(
                table, final, compression=compression, compression_level=compression_level
            )
        )
    journal.unlink()
    return size
