"""One connection's lifetime against the fake Binance, in virtual time.

Every test here runs with ``autojump_clock`` (MockClock, autojump_threshold=0) and a wall
clock derived from it (``trio_wall_clock``), so status-row timestamps are virtual times and
can be asserted exactly. The fake runs in the same Trio loop over real loopback sockets.
"""

from __future__ import annotations

import socket
from array import array
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from collector.clock import trio_wall_clock
from collector.config import MarketSettings, WebSocketSettings
from collector.events import RAW_SYMBOL, BookUpdate, Event, Raw, Status, Trade
from collector.exchanges.base import ConnectionPlan, ParseError
from collector.exchanges.binance import BinanceAdapter, BinanceSession
from collector.health import HealthState
from collector.ingest import connection
from collector.ingest.breaker import ParseBreaker
from collector.ingest.connection import IngestContext, run_connection
from collector.ingest.errors import (
    ConnectionFailed,
    ConnectionLost,
    OutboxOverflow,
    StaleConnection,
    TooManyParseErrors,
    VenueRequestedReconnect,
    connection_failure,
)
from collector.ingest.sink import EventSink
from collector.ingest.supervisor import supervise_connection
from collector.metrics import Metrics
from tests.fakes.binance import FakeBinance, depth20_frame, server_shutdown_frame, trade_frame

EPOCH_US = 1_700_000_000_000_000
TIMEOUT = 300.0  # virtual seconds: bounds every wait without ever being reached


# --------------------------------------------------------------------------- helpers


def ws_settings(**overrides: float) -> WebSocketSettings:
    values: dict[str, float] = {
        "initial_retry_delay_secs": 1.0,
        "max_retry_delay_secs": 60.0,
        "healthy_after_secs": 60.0,
        "message_timeout_secs": 30.0,
        "connect_timeout_secs": 10.0,
        "parse_error_window": 20,
    }
    values.update(overrides)
    return WebSocketSettings(**values)  # type: ignore[arg-type]


def binance_plans(
    base_url: str,
    symbols: Sequence[str] = ("btcusdt",),
    feeds: Sequence[str] = ("trades",),
) -> tuple[BinanceAdapter, list[ConnectionPlan]]:
    market = MarketSettings(
        exchange="binance",
        symbols=tuple(symbols),
        feeds=tuple(feeds),  # type: ignore[arg-type]
        base_url=base_url,
    )
    adapter = BinanceAdapter()
    return adapter, adapter.plan_connections([market])


def make_ctx(settings: WebSocketSettings, plans: Sequence[ConnectionPlan]) -> IngestContext:
    metrics = Metrics()
    health = HealthState(metrics)
    for plan in plans:
        health.add_connection(plan.name, plan.exchange, plan.symbols)
    return IngestContext(settings, metrics, health, trio_wall_clock(EPOCH_US))


def vtime(event: Event) -> float:
    """The virtual Trio time at which an event's frame was received."""
    return (event.timestamp_collector - EPOCH_US) / 1e6


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Recorder:
    """Reads an event channel to its end, keeping every batch; waits on what arrived."""

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.events: list[Event] = []
        self.closed = False
        self._changed = trio.Event()

    async def run(self, channel: trio.MemoryReceiveChannel[list[Event]]) -> None:
        with channel:
            async for batch in channel:
                self.batches.append(batch)
                self.events.extend(batch)
                self._notify()
        self.closed = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def status(self, event: str | None = None, symbol: str | None = None) -> list[Status]:
        return [
            e
            for e in self.events
            if type(e) is Status
            and (event is None or e.event == event)
            and (symbol is None or e.symbol == symbol)
        ]

    def trades(self) -> list[Trade]:
        return [e for e in self.events if type(e) is Trade]

    async def wait_status(self, event: str, count: int = 1) -> list[Status]:
        await self.wait_for(lambda: len(self.status(event)) >= count)
        return self.status(event)


async def start_supervised(
    nursery: trio.Nursery,
    fake_url: str,
    settings: WebSocketSettings,
    *,
    symbols: Sequence[str] = ("btcusdt",),
    feeds: Sequence[str] = ("trades",),
    channel_size: int = 64,
) -> tuple[Recorder, IngestContext, ConnectionPlan]:
    adapter, plans = binance_plans(fake_url, symbols, feeds)
    (plan,) = plans
    ctx = make_ctx(settings, plans)
    tx, rx = trio.open_memory_channel[list[Event]](channel_size)
    recorder = Recorder()
    nursery.start_soon(recorder.run, rx)
    nursery.start_soon(supervise_connection, plan, adapter, ctx, tx)
    return recorder, ctx, plan


