"""Per-exchange supervision: one nursery per exchange, one reconnect loop per connection."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import trio

from collector.backoff import Backoff
from collector.events import Event
from collector.exchanges.base import ConnectionPlan, ExchangeAdapter
from collector.ingest.connection import IngestContext, run_connection
from collector.ingest.errors import ConnectionFailed
from collector.ingest.sink import EventSink

log = logging.getLogger(__name__)


class ConnectPacer:
    """Spaces the connection attempts of one exchange at least ``1/per_second`` apart."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next = -math.inf

    async def wait_turn(self) -> None:
        """Wait until this attempt may start (first come, first served)."""
        at = max(trio.current_time(), self._next)
        self._next = at + self.interval
        await trio.sleep_until(at)


async def run_exchange(
    adapter: ExchangeAdapter,
    plans: Sequence[ConnectionPlan],
    ctx: IngestContext,
    events: trio.MemorySendChannel[list[Event]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every connection of one exchange until cancelled.

    Owns ``events`` (closes it; each connection gets its own clone) and the exchange's
    nursery. Connection failures are retried forever with backoff and never leave this
    function; a bug propagates and stops the service loudly.
    """
    pacer = ConnectPacer(adapter.connections_per_second)
    async with trio.open_nursery() as nursery:
        with events:
            for plan in plans:
                nursery.start_soon(supervise_connection, plan, adapter, ctx, events.clone(), pacer)
        task_status.started()


async def supervise_connection(
    plan: ConnectionPlan,
    adapter: ExchangeAdapter,
    ctx: IngestContext,
    events: trio.MemorySendChannel[list[Event]],
    pacer: ConnectPacer | None = None,
) -> None:
    """Keep one connection up: reconnect with capped, jittered exponential backoff.

    The backoff starts again from its initial delay once a connection has stayed up for
    ``healthy_after_secs``. Attempts wait their turn at ``pacer`` (shared by all
    connections of the exchange). Owns ``events`` and the connection's
    :class:`~collector.ingest.sink.EventSink` (closed on exit, after its held events waited
    a bounded time for room). Runs until cancelled.
    Catches only :class:`ConnectionFailed`, which ``run_connection`` raises as one error
    (never a group) carrying the connection's uptime; a bug propagates.
    """
    pacer = pacer or ConnectPacer(adapter.connections_per_second)
    settings = ctx.settings
    backoff = Backoff(settings.initial_retry_delay_secs, settings.max_retry_delay_secs)
    # One sink for every attempt: events held by a cancelled send, or drops, are handed on.
    sink = EventSink(
        events, plan.exchange, ctx.metrics, ctx.doorbell, connection=plan.name, health=ctx.health
    )
    disconnects = ctx.metrics.disconnects_total
    try:
        while True:
            await pacer.wait_turn()
            try:
                await run_connection(plan, adapter, ctx, sink)
            except ConnectionFailed as failure:
                disconnects.labels(plan.exchange, failure.reason).inc()
                # Time actually connected counts, not time spent connecting.
                if failure.uptime >= settings.healthy_after_secs:
                    backoff.reset()
                delay = backoff.next_delay()
                log.warning(
                    "connection failed, retrying in %.1fs: %s",
                    delay,
                    failure,
                    extra={
                        "exchange": plan.exchange,
                        "connection": plan.name,
                        "reason": failure.reason,
                    },
                )
            await trio.sleep(delay)
    finally:
        await sink.aclose(ctx.wall_clock())
