"""The binary column files on disk: layout, crash-consistent appends, midnight rotation.

Layout: ``<dir>/<exchange>/<symbol>/<TABLE>/<column>.<DD>.<MM>.<YY>.bin`` (``TABLE`` is
``MD`` or ``TRADES``, the date the UTC day of the rows' receive time; exchange and symbol
made path-safe as in the Parquet layout, ``BTC/USD`` -> ``BTC_USD``). The files of one
table and day are a *file set*: one file per column, each an array of fixed-width
little-endian values, row ``i`` of the table at offset ``i * width`` of every file.

Equal lengths, and how a crash cannot break them:

- rows are only ever appended, whole, to every column of a set (one ``write`` per column
  per batch, in column order);
- when a set is opened (at start, at each new day, after a write error) its row count is
  the *shortest* column's whole rows, ``min(size // width)``, and every column is
  truncated to that count: the rows a crash left in only some columns (or half written)
  are cut, and the set is equal again before anything is appended;
- a failed append (disk full) truncates every column back to the count before it.

So after any stop, clean or not, the next opening leaves every column with the same
number of rows. While a set is being appended to, a reader mapping it may briefly see one
column longer than another: readers take ``min(size // width)`` rows, as the writer does.
Sets are ``fsync``-ed when closed (rotation, shutdown): a power cut may lose what the page
cache held since, never the equality of what remains after the next opening.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from collector.binary.columns import COLUMNS, RowKey, Rows
from collector.storage.layout import safe_component

SUFFIX: Final = ".bin"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def day_suffix(day: int) -> str:
    """``DD.MM.YY`` of a UTC day number (days since 1970-01-01)."""
    return (_EPOCH + timedelta(days=day)).strftime("%d.%m.%y")


def table_dir(root: Path, exchange: str, symbol: str, table: str) -> Path:
    return root / safe_component(exchange) / safe_component(symbol) / table


def column_path(directory: Path, column: str, day: int) -> Path:
    return directory / f"{column}.{day_suffix(day)}{SUFFIX}"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FileSet:
    """The open column files of one table and day; owns their descriptors.

    Opening makes the columns equal (see the module); :meth:`append` keeps them so or
    raises ``OSError`` with them truncated back. Blocking: call from a worker thread."""

    def __init__(self, directory: Path, table: str, day: int) -> None:
        self.table = table
        self.day = day
        self._widths = [c.width for c in COLUMNS[table]]
        self._fds: list[int] = []
        directory.mkdir(parents=True, exist_ok=True)
        try:
            for column in COLUMNS[table]:
                path = column_path(directory, column.name, day)
                self._fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
            sizes = [os.fstat(fd).st_size for fd in self._fds]
            self.rows = min(size // w for size, w in zip(sizes, self._widths, strict=True))
            # Rows cut from the longer columns (a crash between column writes).
            self.cut = max(
                size // w - self.rows for size, w in zip(sizes, self._widths, strict=True)
            )
            self._truncate(sizes)
        except BaseException:
            self._close_fds()
            raise

    def _truncate(self, sizes: list[int] | None = None) -> None:
        """Cut every column to ``self.rows`` (those of ``sizes`` that differ, if given);
        each column is tried, the first error raised after."""
        error: OSError | None = None
        for i, (fd, width) in enumerate(zip(self._fds, self._widths, strict=True)):
            if sizes is None or sizes[i] != self.rows * width:
                try:
                    os.ftruncate(fd, self.rows * width)
                except OSError as exc:
                    error = error or exc
        if error is not None:
            raise error

    def append(self, rows: Rows) -> None:
        """Append ``rows`` to every column; on ``OSError`` every column is cut back to the
        rows before (then the error is raised)."""
        try:
            for fd, data in zip(self._fds, rows.encoded(), strict=True):
                _write_all(fd, data)
        except OSError:
            self._truncate()
            raise
        self.rows += rows.count

    def close(self, *, sync: bool = True) -> None:
        """``fsync`` (unless ``sync`` is false) and close every column."""
        try:
            if sync:
                for fd in self._fds:
                    os.fsync(fd)
        finally:
            self._close_fds()

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)


class BinaryWriter:
    """Appends rows to the file sets under ``root``: at most one open set per (exchange,
    symbol, table), the one of the day last written; rows of another day close it and open
    theirs (so midnight UTC rotates, and a late row still lands in its own day's files).

    Blocking: used from one worker thread at a time. :meth:`close` syncs and closes all.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[tuple[str, str, str], FileSet] = {}
        # Rows cut at opening, over the writer's life (crash leftovers repaired).
        self.cut_rows = 0

    def write(self, batches: dict[RowKey, Rows]) -> None:
        """Append each group of rows to its set. Raises ``OSError`` at the first set that
        fails (its columns cut back to equal; the groups after it are not written)."""
        for (exchange, symbol, table, day), rows in batches.items():
            if not rows.count:
                continue
            key = (exchange, symbol, table)
            files = self._open.get(key)
            if files is not None and files.day != day:
                del self._open[key]
                files.close()
                files = None
            if files is None:
                files = FileSet(table_dir(self.root, exchange, symbol, table), table, day)
                self.cut_rows += files.cut
                self._open[key] = files
            try:
                files.append(rows)
            except OSError:
                del self._open[key]
                files.close(sync=False)
                raise

    def close(self) -> None:
        """Sync and close every open set (the first error is raised after all are closed)."""
        error: OSError | None = None
        sets, self._open = list(self._open.values()), {}
        for files in sets:
            try:
                files.close()
            except OSError as exc:
                error = error or exc
        if error is not None:
            raise error
