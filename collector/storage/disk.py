"""The disk high-water mark: above it ``/health`` is degraded and a metric says so.

Runs in every storage mode (local files pile up fastest when S3 is away).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Final

import trio

from collector.health import HealthState
from collector.metrics import DiskMetrics

logger = logging.getLogger(__name__)

PROBLEM: Final = "disk"
DEFAULT_INTERVAL_SECS: Final = 10.0


def disk_used_ratio(path: Path) -> tuple[float, int]:
    """(used fraction, free bytes) of the file system holding ``path``. Blocking."""
    usage = shutil.disk_usage(path)
    used = usage.total - usage.free
    return (used / usage.total if usage.total else 0.0), usage.free


async def run_disk_monitor(
    data_dir: Path,
    high_water_percent: float,
    health: HealthState,
    metrics: DiskMetrics,
    *,
    interval_secs: float = DEFAULT_INTERVAL_SECS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Check disk usage now and every ``interval_secs`` until cancelled.

    Reports the ``"disk"`` health problem while usage is above ``high_water_percent`` (logging
    once per crossing), and the ``collector_disk_*`` gauges. A failing check (``OSError``)
    is logged and reported as a problem too. Started once the first check is done.
    """
    above = False
    limit = high_water_percent / 100.0
    first = True
    while True:
        try:
            ratio, free = await trio.to_thread.run_sync(disk_used_ratio, data_dir)
        except OSError as exc:
            health.set_problem(PROBLEM, f"cannot read disk usage of {data_dir}: {exc}")
        else:
            metrics.used_ratio.set(ratio)
            metrics.free_bytes.set(free)
            now_above = ratio > limit
            metrics.above_high_water.set(1 if now_above else 0)
            if now_above:
                health.set_problem(
                    PROBLEM,
                    f"disk {ratio:.1%} full, above the high-water mark of {high_water_percent:g}%",
                )
                if not above:
                    logger.error(
                        "disk above high-water mark",
                        extra={"used_percent": round(ratio * 100, 1), "data_dir": str(data_dir)},
                    )
            else:
                health.clear_problem(PROBLEM)
                if above:
                    logger.info("disk back below high-water mark")
            above = now_above
        if first:
            task_status.started()
            first = False
        await trio.sleep(interval_secs)
