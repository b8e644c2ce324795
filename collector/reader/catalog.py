"""What is there: the finished files of the layout, and a summary per stream.

The layout (:mod:`collector.storage.layout`) is
``{exchange}/{symbol}/{data_type}/[{server}/]{YYYY-MM-DD}/{start_ms}.parquet`` below the
source's root. :func:`list_files` walks it through the source's file system, descending
level by level where the caller names no exchange or symbol (so a question about one data
type never lists the other tables' files), and keeps only finished files: journals and
temporary files are not ``{digits}.parquet``. Any ``data_type`` directory is a table, so
tables added later need nothing here.

Directory names are sanitized (``BTC/USD`` is filed as ``BTC_USD``); the exact spelling is
in the rows and in each file's metadata, which :func:`catalog` reads from the newest file of
each stream. It reads two footers per stream (the oldest file's and the newest's), nothing
else. Two spellings that sanitize to one directory (``BTC/USD`` and ``BTC_USD`` on one
venue; venues do not do this) show as one stream, named after the newest file.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from collector.reader.source import Source
from collector.reader.times import from_us
from collector.storage.layout import safe_component
from collector.storage.metadata import FileMetadata

_NAME: Final = re.compile(r"^(\d+)\.parquet$")
_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TIMESTAMP_COLUMN: Final = "timestamp_collector"


@dataclass(frozen=True)
class DataFile:
    """One finished file. ``exchange``, ``symbol`` and ``data_type`` are its directory names
    (sanitized); ``server`` is the optional level under the data type (a
    ``home_server_name``, or ``shard-I-of-N`` from 0.1.0 and earlier); ``start_ms`` is the
    receive time of its first row, in milliseconds (from its name)."""

    path: str
    exchange: str
    symbol: str
    data_type: str
    server: str | None
    date: str
    start_ms: int


@dataclass(frozen=True)
class Stream:
    """What one (exchange, symbol, data type) holds.

    ``exchange`` and ``symbol`` are spelled as in the rows (from the newest file's
    metadata; the directory names where that has none). ``first`` is the earliest receive
    time in the oldest file, ``last`` the latest in the newest file (from their footers'
    statistics). Files of several instances of one stream count together.
    """

    exchange: str
    symbol: str
    data_type: str
    files: int
    first: datetime
    last: datetime


def parse_path(source: Source, path: str) -> DataFile | None:
    """The :class:`DataFile` at ``path`` (below ``source.root``), or ``None`` if ``path`` is
    not a finished file of the layout (a journal, a temporary file, anything else)."""
    relative = path[len(source.root) + 1 :] if path.startswith(source.root + "/") else None
    if relative is None:
        return None
    parts = relative.split("/")
    if len(parts) not in (5, 6):
        return None
    name = _NAME.match(parts[-1])
    date = parts[-2]
    if name is None or not _DATE.match(date):
        return None
    server = parts[3] if len(parts) == 6 else None
    return DataFile(path, parts[0], parts[1], parts[2], server, date, int(name.group(1)))


def _children(source: Source, directory: str) -> list[str]:
    """The names of the directories directly in ``directory`` (none if it is missing)."""
    selector = pafs.FileSelector(directory, allow_not_found=True, recursive=False)
    return sorted(
        info.base_name
        for info in source.filesystem.get_file_info(selector)
        if info.type == pafs.FileType.Directory
    )


def _files_below(source: Source, directory: str) -> Iterable[DataFile]:
    selector = pafs.FileSelector(directory, allow_not_found=True, recursive=True)
    for info in source.filesystem.get_file_info(selector):
        if info.type == pafs.FileType.File:
            found = parse_path(source, info.path)
            if found is not None:
                yield found


def list_files(
    source: Source,
    *,
    exchange: str | None = None,
    symbol: str | None = None,
    data_type: str | None = None,
    before_us: int | None = None,
) -> list[DataFile]:
    """The finished files of the streams named (``None``: every one), sorted by stream and
    then by ``start_ms``.

    ``exchange``, ``symbol`` and ``data_type`` are spelled as in the rows (they are
    sanitized here into directory names; since sanitizing can map two spellings to one
    directory, callers that need the exact symbol also filter the rows' column).
    ``before_us`` keeps only files whose first row was received before that time (in
    microseconds): a later file cannot hold an earlier row. Blocking (lists the file
    system); raises ``OSError`` from it.
    """
    exchanges = [safe_component(exchange)] if exchange else _children(source, source.root)
    found: list[DataFile] = []
    for exchange_dir in exchanges:
        symbols = (
            [safe_component(symbol)]
            if symbol
            else ([""] if data_type is None else _children(source, source.path(exchange_dir)))
        )
        for symbol_dir in symbols:
            below = source.path(
                exchange_dir,
                symbol_dir,
                safe_component(data_type) if data_type and symbol_dir else "",
            )
            for file in _files_below(source, below):
                if data_type is not None and file.data_type != safe_component(data_type):
                    continue
                if before_us is not None and file.start_ms * 1000 >= before_us:
                    continue
                found.append(file)
    found.sort(key=lambda f: (f.exchange, f.symbol, f.data_type, f.start_ms, f.path))
    return found


def read_footer(source: Source, file: DataFile) -> pq.FileMetaData:
    """The Parquet footer of ``file`` (one ranged read). Raises ``OSError`` or
    ``pyarrow.ArrowInvalid``."""
    with source.filesystem.open_input_file(file.path) as handle:
        return pq.read_metadata(handle)


def receive_range(footer: pq.FileMetaData, file: DataFile) -> tuple[int, int]:
    """The earliest and latest ``timestamp_collector`` in a file, in microseconds, from its
    row groups' statistics (the file's start, from its name, where they say nothing)."""
    first = last = None
    index = footer.schema.to_arrow_schema().get_field_index(TIMESTAMP_COLUMN)
    for group in range(footer.num_row_groups if index >= 0 else 0):
        stats = footer.row_group(group).column(index).statistics
        if stats is not None and stats.has_min_max:
            low, high = stats.min_raw, stats.max_raw
            if isinstance(low, int) and isinstance(high, int):
                first = low if first is None else min(first, low)
                last = high if last is None else max(last, high)
    start = file.start_ms * 1000
    return (start if first is None else first), (start if last is None else last)


def catalog(
    source: Source,
    *,
    exchange: str | None = None,
    symbol: str | None = None,
    data_type: str | None = None,
    start_us: int | None = None,
    end_us: int | None = None,
) -> list[Stream]:
    """One :class:`Stream` per (exchange, symbol, data type) found, sorted by those; with
    ``start_us``/``end_us``, only streams with rows received in ``[start_us, end_us)``
    (judged by ``first`` and ``last``). Blocking: lists, then reads one footer per stream.
    """
    groups: dict[tuple[str, str, str], list[DataFile]] = defaultdict(list)
    for file in list_files(
        source, exchange=exchange, symbol=symbol, data_type=data_type, before_us=end_us
    ):
        groups[file.exchange, file.symbol, file.data_type].append(file)
    streams = []
    for (exchange_dir, symbol_dir, table), files in sorted(groups.items()):
        newest = max(files, key=lambda f: (f.start_ms, f.path))
        footer = read_footer(source, newest)
        last = receive_range(footer, newest)[1]
        if start_us is not None and last < start_us:
            continue
        oldest = min(files, key=lambda f: (f.start_ms, f.path))
        first = receive_range(read_footer(source, oldest), oldest)[0]
        meta = FileMetadata.from_kv(footer.metadata)
        streams.append(
            Stream(
                exchange=meta.exchange or exchange_dir,
                symbol=meta.symbol or symbol_dir,
                data_type=table,
                files=len(files),
                first=from_us(first),
                last=from_us(last),
            )
        )
    return streams
