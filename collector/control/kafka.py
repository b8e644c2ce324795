"""The Kafka control topic: messages that add or remove symbols while the service runs.

Off unless ``kafka.control_topic`` is set (independent of the Kafka outlet; the same
``bootstrap_servers``, ``client_id`` and ``options``). Each message's value is one JSON
object, with the admin API's meaning (:mod:`collector.control.edits`)::

    {"action": "add", "exchange": "binance", "symbols": ["solusdt"]}
    {"action": "add", "exchange": "bybit", "symbols": ["SOLUSDT"], "market": 2}
    {"action": "remove", "exchange": "binance", "symbols": ["SOLUSDT"]}

Every instance reads every partition of the topic from the end it finds at start (no
consumer group, nothing committed): a message counts for the instances running when it is
published, like an admin API call, and is lost at their restart like one (the settings
file is what a start runs). A message that cannot be applied (bad JSON, an unknown market
or symbol) is one logged line; the consumer goes on. librdkafka runs in worker threads,
never on the event loop; a broker that cannot be reached is retried, logged, and never
stops the service.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Literal

import msgspec
import trio
from confluent_kafka import OFFSET_END, Consumer, KafkaException, Message, TopicPartition

from collector.config import KafkaSettings
from collector.control.controller import Controller
from collector.control.edits import EditError, apply_edit, with_added, without

log = logging.getLogger(__name__)

ORIGIN: Final = "Kafka control topic"
# How long one poll waits in its thread (the consumer's stop latency at shutdown).
POLL_SECS: Final = 0.5
# How long the topic's metadata is waited for, per try; and between tries.
METADATA_TIMEOUT_SECS: Final = 2.0
RETRY_SECS: Final = 5.0


class ControlMessage(msgspec.Struct, forbid_unknown_fields=True):
    action: Literal["add", "remove"]
    exchange: str
    symbols: list[str]
    market: int | None = None


def consumer_config(settings: KafkaSettings) -> dict[str, Any]:
    """The librdkafka settings of the control consumer (``kafka.options`` first)."""
    config: dict[str, Any] = dict(settings.options)
    config.update(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "client.id": f"{settings.client_id}-control",
            # Required by the client; no group is joined (partitions are assigned) and
            # nothing is committed.
            "group.id": f"{settings.client_id}-control",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    return config


def _assign_at_end(consumer: Consumer, topic: str) -> int:
    """Assign every partition of ``topic`` from its current end (a worker thread);
    returns how many. Raises KafkaException (broker unreachable) or LookupError (no such
    topic yet)."""
    metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_SECS)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise LookupError(f"topic {topic!r} does not exist (yet)")
    partitions = []
    for number in sorted(found.partitions):
        _, high = consumer.get_watermark_offsets(
            TopicPartition(topic, number), timeout=METADATA_TIMEOUT_SECS
        )
        partitions.append(TopicPartition(topic, number, high if high >= 0 else OFFSET_END))
    consumer.assign(partitions)
    return len(partitions)


async def run_control_consumer(
    settings: KafkaSettings,
    controller: Controller,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply the messages of ``settings.control_topic`` until cancelled.

    Owns its consumer (closed on the way out, in a thread). Reports started after the first
    try to assign the topic's partitions (done or not: a broker that cannot be reached is
    tried again every ``RETRY_SECS`` without holding up the start beyond one try)."""
    topic = settings.control_topic
    assert topic is not None
    consumer = await trio.to_thread.run_sync(Consumer, consumer_config(settings))
    try:
        assigned = False
        started = False
        while not assigned:
            try:
                count = await trio.to_thread.run_sync(_assign_at_end, consumer, topic)
            except (KafkaException, LookupError) as exc:
                log.warning(
                    "Kafka control topic not readable, trying again in %ss: %s",
                    RETRY_SECS,
                    exc,
                    extra={"topic": topic},
                )
            else:
                assigned = True
                log.info(
                    "reading the Kafka control topic",
                    extra={"topic": topic, "partitions": count},
                )
            if not started:
                task_status.started()
                started = True
            if not assigned:
                await trio.sleep(RETRY_SECS)
        while True:
            message = await trio.to_thread.run_sync(consumer.poll, POLL_SECS)
            if message is not None:
                await _handle(message, controller)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(consumer.close)


async def _handle(message: Message, controller: Controller) -> None:
    """Apply one message; every failure is one logged line."""
    error = message.error()
    if error is not None:
        log.warning("Kafka control topic: %s", error)
        return
    where = f"partition {message.partition()} offset {message.offset()}"
    try:
        request = msgspec.json.decode(message.value() or b"", type=ControlMessage)
    except msgspec.DecodeError as exc:
        log.error("Kafka control message ignored (%s): %s", where, exc)
        return
    try:
        if request.action == "add":
            new = with_added(controller.settings, request.exchange, request.symbols, request.market)
        else:
            new = without(controller.settings, request.exchange, request.symbols)
        report = await apply_edit(controller, new, ORIGIN)
    except EditError as exc:
        log.error("Kafka control message not applied (%s): %s", where, exc)
        return
    log.info("Kafka control message applied (%s)", where, extra=report.as_dict())
