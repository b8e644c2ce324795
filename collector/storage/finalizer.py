"""The writer's last stage: retired files -> finished Parquet files -> their paths.

For each :class:`~collector.storage.flusher.RetiredFile`, in the order they come, the
finalizer writes the Parquet file from the journal in a worker thread and renames it into
place atomically (:func:`~collector.storage.finalize.finalize_journal`), then sends its
path on. One file at a time: at the hourly rotation every file is due at once, and
finalizing several in parallel multiplies the memory peak while gaining little where the
event loop needs a core of its own.

On a disk error (``OSError``) the same file is retried after the flush interval, then twice
that, up to :data:`MAX_RETRY_DELAY_SECS`; the files behind it
wait in the (bounded) channel, and once that is full the flusher waits too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from collector import native_memory
from collector.config import StorageSettings
from collector.metrics import Metrics
from collector.storage.finalize import finalize_journal
from collector.storage.flusher import RetiredFile
from collector.storage.layout import journal_path

logger = logging.getLogger(__name__)

# The longest wait between two attempts to finalize on a failing disk.
MAX_RETRY_DELAY_SECS = 60.0

# Worker threads finalizing at once (see the module docstring).
FINALIZE_THREADS = 1


async def run_finalizer(
    settings: StorageSettings,
    retired_in: trio.MemoryReceiveChannel[RetiredFile],
    finished: trio.MemorySendChannel[Path],
    metrics: Metrics,
    *,
    recovered: Sequence[Path] = (),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Finalize each file of ``retired_in`` and send its path on ``finished``, in order.

    Owns and closes both channel ends. After ``task_status.started()`` it first sends the
    ``recovered`` paths (finished by the start-up recovery). ``finished`` is bounded: a slow
    consumer slows finalization, never the journaling before it. A journal that holds no
    complete batch is deleted and no path is sent. Counts ``finalize_seconds``,
    ``files_finished``, ``bytes_written``, ``writer_errors{stage="finalize"}`` and counts
    ``open_files`` down per file. When ``retired_in`` ends, ``finished`` is closed.

    Cancellation: a worker thread already running completes first (the rename is atomic:
    no half-written ``.parquet``); a file it finished is not sent, and the uploader finds
    it as a leftover; the journals not finalized stay on disk for recovery. Raises what is
    not a disk error (a bug), and ``trio.BrokenResourceError`` if the receiver of
    ``finished`` went away.
    """
    first_delay = settings.flush_interval_secs
    limiter = trio.CapacityLimiter(FINALIZE_THREADS)  # its own, and one at a time
    with retired_in, finished:
        task_status.started()
        for path in recovered:
            await finished.send(path)
        async for retired in retired_in:
            delay = first_delay
            while True:
                try:
                    size = await trio.to_thread.run_sync(
                        _finalize_sync, settings, metrics, retired.path, limiter=limiter
                    )
                    break
                except OSError as exc:
                    logger.warning(
                        "finalize of %s failed, retrying in %.1fs: %s", retired.path, delay, exc
                    )
                    metrics.writer_errors.labels(stage="finalize").inc()
                    await trio.sleep(delay)
                    delay = min(delay * 2, MAX_RETRY_DELAY_SECS)
            metrics.open_files.dec()
            if size is None:
                continue
            metrics.files_finished.labels(retired.exchange, retired.data_type).inc()
            metrics.bytes_written.inc(size)
            await finished.send(retired.path)


def _finalize_sync(settings: StorageSettings, metrics: Metrics, path: Path) -> int | None:
    started = time.perf_counter()
    size = finalize_journal(
        journal_path(path),
        path,
        compression=settings.compression,
        compression_level=settings.compression_level,
    )
    metrics.finalize_seconds.observe(time.perf_counter() - started)
    native_memory.trim()  # a finalize's buffers: back to the OS, not kept in an arena
    return size
