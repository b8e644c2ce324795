"""Benchmark output: the targets, a plain-text table, and JSON."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from collector.bench.runner import RunResult

MAX_RATE_TARGETS: Final = {"trades": 250_000, "depth": 60_000, "depth20": 40_000}
STEADY_RATE: Final = 20_000  # trades per second: the steady-rate target
STEADY_CPU_TARGET: Final = 0.5  # CPU s per 100k trades at that rate
RSS_TARGET_MB: Final = 200.0  # mixed scenario at a set rate
SOAK_SECS: Final = 600.0
SOAK_GROWTH_PCT: Final = 5.0


@dataclass(frozen=True)
class Summary:
    """The median of repeated runs of one scenario (with the same options)."""

    runs: list[RunResult]

    @property
    def first(self) -> RunResult:
        return self.runs[0]

    def median(self, name: str) -> float:
        return float(statistics.median(float(getattr(r, name)) for r in self.runs))

    def verdicts(self, duration: float | None) -> list[str]:
        """How the medians compare with the issue's targets that apply to this run."""
        r = self.first
        out: list[str] = []
        goal = MAX_RATE_TARGETS.get(r.scenario)
        if goal is not None and (r.rate_target is None or r.rate_target >= goal):
            # The target is a rate *into Parquet*: a run that lost frames does not show it.
            # (Unpaced, the connections wait for the writer: what it stores is the pace.)
            kept = all(run.dropped == 0 and run.rows_match for run in self.runs)
            ok = kept and self.median("msg_per_s") >= goal
            why = "" if kept else " (not every frame was stored)"
            out.append(f"{'PASS' if ok else 'FAIL'} max rate >= {goal:,} msg/s into Parquet{why}")
        if r.rate_target is not None and r.rate_target <= STEADY_RATE and r.scenario == "trades":
            ok = self.median("cpu_s_per_100k") <= STEADY_CPU_TARGET
            out.append(f"{'PASS' if ok else 'FAIL'} <= {STEADY_CPU_TARGET} CPU s/100k")
        if r.rate_target is not None and r.scenario == "mixed":
            ok = self.median("peak_rss_mb") <= RSS_TARGET_MB
            out.append(f"{'PASS' if ok else 'FAIL'} peak RSS <= {RSS_TARGET_MB:.0f} MB")
        # Paced or not: a connection waits for the writer rather than drop what it read.
        ok = all(run.dropped == 0 for run in self.runs)
        out.append(f"{'PASS' if ok else 'FAIL'} nothing dropped")
        if duration is not None and duration >= SOAK_SECS and r.rss_growth_pct is not None:
            growth = max(run.rss_growth_pct or 0.0 for run in self.runs)
            ok = growth < SOAK_GROWTH_PCT
            out.append(f"{'PASS' if ok else 'FAIL'} RSS growth {growth:.1f}% < {SOAK_GROWTH_PCT}%")
        if not all(run.rows_match for run in self.runs):
            out.append("FAIL rows != frames")
        return out

    def as_dict(self, duration: float | None) -> dict[str, Any]:
        return {
            "scenario": self.first.scenario,
            "title": self.first.title,
            "note": self.first.note,
            "rate_target": self.first.rate_target,
            "runs": len(self.runs),
            "median": {
                name: self.median(name)
                for name in (
                    "msg_per_s",
                    "cpu_s_per_100k",
                    "cpu_window_s_per_100k",
                    "peak_rss_mb",
                    "frames",
                    "generator_msg_per_s",
                    "writer_wait_s",
                )
            },
            "dropped": max(r.dropped for r in self.runs),
            "rows_match": all(r.rows_match for r in self.runs),
            "verdicts": self.verdicts(duration),
            "each": [r.as_dict() for r in self.runs],
        }


def machine(wakeup_us: Sequence[float] = ()) -> dict[str, Any]:
    """The machine's state: CPUs, load, and the idle wake-up cost measured before and after
    the runs (see :mod:`collector.bench.calibrate`)."""
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "wakeup_cpu_us": list(wakeup_us),
    }


