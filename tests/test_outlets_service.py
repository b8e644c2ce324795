"""The live outlets with the real service, the fake Binance and real servers on loopback.

Kafka is the Tansu broker, Redis a real ``redis-server`` (see :mod:`tests.outlet_servers`).
What the service sent is read back with ordinary clients and compared with the rows of
the finished Parquet files: same events, same order per key. Real Trio clock (the clients
run in worker threads); every wait is bounded by ``trio.fail_after``, and conditions are
polled, never slept on to order events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import redis
import trio

from collector.config import Settings
from collector.service import EXIT_OK
from collector.settings_check import parse_settings
from tests.fakes.binance import FakeBinance, book_ticker_frame, depth20_frame
from tests.outlet_servers import consume_all, free_port, start_kafka, start_redis
from tests.procs import read_rows
from tests.test_http import fetch_json, fetch_metrics, sample
from tests.test_service import start_service, trades

TIMEOUT = 40.0
POLL_SECS = 0.05
TOPICS = ("trades", "orderbook", "ticker", "status")


def outlet_settings(fake_url: str, data_dir: Path, **sections: dict[str, Any]) -> Settings:
    return parse_settings(
        {
            "collector": {
                "metrics_host": "127.0.0.1",
                "metrics_port": 0,
                "event_channel_size": 64,
                "shutdown_timeout_secs": 20,
            },
            "storage": {"data_dir": str(data_dir)},
            "markets": [
                {"exchange": "binance", "symbols": ["btcusdt", "ethusdt"], "base_url": fake_url}
            ],
            **sections,
        }
    )


def frames() -> list[str]:
    sent = trades("btcusdt", range(1, 41)) + trades("ethusdt", range(1, 21))
    for i in range(5):
        bids = [(100.0 - j - i, 1.0 + j) for j in range(15)]
        asks = [(101.0 + j + i, 2.0 + j) for j in range(15)]
        sent.append(depth20_frame("btcusdt", 10 + i, bids, asks))
        sent.append(book_ticker_frame("ethusdt", 20 + i, 10.0 + i, 1.0, 11.0 + i, 2.0))
    return sent


async def wait_for(condition: Callable[[], Any]) -> None:
    """Until ``condition()`` is true, polled (the caller bounds the wait)."""
    while not await condition():  # noqa: ASYNC110 - state of real servers, polled
        await trio.sleep(POLL_SECS)


def as_stored(row: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row in the outlets' JSON shape: levels as [price, size] pairs."""
    out = dict(row)
    for side in ("bids", "asks"):
        if side in out:
            out[side] = [[level["price"], level["size"]] for level in out[side]]
    return out


