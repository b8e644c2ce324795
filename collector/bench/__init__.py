"""``python -m collector bench``: how much can this machine collect?

A load generator (a fake exchange in its own process, :mod:`collector.bench.generator`)
sends pre-built, realistic frames to the real service pipeline (:mod:`collector.bench.runner`),
which measures messages per second, CPU per 100k messages, peak RSS, drops, and checks that
the Parquet rows written equal the frames sent.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any


def run_bench_command(
    args: argparse.Namespace | Mapping[str, Any] | None = None, **kwargs: Any
) -> int:
    """See :func:`collector.bench.command.run_bench_command` (imported on first use)."""
    from collector.bench.command import run_bench_command as run

    return run(args, **kwargs)


__all__ = ["run_bench_command"]
