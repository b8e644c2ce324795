"""One benchmark run: the generator in its own process, the real service in this one.

The collector side is ``run_service`` itself (connections, adapter sessions, event channel,
writer, journals, Parquet), with production settings except ``data_dir`` (a temporary
directory), ``base_url``/``rest_url`` (the generator) and the metrics port (ephemeral).
The runner samples the service's own counters, this process's CPU time
(``time.process_time``: every thread of the collector, none of the generator's) and RSS:
every ``EDGE_POLL_SECS`` until the generator says it starts sending data and again once it
says it has sent everything, every ``MID_POLL_SECS`` in between (each wake-up of the runner
is CPU time of this process, so it wakes as little as the measurement allows).

Measured window: from the first sample that saw a data frame to the first that saw them
all. ``msg_per_s`` is frames over that window. ``cpu_s_per_100k`` is the CPU time from the
window's start until every file is finished Parquet (the final flush and the zstd
encoding at shutdown included, as production pays it at rotation) per 100k frames.
"""

from __future__ import annotations

import contextlib
import cProfile
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import trio

from collector.bench.generator import (
    REST_WEIGHT_PER_MINUTE,
    Burst,
    GeneratorReport,
    GeneratorSpec,
    generator_main,
)
from collector.bench.scenarios import Scenario, get_scenario
from collector.clock import system_wall_us
from collector.config import AnalyticsSettings, KafkaSettings
from collector.exchanges import get_adapter_class
from collector.metrics import Metrics
from collector.planning import plan_service
from collector.service import GC_THRESHOLDS, ServiceHandle, run_service, tune_process

EDGE_POLL_SECS: Final = 0.05  # before the first data frame, and after the last was sent
MID_POLL_SECS: Final = 0.5  # while data flows
PROGRESS_SECS: Final = 0.5
PROGRESS_WINDOW: Final = 5  # samples the progress line's rate is taken over
STALL_SECS: Final = 30.0
START_TIMEOUT_SECS: Final = 120.0
SOAK_WARMUP_SECS: Final = 60.0
SOAK_LEVEL_SECS: Final = 60.0  # the RSS level is the median over this long a stretch
HOUR_US: Final = 3_600_000_000
DATA_TYPES: Final = ("trades", "orderbook", "ticker")  # the tables frames land in


class BenchError(Exception):
    """The run could not complete (the generator failed, the collector stalled...)."""


@dataclass
class RunResult:
    scenario: str
    title: str
    note: str
    rate_target: float | None
    frames: int
    frames_by_type: dict[str, int]
    msg_per_s: float
    receive_seconds: float
    cpu_s_per_100k: float
    cpu_window_s_per_100k: float
    peak_rss_mb: float
    dropped: int
    gaps: int
    parse_errors: int
    rows_by_type: dict[str, int]
    rows_expected: dict[str, int]
    rows_match: bool
    status_rows: int
    snapshots: int
    generator_msg_per_s: float
    exit_code: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    rss_samples_mb: list[tuple[float, float]] = field(default_factory=list)
    rss_growth_pct: float | None = None
    rss_peak_pct: float | None = None
    # timestamp_collector - timestamp_exchange of every trade row (the generator stamps a
    # chunk's trades just before sending it): how late the collector stamps what it reads.
    trade_delay_ms: dict[str, float] | None = None
    gc_threshold: tuple[int, int, int] | None = None
    # Why the rows do not match the frames (empty when they do): see ``row_mismatches``.
    mismatches: list[str] = field(default_factory=list)
    # Seconds the connections waited for room in the full event channel, summed over them:
    # an unpaced run reads faster than the writer stores, and waits instead of dropping.
    writer_wait_s: float = 0.0
    # With --kafka: the Kafka outlet's counts (acknowledged, dropped on its buffer, failed)
    # and the rows stored (every one should be delivered).
    kafka: dict[str, int] | None = None
    # With --analytics: the trade analytics were on.
    analytics: bool = False
    # Start-up: seconds from the service's start to every connection's subscriptions
    # acknowledged and to every diff book's REST snapshot served, the REST weight spent
    # (see ``startup_figures``).
    startup: dict[str, Any] | None = None
    # With --burst: the window as sent, its frames, CPU and trade delays (``burst_figures``).
    burst: dict[str, Any] | None = None
    # With --rotate-after: the hour boundary inside the run and how the files split at it.
    rotation: dict[str, Any] | None = None
    # This process's CPU time over the receive window per second of it (1.0 = one core).
    cpu_share: float = 0.0
    # ``[storage]`` settings the run used instead of the defaults (--storage).
    storage: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_bytes() -> int:
    """This process's peak RSS (Linux reports ``ru_maxrss`` in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
    """This process's RSS now (``/proc/self/status``; the peak where there is no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


