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
from collector.ingest.live import PlanInbox
from collector.ingest.pacer import Pacer
from collector.ingest.sink import EventSink

log = logging.getLogger(__name__)


class ConnectionControl:
    """The run-time handle of one supervised connection: what :mod:`collector.control`
    changes while it runs.

    ``plan`` is what the next attempt subscribes (the supervisor reads it at each attempt,
    so a reduced plan takes effect at the connection's next reconnect); ``sink`` is the
    connection's sink for every attempt, whose ``removed`` set keeps the rows of symbols
    removed meanwhile out of the data; ``inboxes`` holds the plan inbox of each attempt
    running now (:mod:`collector.ingest.live`: two during a planned handover), where a
    venue with live subscriptions takes a changed plan without reconnecting; ``scope``
    stops the supervisor (and its connection) for good; ``done`` is set once the
    supervisor has ended and closed the sink.
    """

    def __init__(self, plan: ConnectionPlan, sink: EventSink) -> None:
        self.plan = plan
        self.sink = sink
        self.inboxes: list[PlanInbox] = []
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def stop(self) -> None:
        """Cancel the connection and wait until its supervisor has ended (its last rows
        sent or held by the sink, the sink closed)."""
        self.scope.cancel()
        await self.done.wait()


class ExchangeRunner:
    """One exchange's connections, each under its supervisor in the exchange's nursery.

    Created and run by :func:`run_exchange`; :meth:`start` adds a connection to a running
    exchange (the connections planned at start, and those added at run time by
    :mod:`collector.control`). ``controls`` holds every running connection's control by
    name; a supervisor that ends removes its own.
    """

    def __init__(
        self,
        adapter: ExchangeAdapter,
        ctx: IngestContext,
        events: trio.MemorySendChannel[list[Event]],
    ) -> None:
        self.adapter = adapter
        self.ctx = ctx
        self.events = events
        self.pacer = Pacer(adapter.connections_per_second)
        self.controls: dict[str, ConnectionControl] = {}
        self._nursery: trio.Nursery | None = None

    async def run(
        self,
        plans: Sequence[ConnectionPlan],
        *,
        task_status: trio.TaskStatus[ExchangeRunner] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``plans`` (and what :meth:`start` adds) until cancelled; owns ``events``
        (closed once every connection has ended) and the exchange's nursery. Reports
        itself once the planned connections are started."""
        try:
            with self.events:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    for plan in plans:
                        self.start(plan)
                    task_status.started(self)
                    await trio.sleep_forever()  # connections come and go; the exchange stays
        finally:
            if self.ctx.doorbell is not None:
                # This may have been the channel's last sender: the writer sees its end
                # without waiting a tick (as each connection's sink rings at its close).
                self.ctx.doorbell.ring()

    def start(self, plan: ConnectionPlan) -> ConnectionControl:
        """Start supervising ``plan`` now (its name must be new); returns its control."""
        if self._nursery is None:
            raise RuntimeError("the exchange is not running")
        if plan.name in self.controls:
            raise ValueError(f"connection {plan.name} is running already")
        ctx = self.ctx
        sink = EventSink(
            self.events.clone(),
            plan.exchange,
            ctx.metrics,
            ctx.doorbell,
            connection=plan.name,
            health=ctx.health,
        )
        control = ConnectionControl(plan, sink)
        self.controls[plan.name] = control
        self._nursery.start_soon(self._supervise, control)
        return control

    async def _supervise(self, control: ConnectionControl) -> None:
        try:
            await _supervise(control, self.adapter, self.ctx, self.pacer)
        finally:
            self.controls.pop(control.plan.name, None)


async def run_exchange(
    adapter: ExchangeAdapter,
    plans: Sequence[ConnectionPlan],
    ctx: IngestContext,
    events: trio.MemorySendChannel[list[Event]],
    *,
    task_status: trio.TaskStatus[ExchangeRunner] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every connection of one exchange until cancelled (an :class:`ExchangeRunner`,
    reported once started, so that connections can be added while it runs).

    Owns ``events`` (closes it; each connection gets its own clone) and the exchange's
    nursery. Connection failures are retried forever with backoff and never leave this
    function; a bug propagates and stops the service loudly.
    """
    await ExchangeRunner(adapter, ctx, events).run(plans, task_status=task_status)


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
    sink = EventSink(
        events, plan.exchange, ctx.metrics, ctx.doorbell, connection=plan.name, health=ctx.health
    )
    pacer = pacer or Pacer(adapter.connections_per_second)
    await _supervise(ConnectionControl(plan, sink), adapter, ctx, pacer)


async def _supervise(
    control: ConnectionControl, adapter: ExchangeAdapter, ctx: IngestContext, pacer: Pacer
) -> None:
    """:func:`supervise_connection` for ``control`` (whose plan each attempt reads); ends
    when ``control.scope`` is cancelled too, and sets ``control.done`` last."""
    settings = ctx.settings
    backoff = Backoff(settings.initial_retry_delay_secs, settings.max_retry_delay_secs)
    # One sink for every attempt: events held by a cancelled send, or drops, are handed on.
    sink = control.sink
    disconnects = ctx.metrics.disconnects_total
    lifetime = adapter.max_connection_lifetime_secs
    lead = settings.planned_reconnect_lead_secs
    # Seconds after a connection came up that its successor is opened (None: never).
    replace_after = lifetime - lead if lifetime is not None and 0 < lead < lifetime else None
    try:
        with control.scope:
            while True:
                await pacer.wait_turn()
                plan = control.plan
                try:
                    if replace_after is None:
                        await run_connection(plan, adapter, ctx, sink, control.inboxes)
                    else:
                        raise await _run_planned(control, adapter, ctx, sink, pacer, replace_after)
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
        try:
            await sink.aclose(ctx.wall_clock())
        finally:
            control.done.set()


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

    async def run(
        self,
        plan: ConnectionPlan,
        adapter: ExchangeAdapter,
        ctx: IngestContext,
        inboxes: list[PlanInbox],
    ) -> None:
        try:
            with self.scope:
                await run_connection(plan, adapter, ctx, self.lane, inboxes)
        except ConnectionFailed as failure:
            self.failure = failure
        finally:
            self.done = True
            self.watch.notify()


def _settled(current: _Attempt, successor: _Attempt, overlap: Overlap) -> bool:
    """A handover has come to an outcome: switched, or one of its connections ended."""
    return current.done or successor.done or overlap.switched


async def _run_planned(
    control: ConnectionControl,
    adapter: ExchangeAdapter,
    ctx: IngestContext,
    sink: EventSink,
    pacer: Pacer,
    replace_after: float,
) -> ConnectionFailed:
    """Connections of ``control.plan`` (read again for each new connection), each replaced
    ``replace_after`` seconds after it came up,
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
    plan = control.plan
    async with trio.open_nursery() as nursery:
        current = _Attempt(Lane(sink, watch=watch), watch)
        nursery.start_soon(current.run, plan, adapter, ctx, control.inboxes)
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
                plan = control.plan
                successor = _Attempt(Lane(sink, primary=False, watch=watch), watch)
                overlap = Overlap(
                    current.lane, successor.lane, plan, ctx.wall_clock, watch=watch, detail=detail
                )
                nursery.start_soon(successor.run, plan, adapter, ctx, control.inboxes)
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
