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
# A whole spot market (``market``) at a set rate, on one core (issue 21, item 2).
MARKET_CPU_SHARE: Final = 0.5  # of one core, on average over the receive window
MARKET_RSS_MB: Final = 400.0
MARKET_STARTUP_SECS: Final = 60.0  # subscriptions acknowledged and books synced


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
        if r.rate_target is not None and r.scenario.startswith("market"):
            ok = self.median("cpu_share") < MARKET_CPU_SHARE
            out.append(f"{'PASS' if ok else 'FAIL'} CPU < {MARKET_CPU_SHARE:.0%} of a core")
            ok = self.median("peak_rss_mb") < MARKET_RSS_MB
            out.append(f"{'PASS' if ok else 'FAIL'} peak RSS < {MARKET_RSS_MB:.0f} MB")
            ok = all(_started_within(run, MARKET_STARTUP_SECS) for run in self.runs)
            out.append(f"{'PASS' if ok else 'FAIL'} start-up < {MARKET_STARTUP_SECS:.0f} s")
        if any(run.rotation is not None for run in self.runs):
            ok = all(run.rotation is not None and run.rotation["rotated"] for run in self.runs)
            out.append(f"{'PASS' if ok else 'FAIL'} hour rotation")
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

    def detail_lines(self) -> list[str]:
        """Start-up, burst and rotation figures of the first run, where it has them."""
        r, pad = self.first, " " * 24
        lines: list[str] = []
        st = r.startup
        if st is not None and st.get("books"):
            synced = (
                f"{st['synced_s']:.1f} s"
                if st["synced_s"] is not None
                else f"not within the run ({st['books_served']:,} of {st['books']:,} served)"
            )
            lines.append(
                f"{pad}start-up: connected {_secs(st['connected_s'])}, every subscription "
                f"acknowledged {_secs(st['acked_s'])}, {st['books']:,} books synced {synced}; "
                f"REST weight {st['rest_weight']:,} (peak {st['rest_peak_weight']:,}/min), "
                f"{st['rest_refused']} refused (HTTP 429)"
            )
        if st is not None and st.get("shutdown_s") is not None and r.scenario.startswith("market"):
            lines.append(
                f"{pad}shutdown (final flush, every open file finalized): {st['shutdown_s']:.1f} s"
            )
        elif st is not None and st.get("acked_s") is not None:
            lines.append(f"{pad}start-up: every subscription acknowledged {_secs(st['acked_s'])}")
        b = r.burst
        if b is not None:
            delay = b.get("trade_delay_ms") or {}
            lines.append(
                f"{pad}burst: {b['frames']:,} frames in {b['secs']:.1f} s "
                f"({b['msg_per_s']:,.0f} msg/s), CPU {_share(b['cpu_share'])} of a core; "
                f"trade delay p50 {delay.get('p50', 0):.2f} ms, p99 {delay.get('p99', 0):.2f} ms, "
                f"max {delay.get('max', 0):.2f} ms"
            )
        rot = r.rotation
        if rot is not None:
            lines.append(
                f"{pad}hour rotation {rot.get('boundary_after_data_s', 0):.0f} s after data "
                f"started: {rot['streams_both_sides']:,} of {rot['streams']:,} streams had rows "
                f"on both sides, {rot['straddling_files']} file(s) held rows of both hours"
            )
        if r.scenario.startswith("market") or r.burst is not None:
            lines.append(f"{pad}CPU over the receive window: {_share(r.cpu_share)} of a core")
        return lines

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
                    "cpu_share",
                )
            },
            "dropped": max(r.dropped for r in self.runs),
            "rows_match": all(r.rows_match for r in self.runs),
            "verdicts": self.verdicts(duration),
            "each": [r.as_dict() for r in self.runs],
        }


def _started_within(run: RunResult, secs: float) -> bool:
    """Every subscription acknowledged, and every book synced (if any), within ``secs``."""
    st = run.startup or {}
    acked = st.get("acked_s")
    if acked is None or acked > secs:
        return False
    if st.get("books"):
        synced = st.get("synced_s")
        return synced is not None and synced <= secs
    return True


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


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
        if r.storage:
            label += " storage*"
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
        lines += s.detail_lines()
        if r.storage:
            lines.append(f"{'':<24}experiment: [storage] {r.storage}")
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