def trade(trade_id: int, symbol: str = "btcusdt") -> str:
    return trade_frame(symbol, trade_id, 100.0 + trade_id, 0.5, EPOCH_US + trade_id, False)


async def send_settled(fake: FakeBinance, frame: str) -> None:
    """Send one frame and let the collector handle it before going on (one frame per read)."""
    assert await fake.send(frame) >= 1
    await trio.testing.wait_all_tasks_blocked()


async def disconnects(ctx: IngestContext, reason: str) -> float:
    """The disconnect counter, once the supervisor has handled what already happened."""
    await trio.testing.wait_all_tasks_blocked()
    return ctx.metrics.sample(
        "collector_websocket_disconnects_total", {"exchange": "binance", "reason": reason}
    )


# --------------------------------------------------------------------------- ParseBreaker


def test_parse_breaker_window_arithmetic() -> None:
    breaker = ParseBreaker(4)
    outcomes = [breaker.record(ok) for ok in (False, True, True, False, True, False)]
    # Windows: [F] [F T] [F T T] [F T T F] [T T F T] [T F T F]: never more than 2 of 4 bad.
    assert outcomes == [False] * 6
    assert breaker.record(False) is True  # [F T F F]: 3 of 4 bad


def test_parse_breaker_old_failures_slide_out_of_the_window() -> None:
    breaker = ParseBreaker(6)
    assert [breaker.record(False) for _ in range(3)] == [False] * 3  # 3 of 6: half, not more
    breaker.record_ok_run(100)  # a long good run pushes every failure out
    assert [breaker.record(False) for _ in range(3)] == [False] * 3
    assert breaker.record(False) is True  # 4 of the last 6


def test_parse_breaker_trips_on_failures_before_the_window_is_full() -> None:
    breaker = ParseBreaker(20)
    assert [breaker.record(False) for _ in range(11)] == [False] * 10 + [True]


def test_parse_breaker_ok_run_counts_each_frame() -> None:
    breaker = ParseBreaker(4)
    breaker.record(False)
    breaker.record(False)
    breaker.record_ok_run(2)  # [F F T T]
    assert breaker.record(False) is False  # [F T T F]: 2 of 4
    assert breaker.record(False) is False  # [T T F F]: 2 of 4
    assert breaker.record(False) is True  # [T F F F]: 3 of 4


# --------------------------------------------------------------------------- status rows


async def test_status_rows_for_every_symbol_at_virtual_wall_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, ctx, plan = await start_supervised(
            nursery,
            fake.url,
            ws_settings(),
            symbols=("btcusdt", "ethusdt"),
            feeds=("trades", "ticker"),
        )
        symbols = ["BTCUSDT", "ETHUSDT"]
        metrics = ctx.metrics
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed", 4)
            connected = rec.status("connected")
            assert sorted(r.symbol for r in connected) == symbols
            assert all(vtime(r) == 0.0 for r in connected)
            assert all(r.detail == plan.url for r in connected)
            subscribed = rec.status("subscribed")
            assert sorted((r.symbol, r.data_type) for r in subscribed) == [
                ("BTCUSDT", "ticker"),
                ("BTCUSDT", "trades"),
                ("ETHUSDT", "ticker"),
                ("ETHUSDT", "trades"),
            ]
            assert all(vtime(r) == 0.0 for r in subscribed)
            assert ctx.health.ready
            for symbol in symbols:
                labels = {"exchange": "binance", "symbol": symbol}
                assert metrics.sample("collector_websocket_connected", labels) == 1

            await trio.sleep(2.5)
            await fake.drop()
            disconnected = await rec.wait_status("disconnected", 2)
            assert sorted(r.symbol for r in disconnected) == symbols
            assert all(vtime(r) == pytest.approx(2.5) for r in disconnected)
            assert all(
                r.detail == "ConnectionLost: connection closed by peer without a close frame"
                for r in disconnected
            )
            conn = ctx.health.connections[plan.name]
            assert not conn.up
            assert conn.last_error == disconnected[0].detail
            for symbol in symbols:
                labels = {"exchange": "binance", "symbol": symbol}
                assert metrics.sample("collector_websocket_connected", labels) == 0
            assert await disconnects(ctx, "connection_lost") == 1

            # The reconnect writes connected rows for every symbol again, after the backoff.
            reconnected = (await rec.wait_status("connected", 4))[2:]
            assert sorted(r.symbol for r in reconnected) == symbols
            assert 2.5 + 0.75 <= vtime(reconnected[0]) <= 2.5 + 1.25
            await rec.wait_status("subscribed", 8)
            assert ctx.health.connections[plan.name].connects == 2
        nursery.cancel_scope.cancel()


