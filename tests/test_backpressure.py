"""A connection whose writer is behind waits for room instead of dropping, in virtual time.

The event channel here is one batch deep and the test is the writer: it reads nothing
until it chooses to, so the connection's ``connected`` rows fill the channel and the
receive loop waits with the next batch (the subscription's reply), while the fake's frames
wait in the kernel's socket buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import pytest
import trio
import trio.testing

from collector.events import Event, Status
from collector.exchanges.base import ConnectionPlan
from collector.ingest.connection import IngestContext
from collector.ingest.sink import CLOSE_SEND_TIMEOUT_SECS
from collector.ingest.supervisor import supervise_connection
from tests.fakes.binance import FakeBinance
from tests.test_connection import (
    TIMEOUT,
    Recorder,
    binance_plans,
    disconnects,
    make_ctx,
    trade,
    vtime,
    ws_settings,
)

LABELS = {"exchange": "binance"}


def waited(ctx: IngestContext, plan: ConnectionPlan) -> tuple[float, float]:
    """(seconds of ended waits for the writer, seconds of the wait under way)."""
    labels = {"exchange": "binance", "connection": plan.name}
    return (
        ctx.metrics.sample("collector_writer_wait_seconds_total", labels),
        ctx.metrics.sample("collector_writer_waiting_seconds", labels),
    )


async def start_unread(
    nursery: trio.Nursery,
    fake: FakeBinance,
    *,
    message_timeout_secs: float = 5.0,
    silence_timeout_secs: float | None = None,
    symbols: Sequence[str] = ("btcusdt",),
) -> tuple[trio.MemoryReceiveChannel[list[Event]], IngestContext, ConnectionPlan]:
    """Supervise one connection to ``fake`` over a one-batch channel nobody reads yet;
    return once it is subscribed and waits for the writer."""
    adapter, plans = binance_plans(fake.url, symbols)
    if silence_timeout_secs is not None:
        plans = [
            attrs.evolve(
                p,
                subscriptions=tuple(
                    attrs.evolve(sub, silence_timeout_secs=silence_timeout_secs)
                    for sub in p.subscriptions
                ),
            )
            for p in plans
        ]
    (plan,) = plans
    ctx = make_ctx(ws_settings(message_timeout_secs=message_timeout_secs), plans)
    tx, rx = trio.open_memory_channel[list[Event]](1)
    nursery.start_soon(supervise_connection, plan, adapter, ctx, tx)
    await fake.wait_subscribed()
    await trio.testing.wait_all_tasks_blocked()
    assert ctx.health.connections[plan.name].writer_wait_since is not None
    return rx, ctx, plan


async def test_a_slow_writer_makes_the_connection_wait_and_every_frame_is_stored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        with trio.fail_after(TIMEOUT):
            rx, ctx, plan = await start_unread(nursery, fake)
            for trade_id in range(1, 201):
                assert await fake.send(trade(trade_id)) == 1
            await trio.sleep(60.0)  # twelve times the message timeout
            # Still up: waiting for the writer is not the venue's silence.
            assert await disconnects(ctx, "stale") == 0
            assert ctx.health.connections[plan.name].up
            # It stopped reading (only the subscription's reply was read): TCP holds the rest.
            assert ctx.metrics.sample("collector_messages_received_total", LABELS) == 1
            assert waited(ctx, plan) == (0.0, 60.0)
            report = ctx.health.report()
            assert report["status"] == "degraded"
            assert report["problems"] == {
                plan.name: "waiting 60s for the writer (the event channel is full)"
            }

            rec = Recorder()
            nursery.start_soon(rec.run, rx)  # the writer catches up
            await rec.wait_for(lambda: len(rec.trades()) == 200)
            assert [t.trade_id for t in rec.trades()] == [str(i) for i in range(1, 201)]
            assert all(vtime(t) == 60.0 for t in rec.trades())
            assert rec.status("dropped") == []
            assert ctx.metrics.sample("collector_messages_dropped_total", LABELS) == 0
            assert waited(ctx, plan) == (60.0, 0.0)
            assert ctx.health.report()["status"] == "healthy"

            # The watchdog counts again from the last read.
            (disconnected,) = await rec.wait_status("disconnected")
            assert vtime(disconnected) == 65.0
            assert disconnected.detail == "StaleConnection: no data for 5.0s"
        nursery.cancel_scope.cancel()


async def test_the_end_of_a_wait_counts_as_a_read_for_the_watchdog(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        with trio.fail_after(TIMEOUT):
            rx, ctx, _plan = await start_unread(nursery, fake)
            # The venue says nothing more. (Not a multiple of the timeout: the watchdog
            # looks every 5 s during the wait, and must not fire at its next look.)
            await trio.sleep(32.0)
            rec = Recorder()
            nursery.start_soon(rec.run, rx)
            # Nothing was read after the wait: the silence is counted from its end.
            (disconnected,) = await rec.wait_status("disconnected")
            assert vtime(disconnected) == 37.0
            assert await disconnects(ctx, "stale") == 1
        nursery.cancel_scope.cancel()


async def test_a_venue_that_drops_a_slow_reader_is_an_ordinary_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        # The venue pings every 3 s and closes a connection that has not answered in 2 s.
        fake = FakeBinance(ping_interval=3.0, pong_timeout=2.0)
        await nursery.start(fake.run)
        with trio.fail_after(TIMEOUT):
            rx, ctx, plan = await start_unread(nursery, fake)
            for trade_id in range(1, 51):
                assert await fake.send(trade(trade_id)) == 1
            await trio.sleep(60.0)
            assert fake.ping_timeouts == 1  # it gave up on us at 5 s
            rec = Recorder()
            nursery.start_soon(rec.run, rx)
            # What it sent before it closed is read and kept, then the disconnect is
            # recorded and the connection replaced, as any other.
            (disconnected,) = await rec.wait_status("disconnected")
            assert vtime(disconnected) == 60.0
            assert disconnected.detail is not None
            assert disconnected.detail.startswith("ConnectionLost")
            assert await disconnects(ctx, "connection_lost") == 1
            await rec.wait_status("subscribed", 2)
        assert [t.trade_id for t in rec.trades()] == [str(i) for i in range(1, 51)]
        assert rec.status("dropped") == []
        assert ctx.metrics.sample("collector_messages_dropped_total", LABELS) == 0
        assert fake.connections == 2
        assert ctx.health.connections[plan.name].up
        nursery.cancel_scope.cancel()


async def test_shutdown_while_waiting_hands_over_what_was_held_when_the_writer_drains(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as ingest:
                rx, ctx, plan = await start_unread(ingest, fake, symbols=("btcusdt", "ethusdt"))
                await trio.sleep(10.0)
                ingest.cancel_scope.cancel()  # shutdown: the writer drains from now on
                rec = Recorder()
                nursery.start_soon(rec.run, rx)
            t_end = trio.current_time()
            await rec.wait_for(lambda: rec.closed)
        assert t_end == 10.0
        assert [(e.symbol, e.event) for e in rec.status()] == [
            ("BTCUSDT", "connected"),
            ("ETHUSDT", "connected"),
            ("BTCUSDT", "subscribed"),
            ("ETHUSDT", "subscribed"),
            ("BTCUSDT", "disconnected"),
            ("ETHUSDT", "disconnected"),
        ]
        assert rec.status("disconnected")[0].detail == "cancelled"
        assert ctx.metrics.sample("collector_messages_dropped_total", LABELS) == 0
        assert waited(ctx, plan) == (10.0, 0.0)
        nursery.cancel_scope.cancel()


async def test_shutdown_while_waiting_ends_in_bounded_time_when_the_writer_takes_nothing(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        with trio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING):
            async with trio.open_nursery() as ingest:
                rx, ctx, plan = await start_unread(ingest, fake, symbols=("btcusdt", "ethusdt"))
                await trio.sleep(10.0)
                t_cancel = trio.current_time()
                ingest.cancel_scope.cancel()
        # The disconnected rows waited their bound, then the sink's close waited its own.
        assert trio.current_time() - t_cancel == 2 * CLOSE_SEND_TIMEOUT_SECS
        # The subscribed and disconnected rows of both symbols could not be handed over.
        assert ctx.metrics.sample("collector_messages_dropped_total", LABELS) == 4
        assert "could not record 4 dropped events" in caplog.text
        (batch,) = [b async for b in rx]  # what the writer would find: the connected rows
        assert [(type(e), e.symbol) for e in batch] == [(Status, "BTCUSDT"), (Status, "ETHUSDT")]
        assert not ctx.health.connections[plan.name].up
        assert ctx.health.connections[plan.name].writer_wait_since is None
        nursery.cancel_scope.cancel()


async def test_a_stream_silence_limit_is_not_tripped_by_waiting_for_the_writer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        with trio.fail_after(TIMEOUT):
            rx, ctx, plan = await start_unread(
                nursery, fake, message_timeout_secs=300.0, silence_timeout_secs=5.0
            )
            assert await fake.send(trade(1)) == 1
            await trio.sleep(60.0)  # twelve times the stream's limit, all of it waiting
            assert await disconnects(ctx, "stale") == 0
            assert ctx.health.connections[plan.name].up

            rec = Recorder()
            nursery.start_soon(rec.run, rx)  # the writer catches up
            await rec.wait_for(lambda: len(rec.trades()) == 1)
            # The stream's silence counts from the end of the wait: the trade read then is
            # its data, and only a stream silent for its limit after that is replaced.
            (silent,) = await rec.wait_status("silent")
            assert vtime(silent) == 65.0
            assert await disconnects(ctx, "stale") == 1
        nursery.cancel_scope.cancel()