def stored_by_key(data_dir: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(data_type, '<exchange>.<symbol>') -> the stored rows, in file order."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for data_type in TOPICS:
        for row in read_rows(data_dir, data_type):
            by_key[data_type, f"{row['exchange']}.{row['symbol']}"].append(as_stored(row))
    return by_key


async def test_every_stored_event_reaches_kafka_in_the_files_order(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_kafka(tmp_path) as bootstrap, trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            kafka = {"enabled": True, "bootstrap_servers": bootstrap, "linger_ms": 1}
            service = await start_service(nursery, outlet_settings(fake.url, data_dir, kafka=kafka))
            await fake.wait_subscribed()
            for frame in frames():
                assert await fake.send(frame) == 1

            async def delivered_trades() -> bool:
                samples = await fetch_metrics(service.port)
                labels = {"outlet": "kafka", "data_type": "trades"}
                return sample(samples, "collector_outlet_delivered_total", **labels) == 60

            await wait_for(delivered_trades)
            _, report = await fetch_json(service.port, "/health")
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()
        stored = stored_by_key(data_dir)
        total = sum(len(rows) for rows in stored.values())
        topics = [f"collector.{t}" for t in TOPICS]
        consumed = await trio.to_thread.run_sync(consume_all, bootstrap, topics, total + 1, 10.0)

    assert report["status"] == "healthy", report
    published: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for topic, key, value in consumed:
        published[topic.removeprefix("collector."), key].append(msgspec.json.decode(value))
    assert len(consumed) == total  # nothing more than stored (waited for one more)
    assert published == stored
    assert len(stored["trades", "binance.BTCUSDT"]) == 40
    assert len(stored["orderbook", "binance.BTCUSDT"]) == 5
    assert [r["event"] for r in stored["status", "binance.ETHUSDT"]][-1] == "disconnected"


async def test_kafka_down_costs_the_files_nothing_and_the_outlet_recovers(tmp_path: Path) -> None:
    """No broker: every row is stored anyway, the outlet's small buffer overflows (counted,
    recorded as outlet_overflow rows), /health is degraded; once a broker listens the
    producer reconnects by itself, delivers, and /health is healthy again."""
    data_dir = tmp_path / "data"
    port = free_port()
    kafka = {
        "enabled": True,
        "bootstrap_servers": f"127.0.0.1:{port}",
        "buffer_events": 20,
        "stall_secs": 0.5,
        "linger_ms": 1,
    }
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            service = await start_service(nursery, outlet_settings(fake.url, data_dir, kafka=kafka))
            await fake.wait_subscribed()
            for frame in trades("btcusdt", range(1, 301)):
                assert await fake.send(frame) == 1

            async def degraded() -> bool:
                _, report = await fetch_json(service.port, "/health")
                return "kafka" in report["problems"]

            await wait_for(degraded)
            _, down_report = await fetch_json(service.port, "/health")
            down = await fetch_metrics(service.port)

            with start_kafka(tmp_path, port):

                async def healthy_again() -> bool:
                    _, report = await fetch_json(service.port, "/health")
                    return bool(report["status"] == "healthy")

                await wait_for(healthy_again)
                for frame in trades("btcusdt", range(301, 311)):
                    assert await fake.send(frame) == 1

                async def delivered_new() -> bool:
                    samples = await fetch_metrics(service.port)
                    labels = {"outlet": "kafka", "data_type": "trades"}
                    return sample(samples, "collector_outlet_delivered_total", **labels) >= 10

                await wait_for(delivered_new)
                up = await fetch_metrics(service.port)
                assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    assert down_report["status"] == "degraded"
    assert "cannot deliver to Kafka" in down_report["problems"]["kafka"]
    assert sample(down, "collector_outlet_healthy", outlet="kafka") == 0
    dropped = sample(down, "collector_outlet_dropped_total", outlet="kafka", data_type="trades")
    assert dropped > 0
    assert sample(up, "collector_outlet_healthy", outlet="kafka") == 1
    # The files have every trade, whatever Kafka did.
    stored = [r["trade_id"] for r in read_rows(data_dir, "trades")]
    assert stored == [str(i) for i in range(1, 311)]
    # Every dropped trade is in an outlet_overflow row (the rows themselves may be dropped
    # for Kafka's status topic too: those are counted under data_type status).
    overflow = [
        r
        for r in read_rows(data_dir, "status")
        if r["event"] == "outlet_overflow" and r["data_type"] == "trades"
    ]
    assert {r["symbol"] for r in overflow} == {"BTCUSDT"}
    assert all("kafka outlet buffer full" in r["detail"] for r in overflow)
    assert service.handle is not None
    metrics = service.handle.metrics
    labels = {"outlet": "kafka", "data_type": "trades"}
    assert sum(r["count"] for r in overflow) == metrics.sample(
        "collector_outlet_dropped_total", labels
    )


async def test_redis_holds_the_latest_values_with_their_ttls(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_redis(tmp_path) as url, trio.fail_after(TIMEOUT):
        client = redis.Redis.from_url(url)
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = outlet_settings(
                fake.url, data_dir, redis={"enabled": True, "url": url, "book_depth": 3}
            )
            service = await start_service(nursery, settings)
            await fake.wait_subscribed()
            for frame in frames():
                assert await fake.send(frame) == 1

            async def written() -> bool:
                samples = await fetch_metrics(service.port)
                values = ("trades", "ticker", "orderbook")
                return all(
                    sample(samples, "collector_outlet_delivered_total", outlet="redis", data_type=t)
                    > 0
                    for t in values
                ) and await trio.to_thread.run_sync(
                    lambda: (
                        client.exists("collector:binance:BTCUSDT:book") == 1
                        and json_at(client, "collector:binance:BTCUSDT:trade")["trade_id"] == "40"
                        and json_at(client, "collector:binance:ETHUSDT:ticker")["sequence"] == 24
                    )
                )

            await wait_for(written)
            values = await trio.to_thread.run_sync(read_values, client)
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    stored = stored_by_key(data_dir)
    last_trade, ttl = values["collector:binance:BTCUSDT:trade"]
    assert last_trade == stored["trades", "binance.BTCUSDT"][-1]
    assert 0 < ttl <= 60_000
    last_ticker, ttl = values["collector:binance:ETHUSDT:ticker"]
    assert last_ticker == stored["ticker", "binance.ETHUSDT"][-1]
    assert 60_000 < ttl <= 300_000
    last_book = stored["orderbook", "binance.BTCUSDT"][-1]
    book, ttl = values["collector:binance:BTCUSDT:book"]
    assert 0 < ttl <= 3_000
    assert book["sequence"] == last_book["sequence"] == 14
    assert book["bids"] == last_book["bids"][:3]
    assert book["asks"] == last_book["asks"][:3]
    top, _ = values["collector:binance:BTCUSDT:top"]
    assert (top["bid_price"], top["bid_size"]) == tuple(last_book["bids"][0])
    assert (top["ask_price"], top["ask_size"]) == tuple(last_book["asks"][0])
    assert "collector:binance:ETHUSDT:book" not in values  # no book for ETH was sent


def json_at(client: redis.Redis, key: str) -> dict[str, Any]:
    raw = client.get(key)
    if raw is None:
        return {}
    value = msgspec.json.decode(raw)
    assert isinstance(value, dict)
    return value


def read_values(client: redis.Redis) -> dict[str, tuple[dict[str, Any], int]]:
    """Every key: (its JSON, its TTL in ms)."""
    out: dict[str, tuple[dict[str, Any], int]] = {}
    for key in client.keys("collector:*"):
        assert isinstance(key, bytes)
        name = key.decode()
        ttl = client.pttl(name)
        assert isinstance(ttl, int)
        out[name] = (json_at(client, name), ttl)
    return out


async def test_redis_down_is_reported_and_the_values_follow_once_it_is_back(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    url = f"unix://{tmp_path / 'redis.sock'}"
    redis_settings = {
        "enabled": True,
        "url": url,
        "stall_secs": 0.2,
        "initial_retry_delay_secs": 0.1,
        "max_retry_delay_secs": 0.2,
    }
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = outlet_settings(fake.url, data_dir, redis=redis_settings)
            service = await start_service(nursery, settings)
            await fake.wait_subscribed()
            for frame in trades("btcusdt", range(1, 11)):
                assert await fake.send(frame) == 1

            async def degraded() -> bool:
                _, report = await fetch_json(service.port, "/health")
                return "redis" in report["problems"]

            await wait_for(degraded)
            _, down_report = await fetch_json(service.port, "/health")
            with start_redis(tmp_path) as started_url:
                assert started_url == url
                client = redis.Redis.from_url(url)
                for frame in trades("btcusdt", range(11, 13)):
                    assert await fake.send(frame) == 1

                async def caught_up() -> bool:
                    _, report = await fetch_json(service.port, "/health")
                    value = await trio.to_thread.run_sync(
                        json_at, client, "collector:binance:BTCUSDT:trade"
                    )
                    return report["status"] == "healthy" and value.get("trade_id") == "12"

                await wait_for(caught_up)
                assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    assert down_report["status"] == "degraded"
    assert "cannot write to Redis" in down_report["problems"]["redis"]
    stored = [r["trade_id"] for r in read_rows(data_dir, "trades")]
    assert stored == [str(i) for i in range(1, 13)]
