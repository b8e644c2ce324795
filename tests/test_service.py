"""The real service in-process against the fake Binance: HTTP, metrics, graceful shutdown.

Real Trio clock (the HTTP client runs in a worker thread); every wait is bounded with
``trio.fail_after`` and synchronisation is by the fake's waits and
``wait_all_tasks_blocked``, never by sleeping.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import prometheus_client
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio
import trio.testing

from collector.config import Settings
from collector.planning import ServicePlan, plan_service
from collector.service import EXIT_OK, ServiceHandle, run_service
from collector.settings_check import parse_settings
from collector.storage import journal as journal_module
from collector.storage.lock import LOCK_NAME
from tests.fakes.binance import (
    FakeBinance,
    FakeClient,
    book_ticker_frame,
    depth20_frame,
    trade_frame,
)
from tests.test_http import fetch_json, fetch_metrics, sample

TIMEOUT = 15.0
TIME_US = 1_700_000_000_000_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def service_settings(
    fake_url: str, data_dir: Path, *, event_channel_size: int = 64, flush_max_rows: int = 20_000
) -> Settings:
    return parse_settings(
        {
            "collector": {
                "metrics_host": "127.0.0.1",
                "metrics_port": 0,
                "event_channel_size": event_channel_size,
                "file_channel_size": 32,
                "shutdown_timeout_secs": 10,
            },
            "storage": {"data_dir": str(data_dir), "flush_max_rows": flush_max_rows},
            "markets": [
                {"exchange": "binance", "symbols": ["btcusdt", "ethusdt"], "base_url": fake_url}
            ],
        }
    )


@attrs.define
class RunningService:
    handle: ServiceHandle | None = None
    exit_code: int | None = None
    done: trio.Event = attrs.field(factory=trio.Event)

    @property
    def port(self) -> int:
        assert self.handle is not None
        return self.handle.http_port

    async def run(self, plan: ServicePlan, *, task_status: trio.TaskStatus[ServiceHandle]) -> None:
        self.exit_code = await run_service(plan, handle_signals=False, task_status=task_status)
        self.done.set()

    async def stop(self) -> int:
        assert self.handle is not None
        self.handle.shutdown.request("test")
        await self.done.wait()
        assert self.exit_code is not None
        return self.exit_code


async def start_service(nursery: trio.Nursery, settings: Settings) -> RunningService:
    return await start_plan(nursery, plan_service(settings))


async def start_plan(nursery: trio.Nursery, plan: ServicePlan) -> RunningService:
    service = RunningService()
    service.handle = await nursery.start(service.run, plan)
    return service


async def settle() -> None:
    """Until every task (the service's and the fake's) is waiting."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.01)


def trades(symbol: str, ids: range) -> list[str]:
    return [trade_frame(symbol, i, 100.0 + i, 0.25, TIME_US + i, i % 2 == 0) for i in ids]


class GatedFake(FakeBinance):
    """Accepts connections but reads nothing (so acknowledges nothing) until ``gate`` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()

    async def _receive_loop(self, client: FakeClient) -> None:
        await self.gate.wait()
        await super()._receive_loop(client)


async def test_ready_is_503_until_subscribed_then_200(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = GatedFake()
            await nursery.start(fake.run)
            service = await start_service(nursery, service_settings(fake.url, tmp_path))
            await fake.wait_connected()
            await settle()

            assert await fetch_json(service.port, "/ready") == (
                503,
                {"ready": False, "waiting_for": ["binance-0"]},
            )
            status, report = await fetch_json(service.port, "/health")
            assert status == 200
            assert report["ready"] is False
            assert report["connections"]["up"] == 1
            assert report["connections"]["total"] == 1

            fake.gate.set()
            await fake.wait_subscribed()
            await settle()
            assert await fetch_json(service.port, "/ready") == (
                200,
                {"ready": True, "waiting_for": []},
            )
            status, report = await fetch_json(service.port, "/health")
            assert report["status"] == "healthy"
            assert report["ready"] is True
            assert report["connections"]["detail"]["binance-0"]["subscribed"] is True
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()


async def test_the_service_opens_the_connections_it_was_handed(tmp_path: Path) -> None:
    """Connections are planned once, by the caller: the service runs the plan it is given
    (here with its connection renamed) and does not plan again from the settings."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            plan = plan_service(service_settings(fake.url, tmp_path))
            [exchange] = plan.exchanges
            [connection] = exchange.connections
            renamed = attrs.evolve(connection, name="planned-0")
            plan = attrs.evolve(plan, exchanges=(attrs.evolve(exchange, connections=(renamed,)),))
            service = await start_plan(nursery, plan)
            await fake.wait_subscribed()
            await settle()
            status, report = await fetch_json(service.port, "/health")
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()
    assert status == 200
    assert list(report["connections"]["detail"]) == ["planned-0"]
    assert report["connections"]["detail"]["planned-0"]["subscribed"] is True


