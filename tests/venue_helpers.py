"""Scaffolding shared by the per-venue service tests (``tests/test_*_service.py``).

Settings for one market, the service run in-process, waits on its metrics, the Parquet rows
read back, and one supervised connection in virtual time.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import trio
import trio.testing

from collector.clock import WallClock, system_wall_us
from collector.config import MarketSettings, Settings, WebSocketSettings
from collector.events import Event
from collector.exchanges.base import ExchangeAdapter
from collector.health import HealthState
from collector.ingest.connection import IngestContext
from collector.ingest.supervisor import supervise_connection
from collector.metrics import Metrics
from collector.planning import plan_service
from collector.service import EXIT_OK, ServiceHandle, run_service
from collector.settings_check import parse_settings
from collector.storage.layout import safe_component
from tests.procs import without_order

RECEIVED = "collector_messages_received_total"

# Pings, pongs and venue heartbeats are no data: a connection that gets only those is
# replaced after message_timeout_secs. The keepalive tests run quiet for minutes to test
# the venue's idle rules, so they set a message timeout longer than the test.
QUIET_WEBSOCKET: Mapping[str, Any] = {"message_timeout_secs": 3600.0}

Row = dict[str, Any]


def venue_settings(
    exchange: str,
    url: str,
    data_dir: Path,
    symbols: Sequence[str],
    *,
    log_level: str | None = None,
    websocket: Mapping[str, Any] | None = None,
    **market: Any,
) -> Settings:
    """One market of ``exchange`` at ``url``, metrics on a free local port, data in ``data_dir``.

    ``log_level`` is left at its default unless given; ``websocket`` sets ``[websocket]``
    keys; ``market`` adds market settings (``feeds``, ``category``, ``book_depth`` ...).
    """
    collector: dict[str, Any] = {"metrics_host": "127.0.0.1", "metrics_port": 0}
    if log_level is not None:
        collector["log_level"] = log_level
    return parse_settings(
        {
            "collector": collector,
            "storage": {"data_dir": str(data_dir)},
            "websocket": dict(websocket or {}),
            "markets": [
                {"exchange": exchange, "symbols": list(symbols), "base_url": url, **market}
            ],
        }
    )


async def run_until_stopped(
    nursery: trio.Nursery, settings: Settings, *, wall_clock: WallClock = system_wall_us
) -> tuple[ServiceHandle, Callable[[], Awaitable[int]]]:
    """Start the service in ``nursery``; ``stop()`` requests shutdown and returns the exit code."""
    done = trio.Event()
    codes: list[int] = []

    async def service(task_status: trio.TaskStatus[ServiceHandle]) -> None:
        codes.append(
            await run_service(
                plan_service(settings),
                wall_clock=wall_clock,
                handle_signals=False,
                task_status=task_status,
            )
        )
        done.set()

    handle: ServiceHandle = await nursery.start(service)

    async def stop() -> int:
        handle.shutdown.request("test")
        await done.wait()
        return codes[0]

    return handle, stop


@asynccontextmanager
async def running_service(
    settings: Settings,
    wall_clock: WallClock = system_wall_us,
    clock: trio.testing.MockClock | None = None,
) -> AsyncIterator[ServiceHandle]:
    """Run the service in-process; on exit request shutdown and wait for a clean stop.

    With a MockClock, autojump is turned off for the shutdown: while the writer finalizes
    files in worker threads every Trio task is blocked, and autojump would leap to the
    shutdown deadline.
    """
    async with trio.open_nursery() as nursery:
        handle, stop = await run_until_stopped(nursery, settings, wall_clock=wall_clock)
        yield handle
        if clock is not None:
            clock.autojump_threshold = math.inf
        code = await stop()
    assert code == EXIT_OK


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a metric or health predicate (they have no event to wait on); callers bound it."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.005)


def received(handle: ServiceHandle, exchange: str | None = None) -> float:
    """Messages the service received from ``exchange`` (acks included); all of them if None."""
    if exchange is None:
        return handle.metrics.sum_samples(RECEIVED)
    return handle.metrics.sample(RECEIVED, {"exchange": exchange})


async def wait_received(handle: ServiceHandle, count: int, exchange: str | None = None) -> None:
    """Until the service has received ``count`` messages (see :func:`received`)."""
    await wait_until(lambda: received(handle, exchange) >= count)


async def settle_frozen(clock: trio.testing.MockClock, predicate: Callable[[], bool]) -> None:
    """Let worker threads (writer, HTTP) run until ``predicate`` holds, Trio's clock frozen.

    The autojump clock would otherwise jump to the next deadline while a thread runs.
    """
    clock.autojump_threshold = math.inf
    give_up = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < give_up, "condition not reached"
        await trio.to_thread.run_sync(time.sleep, 0.001)


def _parquet_files(data_dir: Path, exchange: str, symbol: str | None, data_type: str) -> list[Path]:
    """The finished files of one stream (of every symbol if ``symbol`` is None), path order."""
    symbols = "*" if symbol is None else safe_component(symbol)  # no glob characters left
    pattern = f"{symbols}/{data_type}/**/*.parquet"
    return sorted((data_dir / safe_component(exchange)).glob(pattern))


def read_rows(data_dir: Path, exchange: str, symbol: str, data_type: str) -> list[Row]:
    """Every row of one (exchange, symbol, data_type) stream, file by file as written."""
    rows: list[Row] = []
    for path in _parquet_files(data_dir, exchange, symbol, data_type):
        rows.extend(pq.read_table(path).to_pylist())
    return without_order(rows)


def read_rows_by_time(data_dir: Path, exchange: str, symbol: str, data_type: str) -> list[Row]:
    """:func:`read_rows` ordered by collector time (a stable sort: ties keep file order)."""
    rows = read_rows(data_dir, exchange, symbol, data_type)
    return sorted(rows, key=lambda r: r["timestamp_collector"])


def read_rows_us(data_dir: Path, exchange: str, data_type: str) -> list[Row]:
    """Every row of one data type, every symbol, timestamps as integer microseconds.

    Ordered by collector time, then sequence (ties keep file order).
    """
    rows: list[Row] = []
    for path in _parquet_files(data_dir, exchange, None, data_type):
        table = pq.read_table(path)
        for name in ("timestamp_exchange", "timestamp_collector"):
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, table.column(name).cast(pa.int64()))
        rows.extend(table.to_pylist())
    rows = without_order(rows)
    return sorted(rows, key=lambda r: (r["timestamp_collector"], r["sequence"] or 0))


def without_collector_time(rows: list[Row]) -> list[Row]:
    return [{k: v for k, v in row.items() if k != "timestamp_collector"} for row in rows]


def start_supervised(
    nursery: trio.Nursery,
    adapter: ExchangeAdapter,
    market: MarketSettings,
    wall_clock: WallClock,
    buffer: int = 10_000,
    settings: WebSocketSettings | None = None,
) -> tuple[Metrics, HealthState, trio.MemoryReceiveChannel[list[Event]]]:
    """Supervise the one connection ``adapter`` plans for ``market``, without the service.

    For keepalive tests in virtual time: the whole service uses worker threads, which would
    make the autojump clock leap ahead. Returns the connection's metrics, health and the
    channel its event batches arrive on. ``settings``: the default ``[websocket]`` settings.
    """
    [plan] = adapter.plan_connections([market])
    metrics = Metrics()
    health = HealthState(metrics)
    health.add_connection(plan.name, plan.exchange, plan.symbols)
    ctx = IngestContext(settings or WebSocketSettings(), metrics, health, wall_clock)
    tx, rx = trio.open_memory_channel[list[Event]](buffer)
    nursery.start_soon(supervise_connection, plan, adapter, ctx, tx)
    return metrics, health, rx


def drain(rx: trio.MemoryReceiveChannel[list[Event]]) -> list[Event]:
    """Every event already sent on ``rx``, without waiting."""
    events: list[Event] = []
    while True:
        try:
            events.extend(rx.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return events
