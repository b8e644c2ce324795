"""Read binary column files back the way their consumers do: fixed-width, little-endian.

numpy is not installed here, so each column is parsed with ``struct.iter_unpack`` on the
file's bytes (a ``numpy.memmap(path, dtype="<u4")`` reads the same values). A set's row
count is the shortest column's whole rows, as documented for readers.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from collector.binary.columns import COLUMNS
from collector.binary.files import column_path

FORMATS = {"I": "<I", "f": "<f", "Q": "<Q", "": "16s"}


def read_set(directory: Path, table: str, day: int) -> list[dict[str, Any]]:
    """Every row of one file set, as {column: value} (order ids as 16 bytes)."""
    columns: dict[str, list[Any]] = {}
    for column in COLUMNS[table]:
        raw = column_path(directory, column.name, day).read_bytes()
        fmt = FORMATS[column.typecode]
        assert struct.calcsize(fmt) == column.width
        whole = len(raw) - len(raw) % column.width
        columns[column.name] = [v[0] for v in struct.iter_unpack(fmt, raw[:whole])]
    count = min(len(v) for v in columns.values())
    return [{name: values[i] for name, values in columns.items()} for i in range(count)]


def column_sizes(directory: Path, table: str, day: int) -> dict[str, float]:
    """Each column's length in rows (whole rows; a torn tail shows as a fraction)."""
    return {
        c.name: column_path(directory, c.name, day).stat().st_size / c.width for c in COLUMNS[table]
    }


def f32(value: float) -> float:
    """``value`` as it reads back from an f32 column."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])
