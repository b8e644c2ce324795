"""Live outlets: the stored stream, as it is stored, to Kafka, Redis and column files.

The files are the source of truth; the outlets are how the same events reach live
consumers. Each enabled outlet has its own bounded buffer, fed by the writer's router
through an :class:`~collector.outlets.tap.OutletTap`, and its own task:

- :mod:`~collector.outlets.kafka`: every event to Kafka (``[kafka]``);
- :mod:`~collector.outlets.redis`: the latest values per (exchange, symbol) in Redis
  (``[redis]``);
- :mod:`~collector.outlets.binary`: the trades as MD and TRADES binary column files
  (``[binary]``).

An outlet that is down or slow drops and counts on its own buffer; it never holds up the
files. The client libraries are optional extras, imported only when an outlet is enabled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import trio

from collector.config import Settings
from collector.health import HealthState
from collector.metrics import OutletMetrics
from collector.outlets.buffer import OutletBuffer
from collector.outlets.tap import OutletTap

__all__ = ["OutletBuffer", "OutletTap", "OutletTask", "open_outlets"]

# An outlet's task, to start with ``nursery.start``.
OutletTask = Callable[..., Awaitable[None]]


def open_outlets(
    settings: Settings, metrics: OutletMetrics, health: HealthState
) -> tuple[OutletTap | None, list[OutletTask]]:
    """The tap for the writer's router and the task of each enabled outlet (none enabled:
    no tap, and the router runs as without outlets). The tasks end once the tap is closed
    and their buffers drained. Imports each enabled outlet's client library and opens the
    Kafka producer: raises OutletSettingsError when its library refuses the settings."""
    buffers: list[OutletBuffer] = []
    tasks: list[OutletTask] = []
    if settings.kafka.enabled:
        from collector.outlets.kafka import OUTLET as KAFKA
        from collector.outlets.kafka import open_kafka_client, run_kafka_outlet

        data_types = frozenset(settings.kafka.data_types)
        buffer = OutletBuffer(KAFKA, settings.kafka.buffer_events, data_types)
        metrics.create(KAFKA, sorted(data_types))
        buffers.append(buffer)
        client = open_kafka_client(settings.kafka, metrics)
        tasks.append(partial(run_kafka_outlet, settings.kafka, client, buffer, metrics, health))
    if settings.redis.enabled:
        from collector.outlets.redis import DATA_TYPES, run_redis_outlet
        from collector.outlets.redis import OUTLET as REDIS

        buffer = OutletBuffer(REDIS, settings.redis.buffer_events, DATA_TYPES)
        metrics.create(REDIS, sorted(DATA_TYPES))
        buffers.append(buffer)
        tasks.append(partial(run_redis_outlet, settings.redis, buffer, metrics, health))
    if settings.binary.enabled:
        from collector.outlets.binary import DATA_TYPES as BINARY_TYPES
        from collector.outlets.binary import OUTLET as BINARY
        from collector.outlets.binary import run_binary_outlet

        buffer = OutletBuffer(BINARY, settings.binary.buffer_events, BINARY_TYPES)
        metrics.create(BINARY, sorted(BINARY_TYPES))
        buffers.append(buffer)
        tasks.append(partial(run_binary_outlet, settings.binary, buffer, metrics, health))
    if not buffers:
        return None, []
    return OutletTap(buffers, metrics), tasks


async def start_outlets(nursery: trio.Nursery, tasks: list[OutletTask]) -> None:
    """Start each outlet task in ``nursery`` (each has started when this returns)."""
    for task in tasks:
        await nursery.start(task)