async def test_metrics_and_health_report_what_was_received(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            service = await start_service(nursery, service_settings(fake.url, tmp_path))
            await fake.wait_subscribed()
            frames = trades("btcusdt", range(1, 26))
            frames.append(depth20_frame("ethusdt", 5, [(1.0, 2.0)], [(1.1, 3.0)]))
            frames.append(book_ticker_frame("ethusdt", 6, 1.0, 2.0, 1.1, 3.0))
            for frame in frames:
                assert await fake.send(frame) == 1
            await settle()
            samples = await fetch_metrics(service.port)
            status, report = await fetch_json(service.port, "/health")
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    received = len(frames) + 1  # and the one SUBSCRIBE acknowledgement
    assert sample(samples, "collector_messages_received_total", exchange="binance") == received
    for symbol in SYMBOLS:
        labels = {"exchange": "binance", "symbol": symbol}
        assert sample(samples, "collector_websocket_connected", **labels) == 1
    assert (
        sample(
            samples,
            "collector_websocket_connections_total",
            exchange="binance",
            outcome="connected",
        )
        == 1
    )
    assert sample(samples, "collector_messages_dropped_total", exchange="binance") == 0
    assert sample(samples, "collector_parse_errors_total", exchange="binance") == 0
    assert sample(samples, "collector_channel_capacity", channel="events") == 64
    assert sample(samples, "collector_channel_capacity", channel="finished_files") == 32
    assert 0 <= sample(samples, "collector_channel_items", channel="events") <= 64
    assert sample(samples, "collector_exchange_latency_seconds_count", exchange="binance") >= 1

    assert status == 200
    assert report["status"] == "healthy"
    assert report["connections"]["up"] == 1
    assert report["connections"]["total"] == 1
    assert report["messages_received"] == received
    assert report["messages_dropped"] == 0
    assert report["parse_errors"] == 0


async def test_two_services_in_one_process_do_not_share_metrics(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fakes = [FakeBinance(), FakeBinance()]
            services: list[RunningService] = []
            for index, fake in enumerate(fakes):
                await nursery.start(fake.run)
                settings = service_settings(fake.url, tmp_path / f"service{index}")
                services.append(await start_service(nursery, settings))
            for fake, count in zip(fakes, (3, 5), strict=True):
                await fake.wait_subscribed()
                for frame in trades("btcusdt", range(1, count + 1)):
                    assert await fake.send(frame) == 1
            await settle()
            scraped = [await fetch_metrics(s.port) for s in services]
            handles = [s.handle for s in services]
            for service in services:
                assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    assert services[0].port != services[1].port
    received = [sample(s, "collector_messages_received_total", exchange="binance") for s in scraped]
    assert received == [3 + 1, 5 + 1]
    assert handles[0] is not None
    assert handles[1] is not None
    assert handles[0].metrics.registry is not handles[1].metrics.registry
    assert handles[0].metrics.registry is not prometheus_client.REGISTRY
    assert (
        prometheus_client.REGISTRY.get_sample_value(
            "collector_messages_received_total", {"exchange": "binance"}
        )
        is None
    )


def all_files(data_dir: Path) -> list[Path]:
    """Every file under ``data_dir`` but the service's lock file (which stays after a stop)."""
    return sorted(p for p in data_dir.rglob("*") if p.is_file() and p.name != LOCK_NAME)


def read_rows(data_dir: Path, data_type: str, symbol: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((data_dir / "binance" / symbol / data_type).rglob("*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


async def test_graceful_shutdown_puts_every_event_in_finished_parquet(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            service = await start_service(nursery, service_settings(fake.url, tmp_path))
            await fake.wait_subscribed()
            for frame in trades("btcusdt", range(1, 201)):
                assert await fake.send(frame) == 1
            await fake.send(depth20_frame("ethusdt", 5, [(1.0, 2.0)], [(1.1, 3.0)]))
            await fake.send(book_ticker_frame("ethusdt", 6, 1.0, 2.0, 1.1, 3.0))
            await settle()
            assert await service.stop() == EXIT_OK
            await fake.wait_disconnected()  # the connection was closed, not abandoned
            nursery.cancel_scope.cancel()

    files = all_files(tmp_path)
    assert files, "nothing was written"
    assert all(p.suffix == ".parquet" for p in files), files  # no journals, no temp files

    btc_trades = read_rows(tmp_path, "trades", "BTCUSDT")
    assert [r["trade_id"] for r in btc_trades] == [str(i) for i in range(1, 201)]
    assert [r["price"] for r in btc_trades[:2]] == [101.0, 102.0]
    assert [r["side"] for r in btc_trades[:2]] == ["buy", "sell"]
    (book,) = read_rows(tmp_path, "orderbook", "ETHUSDT")
    assert (book["kind"], book["sequence"], book["bids"]) == (
        "snapshot",
        5,
        [{"price": 1.0, "size": 2.0}],
    )
    (ticker,) = read_rows(tmp_path, "ticker", "ETHUSDT")
    assert (ticker["bid_price"], ticker["ask_price"]) == (1.0, 1.1)
    for symbol in SYMBOLS:
        status = read_rows(tmp_path, "status", symbol)
        assert [(r["event"], r["data_type"]) for r in status] == [
            ("connected", None),
            ("subscribed", "trades"),
            ("subscribed", "orderbook"),
            ("subscribed", "ticker"),
            ("disconnected", None),
        ]
        assert status[-1]["detail"] == "cancelled"


# --------------------------------------------------------------------------- backpressure


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Journal writes wait until the returned event is set: a disk that stalls."""
    real = journal_module._pwrite_all
    gate = threading.Event()

    def slow_write(fd: int, data: pa.Buffer, offset: int) -> None:
        gate.wait(timeout=TIMEOUT)
        real(fd, data, offset)

    monkeypatch.setattr(journal_module, "_pwrite_all", slow_write)
    yield gate
    gate.set()  # a failed test leaves no worker thread waiting


async def fill_until_waiting(fake: FakeBinance, service: RunningService) -> int:
    """Send trades one read at a time until the connection waits for the stalled writer
    (the writer holds two flushes' worth, the event channel two batches); the last id."""
    assert service.handle is not None
    connection = service.handle.health.connections["binance-0"]
    trade_id = 0
    while connection.writer_wait_since is None:
        trade_id += 1
        assert await fake.send(trades("btcusdt", range(trade_id, trade_id + 1))[0]) == 1
        await settle()
    return trade_id


async def test_a_stalled_disk_makes_the_connection_wait_and_every_frame_reaches_parquet(
    tmp_path: Path, slow_disk: threading.Event
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = service_settings(fake.url, tmp_path, event_channel_size=2, flush_max_rows=5)
            service = await start_service(nursery, settings)
            await fake.wait_subscribed()
            waiting_from = await fill_until_waiting(fake, service)
            for frame in trades("btcusdt", range(waiting_from + 1, 201)):
                assert await fake.send(frame) == 1  # the kernel holds them
            await settle()
            assert service.handle is not None
            metrics = service.handle.metrics
            received = metrics.messages_received.labels("binance")
            assert received._value.get() == 1 + waiting_from  # it stopped reading
            slow_disk.set()
            while received._value.get() < 1 + 200:
                await settle()
            samples = await fetch_metrics(service.port)
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    btc_trades = read_rows(tmp_path, "trades", "BTCUSDT")
    assert [r["trade_id"] for r in btc_trades] == [str(i) for i in range(1, 201)]
    events = [r["event"] for r in read_rows(tmp_path, "status", "BTCUSDT")]
    assert events == ["connected", "subscribed", "subscribed", "subscribed", "disconnected"]
    labels = {"exchange": "binance", "connection": "binance-0"}
    assert sample(samples, "collector_messages_dropped_total", exchange="binance") == 0
    assert sample(samples, "collector_writer_wait_seconds_total", **labels) > 0
    assert sample(samples, "collector_writer_waiting_seconds", **labels) == 0


async def test_shutdown_while_the_connection_waits_keeps_what_it_read(
    tmp_path: Path, slow_disk: threading.Event
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = service_settings(fake.url, tmp_path, event_channel_size=2, flush_max_rows=5)
            service = await start_service(nursery, settings)
            await fake.wait_subscribed()
            last_read = await fill_until_waiting(fake, service)
            assert service.handle is not None
            service.handle.shutdown.request("test")
            await settle()  # the connection is cancelled while it waits
            slow_disk.set()  # the writer comes back while the connection closes
            await service.done.wait()
            assert service.exit_code == EXIT_OK
            dropped = service.handle.metrics.sample(
                "collector_messages_dropped_total", {"exchange": "binance"}
            )
            nursery.cancel_scope.cancel()

    # Every frame it read, the one it was waiting to hand over too, is in Parquet.
    btc_trades = read_rows(tmp_path, "trades", "BTCUSDT")
    assert [r["trade_id"] for r in btc_trades] == [str(i) for i in range(1, last_read + 1)]
    status = read_rows(tmp_path, "status", "BTCUSDT")
    assert [r["event"] for r in status][-1] == "disconnected"
    assert status[-1]["detail"] == "cancelled"
    assert dropped == 0


def test_tune_process_sets_the_gc_and_the_thread_switch_interval() -> None:
    # In a child process: tune_process freezes the garbage collector for good.
    script = (
        "import gc, sys\n"
        "from collector.service import GC_THRESHOLDS, SWITCH_INTERVAL_SECS, tune_process\n"
        "tune_process()\n"
        "assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold()\n"
        "assert sys.getswitchinterval() == SWITCH_INTERVAL_SECS, sys.getswitchinterval()\n"
        "assert gc.get_freeze_count() > 0\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
