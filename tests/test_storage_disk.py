"""The disk high-water mark: above it ``/health`` is degraded and the gauges say so."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio

from collector.health import HealthState
from collector.metrics import Metrics
from collector.storage.disk import run_disk_monitor

TIMEOUT = 30.0


@pytest.mark.parametrize(("percent", "degraded"), [(100.0, False), (1e-9, True)])
async def test_disk_high_water_mark(tmp_path: Path, percent: float, degraded: bool) -> None:
    metrics = Metrics()
    health = HealthState(metrics)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_disk_monitor, tmp_path, percent, health, metrics.disk))
            nursery.cancel_scope.cancel()
    assert metrics.sample("collector_disk_above_high_water") == (1 if degraded else 0)
    assert 0 < metrics.sample("collector_disk_used_ratio") <= 1
    assert ("disk" in health.problems) is degraded
    if degraded:
        assert "above the high-water mark" in health.problems["disk"]
        assert health.report()["status"] == "degraded"