def _counter(metric: Any, exchanges: list[str]) -> float:
    # Reads the counter children directly: far cheaper than collecting the registry.
    return float(sum(metric.labels(e)._value.get() for e in exchanges))


@dataclass
class _Sample:
    t: float
    cpu: float
    received: float
    wall: float = 0.0  # time.time(), to place the generator's wall-clock marks


@dataclass
class _Startup:
    """Wall-clock marks of the service's start (``time.time()``)."""

    started_at: float = 0.0
    acked_at: float | None = None  # every connection's subscriptions acknowledged
    # perf_counter() when the run asked the service to stop, and when it had stopped (every
    # file finished): the final flush and finalize of every open file.
    stop_requested: float = 0.0
    stopped: float = 0.0


@dataclass
class _Progress:
    enabled: bool
    label: str
    last: float = 0.0
    shown: bool = False

    def show(self, done: float, total: int | None, rate: float, rss: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < PROGRESS_SECS:
            return
        self.last = now
        of = f"/{total:,}" if total else ""
        line = f"  {self.label}: {int(done):,}{of} msgs  {rate / 1000:,.0f}k msg/s  RSS {rss / 2**20:,.0f} MB"
        sys.stdout.write("\r" + line.ljust(78)[:78])
        sys.stdout.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stdout.write("\r" + " " * 78 + "\r")
            sys.stdout.flush()


async def _measure(
    scenario: Scenario,
    ws_port: int,
    rest_port: int,
    data_dir: Path,
    gen: Connection,
    progress: _Progress,
    expected: int | None,
    kafka_bootstrap: str | None = None,
    analytics: bool = False,
    clock_offset_us: int = 0,
    startup: _Startup | None = None,
    storage: dict[str, Any] | None = None,
) -> tuple[list[_Sample], GeneratorReport, Metrics, int, float, float, list[tuple[float, float]]]:
    startup = startup or _Startup()
    settings = scenario.settings(ws_port, rest_port, data_dir)
    if storage:
        settings = msgspec.structs.replace(
            settings, storage=msgspec.structs.replace(settings.storage, **storage)
        )
    if kafka_bootstrap is not None:
        # Production outlet settings, pointed at the local broker.
        kafka = KafkaSettings(enabled=True, bootstrap_servers=kafka_bootstrap)
        settings = msgspec.structs.replace(settings, kafka=kafka)
    if analytics:
        settings = msgspec.structs.replace(
            settings,
            analytics=AnalyticsSettings(enabled=True, table=True),
            markets=tuple(
                msgspec.structs.replace(m, large_trade_size=1.0) for m in settings.markets
            ),
        )
    plan = plan_service(settings)
    # Metric labels: the exchange of the rows (Bybit linear: ``bybit-linear``).
    exchanges = sorted({get_adapter_class(m.exchange).data_exchange(m) for m in settings.markets})
    codes: list[int] = []

    def wall_clock() -> int:
        return system_wall_us() + clock_offset_us

    async def service(task_status: trio.TaskStatus[ServiceHandle]) -> None:
        codes.append(
            await run_service(
                plan, handle_signals=False, wall_clock=wall_clock, task_status=task_status
            )
        )

    samples: list[_Sample] = []
    rss_samples: list[tuple[float, float]] = []
    report: GeneratorReport | None = None
    async with trio.open_nursery() as nursery:
        startup.started_at = time.time()
        handle: ServiceHandle = await nursery.start(service)
        received_metric = handle.metrics.messages_received
        connections = handle.health.connections
        started = time.perf_counter()
        # A sample before any data frame: the measured window starts here at the latest.
        samples.append(
            _Sample(started, time.process_time(), _counter(received_metric, exchanges), time.time())
        )
        last_change = started
        last_received = -1.0
        next_rss = started
        data_started = False
        while True:
            # Sample often at the window's edges and seldom in between: every wake-up of
            # this loop is CPU time charged to the collector's process. The generator's
            # messages wake it at once.
            if report is None:
                with trio.move_on_after(MID_POLL_SECS if data_started else EDGE_POLL_SECS):
                    await trio.lowlevel.wait_readable(gen)
            else:
                await trio.sleep(EDGE_POLL_SECS)
            now = time.perf_counter()
            received = _counter(received_metric, exchanges)
            samples.append(_Sample(now, time.process_time(), received, time.time()))
            if startup.acked_at is None and all(c.subscribed_once for c in connections.values()):
                startup.acked_at = time.time()
            if now >= next_rss:
                rss_samples.append((round(now - started, 2), current_rss_bytes() / 2**20))
                next_rss += 1.0
            if received != last_received:
                last_received, last_change = received, now
            elif now - last_change > STALL_SECS:
                raise BenchError(f"the collector received nothing for {STALL_SECS:.0f}s")
            while report is None and gen.poll():
                message = gen.recv()
                if message[0] == "started":
                    data_started = True
                elif message[0] == "done":
                    report = message[1]
                else:
                    raise BenchError(f"generator: {message!r}")
            if report is not None and received >= report.frames + report.control_frames:
                break
            if progress.enabled:
                window = samples[-PROGRESS_WINDOW:]
                rate = (
                    (window[-1].received - window[0].received) / (window[-1].t - window[0].t)
                    if len(window) > 1
                    else 0.0
                )
                progress.show(received, expected, rate, current_rss_bytes())
        end_of_receive_cpu = time.process_time()
        progress.clear()
        startup.stop_requested = time.perf_counter()
        handle.shutdown.request("benchmark finished")
    finished_cpu = time.process_time()
    startup.stopped = time.perf_counter()
    assert report is not None
    return (
        samples,
        report,
        handle.metrics,
        codes[0] if codes else -1,
        end_of_receive_cpu,
        finished_cpu,
        rss_samples,
    )


@dataclass
class _Rows:
    by_type: dict[str, int]
    leftovers: int  # journals not finalized
    rest_snapshots: int  # orderbook rows of REST book snapshots (diff-depth symbols)
    resyncs: int  # status rows telling about them
    checkpoints: int = 0  # the writer's checkpoint rows (not frames: left out of by_type)
    trade_delay_ms: dict[str, float] | None = None


def row_mismatches(
    expected: dict[str, int], data_rows: dict[str, int], rows: _Rows, served_snapshots: int
) -> list[str]:
    """Each way the rows written differ from the frames sent (empty: they match).

    Rows per data type must equal the frames sent (plus one orderbook row per REST book
    snapshot the collector fetched); every journal must be finished; each of those
    snapshot rows must come with its ``resync`` status row, and be one the generator served.
    """
    found = [
        f"{data_type}: {data_rows.get(data_type, 0):,} rows for {want:,} expected"
        for data_type, want in sorted(expected.items())
        if data_rows.get(data_type, 0) != want
    ]
    if rows.leftovers:
        found.append(f"{rows.leftovers} journal(s) not finalized")
    if rows.rest_snapshots != rows.resyncs:
        found.append(f"{rows.rest_snapshots} REST snapshot rows but {rows.resyncs} resync rows")
    if rows.rest_snapshots > served_snapshots:
        found.append(
            f"{rows.rest_snapshots} REST snapshot rows but {served_snapshots} snapshots served"
        )
    return found


def trade_delay_ms(
    paths: list[Path], window_us: tuple[int, int] | None = None
) -> dict[str, float] | None:
    """Quantiles (p50, p99, p999, max) of receive minus exchange time over trade files
    (``window_us``: only trades whose exchange time is in ``[start, end)``)."""
    tables = (
        pq.read_table(path, columns=["timestamp_exchange", "timestamp_collector"]) for path in paths
    )
    if window_us is not None:
        tables = (_in_window(table, *window_us) for table in tables)
    delays = [
        pc.subtract(
            table.column("timestamp_collector").cast(pa.int64()),
            table.column("timestamp_exchange").cast(pa.int64()),
        )
        for table in tables
    ]
    if not delays:
        return None
    column = pa.chunked_array([c for d in delays for c in d.chunks], type=pa.int64())
    if column.null_count == len(column):
        return None  # no rows, or no exchange times
    p50, p99, p999 = pc.quantile(column, q=[0.5, 0.99, 0.999]).to_pylist()
    top = pc.max(column).as_py()
    return {
        "p50": round(p50 / 1000, 2),
        "p99": round(p99 / 1000, 2),
        "p999": round(p999 / 1000, 2),
        "max": round(top / 1000, 2),
    }


def _in_window(table: pa.Table, start_us: int, end_us: int) -> pa.Table:
    exchange_time = table.column("timestamp_exchange").cast(pa.int64())
    keep = pc.and_(pc.greater_equal(exchange_time, start_us), pc.less(exchange_time, end_us))
    return table.filter(keep)


def count_rows(data_dir: Path, diff_symbols: set[tuple[str, str]]) -> _Rows:
    """Rows of every finished Parquet file by data type, and what else the check needs.

    ``diff_symbols`` are the (exchange, symbol) pairs whose book syncs by REST snapshot.
    """
    rows = _Rows({}, sum(1 for _ in data_dir.rglob("*.arrows")), 0, 0)
    rows.trade_delay_ms = trade_delay_ms(sorted(data_dir.glob("*/*/trades/**/*.parquet")))
    for path in data_dir.rglob("*.parquet"):
        exchange, symbol, data_type, *_ = path.relative_to(data_dir).parts
        count = pq.read_metadata(path).num_rows
        if data_type == "orderbook":
            kinds = pq.read_table(path, columns=["kind"]).column("kind").to_pylist()
            checkpoints = kinds.count("checkpoint")
            rows.checkpoints += checkpoints
            count -= checkpoints
            if (exchange, symbol) in diff_symbols:
                rows.rest_snapshots += kinds.count("snapshot")
        rows.by_type[data_type] = rows.by_type.get(data_type, 0) + count
        if data_type == "status":
            events = pq.read_table(path, columns=["event"]).column("event").to_pylist()
            rows.resyncs += events.count("resync")
    return rows


def run_scenario(
    name: str,
    *,
    count: int | None = None,
    duration: float | None = None,
    rate: float | None = None,
    progress: bool = False,
    seed: int = 1,
    gc_threshold: tuple[int, int, int] | None = None,
    kafka: bool = False,
    analytics: bool = False,
    burst: Burst | None = None,
    rotate_after: float | None = None,
    rest_weight_per_minute: int | None = REST_WEIGHT_PER_MINUTE,
    profile: str | None = None,
    storage: dict[str, Any] | None = None,
) -> RunResult:
    """Run one scenario end to end and measure it (see the module docstring).

    ``burst``: the generator sends ``burst.factor`` times ``rate`` for ``burst.secs``
    seconds, ``burst.at_secs`` after data starts (paced runs only); the result's ``burst``
    says what was sent, the CPU and the trade delays in that window.

    ``rotate_after``: the service's wall clock (and the generator's times) are offset so
    that an hour boundary falls this many seconds after the service starts; the result's
    ``rotation`` says how every stream's files split at it.

    ``rest_weight_per_minute``: the REST weight budget the generator enforces on spot book
    snapshots (HTTP 429 with ``Retry-After`` beyond it; None: no limit).

    ``storage``: ``[storage]`` settings to use instead of the production defaults (e.g.
    ``{"flush_interval_secs": 5.0}``), for experiments.

    ``profile``: write a cProfile of the collector's Trio thread (the service's event loop;
    not the flusher's and finalizer's worker threads) to this path (pstats format).

    ``analytics``: with the trade analytics on (table and a large-trade threshold too).

    ``kafka``: with the Kafka outlet on, sending to a local broker this function starts
    (:mod:`collector.bench.broker`; its CPU is its own process's, not counted).

    ``count`` frames (default: the scenario's), or for ``duration`` seconds; at ``rate``
    frames per second, or as fast as the collector takes them. The collector side tunes its
    garbage collector as the service's command line does (``tune_process``); ``gc_threshold``
    tries other thresholds instead. Raises BenchError.
    """
    scenario = get_scenario(name)
    if count is None and duration is None:
        count = scenario.default_count
    offset_us = 0
    spec = GeneratorSpec(
        name,
        count=count,
        duration=duration,
        rate=rate,
        seed=seed,
        burst=burst,
        rest_weight_per_minute=rest_weight_per_minute,
    )
    load_before = os.getloadavg()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(
        target=generator_main, args=(child, spec), name="collector-bench-generator", daemon=True
    )
    process.start()
    child.close()
    broker = contextlib.ExitStack()
    try:
        bootstrap = None
        if kafka:
            from collector.bench.broker import BrokerError, local_broker

            try:
                bootstrap = broker.enter_context(local_broker())
            except BrokerError as exc:
                raise BenchError(str(exc)) from None
        if not parent.poll(START_TIMEOUT_SECS):
            raise BenchError("the generator did not start")
        message = parent.recv()
        if message[0] != "ready":
            raise BenchError(f"generator: {message!r}")
        _, ws_port, rest_port = message
        if rotate_after is not None:
            # The service starts now: an hour boundary ``rotate_after`` seconds from here.
            target = system_wall_us() + int(rotate_after * 1e6)
            offset_us = -target % HOUR_US
            parent.send(("offset", offset_us))
            if not parent.poll(START_TIMEOUT_SECS) or parent.recv() != ("offset-ok",):
                raise BenchError("the generator did not take the clock offset")
        with tempfile.TemporaryDirectory(prefix="collector-bench-") as tmp:
            data_dir = Path(tmp)
            label = f"{name}" + (f" @ {rate:,.0f}/s" if rate else "") + (" +kafka" if kafka else "")
            label += " +analytics" if analytics else ""
            # As `python -m collector run` does (or the thresholds under test).
            tune_process(gc_threshold or GC_THRESHOLDS)
            startup = _Startup()
            profiler = cProfile.Profile() if profile else None
            if profiler is not None:
                profiler.enable()
            try:
                samples, report, metrics, code, receive_cpu, finished_cpu, rss_samples = _run(
                    scenario,
                    ws_port,
                    rest_port,
                    data_dir,
                    parent,
                    _Progress(progress, label),
                    count,
                    bootstrap,
                    analytics,
                    offset_us,
                    startup,
                    storage,
                )
            finally:
                if profiler is not None and profile:
                    profiler.disable()
                    profiler.dump_stats(profile)
            peak = peak_rss_bytes()
            # The stored exchange of each diff-depth group (Binance futures: binance-usdm).
            diff_symbols = {
                (get_adapter_class(g.protocol.exchange).data_exchange(g.market(0, 0)), s)
                for g in scenario.groups
                if g.book_mode == "diff" and g.protocol.needs_rest
                for s in g.symbols
            }
            rows = count_rows(data_dir, diff_symbols)
            rotation = None
            if rotate_after is not None:
                boundary_us = system_wall_us() + offset_us
                boundary_us -= boundary_us % HOUR_US
                rotation = rotation_figures(data_dir, boundary_us)
                first_data = next((x.wall for x in samples if x.received > 0), startup.started_at)
                rotation["boundary_after_start_s"] = round(
                    (boundary_us - offset_us) / 1e6 - startup.started_at, 1
                )
                rotation["boundary_after_data_s"] = round(
                    (boundary_us - offset_us) / 1e6 - first_data, 1
                )
            burst_result = (
                burst_figures(report, samples, data_dir, offset_us) if burst is not None else None
            )
    except EOFError:
        raise BenchError("the generator process ended unexpectedly") from None
    finally:
        broker.close()
        _stop(process, parent)
    return _result(
        scenario,
        rate,
        samples,
        report,
        metrics,
        code,
        receive_cpu,
        finished_cpu,
        peak,
        rows,
        rss_samples,
        load_before,
        gc_threshold,
        kafka,
        analytics,
        startup_figures(report, startup, rate),
        burst_result,
        rotation,
        storage,
    )


def _run(*args: Any) -> Any:
    """``trio.run(_measure, *args)``, with a BenchError raised in its nursery unwrapped."""
    try:
        return trio.run(_measure, *args)
    except BaseExceptionGroup as group:
        bench = group.subgroup(BenchError)
        if bench is None:
            raise
        first: BaseException = bench
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from group


def startup_figures(
    report: GeneratorReport, startup: _Startup, rate: float | None
) -> dict[str, Any]:
    """Seconds from the service's start to the first connection, to every subscription
    acknowledged and to every diff book's first REST snapshot served (None: not within the
    run), with the REST weight the generator counted."""

    def since(at: float | None) -> float | None:
        return None if at is None else round(at - startup.started_at, 2)

    return {
        "connected_s": since(report.first_connect_at),
        "acked_s": since(startup.acked_at),
        "books": report.books,
        "books_served": report.snapshots,
        "synced_s": since(report.books_served_at),
        "rest_weight": report.rest_weight,
        "rest_peak_weight": report.rest_peak_weight,
        "rest_refused": report.rest_refused,
        "shutdown_s": round(startup.stopped - startup.stop_requested, 1),
    }


def burst_figures(
    report: GeneratorReport, samples: list[_Sample], data_dir: Path, offset_us: int
) -> dict[str, Any] | None:
    """The burst window as the generator sent it: frames and rate, this process's CPU share
    over it (between the samples around it), and the trade delays of trades sent in it."""
    start, end = report.burst_started_at, report.burst_ended_at
    if start is None or end is None or end <= start:
        return None
    before = [x for x in samples if x.wall <= start]
    after = [x for x in samples if x.wall >= end]
    cpu_share = None
    if before and after:
        a, b = before[-1], after[0]
        cpu_share = round((b.cpu - a.cpu) / (b.t - a.t), 3) if b.t > a.t else None
    delays = trade_delay_ms(
        sorted(data_dir.glob("*/*/trades/**/*.parquet")),
        window_us=(int(start * 1e6) + offset_us, int(end * 1e6) + offset_us),
    )
    return {
        "secs": round(end - start, 2),
        "frames": report.burst_frames,
        "msg_per_s": round(report.burst_frames / (end - start), 1),
        "cpu_share": cpu_share,
        "trade_delay_ms": delays,
    }


def rotation_figures(data_dir: Path, boundary_us: int) -> dict[str, Any]:
    """How the data files split at the hour boundary ``boundary_us``: streams (exchange,
    symbol, data type of the frames' tables) with rows on both sides, those split into a
    file before and a file after it, and files holding rows of both hours (0 when rotation
    works)."""
    sides: dict[tuple[str, ...], set[bool]] = {}
    straddling = 0
    for path in data_dir.rglob("*.parquet"):
        exchange, symbol, data_type, *_ = path.relative_to(data_dir).parts
        if data_type not in DATA_TYPES:
            continue
        column = pq.read_table(path, columns=["timestamp_collector"]).column(0)
        if len(column) == 0:
            continue
        bounds = pc.min_max(column.cast(pa.int64()))
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low < boundary_us <= high:
            straddling += 1
        sides.setdefault((exchange, symbol, data_type), set()).update(
            {low >= boundary_us, high >= boundary_us}
        )
    both = sum(1 for s in sides.values() if s == {False, True})
    return {
        "streams": len(sides),
        "streams_both_sides": both,
        "straddling_files": straddling,
        "rotated": straddling == 0 and both > 0,
    }


def rss_growth(samples: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """(growth, peak) in percent of the RSS level just after the warm-up minute.

    growth: the level of the last minute against the level of the minute after warm-up,
    each the median of its samples (a trend: a leak shows here). peak: the highest sample
    after warm-up against that first level (transients such as the hourly rotation, when
    every file is finalized at once, show here and not in growth). ``None`` when the run is
    too short to have both minutes.
    """
    after = [(t, mb) for t, mb in samples if t >= SOAK_WARMUP_SECS]
    if not after or after[-1][0] - after[0][0] < 2 * SOAK_LEVEL_SECS:
        return None, None
    first = statistics.median(mb for t, mb in after if t < after[0][0] + SOAK_LEVEL_SECS)
    last = statistics.median(mb for t, mb in after if t > after[-1][0] - SOAK_LEVEL_SECS)
    peak = max(mb for _, mb in after)
    return round((last - first) / first * 100, 2), round((peak - first) / first * 100, 2)


def _stop(process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
    with contextlib.suppress(OSError):
        conn.send("stop")
    conn.close()
    process.join(10)
    if process.is_alive():
        process.terminate()
        process.join(5)


def _result(
    scenario: Scenario,
    rate: float | None,
    samples: list[_Sample],
    report: GeneratorReport,
    metrics: Metrics,
    code: int,
    receive_cpu: float,
    finished_cpu: float,
    peak: int,
    rows: _Rows,
    rss_samples: list[tuple[float, float]],
    load_before: tuple[float, float, float],
    gc_threshold: tuple[int, int, int] | None,
    kafka: bool = False,
    analytics: bool = False,
    startup: dict[str, Any] | None = None,
    burst: dict[str, Any] | None = None,
    rotation: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
) -> RunResult:
    control = report.control_frames
    data = [(s.t, s.cpu, s.received - control) for s in samples]
    start = next(i for i, s in enumerate(data) if s[2] > 0)
    end = next(i for i, s in enumerate(data) if s[2] >= report.frames)
    t0, cpu0, n0 = data[max(0, start - 1)]
    n0 = max(0.0, n0)
    t1, cpu1, n1 = data[end]
    frames = n1 - n0
    seconds = t1 - t0
    # Every frame is one row; on top, each REST book snapshot the collector fetched (at
    # most one per diff-depth symbol, paced at 1/s, so short runs record fewer) is one
    # orderbook row, announced by a resync status row.
    expected = dict(report.frames_by_type)
    if rows.rest_snapshots:
        expected["orderbook"] = expected.get("orderbook", 0) + rows.rest_snapshots
    data_rows = {k: v for k, v in rows.by_type.items() if k in expected}
    mismatches = row_mismatches(expected, data_rows, rows, report.snapshots)
    growth, peak_pct = rss_growth(rss_samples)
    return RunResult(
        scenario=scenario.name,
        title=scenario.title,
        note=scenario.note,
        rate_target=rate,
        frames=report.frames,
        frames_by_type=report.frames_by_type,
        msg_per_s=round(frames / seconds, 1) if seconds > 0 else 0.0,
        receive_seconds=round(seconds, 3),
        cpu_s_per_100k=round((finished_cpu - cpu0) / report.frames * 100_000, 4),
        cpu_window_s_per_100k=round((cpu1 - cpu0) / frames * 100_000, 4) if frames else 0.0,
        peak_rss_mb=round(peak / 2**20, 1),
        dropped=int(metrics.sum_samples("collector_messages_dropped_total")),
        gaps=int(metrics.sum_samples("collector_sequence_gaps_total")),
        parse_errors=int(metrics.sum_samples("collector_parse_errors_total")),
        rows_by_type=data_rows,
        rows_expected=expected,
        rows_match=not mismatches,
        status_rows=rows.by_type.get("status", 0),
        snapshots=rows.rest_snapshots,
        generator_msg_per_s=round(report.rate, 1),
        exit_code=code,
        load_before=load_before,
        load_after=os.getloadavg(),
        rss_samples_mb=[(t, round(mb, 1)) for t, mb in rss_samples],
        rss_growth_pct=growth,
        rss_peak_pct=peak_pct,
        trade_delay_ms=rows.trade_delay_ms,
        mismatches=mismatches,
        gc_threshold=gc_threshold,
        writer_wait_s=round(metrics.sum_samples("collector_writer_wait_seconds_total"), 3),
        kafka=_kafka_counts(metrics, rows) if kafka else None,
        analytics=analytics,
        startup=startup,
        burst=burst,
        rotation=rotation,
        storage=storage or {},
        cpu_share=round((cpu1 - cpu0) / seconds, 3) if seconds > 0 else 0.0,
    )


def _kafka_counts(metrics: Metrics, rows: _Rows) -> dict[str, int]:
    """The Kafka outlet's totals over the data types, and the rows stored."""

    def total(name: str) -> int:
        return int(metrics.sum_samples(name))

    return {
        "delivered": total("collector_outlet_delivered_total"),
        "dropped": total("collector_outlet_dropped_total"),
        "failed": total("collector_outlet_failed_total"),
        "stored": sum(rows.by_type.values()),
    }


Runner = Callable[..., RunResult]
