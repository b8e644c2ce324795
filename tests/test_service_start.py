"""Start-up guards of the real service in-process: the data directory's lock and the port.

A second service on a running one's ``data_dir`` is refused before its recovery could touch
the first one's open journals (the data loss this lock exists for), and a port in use stops
a service before it contacts any venue. Both are ``ServiceError``: one line and an exit
code (what the command line prints is checked in ``test_startup_failures.py``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import msgspec
import pytest
import trio

from collector.config import Settings
from collector.planning import plan_service
from collector.service import (
    EXIT_DATA_DIR_IN_USE,
    EXIT_OK,
    EXIT_START_FAILED,
    ServiceError,
    run_service,
)
from collector.storage.lock import DataDirLock
from tests.fakes.binance import FakeBinance
from tests.test_service import (
    TIMEOUT,
    read_rows,
    service_settings,
    settle,
    start_service,
    trades,
)


async def wait_for_journal(data_dir: Path) -> Path:
    """Until the first service's trades journal is on disk (its flush runs in a thread)."""
    while True:
        found = await trio.to_thread.run_sync(lambda: sorted(data_dir.rglob("*.journal.arrows")))
        if found:
            return found[0]
        await trio.sleep(0.01)


async def test_second_service_on_the_same_data_dir_is_refused_and_touches_nothing(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = service_settings(fake.url, data_dir, flush_max_rows=1)
            first = await start_service(nursery, settings)
            await fake.wait_subscribed()
            for frame in trades("btcusdt", range(1, 11)):
                assert await fake.send(frame) == 1
            await settle()
            journal = await wait_for_journal(data_dir)
            before = journal.stat()

            with pytest.raises(ServiceError) as refused:
                await run_service(plan_service(settings), handle_signals=False)

            assert refused.value.exit_code == EXIT_DATA_DIR_IN_USE == 2
            message = str(refused.value)
            assert "is in use by another collector" in message
            assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
            # The first service's open journal is as it was: not recovered, not deleted.
            after = journal.stat()
            assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
            assert len(fake.clients) == 1  # the refused one never connected
            for frame in trades("btcusdt", range(11, 21)):
                assert await fake.send(frame) == 1
            await settle()
            assert await first.stop() == EXIT_OK
            nursery.cancel_scope.cancel()
    # Everything the first service received is in its finished files.
    ids = [r["trade_id"] for r in read_rows(data_dir, "trades", "BTCUSDT")]
    assert ids == [str(i) for i in range(1, 21)]


async def test_the_lock_is_released_when_the_service_stops(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = service_settings(fake.url, data_dir)
            service = await start_service(nursery, settings)
            assert await service.stop() == EXIT_OK
            again = await start_service(nursery, settings)  # same process, same directory
            assert await again.stop() == EXIT_OK
            nursery.cancel_scope.cancel()
    with DataDirLock.acquire(data_dir) as lock:
        assert lock.held


async def test_port_in_use_fails_before_any_venue_is_contacted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                fake = FakeBinance()
                await nursery.start(fake.run)
                plan = plan_service(with_port(service_settings(fake.url, data_dir), port))
                with pytest.raises(ServiceError) as failed:
                    await run_service(plan, handle_signals=False)
                assert fake.clients == []
                nursery.cancel_scope.cancel()
    assert failed.value.exit_code == EXIT_START_FAILED == 1
    assert str(failed.value) == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use "
        "(collector.metrics_host, collector.metrics_port)"
    )
    # It let the data directory go again on its way out.
    with DataDirLock.acquire(data_dir) as lock:
        assert lock.held


def with_port(settings: Settings, port: int) -> Settings:
    collector = msgspec.structs.replace(settings.collector, metrics_port=port)
    return msgspec.structs.replace(settings, collector=collector)


async def test_kafka_options_librdkafka_refuses_stop_the_start_in_one_line(
    tmp_path: Path,
) -> None:
    """An option only librdkafka can judge (an unknown key) is found when the producer is
    opened, before any task starts: a bad-settings start-up error, not a traceback from a
    running service."""
    data_dir = tmp_path / "data"
    base = service_settings("ws://127.0.0.1:9/", data_dir)
    settings = msgspec.structs.replace(
        base,
        kafka=msgspec.structs.replace(
            base.kafka,
            enabled=True,
            bootstrap_servers="127.0.0.1:9",
            options={"no.such.property": "1"},
        ),
    )
    with pytest.raises(ServiceError) as refused:
        await run_service(plan_service(settings), handle_signals=False)
    assert refused.value.exit_code == 2
    message = str(refused.value)
    assert message.startswith("kafka.options: ")
    assert "no.such.property" in message
    assert "\n" not in message
    assert list(data_dir.rglob("*.journal")) == []
