"""The writer: batches of events -> journals -> finished Parquet files, as three stages.

``run_writer`` only recovers what a previous run left and wires its three children::

    events -> router -(FlushWork, rendezvous)-> flusher -(RetiredFile)-> finalizer -> finished

- :mod:`~collector.storage.router` routes rows into each stream's columns, by their own
  receive time (one file per exchange, symbol, data type and, with hourly rotation, UTC
  hour), hands them over at each flush tick or once a flush's worth waits, and retires
  the hours the wall clock has left;
- :mod:`~collector.storage.flusher` appends them to each file's journal in a worker
  thread, retrying in place on disk errors, and rotates files by size;
- :mod:`~collector.storage.finalizer` writes each complete file's Parquet from its
  journal and sends the path on.

The rendezvous channel between router and flusher is the memory bound and the
backpressure: while the flusher is busy, the router holds at most one more flush's worth
of rows, then takes no batches, and the event channel fills. Shutdown is end-of-channel
all the way down: each stage closes its output when its input ends.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

from collector.clock import WallClock, system_wall_us
from collector.config import StorageSettings
from collector.doorbell import Doorbell
from collector.events import Event
from collector.metrics import Metrics
from collector.storage.finalizer import run_finalizer
from collector.storage.flusher import RetiredFile, run_flusher
from collector.storage.metadata import FileMetadataSource
from collector.storage.recovery import highest_order_key, recover_leftovers, unclean_stop_rows
from collector.storage.router import FlushWork, run_router

if TYPE_CHECKING:
    from collector.analytics import TradeAnalytics
    from collector.outlets.tap import OutletTap

# Files retired and waiting for the finalizer: this many, plus one per file the plan can
# have open (``run_writer``'s ``open_files``). Room for every file of an hourly rotation at
# once, so the rotation never holds up journaling (an entry is a path and two names); a
# full channel means finalizing has fallen behind for good, and the flusher then waits.
# (A whole spot market has about 6,000 files open: 4,500 streams and 1,500 status files;
# with room for 4,096 its rotation held the connections for over 30 s.)
RETIRED_FILES_BUFFER: Final = 4096


async def run_writer(
    settings: StorageSettings,
    events: trio.MemoryReceiveChannel[list[Event]],
    finished: trio.MemorySendChannel[Path],
    metrics: Metrics,
    *,
    wall_clock: WallClock = system_wall_us,
    home_server_name: str | None = None,
    file_metadata: FileMetadataSource | None = None,
    doorbell: Doorbell | None = None,
    tap: OutletTap | None = None,
    analytics: TradeAnalytics | None = None,
    open_files: int = 0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Store every event received on ``events`` in finished Parquet files under ``data_dir``.

    ``open_files``: how many files the plan can have open at once (its streams); the
    retired files' channel has room for all of them besides :data:`RETIRED_FILES_BUFFER`,
    so an hourly rotation of every file never makes the flusher wait.

    Owns and closes both channel ends: ``events`` (batches of events, any types and symbols,
    taken when ``doorbell`` rings and at every flush tick; the senders ring it, see
    :mod:`collector.doorbell`; without one, batches are taken at the ticks only) and
    ``finished`` (the path of each finished ``.parquet`` file, for the uploader; it is a
    bounded channel, so a slow consumer slows finalization, never intake of rows already
    flushed). At start it finalizes what a previous run left (:func:`recover_leftovers`, in
    a worker thread) and routes a ``disconnected`` status row for each symbol that run
    recorded until it was killed (:func:`unclean_stop_rows`), numbers rows above the
    highest ``collector_seq`` of the recovered files (:func:`highest_order_key`), calls
    ``task_status.started()``, then sends those paths first. Owns the three stages' nursery
    and the channels between them (the retired files' fill level is exported as the
    ``retired_files`` channel).

    Ends when ``events`` is closed: everything is flushed and finalized, every path is sent,
    ``finished`` is closed. With a ``tap``, the router offers every routed batch to the
    live outlets (:mod:`collector.outlets`) and closes the tap when it ends; with
    ``analytics``, it adds every routed batch to the trade analytics and routes their rows
    as intervals complete (:mod:`collector.analytics`). Every file
    carries the key-value metadata ``file_metadata``
    gives its stream when it is opened (:mod:`~collector.storage.metadata`; default: the
    collector's version and the stream's own keys). Disk errors (``OSError``) are logged, counted in
    ``writer_errors{stage}`` and retried in place (a flush every flush interval, a
    finalization with a capped backoff), so the drain after end-of-stream lasts until the
    disk recovers or the caller cancels. While the flusher retries, the router takes at
    most one more flush's worth of rows, then no batches (backpressure onto the bounded
    event channel), so memory stays bounded.

    Cancellation: nothing more is written; open journals are closed and stay on disk for
    :func:`recover_leftovers` at the next start (rows not yet journaled are lost: those
    routed since the last hand-over, and those of a flush still being retried). A worker
    thread that is already running completes first (finalization is atomic: no
    half-written ``.parquet``); a file it finished is not sent to ``finished`` and is
    picked up as a leftover by the uploader.

    Raises whatever is not a disk error (a bug, e.g. a ``ValueError`` for an event with a
    null in a required column), and ``trio.BrokenResourceError`` if the receiver of
    ``finished`` went away; errors after start come wrapped in an ``ExceptionGroup`` (the
    writer's nursery runs the three stages). Errors of the start-up recovery other than
    the per-file ones it counts propagate as they are.
    """
    with events, finished:
        recovered = await trio.to_thread.run_sync(
            partial(
                recover_leftovers,
                settings.data_dir,
                metrics,
                compression=settings.compression,
                compression_level=settings.compression_level,
            )
        )
        stops = await trio.to_thread.run_sync(unclean_stop_rows, recovered) if recovered else []
        highest = await trio.to_thread.run_sync(highest_order_key, recovered) if recovered else None
        work_out, work_in = trio.open_memory_channel[FlushWork](0)
        retired_out, retired_in = trio.open_memory_channel[RetiredFile](
            RETIRED_FILES_BUFFER + open_files
        )
        metrics.watch_channel("retired_files", partial(_fill, retired_in))
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_finalizer, settings, retired_in, finished, metrics, recovered=recovered)
            )
            await nursery.start(
                partial(
                    run_flusher,
                    settings,
                    work_in,
                    retired_out,
                    metrics,
                    home_server_name=home_server_name,
                    file_metadata=file_metadata,
                )
            )
            await nursery.start(
                partial(
                    run_router,
                    settings,
                    events,
                    work_out,
                    wall_clock=wall_clock,
                    doorbell=doorbell,
                    first_rows=stops,
                    tap=tap,
                    analytics=analytics,
                    min_seq=0 if highest is None else highest + 1,
                )
            )
            task_status.started()


def _fill(channel: trio.MemoryReceiveChannel[RetiredFile]) -> tuple[int, float]:
    stats = channel.statistics()
    return stats.current_buffer_used, stats.max_buffer_size