async def test_cancellation_closes_politely_and_records_the_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        adapter, plans = binance_plans(fake.url, ("btcusdt", "ethusdt"))
        (plan,) = plans
        ctx = make_ctx(ws_settings(), plans)
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as inner:
                inner.start_soon(supervise_connection, plan, adapter, ctx, tx)
                await rec.wait_status("subscribed", 2)
                await trio.sleep(4.0)
                inner.cancel_scope.cancel()
            # supervise_connection owns its channel: closing it ends the reader.
            await rec.wait_for(lambda: rec.closed)
            await fake.wait_disconnected()
        disconnected = rec.status("disconnected")
        assert sorted(r.symbol for r in disconnected) == ["BTCUSDT", "ETHUSDT"]
        assert all(r.detail == "cancelled" and vtime(r) == 4.0 for r in disconnected)
        assert ctx.health.connections[plan.name].last_error == "cancelled"
        assert ctx.metrics.sum_samples("collector_websocket_disconnects_total") == 0
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- stale watchdog


async def test_silent_connection_is_replaced_after_exactly_the_message_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, ctx, plan = await start_supervised(
            nursery, fake.url, ws_settings(message_timeout_secs=5.0), symbols=("btcusdt", "ethusdt")
        )
        with trio.fail_after(TIMEOUT):
            subscribed = await rec.wait_status("subscribed", 2)
            assert [vtime(r) for r in subscribed] == [0.0, 0.0]  # the last frame: the ack
            # The fake now says nothing.
            disconnected = await rec.wait_status("disconnected", 2)
            assert [vtime(r) for r in disconnected] == [5.0, 5.0]
            assert {r.detail for r in disconnected} == {"StaleConnection: no data for 5.0s"}
            assert await disconnects(ctx, "stale") == 1
            assert ctx.health.connections[plan.name].last_error == disconnected[0].detail

            # Replaced: a new connection after the first backoff delay, then stale again.
            connected = await rec.wait_status("connected", 4)
            t_reconnect = vtime(connected[2])
            assert 5.0 + 0.75 <= t_reconnect <= 5.0 + 1.25
            assert fake.connections == 2
            disconnected = await rec.wait_status("disconnected", 4)
            assert vtime(disconnected[2]) == pytest.approx(t_reconnect + 5.0)
            assert await disconnects(ctx, "stale") == 2
        nursery.cancel_scope.cancel()


async def test_each_frame_moves_the_stale_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, ctx, _ = await start_supervised(
            nursery, fake.url, ws_settings(message_timeout_secs=5.0)
        )
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed")
            await trio.sleep(3.0)
            await send_settled(fake, trade(1))
            await trio.sleep(4.5)  # t = 7.5: past the first deadline (5.0), before 8.0
            assert rec.status("disconnected") == []
            await send_settled(fake, trade(2))
            disconnected = await rec.wait_status("disconnected")
        assert [vtime(t) for t in rec.trades()] == [3.0, 7.5]
        assert vtime(disconnected[0]) == pytest.approx(12.5)
        assert await disconnects(ctx, "stale") == 1
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- parse errors


async def test_garbage_frames_are_skipped_and_counted_while_data_flows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, ctx, _ = await start_supervised(nursery, fake.url, ws_settings(parse_error_window=6))
        metrics = ctx.metrics
        labels = {"exchange": "binance"}
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed")
            for frame in [trade(1), None, trade(2), trade(3), None, trade(4)]:
                if frame is None:
                    assert await fake.send_garbage() == 1
                    await trio.testing.wait_all_tasks_blocked()
                else:
                    await send_settled(fake, frame)
            assert [t.trade_id for t in rec.trades()] == ["1", "2", "3", "4"]
            assert metrics.sample("collector_parse_errors_total", labels) == 2
            assert metrics.sample("collector_messages_received_total", labels) == 1 + 6
            assert rec.status("disconnected") == []
            assert metrics.sum_samples("collector_websocket_disconnects_total") == 0
        nursery.cancel_scope.cancel()


