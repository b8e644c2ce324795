"""The Kafka control topic against a real Kafka-protocol broker (Tansu) and the fake Binance.

Real Trio clock (librdkafka and the writer run in worker threads); every wait is bounded
with ``trio.fail_after`` and synchronised on the fake's waits.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from collector.settings_check import parse_settings
from tests.fakes.binance import FakeBinance
from tests.outlet_servers import start_kafka
from tests.test_control_service import raw_settings, service, settle, statuses, trade
from tests.venue_helpers import read_rows

TIMEOUT = 40.0
TOPIC = "collector.control"


def _create_topic(bootstrap: str) -> None:
    import confluent_kafka.admin as kafka_admin

    admin = kafka_admin.AdminClient({"bootstrap.servers": bootstrap})
    new = kafka_admin.NewTopic(TOPIC, num_partitions=2, replication_factor=1)  # type: ignore[attr-defined]
    futures = admin.create_topics([new])
    futures[TOPIC].result(timeout=20)


def _produce(bootstrap: str, *values: bytes) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(TOPIC, value)
    assert producer.flush(20) == 0


async def test_control_messages_add_and_remove_symbols(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="collector")
    data_dir = tmp_path / "data"
    with start_kafka(tmp_path) as bootstrap, trio.fail_after(TIMEOUT):
        await trio.to_thread.run_sync(_create_topic, bootstrap)
        # Published before the service starts: not applied (it reads from the end).
        await trio.to_thread.run_sync(
            _produce,
            bootstrap,
            b'{"action": "add", "exchange": "binance", "symbols": ["bnbusdt"]}',
        )
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            raw = raw_settings(fake.url, data_dir, ["btcusdt"])
            raw["kafka"] = {"bootstrap_servers": bootstrap, "control_topic": TOPIC}
            async with service(parse_settings(raw)) as handle:
                await fake.wait_subscribed(["btcusdt@trade"])
                await trio.to_thread.run_sync(
                    _produce,
                    bootstrap,
                    b"not json",
                    b'{"action": "add", "exchange": "okx", "symbols": ["BTC-USDT"]}',
                    b'{"action": "add", "exchange": "binance", "symbols": ["solusdt"]}',
                )
                await fake.wait_subscribed(["solusdt@trade"])
                await settle()
                await trade(fake, "solusdt", 1)
                await trio.to_thread.run_sync(
                    _produce,
                    bootstrap,
                    b'{"action": "remove", "exchange": "binance", "symbols": ["SOLUSDT"]}',
                )
                await fake.wait_unsubscribed(["solusdt@trade"])
                assert handle.health.connections["binance-0"].symbols == ("BTCUSDT",)
                assert "bnbusdt@trade" not in fake.clients[0].streams
            nursery.cancel_scope.cancel()

    assert statuses(data_dir, "SOLUSDT") == [
        ("added", "trades"),
        ("subscribed", "trades"),
        ("unsubscribed", "trades"),
    ]
    [unsubscribed] = [
        r
        for r in read_rows(data_dir, "binance", "SOLUSDT", "status")
        if r["event"] == "unsubscribed"
    ]
    assert unsubscribed["detail"] == "removed at run time (Kafka control topic)"
    # Two partitions: messages of different partitions come in either order.
    errors = sorted(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert len(errors) == 2
    assert errors[0].startswith("Kafka control message ignored")
    assert errors[1].startswith("Kafka control message not applied")
    assert "no market of okx is running" in errors[1]
