"""The journal of an open file: an append-only Arrow IPC *stream* on disk.

While a Parquet file is open its rows live in ``{start_ms}.journal.arrows`` beside it: the
schema message, then one record batch message per flush, uncompressed, no end-of-stream
marker. Each append is one ``pwrite`` of a whole serialized batch, handed to the OS at once
(no fsync: a process crash loses nothing the OS has; a machine crash may lose the tail).

After ``kill -9`` at any moment the journal is its complete batches, possibly followed by a
partial one; :func:`open_journal_table` reads the complete batches and ignores the rest.

Everything here blocks: run it in a worker thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pyarrow as pa

logger = logging.getLogger(__name__)


def _pwrite_all(fd: int, data: pa.Buffer, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class Journal:
    """Appends record batches to one journal file. Blocking, not thread-safe.

    ``size`` is the length of the valid prefix: the schema and every batch whose append
    returned. A failed append (``OSError``) may leave a partial batch after it; the next
    append truncates the file back to ``size`` first, so a retry never writes after garbage.
    """

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self.size = size
        self._fd: int | None = fd
        self._dirty = False

    @classmethod
    def create(cls, path: Path, schema: pa.Schema) -> Journal:
        """Create ``path`` (it must not exist) and write the stream's schema message."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        header = schema.serialize()
        try:
            _pwrite_all(fd, header, 0)
        except BaseException:
            os.close(fd)
            with suppress(OSError):
                path.unlink()
            raise
        return cls(path, fd, header.size)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def append(self, batch: pa.RecordBatch) -> int:
        """Append one batch; return the bytes written. Raises ``OSError`` on a disk error."""
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed")
        if self._dirty:
            os.ftruncate(self._fd, self.size)
            self._dirty = False
        data = batch.serialize()
        try:
            _pwrite_all(self._fd, data, self.size)
        except OSError:
            self._dirty = True
            raise
        self.size += data.size
        return int(data.size)

    def close(self) -> None:
        """Close the file descriptor (idempotent). The file stays on disk."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def iter_journal_batches(path: Path) -> Iterator[tuple[pa.Schema, pa.RecordBatch]]:
    """Each complete record batch of a journal with its schema, read sequentially.

    Plain file reads (no memory map), so memory stays at one batch however large the
    journal. A truncated trailing batch (a crash mid-append) ends the iteration and is
    logged; a journal without a complete schema message yields nothing. Raises ``OSError``
    if the file cannot be opened or read.
    """
    size = os.stat(path).st_size
    with pa.OSFile(str(path), "rb") as source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError):
            if source.tell() < size:
                raise  # a real read error, not a journal cut short
            return  # not even a complete schema message: no rows
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError) as exc:
                # pyarrow reports a message cut short by the end of the file as an error
                # too: only a read that reached the end is a truncated trailing batch.
                if source.tell() < size:
                    raise
                logger.warning("journal %s: ignoring a truncated trailing batch (%s)", path, exc)
                return
            yield reader.schema, batch


@contextmanager
def open_journal_table(path: Path) -> Iterator[pa.Table | None]:
    """The complete record batches of a journal as one table (``None`` if there are none).

    The table is memory-mapped: use it inside the ``with`` block only. A truncated trailing
    batch (a crash mid-append) is ignored and logged. Raises ``OSError`` if the file cannot
    be opened.
    """
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError):
            # Not even a complete schema message: the journal holds no rows.
            yield None
            return
        batches: list[pa.RecordBatch] = []
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as exc:
                # A memory map raises no I/O errors here: this is a partial message.
                logger.warning("journal %s: ignoring a truncated trailing batch (%s)", path, exc)
                break
            batches.append(batch)
        yield pa.Table.from_batches(batches, schema=reader.schema) if batches else None