def render_json(
    summaries: Sequence[Summary], duration: float | None, wakeup_us: Sequence[float] = ()
) -> str:
    return json.dumps(
        {"machine": machine(wakeup_us), "results": [s.as_dict(duration) for s in summaries]},
        indent=2,
    )


def render_text(
    summaries: Sequence[Summary], duration: float | None, wakeup_us: Sequence[float] = ()
) -> str:
    info = machine(wakeup_us)
    lines = [
        f"collector bench: {info['cpus']} CPUs, load average {info['load_average']} "
        "(medians of the runs; the generator runs in its own process)",
    ]
    if wakeup_us:
        lines.append(
            "CPU per idle wake-up of a bare Trio loop (before, after the runs): "
            + ", ".join(f"{us:.0f} us" for us in wakeup_us)
        )
    lines += [
        "",
        f"{'scenario':<24}{'msg/s':>11}{'CPU s/100k':>12}{'peak RSS':>10}"
        f"{'dropped':>9}  {'rows==frames':<22}vs target",
    ]
    for s in summaries:
        r = s.first
        label = r.scenario + (f" @ {r.rate_target:,.0f}/s" if r.rate_target else " (max)")
        if r.gc_threshold is not None:
            label += " gc*"
        if r.kafka is not None:
            label += " +kafka"
        if r.analytics:
            label += " +analytics"
        if len(s.runs) > 1:
            label += f" x{len(s.runs)}"
        rows = sum(r.rows_by_type.values())
        match = ("yes" if all(x.rows_match for x in s.runs) else "NO") + f" ({rows:,})"
        lines.append(
            f"{label:<24}{s.median('msg_per_s'):>11,.0f}{s.median('cpu_s_per_100k'):>12.3f}"
            f"{s.median('peak_rss_mb'):>7.0f} MB{max(x.dropped for x in s.runs):>9}  "
            f"{match:<22}{'; '.join(s.verdicts(duration))}"
        )
        for number, run in enumerate(s.runs, 1):
            if run.mismatches and not run.dropped:  # (drops explain missing rows)
                lines.append(
                    f"{'':<24}rows != frames in run {number}, nothing dropped: "
                    + "; ".join(run.mismatches)
                )
        for number, run in enumerate(s.runs, 1):
            if run.kafka is not None:
                k = run.kafka
                lines.append(
                    f"{'':<24}kafka outlet (run {number}): {k['delivered']:,} of {k['stored']:,} "
                    f"stored rows acknowledged, {k['dropped']:,} dropped, {k['failed']:,} failed"
                )
        waited = s.median("writer_wait_s")
        if waited > 0:
            lines.append(
                f"{'':<24}the connections waited {waited:.2f} s for the writer (summed over "
                "them): backpressure, not drops"
            )
        if r.trade_delay_ms is not None:
            d = r.trade_delay_ms
            lines.append(
                f"{'':<24}trade receive delay (receive - exchange time): p50 {d['p50']:.2f} ms, "
                f"p99 {d['p99']:.2f} ms, p99.9 {d['p999']:.2f} ms, max {d['max']:.2f} ms"
            )
        if r.rss_growth_pct is not None:
            lines.append(
                f"{'':<24}RSS growth after the first minute: {r.rss_growth_pct:.1f}% "
                f"(last minute's median against the second's); highest sample "
                f"{r.rss_peak_pct or 0.0:+.1f}%"
            )
        if r.gc_threshold is not None:
            lines.append(f"{'':<24}experiment: gc.freeze() + gc.set_threshold{r.gc_threshold}")
        if r.note:
            lines.append(f"{'':<24}note: {r.note}")
    lines += [
        "",
        "msg/s: frames over the receive window; CPU s/100k: this process's CPU (every thread, "
        "not the generator's) from the first frame until the last Parquet file is finished; "
        "peak RSS: this process (ru_maxrss).",
    ]
    if wakeup_us:
        lines.append(
            "At a set rate the collector wakes once per read (200 reads/s at the generator's "
            "5 ms tick), so the wake-up cost moves the steady-rate CPU figure."
        )
    return "\n".join(lines)
