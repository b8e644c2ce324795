"""The Kafka outlet: every stored event also goes to Kafka, one topic per data type.

Key ``<exchange>.<symbol>`` (so the client's partitioner keeps each key on one partition,
in the files' order), value the event's JSON (:mod:`collector.outlets.encoding`), topic
``kafka.topic_template`` with the data type. The producer is idempotent with
``acks=all`` and at most ``kafka.max_in_flight`` (<= 5) requests in flight per connection:
what the brokers acknowledged is neither lost nor duplicated by the client's retries, and
a key's order survives them. librdkafka reconnects by itself; a message not acknowledged
within ``kafka.delivery_timeout_secs`` is failed and counted.

Threads, never the event loop: the events are encoded and handed to librdkafka in a worker
thread (``produce`` only queues), and delivery reports are served by a poll thread of the
outlet's own. When librdkafka's queue is full (brokers down or slow) the producing thread
waits for room, the outlet stops taking from its buffer, and the buffer refuses batches:
they are dropped and counted for Kafka alone (:mod:`collector.outlets.tap`). The files
never wait for Kafka.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from functools import partial
from typing import Any, Final

import attrs
import trio
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from collector.config import KafkaSettings
from collector.events import Event
from collector.health import HealthState
from collector.metrics import OutletMetrics
from collector.outlets.buffer import OutletBuffer
from collector.outlets.encoding import encode_event, message_key
from collector.outlets.errors import OutletSettingsError
from collector.outlets.threads import stop_on_cancel
from collector.settings_check import kafka_topic

log = logging.getLogger(__name__)

OUTLET: Final = "kafka"
# How often the outlet checks whether it delivers (health, metrics).
CHECK_INTERVAL_SECS: Final = 1.0
# How long the poll thread waits for delivery reports per call (its stop latency).
POLL_SECS: Final = 0.1
# How long the producing thread waits before trying a full client queue again.
QUEUE_FULL_WAIT_SECS: Final = 0.005
# One delivery report in this many is timed (the histogram) and marks the last success.
LATENCY_SAMPLE: Final = 16
# librdkafka's own queue, in KiB: a bound by bytes beside the one by messages.
QUEUE_MAX_KBYTES: Final = 131_072


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """The librdkafka settings of the outlet's producer (``kafka.options`` first, the
    delivery guarantees over them; settings_check refuses options that touch those)."""
    config: dict[str, Any] = dict(settings.options)
    config.update(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "client.id": settings.client_id,
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": settings.max_in_flight,
            "linger.ms": settings.linger_ms,
            "compression.type": settings.compression,
            "message.timeout.ms": int(settings.delivery_timeout_secs * 1000),
            "queue.buffering.max.messages": settings.buffer_events,
            "queue.buffering.max.kbytes": QUEUE_MAX_KBYTES,
        }
    )
    return config


class Deliveries:
    """What the delivery reports said, written by the poll thread, read by the outlet.

    The report callback runs once per message, so it only adds to plain counts (one
    writer, the poll thread; readers under the GIL need only a recent value) and times one
    message in ``LATENCY_SAMPLE`` (the histogram's count is that sample's);
    :meth:`publish` moves the counts to the metrics (the
    outlet's check, every second, and at its end). ``last_ok`` is ``time.monotonic()`` of
    the last acknowledged message (the outlet's start before the first).
    """

    def __init__(self, topics: Mapping[str, str], metrics: OutletMetrics) -> None:
        self._topics = dict(topics)
        self._delivered_metric = {
            t: metrics.delivered.labels(OUTLET, dt) for t, dt in topics.items()
        }
        self._failed_metric = {t: metrics.failed.labels(OUTLET, dt) for t, dt in topics.items()}
        self._latency = metrics.delivery_seconds.labels(OUTLET)
        self.delivered = dict.fromkeys(topics, 0)
        self.failed_by_topic = dict.fromkeys(topics, 0)
        self._published = dict.fromkeys(topics, 0)
        self._failed_published = dict.fromkeys(topics, 0)
        self._reports = 0
        self.last_ok = time.monotonic()
        self.last_error: str | None = None
        self.failed = 0

    def report(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery report for one message (the poll thread calls it)."""
        topic = msg.topic() or ""
        if err is None:
            if topic in self.delivered:
                self.delivered[topic] += 1
            self.last_ok = time.monotonic()
            self.last_error = None
            self._reports += 1
            if self._reports % LATENCY_SAMPLE == 1:
                latency = msg.latency()
                if latency is not None:
                    self._latency.observe(latency)
        else:
            self.failed += 1
            self.last_error = str(err)
            if topic in self.failed_by_topic:
                self.failed_by_topic[topic] += 1

    def publish(self) -> None:
        """Add the counts reported since the last call to the metrics (the outlet's
        task; the poll thread only adds to the counts, so no report is lost)."""
        for topic in self._topics:
            delivered = self.delivered[topic]
            if delivered != self._published[topic]:
                self._delivered_metric[topic].inc(delivered - self._published[topic])
                self._published[topic] = delivered
            failed = self.failed_by_topic[topic]
            if failed != self._failed_published[topic]:
                self._failed_metric[topic].inc(failed - self._failed_published[topic])
                self._failed_published[topic] = failed

    def client_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (brokers down, a fatal error...)."""
        self.last_error = str(err)
        if err.fatal():
            log.error("Kafka producer fatal error: %s", err, extra={"outlet": OUTLET})


def _produce(
    producer: Producer, topics: Mapping[str, str], batches: list[list[Event]], stop: threading.Event
) -> None:
    """Queue each event of ``batches`` whose data type has a topic (a worker thread).

    Waits while librdkafka's queue is full; returns early once ``stop`` is set (the rest
    is not sent: the outlet is being cancelled)."""
    produce = producer.produce
    for batch in batches:
        for event in batch:
            topic = topics.get(event.DATA_TYPE)
            if topic is None:
                continue
            value = encode_event(event)
            key = message_key(event)
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    if stop.is_set():
                        return
                    time.sleep(QUEUE_FULL_WAIT_SECS)


def _poll(producer: Producer, stop: threading.Event) -> None:
    """Serve delivery reports until ``stop`` is set (the outlet's poll thread)."""
    while not stop.is_set():
        producer.poll(POLL_SECS)


async def _check(
    settings: KafkaSettings,
    buffer: OutletBuffer,
    producer: Producer,
    deliveries: Deliveries,
    metrics: OutletMetrics,
    health: HealthState,
) -> None:
    """Every second: ``/health`` is degraded while events wait and none has been delivered
    for ``kafka.stall_secs``, or messages failed since the last check; cleared once
    deliveries go through again."""
    healthy = metrics.healthy.labels(OUTLET)
    failed_seen = 0
    while True:
        await trio.sleep(CHECK_INTERVAL_SECS)
        deliveries.publish()
        waiting = buffer.size + len(producer)
        stalled_for = time.monotonic() - deliveries.last_ok
        failed = deliveries.failed - failed_seen
        failed_seen = deliveries.failed
        if (waiting and stalled_for >= settings.stall_secs) or failed:
            reason = deliveries.last_error or "no acknowledgement"
            message = f"cannot deliver to Kafka ({reason}): {waiting} events waiting"
            if failed:
                message += f", {failed} failed"
            health.set_problem(OUTLET, message)
            healthy.set(0)
        else:
            health.clear_problem(OUTLET)
            healthy.set(1)


@attrs.frozen
class KafkaClient:
    """The outlet's producer, opened at start (so that settings librdkafka refuses stop
    the service before it runs), with the topic of each data type and the delivery
    reports' counts."""

    producer: Producer
    topics: Mapping[str, str]  # data type -> topic
    deliveries: Deliveries


def open_kafka_client(settings: KafkaSettings, metrics: OutletMetrics) -> KafkaClient:
    """Create the producer (it connects in its own threads; nothing is sent yet).

    Raises OutletSettingsError when librdkafka refuses the configuration (an unknown
    ``kafka.options`` key, a value it cannot take): one line, naming the section.
    """
    topics: dict[str, str] = {
        kafka_topic(settings.topic_template, dt): dt for dt in settings.data_types
    }
    deliveries = Deliveries(topics, metrics)
    config = producer_config(settings)
    config["on_delivery"] = deliveries.report
    config["error_cb"] = deliveries.client_error
    config["logger"] = logging.getLogger("collector.outlets.librdkafka")
    try:
        producer = Producer(config)
    except KafkaException as exc:
        (error,) = exc.args
        reason = error.str() if isinstance(error, KafkaError) else str(error)
        raise OutletSettingsError(f"kafka.options: {reason}") from None
    return KafkaClient(producer, {dt: topic for topic, dt in topics.items()}, deliveries)


async def run_kafka_outlet(
    settings: KafkaSettings,
    client: KafkaClient,
    buffer: OutletBuffer,
    metrics: OutletMetrics,
    health: HealthState,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send every event of ``buffer`` (of ``kafka.data_types``) to Kafka until the buffer
    is closed and drained, then wait up to ``kafka.flush_timeout_secs`` for the queued
    messages' acknowledgements and return (what is still unacknowledged then is lost for
    Kafka; the files have it).

    Owns ``client`` (its producer), the producer's poll thread and the health component ``kafka``. Never raises
    for Kafka being down or slow: that is counted, reported to ``health`` and retried by
    the client. Cancellation: the threads stop within about ``POLL_SECS``; queued messages
    are dropped.
    """
    producer, by_type, deliveries = client.producer, client.topics, client.deliveries
    metrics.buffered.labels(OUTLET).set_function(lambda: buffer.size + len(producer))
    stop = threading.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_cancel, stop)
            nursery.start_soon(partial(trio.to_thread.run_sync, _poll, producer, stop))
            nursery.start_soon(_check, settings, buffer, producer, deliveries, metrics, health)
            task_status.started()
            while batches := await buffer.take():
                await trio.to_thread.run_sync(_produce, producer, by_type, batches, stop)
            nursery.cancel_scope.cancel()
        # The poll thread has stopped: flush serves the last reports itself.
        left = await trio.to_thread.run_sync(producer.flush, settings.flush_timeout_secs)
        deliveries.publish()
        if left:
            log.warning(
                "%d events not acknowledged by Kafka at shutdown (the files have them)",
                left,
                extra={"outlet": OUTLET},
            )
    finally:
        stop.set()
        health.clear_problem(OUTLET)
