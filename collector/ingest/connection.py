"""One WebSocket connection's lifetime: connect, subscribe, receive, keep alive.

``run_connection`` runs a single attempt and always ends by raising: a
:class:`~collector.ingest.errors.ConnectionFailed` subclass for the expected ways a
connection ends (the exchange supervisor reconnects), anything else for bugs. It never
parses a venue's JSON itself: that is the adapter session's job.
"""

from __future__ import annotations

import logging
from collections import deque
from itertools import repeat
from typing import NoReturn

import attrs
import trio

from collector.clock import WallClock
from collector.config import WebSocketSettings
from collector.doorbell import Doorbell
from collector.events import Event, Raw, Status
from collector.exchanges.base import (
    ConnectionPlan,
    ExchangeAdapter,
    Session,
    SnapshotRequest,
)
from collector.health import HealthState
from collector.ingest.errors import (
    ConnectFailed,
    ConnectionFailed,
    OutboxOverflow,
    StaleConnection,
    TooManyParseErrors,
    VenueRequestedReconnect,
)
from collector.ingest.sink import EventSink
from collector.ingest.snapshots import run_snapshot_fetcher
from collector.ingest.websocket import WebSocket, connect_websocket
from collector.metrics import Metrics

log = logging.getLogger(__name__)

OUTBOX_SIZE = 256
CLOSE_TIMEOUT_SECS = 1.0


@attrs.frozen
class IngestContext:
    """What every connection shares: settings, metrics, health, the wall clock, and the
    writer's doorbell (``None``: nobody is rung, the writer takes batches at its tick)."""

    settings: WebSocketSettings
    metrics: Metrics
    health: HealthState
    wall_clock: WallClock
    doorbell: Doorbell | None = None


class ParseBreaker:
    """Trips when more than half of the last ``window`` frames failed to parse."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._recent: deque[bool] = deque(maxlen=window)
        self._failures = 0

    def record(self, ok: bool) -> bool:
        """Record one frame's outcome; True when the breaker trips."""
        if len(self._recent) == self.window and not self._recent[0]:
            self._failures -= 1
        self._recent.append(ok)
        if not ok:
            self._failures += 1
        return self._failures * 2 > self.window

    def record_ok_run(self, count: int) -> None:
        """Record ``count`` successful frames at once (the common case)."""
        recent = self._recent
        if not self._failures:
            # Every recorded frame was good: only the window's fill level can change.
            room = self.window - len(recent)
            if room > 0:
                recent.extend(repeat(True, min(count, room)))
            return
        for _ in range(min(count, self.window)):
            self.record(True)


async def run_connection(
    plan: ConnectionPlan,
    adapter: ExchangeAdapter,
    ctx: IngestContext,
    sink: EventSink,
) -> NoReturn:
    """One connection attempt for ``plan``, until it fails.

    Owns the socket and its per-connection nursery (receive loop, paced sender,
    keepalive). Writes ``connected``/``disconnected`` status rows for every symbol on the
    connection. Cancellation closes the socket politely and returns via Cancelled.
    Raises ConnectionFailed subclasses for every expected end.
    """
    settings = ctx.settings
    session = adapter.open_session(plan)
    max_size = int(settings.max_message_size_mb * 1024 * 1024)
    attempts = ctx.metrics.connections_total
    try:
        with trio.fail_after(settings.connect_timeout_secs):
            ws = await connect_websocket(plan.url, max_message_size=max_size)
    except trio.TooSlowError:
        attempts.labels(plan.exchange, "timeout").inc()
        failure = ConnectFailed(f"connect timed out after {settings.connect_timeout_secs}s")
        ctx.health.set_down(plan.name, f"ConnectFailed: {failure}")
        raise failure from None
    except ConnectFailed as exc:
        attempts.labels(plan.exchange, "failed").inc()
        ctx.health.set_down(plan.name, f"{type(exc).__name__}: {exc}")
        raise
    attempts.labels(plan.exchange, "connected").inc()
    reason = "cancelled"
    try:
        _emit_connection_rows(sink, session, ctx, "connected", detail=plan.url)
        ctx.health.set_up(plan.name)
        log.info(
            "connected",
            extra={
                "exchange": plan.exchange,
                "connection": plan.name,
                "symbols": len(plan.symbols),
            },
        )
        async with trio.open_nursery() as nursery:
            outbox_tx, outbox_rx = trio.open_memory_channel[str](OUTBOX_SIZE)
            for frame in session.subscribe_frames(ctx.wall_clock()):
                outbox_tx.send_nowait(frame)
            nursery.start_soon(_run_sender, ws, outbox_rx, adapter, plan, ctx, sink)
            if adapter.keepalive_interval_secs:
                nursery.start_soon(
                    _run_keepalive, session, outbox_tx.clone(), adapter.keepalive_interval_secs
                )
            snapshots_tx, snapshots_rx = trio.open_memory_channel[SnapshotRequest](OUTBOX_SIZE)
            nursery.start_soon(
                run_snapshot_fetcher,
                session,
                snapshots_rx,
                sink,
                ctx.wall_clock,
                adapter.snapshot_requests_per_second,
            )
            activity = Activity(trio.current_time())
            nursery.start_soon(_watch_for_silence, activity, settings.message_timeout_secs)
            with outbox_tx, snapshots_tx:
                await _receive_loop(ws, session, plan, ctx, sink, outbox_tx, snapshots_tx, activity)
        raise AssertionError("the receive loop only ends by raising")  # pragma: no cover
    except* ConnectionFailed as group:
        reason = _first_message(group)
        raise
    finally:
        ctx.health.set_down(plan.name, reason)
        _emit_connection_rows(sink, session, ctx, "disconnected", detail=reason)
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_SECS):
            await ws.aclose()
        log.info(
            "disconnected",
            extra={"exchange": plan.exchange, "connection": plan.name, "reason": reason},
        )


