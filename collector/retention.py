"""Local retention: finished files older than ``storage.retention_days`` are deleted.

Age is the file's modification time: when the writer finished it (the Parquet file is
written once, at rotation). Only finished files are candidates
(:func:`collector.upload.backlog.is_finished_parquet`): never a journal, a temporary file or
anything else under ``data_dir``.

- ``local`` mode: an old enough finished file is deleted.
- ``s3`` and ``both`` modes: it is deleted only once verified in S3, as recorded by the
  uploader's marker beside it (:mod:`collector.upload.backlog`) for the current bucket and
  still matching the file (size and modification time). A file not (yet) verified is kept,
  however old: it is data S3 does not hold. In ``s3`` mode the uploader deletes verified
  files itself, so retention only matters for ``both``, and for markers a ``both`` run left.

The marker goes with its file. Emptied directories are left in place (the writer may be
about to write into one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs
import trio

from collector.clock import WallClock, system_wall_us
from collector.upload.backlog import read_marker, remove_marker, scan_finished

log = logging.getLogger(__name__)

# How often the data directory is swept (the first sweep is at start).
DEFAULT_INTERVAL_SECS: Final = 3600.0
SECONDS_PER_DAY: Final = 86_400.0


@attrs.frozen
class Sweep:
    """What one sweep did: files and bytes deleted, old files kept for want of a verification."""

    deleted: int = 0
    deleted_bytes: int = 0
    unverified: int = 0


def sweep(data_dir: Path, older_than: float, bucket: str | None) -> Sweep:
    """Delete the finished files under ``data_dir`` last modified before ``older_than``
    (seconds since the epoch). ``bucket`` None: local mode, age is enough; otherwise a file
    must also carry a matching marker for ``bucket``.

    Blocks (call it from a worker thread). A file that vanishes or cannot be deleted is
    skipped (logged), never raised: the next sweep tries again.
    """
    deleted = deleted_bytes = unverified = 0
    for info in scan_finished(data_dir):
        if info.mtime >= older_than:
            break  # oldest first: every later file is younger
        if bucket is not None:
            marker = read_marker(info.path)
            if marker is None or marker.bucket != bucket:
                unverified += 1
                continue
        try:
            os.unlink(info.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("retention: cannot delete %s: %s", info.path, exc)
            continue
        remove_marker(info.path)
        deleted += 1
        deleted_bytes += info.size
    return Sweep(deleted, deleted_bytes, unverified)


async def run_retention(
    data_dir: Path,
    retention_days: float,
    bucket: str | None,
    *,
    wall_clock: WallClock = system_wall_us,
    interval_secs: float = DEFAULT_INTERVAL_SECS,
    on_sweep: Callable[[Sweep], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sweep ``data_dir`` now and every ``interval_secs`` until cancelled (see :func:`sweep`;
    ``bucket`` None for local mode). Started once the first sweep is done, so a service
    starting on a full disk has freed what it may before it writes. Each sweep runs in a
    worker thread; cancellation waits for a sweep in progress (it is bounded by the files
    present). Logs one line per sweep that deleted files or kept old unverified ones, and
    hands every sweep's result to ``on_sweep`` (if given).
    """
    first = True
    next_at = trio.current_time()
    while True:
        cutoff = wall_clock() / 1e6 - retention_days * SECONDS_PER_DAY
        done = await trio.to_thread.run_sync(sweep, data_dir, cutoff, bucket)
        if done.deleted or done.unverified:
            log.info(
                "retention: deleted %d files older than %g days",
                done.deleted,
                retention_days,
                extra={
                    "deleted_files": done.deleted,
                    "deleted_bytes": done.deleted_bytes,
                    "kept_unverified": done.unverified,
                },
            )
        if on_sweep is not None:
            on_sweep(done)
        if first:
            first = False
            task_status.started()
        # On a fixed schedule: a slow sweep does not push the later ones back.
        next_at = max(next_at + interval_secs, trio.current_time())
        await trio.sleep_until(next_at)
