"""Per-exchange supervision: one nursery per exchange, one reconnect loop per connection."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import trio

from collector.backoff import Backoff
from collector.events import Event
from collector.exchanges.base import ConnectionPlan, ExchangeAdapter
from collector.ingest.connection import IngestContext, run_connection
from collector.ingest.errors import ConnectionFailed
from collector.ingest.handover import QUIET_SECS, Lane, Overlap, Watch
from collector.ingest.pacer import Pacer
from collector.ingest.sink import EventSink

log = logging.getLogger(__name__)


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
    pacer = Pacer(adapter.connections_per_second)
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
    pacer: Pacer | None = None,
) -> None:
    """Keep one connection up: reconnect with capped, jittered exponential backoff.

    The backoff starts again from its initial delay once a connection has stayed up for
    ``healthy_after_secs``. Attempts wait their turn at ``pacer`` (shared by all
    connections of the exchange). Owns ``events`` and the connection's
    :class:`~collector.ingest.sink.EventSink` (closed on exit, after its held events waited
    a bounded time for room). Runs until cancelled.
    Catches only :class:`ConnectionFailed`, which ``run_connection`` raises as one error
    (never a group) carrying the connection's uptime; a bug propagates.

    Where the venue closes connections at a known age (the adapter's
    ``max_connection_lifetime_secs``) and ``planned_reconnect_lead_secs`` is not 0, each
    connection is replaced that long before it is due, without a hole (:func:`_run_planned`);
    only the end of a connection that could not be replaced in time comes back here.
    """
    pacer = pacer or Pacer(adapter.connections_per_second)
    settings = ctx.settings
    backoff = Backoff(settings.initial_retry_delay_secs, settings.max_retry_delay_secs)
    # One sink for every attempt: events held by a cancelled send, or drops, are handed on.
    sink = EventSink(
        events, plan.exchange, ctx.metrics, ctx.doorbell, connection=plan.name, health=ctx.health
    )
    disconnects = ctx.metrics.disconnects_total
    lifetime = adapter.max_connection_lifetime_secs
    lead = settings.planned_reconnect_lead_secs
    # Seconds after a connection came up that its successor is opened (None: never).
    replace_after = lifetime - lead if lifetime is not None and 0 < lead < lifetime else None
    try:
        while True:
            await pacer.wait_turn()
            try:
                if replace_after is None:
                    await run_connection(plan, adapter, ctx, sink)
                else:
                    raise await _run_planned(plan, adapter, ctx, sink, pacer, replace_after)
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


class _Attempt:
    """One connection attempt of a planned-reconnect chain, run as a task.

    Owns its cancel scope (the supervisor cancels a connection it replaced, or a successor
    that came too late); keeps the ``ConnectionFailed`` that ended it instead of raising
    it, so one attempt's end never cancels the other's. Anything else (a bug) propagates.
    """

    def __init__(self, lane: Lane, watch: Watch) -> None:
        self.lane = lane
        self.watch = watch
        self.scope = trio.CancelScope()
        self.failure: ConnectionFailed | None = None
        self.done = False

    def ended(self) -> bool:
        return self.done

    def up_or_ended(self) -> bool:
        return self.done or self.lane.up_since is not None

    async def run(self, plan: ConnectionPlan, adapter: ExchangeAdapter, ctx: IngestContext) -> None:
        try:
            with self.scope:
                await run_connection(plan, adapter, ctx, self.lane)
        except ConnectionFailed as failure:
            self.failure = failure
        finally:
            self.done = True
            self.watch.notify()


def _settled(current: _Attempt, successor: _Attempt, overlap: Overlap) -> bool:
    """A handover has come to an outcome: switched, or one of its connections ended."""
    return current.done or successor.done or overlap.switched


async def _run_planned(
    plan: ConnectionPlan,
    adapter: ExchangeAdapter,
    ctx: IngestContext,
    sink: EventSink,
    pacer: Pacer,
    replace_after: float,
) -> ConnectionFailed:
    """Connections of ``plan``, each replaced ``replace_after`` seconds after it came up,
    until one ends before it could be replaced; returns that connection's failure.

    Owns a nursery of at most two attempts: the current connection and, from its due time,
    a successor (waiting its turn at ``pacer``) joined to it by an
    :class:`~collector.ingest.handover.Overlap`. When the overlap switches, the old
    connection is cancelled (it writes nothing more, no ``disconnected`` rows) and the
    successor becomes the current one. A successor that fails first is counted
    (``failed``) and tried again with backoff while the old connection lasts; an old
    connection that ends first aborts the handover, cancels the successor (``cut``) and is
    returned, for an ordinary reconnect with its hole marked. Runs until then or cancelled.
    """
    settings = ctx.settings
    handovers = ctx.metrics.planned_handovers
    lifetime = adapter.max_connection_lifetime_secs
    detail = f"planned reconnect before the venue's {lifetime:g} s connection limit"
    watch = Watch()
    async with trio.open_nursery() as nursery:
        current = _Attempt(Lane(sink, watch=watch), watch)
        nursery.start_soon(current.run, plan, adapter, ctx)
        while True:
            await watch.until(current.up_or_ended)
            up_since = current.lane.up_since
            if current.done or up_since is None:
                break
            await watch.until(current.ended, up_since + replace_after)
            retry = Backoff(settings.initial_retry_delay_secs, settings.max_retry_delay_secs)
            while not current.ended():
                await pacer.wait_turn()
                if current.ended():
                    break
                successor = _Attempt(Lane(sink, primary=False, watch=watch), watch)
                overlap = Overlap(
                    current.lane, successor.lane, plan, ctx.wall_clock, watch=watch, detail=detail
                )
                nursery.start_soon(successor.run, plan, adapter, ctx)
                settled = partial(_settled, current, successor, overlap)
                while not await watch.until(settled, trio.current_time() + QUIET_SECS):
                    await overlap.poll()  # quiet streams may have settled meanwhile
                if overlap.switched:
                    handovers.labels(plan.exchange, "ok").inc()
                    log.info(
                        "planned reconnect: switched to the new connection",
                        extra={"exchange": plan.exchange, "connection": plan.name},
                    )
                    current.scope.cancel()
                    await watch.until(current.ended)
                    current = successor
                    break
                overlap.abort()
                if current.done:
                    handovers.labels(plan.exchange, "cut").inc()
                    successor.scope.cancel()
                    await watch.until(successor.ended)
                    break
                handovers.labels(plan.exchange, "failed").inc()
                delay = retry.next_delay()
                log.warning(
                    "planned reconnect: the new connection failed, retrying in %.1fs: %s",
                    delay,
                    successor.failure,
                    extra={"exchange": plan.exchange, "connection": plan.name},
                )
                await watch.until(current.ended, trio.current_time() + delay)
        nursery.cancel_scope.cancel()
    failure = current.failure
    if failure is None:  # pragma: no cover - an attempt ends by failing, a bug or cancellation
        raise AssertionError("a connection attempt ended without a failure")
    return failure