def _first_message(group: BaseExceptionGroup[Exception]) -> str:
    exc = group.exceptions[0]
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _emit_connection_rows(
    sink: EventSink, session: Session, ctx: IngestContext, event: str, detail: str
) -> None:
    now_us = ctx.wall_clock()
    assert event in ("connected", "disconnected")
    rows: list[Event] = [
        session.status(
            "connected" if event == "connected" else "disconnected", symbol, now_us, detail=detail
        )
        for symbol in session.plan.symbols
    ]
    sink.send(rows, now_us)


class Activity:
    """When the connection last read anything (Trio time), for the silence watchdog."""

    __slots__ = ("last_read",)

    def __init__(self, now: float) -> None:
        self.last_read = now


async def _watch_for_silence(activity: Activity, silence_secs: float) -> NoReturn:
    """Raise StaleConnection once nothing was read for ``silence_secs`` seconds.

    The receive loop only notes the time of each read; this task wakes about once per
    ``silence_secs`` to look. (Moving a cancel scope's deadline on every read cost a deadline
    heap update per read, on the path that runs hundreds of times a second.)
    """
    while True:
        due = activity.last_read + silence_secs
        if trio.current_time() >= due:
            raise StaleConnection(f"no message for {silence_secs}s")
        await trio.sleep_until(due)


async def _receive_loop(
    ws: WebSocket,
    session: Session,
    plan: ConnectionPlan,
    ctx: IngestContext,
    sink: EventSink,
    outbox: trio.MemorySendChannel[str],
    snapshots: trio.MemorySendChannel[SnapshotRequest],
    activity: Activity,
) -> NoReturn:
    """Read, parse and forward until the connection fails (or the watchdog ends it)."""
    settings = ctx.settings
    metrics = ctx.metrics
    exchange = plan.exchange
    received_metric = metrics.messages_received.labels(exchange)
    bytes_metric = metrics.bytes_received.labels(exchange)
    parse_errors = metrics.parse_errors.labels(exchange)
    latency = metrics.latency.labels(exchange)
    last_message = metrics.last_message_timestamp.labels(exchange)
    breaker = ParseBreaker(settings.parse_error_window)
    wall_clock = ctx.wall_clock
    raw = plan.raw
    subscribed = False
    statuses_seen = session.status_rows
    current_time = trio.current_time
    parse_batch = session.parse_batch
    name = plan.name
    while True:
        messages = await ws.receive_messages()
        activity.last_read = current_time()
        if not messages:
            continue
        received_us = wall_clock()
        batch: list[Event] = []
        if raw:
            batch += [
                Raw(exchange, "_all", None, received_us, None, name, "recv", payload)
                for payload in messages
            ]
        errors = parse_batch(messages, received_us, batch)
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
        if batch:
            last_ts = batch[-1].timestamp_exchange
            if last_ts is not None:
                latency.observe(max(0.0, (received_us - last_ts) / 1e6))
            if session.status_rows != statuses_seen:
                statuses_seen = session.status_rows
                _count_statuses(batch, ctx, exchange)
            sink.send(batch, received_us)
        if tripped is not None:
            raise TooManyParseErrors(tripped)
        if session.outgoing or session.snapshot_requests:
            _forward_requests(session, outbox, snapshots)
        if not subscribed and session.pending_subscriptions <= 0:
            subscribed = True
            ctx.health.set_subscribed(plan.name)
        if session.reconnect_reason is not None:
            raise VenueRequestedReconnect(session.reconnect_reason)


def _forward_requests(
    session: Session,
    outbox: trio.MemorySendChannel[str],
    snapshots: trio.MemorySendChannel[SnapshotRequest],
) -> None:
    """Queue the frames and REST snapshots the session asked for (never blocks)."""
    try:
        for frame in session.outgoing:
            outbox.send_nowait(frame)
        for request in session.snapshot_requests:
            snapshots.send_nowait(request)
    except trio.WouldBlock:
        raise OutboxOverflow(
            f"the session queued more than {OUTBOX_SIZE} frames or snapshot requests"
        ) from None
    finally:
        session.outgoing.clear()
        session.snapshot_requests.clear()


def _count_statuses(batch: list[Event], ctx: IngestContext, exchange: str) -> None:
    """Count the gap rows and log the refused subscriptions of a batch."""
    for event in batch:
        if type(event) is Status:
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


async def _run_sender(
    ws: WebSocket,
    outbox: trio.MemoryReceiveChannel[str],
    adapter: ExchangeAdapter,
    plan: ConnectionPlan,
    ctx: IngestContext,
    sink: EventSink,
) -> None:
    """Send queued frames no faster than the venue's client message limit."""
    interval = 1.0 / adapter.client_messages_per_second
    next_send = trio.current_time()
    with outbox:
        async for frame in outbox:
            await trio.sleep_until(next_send)
            await ws.send_text(frame)
            next_send = trio.current_time() + interval
            if plan.raw:
                now_us = ctx.wall_clock()
                sink.send(
                    [
                        Raw(
                            plan.exchange,
                            "_all",
                            None,
                            now_us,
                            None,
                            plan.name,
                            "send",
                            frame.encode(),
                        )
                    ],
                    now_us,
                )


async def _run_keepalive(
    session: Session, outbox: trio.MemorySendChannel[str], every: float
) -> None:
    """Queue the venue's application-level keepalive frame every ``every`` seconds."""
    with outbox:
        while True:
            await trio.sleep(every)
            frame = session.keepalive_frame()
            if frame is not None:
                await outbox.send(frame)
