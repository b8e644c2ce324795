"""The service: the root of the task tree and its orderly shutdown.

```
root nursery
├── http server                       /health /ready /metrics (/admin: collector.control.admin)
├── signal watcher                    SIGINT/SIGTERM -> shutdown
├── disk monitor                      high-water mark -> /health, metrics
├── retention (optional)              old finished files deleted (s3/both: verified only)
└── pipeline nursery
    ├── outlets        <- own bounded buffers, fed by the router (kafka, redis; optional)
    ├── writer         <- event channel (batches; one clone per connection)
    │   └── router -> flusher -> finalizer   (joined by channels; see storage/writer.py)
    │       (the router also feeds the trade analytics, a plain call: collector.analytics)
    ├── uploader       <- file channel (s3/both: upload, verify, then delete or keep)
    └── ingest nursery (cancelled first on shutdown)
        ├── one nursery per exchange -> one reconnect loop per connection
        ├── instrument listings (REST, markets with the instruments feed)
        ├── SIGHUP reloads (with a reload function) -> the controller
        └── symbol listings (``*`` markets: listed/delisted) -> the controller
```

The :class:`~collector.control.controller.Controller` changes the markets while the
service runs (``SIGHUP``, the admin API): it starts connections in the exchanges'
nurseries (or a new exchange's task in the ingest nursery) and stops them there.

Shutdown: cancel ingest -> connections close and their channel clones with them -> the
writer drains the event channel and finalizes every open file (the outlets drain their
buffers and flush, each within its own bound) -> the uploader uploads what
it can within the deadline (the rest goes up at the next start) -> the HTTP server stops.
``shutdown_timeout_secs`` bounds it all; past it everything is cancelled and journals left
on disk are finalized at the next start.

Start-up, before the task tree: the data directory is made and probed, then locked for the
life of the service (:mod:`collector.storage.lock`: one service per directory, taken before
the writer's recovery touches any journal), then the HTTP port is bound. A failure of any
of these is a :class:`ServiceError`, one line for the user, before any venue is contacted.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import attrs
import trio

from collector import native_memory
from collector.analytics import TradeAnalytics, large_trade_sizes
from collector.clock import WallClock, system_wall_us
from collector.control.admin import AdminApi
from collector.control.controller import Controller
from collector.control.listings import Listings, watch_listings
from collector.control.reload import Reload, watch_reloads
from collector.doorbell import Doorbell, ring_at_for
from collector.events import Event
from collector.exchanges.base import ConnectionPlan, ExchangeAdapter
from collector.health import HealthState
from collector.http import HttpBindError, HttpListener, bind_http, run_http_server
from collector.ingest.connection import IngestContext
from collector.ingest.supervisor import ExchangeRunner, run_exchange
from collector.instruments import (
    InstrumentListings,
    create_instrument_series,
    plan_instruments,
    run_instruments,
)
from collector.metrics import Metrics
from collector.outlets import open_outlets, start_outlets
from collector.outlets.errors import OutletSettingsError
from collector.planning import ServicePlan
from collector.retention import run_retention
from collector.series import create_series
from collector.storage import FileMetadataSource, run_disk_monitor, run_writer
from collector.storage.lock import DataDirInUse, DataDirLock, DataDirLockError
from collector.upload.settings import UploadSettings

log = logging.getLogger(__name__)

# Garbage-collector settings for this allocation-heavy service: every event allocates
# short-lived objects (order-book levels above all), and buffered rows live up to a flush
# interval, so Python's default young-generation threshold (700) makes it re-scan live
# buffers constantly. The figures are in docs/performance.md.
GC_THRESHOLDS = (50_000, 50, 1_000)

EXIT_OK = 0
EXIT_SHUTDOWN_TIMEOUT = 1
# A second signal cut the drain short: files may be left unfinished (as after a timeout).
EXIT_FORCED_STOP = 1
# Could not start: data directory not writable or not lockable, HTTP port not available.
EXIT_START_FAILED = 1
# Another service holds the data directory: running this one would destroy data, and
# restarting it will not help until the other stops (as for bad settings).
EXIT_DATA_DIR_IN_USE = 2
# Settings only a client library can judge (an outlet's options): as a bad settings file.
EXIT_BAD_SETTINGS = 2


class ServiceError(Exception):
    """The service cannot start (e.g. the data directory is not writable); the message is
    one line fit to show the user, ``exit_code`` the process's exit status for it."""

    def __init__(self, message: str, exit_code: int = EXIT_START_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@attrs.define
class Shutdown:
    """A one-way switch that starts the orderly shutdown."""

    requested: trio.Event = attrs.field(factory=trio.Event)
    reason: str = ""
    # Set (with the root scope cancelled) when a second signal stops the service at once:
    # not a flag anyone polls, only how the exit status learns the drain was cut short.
    forced: bool = False

    def request(self, reason: str) -> None:
        if not self.requested.is_set():
            self.reason = reason
            self.requested.set()


@attrs.frozen
class ServiceHandle:
    """What ``run_service`` reports once started (for tests and embedding)."""

    http_port: int
    shutdown: Shutdown
    health: HealthState
    metrics: Metrics
    # Changes the markets while the service runs (collector.control).
    controller: Controller | None = None


SWITCH_INTERVAL_SECS = 0.001


def tune_process(gc_thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Process-wide tuning for a long-running, allocation-heavy service: the garbage
    collector freezes what start-up created out of future collections and collects young
    objects less often (``GC_THRESHOLDS``).

    glibc gets at most two malloc arenas (less memory held by worker threads; see
    :mod:`collector.native_memory`). Arrow's allocator is chosen in ``collector/__init__.py``:
    it must be set before pyarrow is imported.

    The interpreter switches threads every ``SWITCH_INTERVAL_SECS`` instead of 5 ms: while a
    flush converts rows in its worker thread, the event loop waits for the GIL before it can
    read and stamp ``timestamp_collector``, so a shorter interval shortens the receive delay's
    tail at no CPU cost (figures in docs/performance.md).

    Called by the command line (and the bench) before the service starts, not by
    :func:`run_service`, which tests also run in-process.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*gc_thresholds)
    native_memory.limit_arenas()
    sys.setswitchinterval(SWITCH_INTERVAL_SECS)


def _not_writable(path: Path, exc: OSError) -> ServiceError:
    return ServiceError(f"data directory {str(path)!r} is not writable: {exc}")


def _make_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _not_writable(path, exc) from None


def _probe_data_dir(path: Path) -> None:
    """Create and delete a file: under the lock, so that two services starting together
    cannot delete each other's probe."""
    try:
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _not_writable(path, exc) from None


def _lock_data_dir(path: Path) -> DataDirLock:
    try:
        return DataDirLock.acquire(path)
    except DataDirInUse as exc:
        raise ServiceError(str(exc), EXIT_DATA_DIR_IN_USE) from None
    except DataDirLockError as exc:
        raise ServiceError(str(exc)) from None


async def run_service(
    plan: ServicePlan,
    *,
    wall_clock: WallClock = system_wall_us,
    handle_signals: bool = True,
    reload: Reload | None = None,
    env: Mapping[str, str] | None = None,
    listings: Listings | None = None,
    task_status: trio.TaskStatus[ServiceHandle] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run ``plan`` (from :func:`collector.planning.plan_service`: the connections are
    planned before, not here) until shutdown is requested (signal or ``handle.shutdown``);
    returns an exit code.

    With ``reload`` (:mod:`collector.control.reload`), each ``SIGHUP`` reads the settings
    again and applies their markets. ``env`` (default: the process's) holds the admin
    API's token variable (``collector.admin_token_env``). With ``listings``
    (:mod:`collector.control.listings`: ``plan`` has its ``*`` markets resolved), the
    venues' listings are read again every ``symbols_refresh_secs`` and listed and
    delisted symbols are added and removed.

    Raises ServiceError, before starting any task, when the data directory is not writable
    or another service holds it, the HTTP port cannot be bound, or the admin token's
    variable is unset or empty. Holds the data directory's lock until it returns."""
    settings = plan.settings
    cfg = settings.collector
    admin = _admin_api(cfg.admin_token_env, os.environ if env is None else env)
    data_dir = Path(settings.storage.data_dir)
    _make_data_dir(data_dir)
    with _lock_data_dir(data_dir):
        _probe_data_dir(data_dir)
        try:
            listener = bind_http(cfg.metrics_host, cfg.metrics_port)
        except HttpBindError as exc:
            raise ServiceError(f"{exc} (collector.metrics_host, collector.metrics_port)") from None
        try:
            return await _run(
                plan, listener, wall_clock, handle_signals, task_status, reload, admin, listings
            )
        finally:
            listener.close()


async def _run(
    plan: ServicePlan,
    listener: HttpListener,
    wall_clock: WallClock,
    handle_signals: bool,
    task_status: trio.TaskStatus[ServiceHandle],
    reload: Reload | None = None,
    admin: AdminApi | None = None,
    listings: Listings | None = None,
) -> int:
    settings = plan.settings
    cfg = settings.collector
    metrics = Metrics()
    metrics.up_since.set(time.time())
    shard = plan.assignment
    metrics.record_assignment(shard.shard.index, shard.shard.count, shard.pairs, shard.configured)
    health = HealthState(metrics)
    shutdown = Shutdown()

    for connection in plan.connections:
        health.add_connection(connection.name, connection.exchange, connection.symbols)
    # Before the first scrape: every series the plan knows exists from the start, counters
    # at 0, so the first event of each is an increase an alert can see.
    create_series(metrics, plan, wall_clock())
    instrument_jobs = plan_instruments(plan)
    create_instrument_series(metrics, instrument_jobs)

    event_tx, event_rx = trio.open_memory_channel[list[Event]](cfg.event_channel_size)
    file_tx, file_rx = trio.open_memory_channel[Path](cfg.file_channel_size)
    metrics.watch_channel("events", lambda: _fill(event_rx))
    metrics.watch_channel("finished_files", lambda: _fill(file_rx))
    doorbell = Doorbell(ring_at_for(cfg.event_channel_size))
    ctx = IngestContext(settings.websocket, metrics, health, wall_clock, doorbell)
    upload_cfg = UploadSettings.from_settings(settings)
    try:
        tap, outlet_tasks = open_outlets(settings, metrics.outlets, health)
    except OutletSettingsError as exc:
        raise ServiceError(str(exc), EXIT_BAD_SETTINGS) from None
    analytics = _open_analytics(plan, metrics, wall_clock)
    file_metadata = file_metadata_source(plan)

    async with trio.open_nursery() as root:
        port = await root.start(run_http_server, listener, health, metrics, admin)
        if handle_signals:
            await root.start(_watch_signals, shutdown, root.cancel_scope, cfg.shutdown_timeout_secs)
        else:
            root.start_soon(_arm_deadline, shutdown, root.cancel_scope, cfg.shutdown_timeout_secs)
        await root.start(
            run_disk_monitor,
            Path(settings.storage.data_dir),
            settings.storage.disk_high_water_percent,
            health,
            metrics.disk,
        )
        if settings.storage.retention_days is not None:
            await root.start(
                partial(
                    run_retention,
                    Path(settings.storage.data_dir),
                    settings.storage.retention_days,
                    settings.aws.bucket if settings.storage.mode != "local" else None,
                    wall_clock=wall_clock,
                )
            )
        async with trio.open_nursery() as pipeline:
            # Before the writer: the router offers them its first rows.
            await start_outlets(pipeline, outlet_tasks)
            writer = partial(
                run_writer,
                settings.storage,
                event_rx,
                file_tx,
                metrics,
                wall_clock=wall_clock,
                home_server_name=settings.aws.home_server_name,
                file_metadata=file_metadata,
                doorbell=doorbell,
                tap=tap,
                analytics=analytics,
                open_files=open_files(plan),
            )
            await pipeline.start(writer)
            # After the writer: its start-up recovery is done before the backlog scan.
            if upload_cfg.uploads:
                from collector.upload.uploader import run_uploader  # loads boto3

                await pipeline.start(run_uploader, upload_cfg, file_rx, metrics, health)
            else:
                pipeline.start_soon(_keep_finished_files, file_rx)
            # The original send side stays open while the ingest tasks run: connections
            # added at run time take their clones from it (collector.control).
            with event_tx:
                async with trio.open_nursery() as ingest:
                    runners: dict[str, ExchangeRunner] = {}
                    for exchange in plan.exchanges:
                        runners[exchange.adapter.name] = await ingest.start(
                            run_exchange,
                            exchange.adapter,
                            exchange.connections,
                            ctx,
                            event_tx.clone(),
                        )
                    # Runs even without a job: markets added at run time may list instruments.
                    instruments: InstrumentListings = await ingest.start(
                        partial(
                            run_instruments,
                            instrument_jobs,
                            event_tx.clone(),
                            metrics,
                            wall_clock,
                            interval_secs=cfg.instruments_interval_secs,
                            retry_secs=cfg.instruments_retry_secs,
                        )
                    )

                    async def start_exchange(
                        adapter: ExchangeAdapter, plans: list[ConnectionPlan]
                    ) -> ExchangeRunner:
                        runner: ExchangeRunner = await ingest.start(
                            run_exchange, adapter, plans, ctx, event_tx.clone()
                        )
                        return runner

                    controller = Controller(
                        settings,
                        runners,
                        start_exchange,
                        ctx,
                        file_metadata=file_metadata,
                        analytics=analytics,
                        instruments=instruments,
                        wall_clock=wall_clock,
                        sharded=shard.sharded,
                        configured_pairs=shard.configured,
                    )
                    if reload is not None:
                        await ingest.start(watch_reloads, controller, reload)
                    if listings is not None:
                        await ingest.start(watch_listings, controller, listings)
                    if settings.kafka.control_topic is not None:
                        from collector.control.kafka import run_control_consumer  # librdkafka

                        await ingest.start(run_control_consumer, settings.kafka, controller)
                    if admin is not None:
                        admin.controller = controller
                    task_status.started(ServiceHandle(port, shutdown, health, metrics, controller))
                    log.info(
                        "collector started",
                        extra={"connections": len(health.connections), "http_port": port},
                    )
                    await shutdown.requested.wait()
                    log.info("shutting down", extra={"reason": shutdown.reason})
                    health.shutting_down = True
                    if admin is not None:
                        admin.controller = None
                    ingest.cancel_scope.cancel()
            # The channel's last sender may just have closed: the writer sees its end now.
            doorbell.ring()
        root.cancel_scope.cancel()
    if shutdown.forced:
        log.error("stopped without draining; unfinished files will be finalized at the next start")
        return EXIT_FORCED_STOP
    if _deadline_hit(root.cancel_scope):
        log.error(
            "shutdown timed out after %ss; unfinished files will be finalized at the next start",
            cfg.shutdown_timeout_secs,
        )
        return EXIT_SHUTDOWN_TIMEOUT
    log.info("collector stopped")
    return EXIT_OK


def _admin_api(variable: str | None, env: Mapping[str, str]) -> AdminApi | None:
    """The admin API when ``collector.admin_token_env`` names a variable (None: off);
    ServiceError (exit status 2) when that variable is unset or empty. The message names
    the variable, never a value."""
    if variable is None:
        return None
    token = env.get(variable, "")
    if not token:
        raise ServiceError(
            f"collector.admin_token_env names {variable}, which is unset or empty "
            "(set it to the admin API's token, or remove admin_token_env)",
            EXIT_BAD_SETTINGS,
        )
    return AdminApi(token)


def _open_analytics(
    plan: ServicePlan, metrics: Metrics, wall_clock: WallClock
) -> TradeAnalytics | None:
    """The trade analytics for the writer's router (None with ``analytics.enabled``
    false: the router then has none, at no cost); creates their series."""
    cfg = plan.settings.analytics
    if not cfg.enabled:
        return None
    return TradeAnalytics(
        large_trade_sizes(plan.settings.markets),
        cfg.interval_secs,
        metrics.analytics,
        table=cfg.table,
        now_us=wall_clock(),
        top_n=cfg.top_n,
    )


def open_files(plan: ServicePlan) -> int:
    """How many files the plan's streams can have open at once: one per subscription and
    one status file per symbol of every connection (an upper bound: a symbol's status
    file is counted on each of its connections)."""
    return sum(len(c.subscriptions) + len(c.symbols) for c in plan.connections)


def file_metadata_source(plan: ServicePlan) -> FileMetadataSource:
    """The files' metadata for ``plan``: its markets' options, the instance name
    (``aws.home_server_name``, else the host name) and the shard."""
    instance = plan.settings.aws.home_server_name or socket.gethostname()
    return FileMetadataSource(
        plan.markets_by_pair(), instance=instance, shard=str(plan.assignment.shard)
    )


def _fill(
    channel: trio.MemoryReceiveChannel[list[Event]] | trio.MemoryReceiveChannel[Path],
) -> tuple[int, float]:
    stats = channel.statistics()
    return stats.current_buffer_used, stats.max_buffer_size


def _deadline_hit(scope: trio.CancelScope) -> bool:
    return scope.deadline != float("inf") and trio.current_time() >= scope.deadline


async def _arm_deadline(shutdown: Shutdown, root: trio.CancelScope, grace_secs: float) -> None:
    await shutdown.requested.wait()
    root.deadline = trio.current_time() + grace_secs


async def _watch_signals(
    shutdown: Shutdown,
    root: trio.CancelScope,
    grace_secs: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """First SIGINT/SIGTERM: orderly shutdown within ``grace_secs``. Second: stop at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not shutdown.requested.is_set():
                shutdown.request(name)
                root.deadline = trio.current_time() + grace_secs
            else:
                log.warning("second %s: stopping now without draining", name)
                shutdown.forced = True
                root.cancel()


async def _keep_finished_files(files: trio.MemoryReceiveChannel[Path]) -> None:
    """Local storage: finished files stay where the writer put them."""
    with files:
        async for path in files:
            log.info("file finished", extra={"path": str(path)})
