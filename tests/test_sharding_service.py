"""Sharded services: the data lands where an unsharded run puts it; the shard is in the
metrics, the files' metadata and the log lines.

Two real services (shards 0/2 and 1/2 of the same settings), each against its own fake
Binance on loopback, scraped over real HTTP.
"""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from collector.logs import setup_logging
from collector.planning import plan_service
from collector.sharding import Shard, assignment, shard_settings
from collector.storage import read_file_metadata
from tests.fakes.binance import FakeBinance
from tests.test_http import fetch_metrics, sample
from tests.test_service import TIMEOUT, service_settings, settle, start_plan, trades


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


async def test_shards_write_the_unsharded_layout_and_say_which_shard_they_are(
    tmp_path: Path,
) -> None:
    full = service_settings("ws://127.0.0.1:1", tmp_path)  # URL replaced per shard below
    shards = [assignment(full, Shard(index, 2)) for index in range(2)]
    assert sorted(pair for a in shards for pair in a.pairs) == [
        ("binance", "BTCUSDT"),
        ("binance", "ETHUSDT"),
    ]
    scraped = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for index, assigned in enumerate(shards):
                fake = FakeBinance()
                await nursery.start(fake.run)
                whole = service_settings(fake.url, tmp_path / f"pod-{index}")
                plan = plan_service(shard_settings(whole, assigned.shard), assigned)
                service = await start_plan(nursery, plan)
                await fake.wait_subscribed()
                [(_, symbol)] = assigned.pairs
                for frame in trades(symbol.lower(), range(1, 4)):
                    assert await fake.send(frame) == 1
                await settle()
                scraped.append(await fetch_metrics(service.port))
                await service.stop()
            nursery.cancel_scope.cancel()

    for index, (assigned, samples) in enumerate(zip(shards, scraped, strict=True)):
        [(exchange, symbol)] = assigned.pairs
        assert sample(samples, "collector_shard_info", shard=str(index), shards="2") == 1
        assert sample(samples, "collector_shard_pairs") == 1
        assert sample(samples, "collector_configured_pairs") == 2
        labels = {"exchange": exchange, "symbol": symbol}
        assert sample(samples, "collector_shard_pair_info", **labels) == 1
        assert [name for name, _ in samples if name == "collector_shard_pair_info"] == [
            "collector_shard_pair_info"
        ]  # only its own pair

        # The layout of an unsharded run: no level for the shard (or anything else).
        data_dir = tmp_path / f"pod-{index}"
        files = parquet_files(data_dir)
        assert files
        for path in files:
            parts = path.relative_to(data_dir).parts
            assert parts[:2] == (exchange, symbol)
            assert len(parts) == 5, parts  # exchange/symbol/data_type/date/start_ms.parquet
            meta = read_file_metadata(path)
            assert (meta.exchange, meta.symbol) == (exchange, symbol)
            assert meta.shard == f"{index}/2"
            assert meta.instance == socket.gethostname()  # no home_server_name set
    assert sum(sample(s, "collector_shard_pairs") for s in scraped) == sample(
        scraped[0], "collector_configured_pairs"
    )


async def test_an_unsharded_service_reports_every_pair_as_shard_0_of_1(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = service_settings(fake.url, tmp_path)
            service = await start_plan(nursery, plan_service(settings))
            await fake.wait_subscribed()
            samples = await fetch_metrics(service.port)
            await service.stop()
            nursery.cancel_scope.cancel()
    assert sample(samples, "collector_shard_info", shard="0", shards="1") == 1
    assert sample(samples, "collector_shard_pairs") == 2
    assert sample(samples, "collector_configured_pairs") == 2


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as it was after a test that configures it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_every_log_line_of_a_shard_names_it() -> None:
    stream = io.StringIO()
    setup_logging("info", "json", stream, fields={"shard": "1/3"})
    logging.getLogger("collector.test").info("one", extra={"path": "x"})
    logging.getLogger("other.library").warning("two")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["msg"], line["shard"]) for line in lines] == [("one", "1/3"), ("two", "1/3")]
    assert lines[0]["path"] == "x"

    text = io.StringIO()
    setup_logging("info", "text", text)  # not sharded: no field
    logging.getLogger("collector.test").info("three")
    assert "shard" not in text.getvalue()
