"""Finished local files, and the record of those already verified in S3.

A finished file is a non-hidden ``*.parquet`` under ``data_dir`` whose journal is gone (a
journal beside it means the writer, or its start-up recovery, still owns it). Journals
(``*.journal.arrows``), temporary files (``.*.parquet.tmp``) and anything else are never
uploaded.

In ``both`` mode a verified file stays; a hidden marker ``.{name}.s3`` beside it records
where it went (bucket, key, the key's offset from the file's own key, size, mtime, SHA-256), so a restart does not hash and HEAD every
kept file again. A marker that does not match the file or the current target is ignored.
Everything here blocks: call it from a worker thread.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

import msgspec

from collector.storage.layout import PARQUET_SUFFIX, journal_path

logger = logging.getLogger(__name__)

MARKER_SUFFIX: Final = ".s3"


class FileInfo(msgspec.Struct, frozen=True):
    path: Path
    size: int
    mtime: float


class Marker(msgspec.Struct, frozen=True, kw_only=True):
    bucket: str
    key: str
    size: int
    mtime_ns: int
    sha256: str
    # How far the key's start_ms was bumped because the file's own key was taken
    # (collector.upload.keys); markers written before offsets existed read as 0.
    offset: int = 0


def is_finished_parquet(path: Path) -> bool:
    """A finished file by its name and the absence of its journal."""
    name = path.name
    return (
        name.endswith(PARQUET_SUFFIX)
        and not name.startswith(".")
        and not journal_path(path).exists()
    )


def marker_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{MARKER_SUFFIX}")


def read_marker(path: Path) -> Marker | None:
    """The marker of ``path`` if there is one and it matches the file as it is now."""
    try:
        marker = msgspec.json.decode(marker_path(path).read_bytes(), type=Marker)
        st = path.stat()
    except (OSError, msgspec.DecodeError):
        return None
    if marker.size != st.st_size or marker.mtime_ns != st.st_mtime_ns:
        return None
    return marker


def has_marker(path: Path, bucket: str, key: str) -> bool:
    """Whether ``path`` was verified at ``bucket``/``key`` as it is now."""
    marker = read_marker(path)
    return marker is not None and marker.bucket == bucket and marker.key == key


def write_marker(path: Path, bucket: str, key: str, sha256: str, *, offset: int = 0) -> None:
    """Record that ``path`` is verified at ``bucket``/``key`` (atomic replace)."""
    st = path.stat()
    marker = Marker(
        bucket=bucket,
        key=key,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        sha256=sha256,
        offset=offset,
    )
    target = marker_path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(msgspec.json.encode(marker))
    os.replace(tmp, target)


def remove_marker(path: Path) -> None:
    marker_path(path).unlink(missing_ok=True)


def scan_finished(data_dir: Path) -> list[FileInfo]:
    """Every finished ``.parquet`` under ``data_dir``, oldest (mtime) first."""
    found: list[FileInfo] = []
    for dirpath, dirnames, filenames in os.walk(data_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath, name)
            if not is_finished_parquet(path):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            found.append(FileInfo(path, st.st_size, st.st_mtime))
    found.sort(key=lambda f: (f.mtime, str(f.path)))
    return found


def stat_file(path: Path) -> FileInfo:
    st = path.stat()
    return FileInfo(path, st.st_size, st.st_mtime)