async def test_parse_error_breaker_reconnects_when_most_recent_frames_are_bad(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, ctx, _ = await start_supervised(nursery, fake.url, ws_settings(parse_error_window=6))
        labels = {"exchange": "binance"}
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed")
            for trade_id in range(1, 7):  # a full window of good frames
                await send_settled(fake, trade(trade_id))
            for _ in range(3):  # 3 of the last 6 bad: half, not more
                assert await fake.send_garbage() == 1
                await trio.testing.wait_all_tasks_blocked()
            assert rec.status("disconnected") == []
            await trio.sleep(1.0)
            assert await fake.send_garbage() == 1  # 4 of the last 6
            disconnected = await rec.wait_status("disconnected")
            assert vtime(disconnected[0]) == 1.0
            assert disconnected[0].detail is not None
            assert disconnected[0].detail.startswith(
                "TooManyParseErrors: more than half of the last 6 frames failed to parse"
            )
            assert await disconnects(ctx, "parse_errors") == 1
            assert ctx.metrics.sample("collector_parse_errors_total", labels) == 4

            # Data continues on the new connection (a fresh session).
            await rec.wait_status("subscribed", 2)
            await send_settled(fake, trade(7))
        assert [t.trade_id for t in rec.trades()] == [str(i) for i in range(1, 8)]
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- venue reconnect


async def test_server_shutdown_notice_reconnects_and_data_continues(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, ctx, _ = await start_supervised(nursery, fake.url, ws_settings())
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed")
            await send_settled(fake, trade(1))
            await trio.sleep(2.0)
            assert await fake.send_server_shutdown(EPOCH_US) == 1
            disconnected = await rec.wait_status("disconnected")
            assert vtime(disconnected[0]) == 2.0
            assert (
                disconnected[0].detail == "VenueRequestedReconnect: binance serverShutdown notice"
            )
            assert await disconnects(ctx, "venue_reconnect") == 1
            connected = await rec.wait_status("connected", 2)
            assert 2.0 + 0.75 <= vtime(connected[1]) <= 2.0 + 1.25
            await rec.wait_status("subscribed", 2)
            assert fake.connections == 2
            await send_settled(fake, trade(2))
        assert [t.trade_id for t in rec.trades()] == ["1", "2"]
        assert vtime(rec.trades()[1]) == vtime(connected[1])
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- subscribe errors


async def test_rejected_subscription_is_recorded_and_other_streams_keep_flowing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance(reject_streams={"ethusdt@trade"})
        await nursery.start(fake.run)
        rec, ctx, plan = await start_supervised(
            nursery, fake.url, ws_settings(), symbols=("btcusdt", "ethusdt", "solusdt")
        )
        with trio.fail_after(TIMEOUT):
            (error,) = await rec.wait_status("subscribe_error")
            await rec.wait_status("subscribed", 2)
            assert error.symbol == "ETHUSDT"
            assert error.data_type == "trades"
            assert error.detail == "ethusdt@trade: Invalid request: invalid stream (code 2)"
            assert sorted(r.symbol for r in rec.status("subscribed")) == ["BTCUSDT", "SOLUSDT"]
            assert (
                ctx.metrics.sample("collector_subscribe_errors_total", {"exchange": "binance"}) == 1
            )
            # Readiness does not wait for a subscription that will never be acknowledged.
            await trio.testing.wait_all_tasks_blocked()
            assert ctx.health.ready
            assert ctx.health.connections[plan.name].subscribed_once
            await send_settled(fake, trade(1, "btcusdt"))
            await send_settled(fake, trade(1, "solusdt"))
            assert await fake.send(trade(1, "ethusdt")) == 0  # never subscribed
        assert [(t.symbol, t.trade_id) for t in rec.trades()] == [
            ("BTCUSDT", "1"),
            ("SOLUSDT", "1"),
        ]
        assert rec.status("disconnected") == []
        # The bisecting re-requests went out paced at the venue's client message rate.
        assert len(fake.client_messages) >= 3
        assert fake.rate_limited == 0
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- one read, many frames


class ScriptedWebSocket:
    """Stands in for ``collector.ingest.websocket.WebSocket``: each read returns one scripted
    list of messages (so several frames arrive in one read, deterministically)."""

    def __init__(self, reads: list[list[bytes]]) -> None:
        self.reads = reads
        self.sent: list[str] = []
        self.closed = False

    async def receive_messages(self) -> list[bytes]:
        await trio.lowlevel.checkpoint()
        if not self.reads:
            await trio.sleep_forever()
        return self.reads.pop(0)

    async def send_text(self, text: str) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(text)

    async def aclose(self, code: int = 1000) -> None:
        self.closed = True


ACK = b'{"result":null,"id":1}'
GARBAGE = b'{"stream":"btcusdt@trade","data":{"e":'


async def run_scripted(
    monkeypatch: pytest.MonkeyPatch,
    reads: list[list[bytes]],
    settings: WebSocketSettings,
    ends_with: type[Exception],
    feeds: Sequence[str] = ("trades",),
) -> tuple[list[list[Event]], IngestContext, ConnectionPlan, ScriptedWebSocket]:
    """Run one Binance connection over scripted reads until it fails with ``ends_with``;
    the batches it sent, its context, its plan and the scripted socket."""
    ws = ScriptedWebSocket(reads)

    async def connect(url: str, *, max_message_size: int) -> ScriptedWebSocket:
        return ws

    monkeypatch.setattr(connection, "connect_websocket", connect)
    adapter, plans = binance_plans("ws://127.0.0.1:1", feeds=feeds)
    (plan,) = plans
    ctx = make_ctx(settings, plans)
    tx, rx = trio.open_memory_channel[list[Event]](64)
    sink = EventSink(tx, "binance", ctx.metrics)
    with pytest.raises(ends_with):
        await run_connection(plan, adapter, ctx, sink)
    tx.close()
    return [batch async for batch in rx], ctx, plan, ws


async def test_breaker_trip_keeps_the_good_frames_of_the_same_read(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = [[ACK], [GARBAGE, GARBAGE, trade(1).encode(), GARBAGE, trade(2).encode()]]
    batches, ctx, _plan, ws = await run_scripted(
        monkeypatch, reads, ws_settings(parse_error_window=4), TooManyParseErrors
    )
    events = [e for batch in batches for e in batch]
    # Every good frame that arrived is kept, also those after the tripping frame.
    assert [e.trade_id for e in events if type(e) is Trade] == ["1", "2"]
    assert [e.event for e in events if type(e) is Status] == [
        "connected",
        "subscribed",
        "disconnected",
    ]
    labels = {"exchange": "binance"}
    assert ctx.metrics.sample("collector_messages_received_total", labels) == 6
    assert ctx.metrics.sample("collector_parse_errors_total", labels) == 3
    assert ws.closed


async def test_the_raw_feed_keeps_every_frame_of_a_read_even_one_that_fails_to_parse(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = [trade(1).encode(), GARBAGE, trade(2).encode()]
    batches, ctx, plan, _ws = await run_scripted(
        monkeypatch,
        [[ACK], read],
        ws_settings(message_timeout_secs=5.0),
        StaleConnection,
        feeds=("trades", "raw"),
    )
    assert plan.raw
    (data_batch,) = [b for b in batches if any(type(e) is Trade for e in b)]
    raw_rows = [e for e in data_batch if type(e) is Raw]
    assert [r.payload for r in raw_rows] == read  # byte for byte, the bad frame too
    assert {(r.connection, r.direction, r.symbol) for r in raw_rows} == {
        (plan.name, "recv", RAW_SYMBOL)
    }
    received_us = data_batch[0].timestamp_collector
    assert all(e.timestamp_collector == received_us for e in data_batch)
    assert [e.trade_id for e in data_batch if type(e) is Trade] == ["1", "2"]
    labels = {"exchange": "binance"}
    assert ctx.metrics.sample("collector_parse_errors_total", labels) == 1
    assert ctx.metrics.sample("collector_bytes_received_total", labels) == sum(
        len(payload) for payload in [ACK, *read]
    )


async def test_book_updates_cross_the_channel_with_flat_levels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Level tuples waiting in the channel kept the garbage collector busy at full speed:
    # the connection sends each side as one array of price, size, price, size, ...
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, _ctx, _plan = await start_supervised(
            nursery, fake.url, ws_settings(), feeds=("trades", "orderbook")
        )
        with trio.fail_after(TIMEOUT):
            await fake.wait_subscribed()
            await send_settled(fake, depth20_frame("btcusdt", 7, [(100.5, 2.0), (100.0, 1.5)], []))
            await send_settled(fake, trade(1))
            await rec.wait_for(lambda: len(rec.trades()) == 1)
        (book,) = [e for e in rec.events if type(e) is BookUpdate]
        assert (book.symbol, book.kind, book.sequence) == ("BTCUSDT", "snapshot", 7)
        assert book.bids == array("d", [100.5, 2.0, 100.0, 1.5])
        assert book.asks == array("d")
        assert rec.trades()[0].trade_id == "1"
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- one error


class BreakingWebSocket(ScriptedWebSocket):
    """A scripted socket that breaks under its first write, ``delay`` seconds after the
    write began: the write fails with ``send_error``, and in the same instant the next read
    gives ``last`` (as when a venue says goodbye and closes). The sender fails first, the
    receive loop right after, before it sees any cancellation."""

    def __init__(
        self, reads: list[list[bytes]], delay: float, last: list[bytes], send_error: Exception
    ) -> None:
        super().__init__(reads)
        self.delay = delay
        self.last = last
        self.send_error = send_error
        self.broken = trio.Event()

    async def receive_messages(self) -> list[bytes]:
        if self.reads:
            return await super().receive_messages()
        await self.broken.wait()
        read, self.last = self.last, []
        return read

    async def send_text(self, text: str) -> None:
        await trio.sleep(self.delay)
        self.broken.set()
        raise self.send_error


class _BuggySession(BinanceSession):
    bug = RuntimeError("bug in a parser")

    def parse_batch(
        self, payloads: Sequence[bytes], received_us: int, events: list[Event]
    ) -> list[ParseError]:
        errors = super().parse_batch(payloads, received_us, events)
        if any(type(e) is Trade for e in events):
            raise self.bug
        return errors


class _BuggyAdapter(BinanceAdapter):
    def open_session(self, plan: ConnectionPlan) -> BinanceSession:
        return _BuggySession(plan)


async def run_on(
    monkeypatch: pytest.MonkeyPatch,
    ws: ScriptedWebSocket,
    settings: WebSocketSettings,
    adapter: BinanceAdapter | None = None,
) -> tuple[BaseException, list[Event]]:
    """Run one Binance connection on ``ws`` until it raises; what it raised, and its rows."""

    async def connect(url: str, *, max_message_size: int) -> ScriptedWebSocket:
        return ws

    monkeypatch.setattr(connection, "connect_websocket", connect)
    _, plans = binance_plans("ws://127.0.0.1:1")
    ctx = make_ctx(settings, plans)
    tx, rx = trio.open_memory_channel[list[Event]](64)
    sink = EventSink(tx, "binance", ctx.metrics)
    try:
        await run_connection(plans[0], adapter or BinanceAdapter(), ctx, sink)
    except BaseException as exc:
        raised = exc
    tx.close()
    return raised, [e for batch in [b async for b in rx] for e in batch]


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


async def test_failures_at_once_end_as_the_one_that_ranks_first(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await trio.sleep(3.0)  # the connection comes up at 3.0 and fails at 8.0
    lost = ConnectionLost("peer went away")
    shutdown = server_shutdown_frame(EPOCH_US).encode()
    ws = BreakingWebSocket([[ACK]], 5.0, [shutdown], lost)
    failure, rows = await run_on(monkeypatch, ws, ws_settings())
    # The broken socket failed first, the venue's goodbye came in the same instant: the
    # goodbye is the cause, so it names the end.
    assert type(failure) is VenueRequestedReconnect
    assert str(failure) == "binance serverShutdown notice"
    assert failure.uptime == 5.0
    group = failure.__cause__
    assert isinstance(group, BaseExceptionGroup)
    assert sorted(type(e).__name__ for e in leaves(group)) == [
        "ConnectionLost",
        "VenueRequestedReconnect",
    ]
    assert lost in leaves(group)
    (disconnected,) = [e for e in rows if type(e) is Status and e.event == "disconnected"]
    assert disconnected.detail == "VenueRequestedReconnect: binance serverShutdown notice"
    assert ws.closed


async def test_a_bug_in_the_connection_propagates_as_itself(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = ScriptedWebSocket([[ACK], [trade(1).encode()]])
    raised, rows = await run_on(monkeypatch, ws, ws_settings(), _BuggyAdapter())
    assert isinstance(raised, BaseExceptionGroup)
    assert leaves(raised) == [_BuggySession.bug]  # the group of the nursery, untouched
    assert not isinstance(raised, ConnectionFailed)
    assert [e.detail for e in rows if type(e) is Status and e.event == "disconnected"] == [
        "cancelled"
    ]


async def test_a_bug_with_a_failure_at_once_propagates_with_the_failure_as_cause(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = BreakingWebSocket([[ACK]], 5.0, [trade(1).encode()], ConnectionLost("gone"))
    raised, _rows = await run_on(monkeypatch, ws, ws_settings(), _BuggyAdapter())
    # Nobody reconnects after a bug: the bug goes on, the failure stays in its cause.
    assert isinstance(raised, BaseExceptionGroup)
    assert leaves(raised) == [_BuggySession.bug]
    cause = raised.__cause__
    assert isinstance(cause, BaseExceptionGroup)
    assert sorted(type(e).__name__ for e in leaves(cause)) == ["ConnectionLost", "RuntimeError"]


@pytest.mark.parametrize(
    ("failures", "chosen"),
    [
        ([StaleConnection("s"), ConnectionLost("l")], ConnectionLost),
        ([ConnectionLost("l"), VenueRequestedReconnect("v")], VenueRequestedReconnect),
        ([ConnectionLost("l"), TooManyParseErrors("p")], TooManyParseErrors),
        ([OutboxOverflow("o"), TooManyParseErrors("p")], TooManyParseErrors),
        ([ConnectionFailed("?"), StaleConnection("s")], StaleConnection),
    ],
)
def test_the_failure_that_ranks_first_is_chosen_in_either_order(
    failures: list[ConnectionFailed], chosen: type[ConnectionFailed]
) -> None:
    for ordered in (failures, failures[::-1]):
        inner = ExceptionGroup("inner", ordered[1:])
        # As run_connection gets them: the failures split from the nursery's group.
        group, _ = ExceptionGroup[Exception]("nursery", [ordered[0], inner]).split(ConnectionFailed)
        assert group is not None
        failure = connection_failure(group)
        assert type(failure) is chosen
        assert failure.args == next(f for f in failures if type(f) is chosen).args
        assert failure.uptime == 0.0


# --------------------------------------------------------------------------- keepalive


class _OwnedSession(BinanceSession):
    """A Binance session that notes the task behind every use of it (every attribute
    read, so every method call too)."""

    def __init__(self, plan: ConnectionPlan) -> None:
        self.tasks: set[trio.lowlevel.Task] = set()
        super().__init__(plan)

    def __getattribute__(self, name: str) -> Any:
        if name != "tasks":
            object.__getattribute__(self, "tasks").add(trio.lowlevel.current_task())
        return object.__getattribute__(self, name)


class _PingingAdapter(BinanceAdapter):
    """Binance with an application ping every 5 s; keeps the sessions it opened."""

    keepalive_interval_secs: ClassVar[float | None] = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[_OwnedSession] = []

    def keepalive_frame(self, number: int) -> str:
        return f'{{"method":"PING","id":{number}}}'

    def open_session(self, plan: ConnectionPlan) -> _OwnedSession:
        session = _OwnedSession(plan)
        self.sessions.append(session)
        return session


async def test_the_keepalive_task_never_touches_the_session(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = _PingingAdapter()
    ws = ScriptedWebSocket([[ACK]])
    failure, _rows = await run_on(monkeypatch, ws, ws_settings(message_timeout_secs=22.0), adapter)
    assert type(failure) is StaleConnection
    # Pings at 5, 10, 15 and 20 s, numbered by the keepalive task, sent by the sender.
    pings = [frame for frame in ws.sent if "PING" in frame]
    assert pings == [f'{{"method":"PING","id":{n}}}' for n in (1, 2, 3, 4)]
    # Yet the session was used by one task only: the connection's (here the test's own,
    # which awaited run_connection), never by the keepalive task.
    (session,) = adapter.sessions
    assert session.tasks == {trio.lowlevel.current_task()}
