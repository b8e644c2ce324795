"""Where files live: the same layout locally and in S3.

Two layouts, chosen by ``storage.layout``:

- ``default``: ``{data_dir}/{exchange}/{symbol}/{data_type}/[{server}/]{YYYY-MM-DD}/{start_ms}.parquet``
- ``hive``: ``{data_dir}/table={data_type}/venue={exchange}/market={symbol}/[server={server}/]``
  ``date={YYYY-MM-DD}/{start_ms}.parquet``: Hive-style ``name=value`` directories, the
  table first, so that a reader pointed at any directory below ``table=...`` reads one
  table only, and a Hive-partitioning reader (DuckDB's ``hive_partitioning``, pyarrow's
  ``partitioning="hive"``) gets the levels as columns.

The partition names (:data:`HIVE_NAMES`) are chosen so that none is a column of any table:
a partition column of the same name as a stored one would *shadow* it (the ``status`` table
has its own ``data_type``, the feed a row is about; every table has ``exchange`` and
``symbol``, spelled exactly, where the directories hold sanitized names). A test keeps every
table's columns clear of them. Default-layout directory names never contain ``=``
(:func:`safe_component` replaces it), so the two layouts can share a data directory (the
setting changed) and every reader here tells them apart by the top-level names.

In both layouts:

- ``server`` is the optional ``home_server_name``; nothing else adds a level: a stream's
  files have the same path whatever shard records it (the shard is in the file's
  metadata, :mod:`.metadata`);
- ``start_ms`` is the ``timestamp_collector`` (milliseconds) of the file's first row, bumped
  by 1 until the name is free (see :func:`choose_parquet_path`);
- the date is the UTC date of ``start_ms``.

Names are unique per data directory, which one process owns. Two instances recording the
same stream at once (a shard count changing during a rolling update) have separate data
directories; in S3 the uploader's conditional put moves a file whose key is taken to
``start_ms`` + 1 (:mod:`collector.upload.placement`), so neither overwrites the other.

Beside an open file live its journal ``{start_ms}.journal.arrows`` and, only while it is
being finalized, the hidden temporary ``.{start_ms}.parquet.tmp``. Readers and the uploader
look only at ``*.parquet``.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Final, Literal

Layout = Literal["default", "hive"]

# Hive partition name of each path level (see the module docstring: none is a column).
HIVE_NAMES: Final[dict[str, str]] = {
    "data_type": "table",
    "exchange": "venue",
    "symbol": "market",
    "server": "server",
    "date": "date",
}

PARQUET_SUFFIX: Final = ".parquet"
JOURNAL_SUFFIX: Final = ".journal.arrows"
TEMP_SUFFIX: Final = ".parquet.tmp"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")
_MAX_COMPONENT: Final = 200


def safe_component(name: str) -> str:
    """``name`` made safe as one path component (and one S3 key segment).

    The rule: every character other than ASCII letters, digits and ``. _ -`` (so every path
    separator, whitespace, ``%``, ``:``, ``+``, ``*`` and non-ASCII) becomes ``_``; a leading
    ``.`` becomes ``_`` (no hidden names, no ``.``/``..``); the empty name becomes ``_``;
    the result is cut to 200 characters. ``"BTC/USD"`` -> ``"BTC_USD"``.

    The mapping is not injective (``BTC/USD`` and ``BTC_USD`` share a directory); venues
    do not spell one market both ways, and the ``symbol`` column keeps the exact spelling.
    """
    safe = _UNSAFE.sub("_", name)[:_MAX_COMPONENT]
    if safe.startswith("."):
        safe = "_" + safe[1:]
    return safe or "_"


def utc_date(start_ms: int) -> str:
    """``YYYY-MM-DD`` of a millisecond timestamp, in UTC."""
    return (_EPOCH + timedelta(milliseconds=start_ms)).strftime("%Y-%m-%d")


def hive(level: str, value: str) -> str:
    """The ``name=value`` directory of a path ``level`` (a key of :data:`HIVE_NAMES`);
    ``value`` is made safe as a component (it never contains ``=`` or ``/``)."""
    return f"{HIVE_NAMES[level]}={safe_component(value)}"


def stream_dir(
    data_dir: Path,
    exchange: str,
    symbol: str,
    data_type: str,
    start_ms: int,
    server: str | None = None,
    layout: Layout = "default",
) -> Path:
    """The directory of the file that starts at ``start_ms``."""
    date = utc_date(start_ms)
    if layout == "hive":
        path = data_dir / hive("data_type", data_type) / hive("exchange", exchange)
        path /= hive("symbol", symbol)
        if server:
            path /= hive("server", server)
        return path / f"{HIVE_NAMES['date']}={date}"
    path = data_dir / safe_component(exchange) / safe_component(symbol) / safe_component(data_type)
    if server:
        path /= safe_component(server)
    return path / date


@dataclass(frozen=True)
class FilePlace:
    """What a finished file's path below the data directory says, in either layout: the
    (sanitized) directory values, ``server`` (``""`` without that level), the date and the
    ``start_ms`` of its name."""

    exchange: str
    symbol: str
    data_type: str
    server: str
    date: str
    start_ms: int
    layout: Layout


_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_place(parts: Sequence[str]) -> FilePlace | None:
    """The :class:`FilePlace` of a path below the data directory, split into components,
    or ``None`` if it is not a finished file of either layout (a journal, a temporary
    file, a marker, anything else)."""
    if len(parts) not in (5, 6):
        return None
    name = parts[-1]
    start = name.removesuffix(PARQUET_SUFFIX)
    if start == name or not start.isdigit():
        return None
    levels = list(parts[:-1])
    if all("=" in level for level in levels):
        names = [
            "data_type",
            "exchange",
            "symbol",
            *(["server"] if len(levels) == 5 else []),
            "date",
        ]
        values: dict[str, str] = {}
        for level, value in zip(names, levels, strict=True):
            key, _, values[level] = value.partition("=")
            if key != HIVE_NAMES[level] or not values[level]:
                return None
        place = FilePlace(
            values["exchange"],
            values["symbol"],
            values["data_type"],
            values.get("server", ""),
            values["date"],
            int(start),
            "hive",
        )
    elif any("=" in level for level in levels):
        return None
    else:
        server = levels[3] if len(levels) == 5 else ""
        place = FilePlace(
            levels[0], levels[1], levels[2], server, levels[-1], int(start), "default"
        )
    return place if _DATE.match(place.date) else None


def parquet_name(start_ms: int) -> str:
    return f"{start_ms}{PARQUET_SUFFIX}"


def journal_path(parquet: Path) -> Path:
    """The journal that holds the rows of ``parquet`` while it is open."""
    return parquet.with_name(parquet.name.removesuffix(PARQUET_SUFFIX) + JOURNAL_SUFFIX)


def temp_path(parquet: Path) -> Path:
    """The hidden name ``parquet`` is written under before its atomic rename."""
    return parquet.with_name("." + parquet.name.removesuffix(PARQUET_SUFFIX) + TEMP_SUFFIX)


def parquet_for_journal(journal: Path) -> Path:
    """The final name of the file whose rows ``journal`` holds."""
    return journal.with_name(journal.name.removesuffix(JOURNAL_SUFFIX) + PARQUET_SUFFIX)


def is_taken(parquet: Path, in_use: Container[Path] = ()) -> bool:
    """Whether ``parquet`` is open in this process or exists (finished, open or finalizing)."""
    return (
        parquet in in_use
        or parquet.exists()
        or journal_path(parquet).exists()
        or temp_path(parquet).exists()
    )


def choose_parquet_path(directory: Path, start_ms: int, in_use: Container[Path] = ()) -> Path:
    """``directory/{start_ms}.parquet``, with ``start_ms`` bumped by 1 until the name is free.

    Blocking (it stats files): call it from a worker thread.
    """
    while is_taken(path := directory / parquet_name(start_ms), in_use):
        start_ms += 1
    return path


def relative_key(path: Path, data_dir: Path) -> str:
    """``path`` relative to ``data_dir`` as a posix string: the S3 key below the prefix.

    Raises ``ValueError`` if ``path`` is not inside ``data_dir``.
    """
    return PurePosixPath(*Path(path).relative_to(data_dir).parts).as_posix()
