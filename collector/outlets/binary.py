"""The binary column outlet: the stored trades, as MD and TRADES column files, live.

Each round takes every batch waiting in the outlet's buffer (trades, tickers and order
book rows: the quotes give MD its best bid and ask), turns them into rows and appends them
to their day's file sets (:mod:`collector.binary`), in a worker thread: the event loop
never waits on the disk, and like every outlet this one never holds up the Parquet files
(a full buffer drops, counts and records ``outlet_overflow`` rows).

A write that fails (disk full, permissions) loses that round's rows for the column files
only: the set it failed on is cut back to equal columns, the failure is logged and counted
(``collector_outlet_failed_total``), the outlet waits a capped backoff and goes on with
the next rounds; ``/health`` is degraded (component ``binary``) once writes have failed
for ``binary.stall_secs``. The Parquet files keep every row: ``export-binary`` rebuilds
any day's column files from them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Final

import trio

from collector.backoff import Backoff
from collector.binary.columns import DATA_TYPES, RowBuilder, RowKey, Rows
from collector.binary.files import BinaryWriter
from collector.config import BinarySettings
from collector.events import Event
from collector.health import HealthState
from collector.metrics import OutletMetrics
from collector.outlets.buffer import OutletBuffer

log = logging.getLogger(__name__)

OUTLET: Final = "binary"
__all__ = ["DATA_TYPES", "OUTLET", "run_binary_outlet", "write_round"]


def write_round(
    builder: RowBuilder, writer: BinaryWriter, batches: list[list[Event]]
) -> Counter[str]:
    """Turn ``batches`` into rows and append them (a worker thread); the events used per
    data type. Raises ``OSError`` from the files (see :meth:`BinaryWriter.write`)."""
    used: Counter[str] = Counter()
    rows: dict[RowKey, Rows] = {}
    for batch in batches:
        builder.add(batch, rows)
        for event in batch:
            if event.DATA_TYPE in DATA_TYPES:
                used[event.DATA_TYPE] += 1
    writer.write(rows)
    return used


async def run_binary_outlet(
    settings: BinarySettings,
    buffer: OutletBuffer,
    metrics: OutletMetrics,
    health: HealthState,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Write ``buffer``'s events to the column files under ``binary.dir`` until the buffer
    is closed and drained; then sync and close every file set and return.

    Owns its writer (the open file sets) and the health component ``binary``. Never raises
    for a failed write (see the module). Cancellation: a round under way in its worker
    thread finishes first; the sets are then closed (synced) on the way out."""
    writer = BinaryWriter(Path(settings.dir))
    builder = RowBuilder()
    delivered = {dt: metrics.delivered.labels(OUTLET, dt) for dt in DATA_TYPES}
    failed = {dt: metrics.failed.labels(OUTLET, dt) for dt in DATA_TYPES}
    latency = metrics.delivery_seconds.labels(OUTLET)
    healthy = metrics.healthy.labels(OUTLET)
    metrics.buffered.labels(OUTLET).set_function(lambda: buffer.size)
    backoff = Backoff(settings.initial_retry_delay_secs, settings.max_retry_delay_secs)
    failing_since: float | None = None
    closed = False
    task_status.started()
    try:
        while True:
            batches = await buffer.take()
            if not batches:
                break  # closed and drained
            started = time.perf_counter()
            try:
                used = await trio.to_thread.run_sync(partial(write_round, builder, writer, batches))
            except OSError as exc:
                lost: Counter[str] = Counter(
                    e.DATA_TYPE for b in batches for e in b if e.DATA_TYPE in DATA_TYPES
                )
                for data_type, count in lost.items():
                    failed[data_type].inc(count)
                now = trio.current_time()
                if failing_since is None:
                    failing_since = now
                    log.warning(
                        "cannot write the binary column files: %s (this round's rows are "
                        "lost for them; the Parquet files have them)",
                        exc,
                        extra={"outlet": OUTLET},
                    )
                if now - failing_since >= settings.stall_secs:
                    health.set_problem(OUTLET, f"cannot write the binary column files ({exc})")
                    healthy.set(0)
                if buffer.closed:
                    continue  # drain what is left, without waiting
                await trio.sleep(backoff.next_delay())
                continue
            latency.observe(time.perf_counter() - started)
            for data_type, count in used.items():
                delivered[data_type].inc(count)
            if failing_since is not None:
                log.info("binary column files are written again", extra={"outlet": OUTLET})
                failing_since = None
                backoff.reset()
                health.clear_problem(OUTLET)
                healthy.set(1)
        closed = True
        try:
            await trio.to_thread.run_sync(writer.close)
        except OSError as exc:
            log.warning("cannot sync the binary column files: %s", exc)
    finally:
        health.clear_problem(OUTLET)
        if not closed:
            try:
                writer.close()
            except OSError as exc:
                log.warning("cannot close the binary column files: %s", exc)
