"""One WebSocket connection's lifetime: connect, subscribe, receive, keep alive.

``run_connection`` runs a single attempt and always ends by raising: one
:class:`~collector.ingest.errors.ConnectionFailed` subclass for the expected ways a
connection ends (the exchange supervisor reconnects), anything else for bugs. It never
parses a venue's JSON itself: that is the adapter session's job. The receive loop is the
session's one owner: it hands the session each read and each fetched snapshot body, and
does what the returned ``Actions`` ask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import NoReturn

import attrs
import trio

from collector.clock import WallClock
from collector.config import WebSocketSettings
from collector.doorbell import Doorbell
from collector.events import RAW_SYMBOL, Event, Raw, Status
from collector.exchanges.base import (
    Actions,
    ConnectionPlan,
    ExchangeAdapter,
    Polling,
    Session,
    SnapshotRequest,
)
from collector.health import HealthState
from collector.ingest.breaker import ParseBreaker
from collector.ingest.discards import DiscardSummary
from collector.ingest.dispatcher import Dispatcher
from collector.ingest.errors import (
    ConnectFailed,
    ConnectionFailed,
    TooManyParseErrors,
    connection_failure,
)
from collector.ingest.handover import Lane
from collector.ingest.live import PlanInbox
from collector.ingest.pacer import RestPacers
from collector.ingest.polling import PollInbox, PollSchedule, run_poller
from collector.ingest.sink import CLOSE_SEND_TIMEOUT_SECS, EventSink, without_removed
from collector.ingest.snapshots import FetchedSnapshot, run_snapshot_fetcher
from collector.ingest.watchdog import Activity, run_watchdog
from collector.ingest.websocket import WebSocket, connect_websocket
from collector.metrics import Metrics
from collector.rest import HTTP_GEO_BLOCKED

log = logging.getLogger(__name__)

OUTBOX_SIZE = 256
CLOSE_TIMEOUT_SECS = 1.0


@attrs.frozen
class IngestContext:
    """What every connection shares: settings, metrics, health, the wall clock, the
    writer's doorbell (``None``: nobody is rung, the writer takes batches at its tick), and
    the REST pacers (one per venue budget, whatever the number of connections spending it).
    """

    settings: WebSocketSettings
    metrics: Metrics
    health: HealthState
    wall_clock: WallClock
    doorbell: Doorbell | None = None
    rest_pacers: RestPacers = attrs.field(factory=RestPacers)


async def run_connection(
    plan: ConnectionPlan,
    adapter: ExchangeAdapter,
    ctx: IngestContext,
    sink: EventSink | Lane,
    inboxes: list[PlanInbox] | None = None,
) -> NoReturn:
    """One connection attempt for ``plan``, until it fails.

    Owns the socket, the adapter session and the per-connection nursery (receive loop, the
    session's one owner; paced sender; keepalive; REST snapshot fetcher; and, where the
    adapter declares REST polling for the plan, the poller). Writes
    ``connected``/``disconnected`` status rows for every symbol on the connection, and the
    session's discards (:class:`~collector.ingest.discards.DiscardSummary`; what is pending
    at the end is written before the ``disconnected`` rows). Its tasks wait (stop reading)
    while the event channel is full (see :class:`~collector.ingest.sink.EventSink`).
    Cancellation closes the socket politely and returns via Cancelled; the last rows wait
    for room at most ``CLOSE_SEND_TIMEOUT_SECS`` then (shielded), and are otherwise held by
    the sink.

    Raises one :class:`~collector.ingest.errors.ConnectionFailed` for every expected end,
    never a group: when the connection's tasks fail together, the one that ranks first in
    :data:`~collector.ingest.errors.PRIORITY` is raised ``from`` the group, with
    ``uptime`` set to how long the connection was up (0 if it never connected). A group
    that holds anything else (a bug, Cancelled) propagates as it is.

    ``sink`` may be a :class:`~collector.ingest.handover.Lane` (the supervisor's, for
    planned reconnects): every row then goes through it, the lane learns when the
    connection came up and its dispatcher, and only a ``primary`` lane reports the plan's
    health (a successor being brought up does not, nor a connection it replaced).

    ``inboxes`` (the supervisor's, where the connection's plan can change while it runs, on
    a venue whose adapter declares ``live_subscriptions``): the attempt registers a :class:`~collector.ingest.live.PlanInbox` there from the
    moment its session exists until it ends, and the receive loop applies what it finds
    there (:mod:`collector.ingest.live`).
    """
    lane = sink if isinstance(sink, Lane) else Lane(sink)
    session = adapter.open_session(plan)
    live: PlanInbox | None = None
    if inboxes is not None and adapter.live_subscriptions:
        live = PlanInbox()
        inboxes.append(live)
    try:
        await _run_attempt(plan, adapter, ctx, lane, session, live)
    finally:
        if inboxes is not None and live in inboxes:
            inboxes.remove(live)


async def _run_attempt(
    plan: ConnectionPlan,
    adapter: ExchangeAdapter,
    ctx: IngestContext,
    lane: Lane,
    session: Session,
    live: PlanInbox | None,
) -> NoReturn:
    """:func:`run_connection` once its session exists (``live``: its plan changes)."""
    settings = ctx.settings
    max_size = int(settings.max_message_size_mb * 1024 * 1024)
    attempts = ctx.metrics.connections_total
    try:
        with trio.fail_after(settings.connect_timeout_secs):
            ws = await connect_websocket(plan.url, max_message_size=max_size)
    except trio.TooSlowError:
        attempts.labels(plan.exchange, "timeout").inc()
        timed_out = ConnectFailed(f"connect timed out after {settings.connect_timeout_secs}s")
        if lane.primary:
            ctx.health.set_down(plan.name, f"ConnectFailed: {timed_out}")
        raise timed_out from None
    except ConnectFailed as exc:
        attempts.labels(plan.exchange, "failed").inc()
        if exc.status == HTTP_GEO_BLOCKED:  # say what else to try, in the log and /health
            advised = ConnectFailed(f"{exc}; {adapter.geo_block_advice(plan.exchange)}")
            advised.status = exc.status
            if lane.primary:
                ctx.health.set_down(plan.name, f"{type(advised).__name__}: {advised}")
            raise advised from exc
        if lane.primary:
            ctx.health.set_down(plan.name, f"{type(exc).__name__}: {exc}")
        raise
    attempts.labels(plan.exchange, "connected").inc()
    up_since = trio.current_time()
    lane.mark_up()
    reason = "cancelled"
    discards = DiscardSummary(plan.exchange, ctx.metrics)
    # The raw feed's id of this attempt (the time of its ``open`` row; see events.Raw).
    attempt = ctx.wall_clock() if plan.raw else None
    try:
        if attempt is not None:
            opened = Raw(
                plan.exchange, RAW_SYMBOL, None, attempt, attempt, plan.name, "open", b"", plan.url
            )
            await lane.send([opened], attempt)
        await _emit_connection_rows(lane, session, ctx, "connected", detail=plan.url)
        if lane.primary:
            ctx.health.set_up(plan.name)
        log.info(
            "connected" if lane.primary else "connected (successor for a planned reconnect)",
            extra={
                "exchange": plan.exchange,
                "connection": plan.name,
                "symbols": len(plan.symbols),
            },
        )
        async with trio.open_nursery() as nursery:
            outbox_tx, outbox_rx = trio.open_memory_channel[str](OUTBOX_SIZE)
            # A session has at most one snapshot request pending per book, so room for one
            # per subscription never overflows, however many books the connection carries.
            snapshots_tx, snapshots_rx = trio.open_memory_channel[SnapshotRequest](
                OUTBOX_SIZE + len(plan.subscriptions)
            )
            # Rendezvous: the fetcher holds at most one body until the receive loop takes it.
            bodies_tx, bodies_rx = trio.open_memory_channel[FetchedSnapshot](0)
            nursery.start_soon(_run_sender, ws, outbox_rx, adapter, plan, ctx, lane, attempt)
            if adapter.keepalive_interval_secs:
                nursery.start_soon(
                    _run_keepalive, adapter, outbox_tx.clone(), adapter.keepalive_interval_secs
                )
            fetcher = partial(
                run_snapshot_fetcher, geo_block_advice=adapter.geo_block_advice(plan.exchange)
            )
            nursery.start_soon(
                fetcher,
                snapshots_rx,
                bodies_tx,
                plan.exchange,
                ctx.wall_clock,
                ctx.rest_pacers.get(adapter.snapshot_budget(plan), adapter.snapshot_rate(plan)),
            )
            if live is not None:
                nursery.start_soon(_wake_on_change, ws, live)
            polling = adapter.polling(plan)
            # A live venue's plan may gain polled symbols: it gets an inbox (and its poller
            # at the first change that polls) even when it polls nothing yet.
            inbox = PollInbox() if polling is not None or live is not None else None
            schedule: PollSchedule | None = None
            poller = partial(run_poller, geo_block_advice=adapter.geo_block_advice(plan.exchange))

            def start_poller(polling: Polling) -> PollSchedule:
                assert inbox is not None
                started = PollSchedule(polling)
                budget = adapter.snapshot_budget(plan)
                pacers = ctx.rest_pacers
                nursery.start_soon(
                    partial(
                        poller,
                        # Polls of every connection of the budget share one pace, and wait
                        # for the budget's holds (a Retry-After of its snapshots).
                        pacer=pacers.get(f"{budget} polling", polling.per_second),
                        budget=pacers.get(budget, adapter.snapshot_rate(plan)),
                    ),
                    started,
                    inbox,
                    lane,
                    plan.exchange,
                    ctx.wall_clock,
                    ctx.metrics,
                )
                return started

            if polling is not None:
                schedule = start_poller(polling)
            activity = Activity.for_plan(
                trio.current_time(), ctx.metrics.last_data(plan.exchange), plan
            )
            nursery.start_soon(
                run_watchdog, activity, settings.message_timeout_secs, plan, lane, ctx.wall_clock
            )

            def follow_plan(changed: ConnectionPlan) -> None:
                """What follows a plan change beside the session: the watchdog's streams
                and the polled requests."""
                nonlocal schedule
                activity.replan(changed, trio.current_time())
                polling = adapter.polling(changed)
                if schedule is not None:
                    schedule.update(polling)
                elif polling is not None:
                    schedule = start_poller(polling)

            with outbox_tx, snapshots_tx, bodies_rx:
                dispatcher = Dispatcher(plan.name, ctx.health, outbox_tx, snapshots_tx)
                lane.dispatcher = dispatcher
                dispatcher.follow(session.subscribe(ctx.wall_clock()))
                await _receive_loop(
                    ws,
                    session,
                    plan,
                    ctx,
                    lane,
                    dispatcher,
                    bodies_rx,
                    activity,
                    discards,
                    inbox,
                    attempt,
                    changes=live,
                    follow_plan=follow_plan,
                )
        raise AssertionError("the receive loop only ends by raising")  # pragma: no cover
    except BaseExceptionGroup as group:
        failures, others = group.split(ConnectionFailed)
        if failures is None:
            raise
        failure = connection_failure(failures)
        reason = f"{type(failure).__name__}: {failure}"
        if others is not None:
            # A bug or a cancellation came with it: nobody will reconnect, so what is not a
            # connection failure goes on; the failures stay in the traceback as its cause.
            raise others from group
        failure.uptime = trio.current_time() - up_since
        raise failure from group
    finally:
        lane.closing = True  # no planned switch may happen through an ending connection
        if lane.primary:
            ctx.health.set_down(plan.name, reason)
        # Shielded and bounded: this runs while the connection is being cancelled (at
        # shutdown the writer drains until every sender has closed). Rows that find no room
        # in time stay held by the sink: they go with its next send, or at its close.
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_SEND_TIMEOUT_SECS):
            if discards.pending:
                now_us = ctx.wall_clock()
                await lane.send(discards.take(now_us), now_us)
            await _emit_connection_rows(lane, session, ctx, "disconnected", detail=reason)
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_SECS):
            await ws.aclose()
        log.info(
            "disconnected",
            extra={"exchange": plan.exchange, "connection": plan.name, "reason": reason},
        )


async def _emit_connection_rows(
    lane: Lane, session: Session, ctx: IngestContext, event: str, detail: str
) -> None:
    now_us = ctx.wall_clock()
    assert event in ("connected", "disconnected")
    rows: list[Event] = [
        session.status(
            "connected" if event == "connected" else "disconnected", symbol, now_us, detail=detail
        )
        for symbol in session.plan.symbols
    ]
    await lane.send(rows, now_us)


async def _receive_loop(
    ws: WebSocket,
    session: Session,
    plan: ConnectionPlan,
    ctx: IngestContext,
    lane: Lane,
    dispatcher: Dispatcher,
    bodies: trio.MemoryReceiveChannel[FetchedSnapshot],
    activity: Activity,
    discards: DiscardSummary,
    inbox: PollInbox | None = None,
    attempt: int | None = None,
    *,
    changes: PlanInbox | None = None,
    follow_plan: Callable[[ConnectionPlan], None] | None = None,
) -> NoReturn:
    """Read, parse and forward until the connection fails (or the watchdog ends it).

    The session's one owner: after each read it first hands the session every REST
    snapshot body that came back meanwhile (``bodies``), then the read's frames, and does
    what each result asks (``dispatcher``). A body is thus applied at the next read, in the
    order the old fetch-time application saw it (between the reads around its arrival);
    that is soon enough, because a connection that asks for snapshots carries a book
    stream, whose frames keep coming (or the stale watchdog ends the connection). Polled
    REST bodies (``inbox``, where the connection polls) are handed over likewise, after
    the snapshots, each with its own arrival time. With the raw feed on (``attempt``, the
    attempt's raw id, not None) every frame and every REST body is written as a raw row
    just before the events it gave, so the raw rows are what the session saw, in order.
    Discards are counted as reported; their rows go with the first read a summary period
    after the first pending count (checked only while counts are pending).

    While the event channel is full it waits in ``sink.send`` and reads nothing: TCP holds
    the rest. A venue that closes the connection because we read too slowly ends it as
    any other disconnect does (recorded, reconnected).

    During a planned handover (``lane.overlap`` set) each read's rows go through the
    overlap, and after the read's actions are followed the lane may switch; otherwise the
    cost of planned reconnects here is one attribute test per read.
    """
    settings = ctx.settings
    sink = lane.sink
    metrics = ctx.metrics
    exchange = plan.exchange
    received_metric = metrics.messages_received.labels(exchange)
    bytes_metric = metrics.bytes_received.labels(exchange)
    parse_errors = metrics.parse_errors.labels(exchange)
    latency = metrics.latency.labels(exchange)
    last_message = metrics.last_message_timestamp.labels(exchange)
    breaker = ParseBreaker(settings.parse_error_window)
    wall_clock = ctx.wall_clock
    current_time = trio.current_time
    receive = session.receive
    follow = dispatcher.follow
    name = plan.name
    while True:
        messages = await ws.receive_messages()
        if dispatcher.awaiting:
            await _apply_snapshots(
                session, bodies, dispatcher, ctx, lane, exchange, discards, attempt
            )
        if inbox is not None and inbox.bodies:
            await _apply_polled(session, inbox, dispatcher, ctx, lane, exchange, discards, attempt)
        if changes is not None and changes.plan is not None:
            _apply_plan_change(session, changes, dispatcher, wall_clock(), follow_plan)
        if not messages:
            continue
        received_us = wall_clock()
        batch: list[Event] = []
        if attempt is not None:
            batch += [
                Raw(exchange, RAW_SYMBOL, None, received_us, attempt, name, "recv", payload)
                for payload in messages
            ]
        first = len(batch)  # the raw rows come first; the session's events are data
        actions = receive(messages, received_us, batch)
        if sink.removed:  # symbols removed at run time: no data, not even for the watchdog
            batch[first:] = without_removed(batch[first:], sink.removed)
        if len(batch) > first:
            # Only data counts as life: pings, pongs and heartbeats parse to no events.
            activity.saw(batch, first, current_time(), received_us)
        elif activity.sporadic_only:
            # Only sporadic streams here (liquidations): pongs and heartbeats are the life.
            activity.last_data = current_time()
        errors = actions.errors
        tripped: str | None = None
        for exc in errors:
            parse_errors.inc()
            log.debug("unparsable frame skipped: %s", exc, extra={"exchange": exchange})
            if breaker.record(False) and tripped is None:
                # Finish this read first: its good frames were received and are kept.
                tripped = (
                    f"more than half of the last {breaker.window} frames failed to parse; "
                    f"last error: {exc}"
                )
        if len(errors) < len(messages):
            breaker.record_ok_run(len(messages) - len(errors))
        received_metric.inc(len(messages))
        bytes_metric.inc(sum(map(len, messages)))
        last_message.set(received_us / 1e6)
        if actions.statuses:
            _count_statuses(actions.statuses, ctx, exchange)
            if actions.resyncs:
                _count_resyncs(actions, ctx, exchange)
            activity.note_refusals(actions.statuses)
        if actions.discarded:
            discards.add(actions.discarded, current_time())
        if discards.pending:
            # In front: the batch's last event stays the read's own (the latency sample).
            batch[:0] = discards.take_due(current_time(), received_us)
        if batch:
            last_ts = batch[-1].timestamp_exchange
            if last_ts is not None:
                latency.observe(max(0.0, (received_us - last_ts) / 1e6))
            if lane.overlap is None:
                await sink.send(batch, received_us)
            else:
                await lane.overlap.forward(lane, batch, received_us)
        if tripped is not None:
            raise TooManyParseErrors(tripped)
        follow(actions)
        if lane.overlap is not None:
            await lane.settle(received_us)


async def _wake_on_change(ws: WebSocket, live: PlanInbox) -> None:
    """Ping the venue whenever a plan change waits in ``live``: its pong is a read, at
    which the receive loop applies the change. Runs until the connection's nursery ends."""
    while True:
        await live.wait_changed()
        await ws.ping()


def _apply_plan_change(
    session: Session,
    changes: PlanInbox,
    dispatcher: Dispatcher,
    now_us: int,
    follow_plan: Callable[[ConnectionPlan], None] | None = None,
) -> None:
    """Hand the session the connection's new plan (symbols added or removed at run
    time); its subscribe and unsubscribe frames go to the sender, and ``follow_plan``
    (the attempt's watchdog and poller) is told."""
    plan = changes.take()
    if plan is not None:
        log.info(
            "changing a live connection's subscriptions",
            extra={
                "exchange": plan.exchange,
                "connection": plan.name,
                "symbols": len(plan.symbols),
            },
        )
        dispatcher.follow(session.change_plan(plan, now_us))
        if follow_plan is not None:
            follow_plan(plan)


async def _apply_snapshots(
    session: Session,
    bodies: trio.MemoryReceiveChannel[FetchedSnapshot],
    dispatcher: Dispatcher,
    ctx: IngestContext,
    lane: Lane,
    exchange: str,
    discards: DiscardSummary,
    attempt: int | None = None,
) -> None:
    """Hand the session every snapshot body waiting in ``bodies``; write each one's events
    with the body's own receive time, after the body's raw ``rest`` row (raw feed on:
    ``attempt`` not None)."""
    while True:
        try:
            fetched = bodies.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return  # none waiting, or the fetcher has ended (only as the connection ends)
        dispatcher.awaiting -= 1
        events: list[Event] = []
        if attempt is not None:
            events.append(
                _rest_row(session.plan, attempt, fetched.request, fetched.body, fetched.received_us)
            )
        actions = session.receive_snapshot(
            fetched.request, fetched.body, fetched.received_us, events
        )
        for exc in actions.errors:
            log.warning(
                "book snapshot unreadable: %s",
                exc,
                extra={"exchange": exchange, "symbol": fetched.request.symbol},
            )
        if actions.statuses:
            _count_statuses(actions.statuses, ctx, exchange)
            if actions.resyncs:
                _count_resyncs(actions, ctx, exchange)
        if actions.discarded:
            discards.add(actions.discarded, trio.current_time())
        if events:
            await lane.send(events, fetched.received_us)
        dispatcher.follow(actions)
        if lane.overlap is not None:
            await lane.settle(fetched.received_us)


async def _apply_polled(
    session: Session,
    inbox: PollInbox,
    dispatcher: Dispatcher,
    ctx: IngestContext,
    lane: Lane,
    exchange: str,
    discards: DiscardSummary,
    attempt: int | None = None,
) -> None:
    """Hand the session every polled body waiting in ``inbox``; write each one's events
    with the body's own receive time, after the body's raw ``rest`` row (raw feed on:
    ``attempt`` not None). An unreadable body is logged and counted as a failed
    poll (the next round asks again)."""
    for request, body, received_us in inbox.take():
        events: list[Event] = []
        if attempt is not None:
            events.append(_rest_row(session.plan, attempt, request, body, received_us))
        actions = session.receive_polled(request, body, received_us, events)
        for exc in actions.errors:
            ctx.metrics.rest_poll_errors.labels(exchange).inc()
            log.warning(
                "polled body unreadable: %s",
                exc,
                extra={"exchange": exchange, "symbol": request.symbol},
            )
        if actions.discarded:
            discards.add(actions.discarded, trio.current_time())
        if events:
            await lane.send(events, received_us)
        dispatcher.follow(actions)


def _rest_row(
    plan: ConnectionPlan, attempt: int, request: SnapshotRequest, body: bytes, received_us: int
) -> Raw:
    """The raw row of a REST body handed to the session (see :class:`~collector.events.Raw`)."""
    return Raw(
        plan.exchange, RAW_SYMBOL, None, received_us, attempt, plan.name, "rest", body, request.url
    )


def _count_statuses(statuses: tuple[Status, ...], ctx: IngestContext, exchange: str) -> None:
    """Count the gap rows and log the refused subscriptions of one result."""
    for event in statuses:
        if event.event == "gap":
            ctx.metrics.sequence_gaps.labels(exchange, event.data_type or "").inc()
        elif event.event == "subscribe_error":
            ctx.metrics.subscribe_errors.labels(exchange).inc()
            log.warning(
                "subscription refused: %s",
                event.detail,
                extra={
                    "exchange": exchange,
                    "symbol": event.symbol,
                    "data_type": event.data_type,
                },
            )


def _count_resyncs(actions: Actions, ctx: IngestContext, exchange: str) -> None:
    """Count and log the books a result found invalid (each has its ``gap`` row among
    ``actions.statuses``, with the detail logged here)."""
    details = {row.symbol: row.detail for row in actions.statuses if row.event == "gap"}
    for resync in actions.resyncs:
        ctx.metrics.book_resyncs.labels(exchange, resync.reason).inc()
        log.warning(
            "book resync (%s): %s",
            resync.reason,
            details.get(resync.symbol),
            extra={"exchange": exchange, "symbol": resync.symbol, "data_type": "orderbook"},
        )


async def _run_sender(
    ws: WebSocket,
    outbox: trio.MemoryReceiveChannel[str],
    adapter: ExchangeAdapter,
    plan: ConnectionPlan,
    ctx: IngestContext,
    lane: Lane,
    attempt: int | None = None,
) -> None:
    """Send queued frames no faster than the venue's client message limit (each as a raw
    ``send`` row of ``attempt`` too, where the raw feed is on)."""
    interval = 1.0 / adapter.client_messages_per_second
    next_send = trio.current_time()
    with outbox:
        async for frame in outbox:
            await trio.sleep_until(next_send)
            await ws.send_text(frame)
            next_send = trio.current_time() + interval
            if attempt is not None:
                now_us = ctx.wall_clock()
                sent = Raw(
                    plan.exchange,
                    RAW_SYMBOL,
                    None,
                    now_us,
                    attempt,
                    plan.name,
                    "send",
                    frame.encode(),
                )
                await lane.send([sent], now_us)


async def _run_keepalive(
    adapter: ExchangeAdapter, outbox: trio.MemorySendChannel[str], every: float
) -> None:
    """Queue the venue's application-level keepalive frame every ``every`` seconds.

    Owns its clone of the outbox and the count of this connection's keepalives (1, 2, ...),
    from which :meth:`ExchangeAdapter.keepalive_frame` builds each frame: it never calls
    the session, whose one owner is the receive loop. Runs until the connection's nursery
    is cancelled; waits when the outbox is full (the sender drains it at the venue's pace).
    """
    with outbox:
        number = 0
        while True:
            await trio.sleep(every)
            number += 1
            frame = adapter.keepalive_frame(number)
            if frame is not None:
                await outbox.send(frame)
