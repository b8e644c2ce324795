"""Exchange supervision in virtual time: reconnect delays, backoff reset, isolation."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import partial

import pytest
import trio
import trio.testing

from collector.config import MarketSettings
from collector.events import Event
from collector.exchanges.base import ConnectionPlan, ParseError
from collector.exchanges.binance import BinanceAdapter, BinanceSession
from collector.ingest.pacer import Pacer
from collector.ingest.supervisor import run_exchange, supervise_connection
from tests.fakes.binance import FakeBinance
from tests.test_connection import (
    TIMEOUT,
    Recorder,
    binance_plans,
    closed_port,
    make_ctx,
    send_settled,
    start_supervised,
    trade,
    vtime,
    ws_settings,
)


def jitter_band(base: float, cap: float) -> tuple[float, float]:
    """+/-25 % around the (capped) base delay, never above the cap."""
    base = min(base, cap)
    return base * 0.75, min(cap, base * 1.25)


def assert_in_band(delay: float, base: float, cap: float) -> None:
    low, high = jitter_band(base, cap)
    assert low - 1e-6 <= delay <= high + 1e-6, (delay, base)


async def test_reconnects_follow_the_backoff_and_reset_after_a_healthy_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = ws_settings(
        initial_retry_delay_secs=1.0,
        max_retry_delay_secs=8.0,
        healthy_after_secs=30.0,
        message_timeout_secs=100.0,
    )
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        adapter, plans = binance_plans(fake.url)
        (plan,) = plans
        ctx = make_ctx(settings, plans)
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        nursery.start_soon(supervise_connection, plan, adapter, ctx, tx)
        # How long each connection stays up before the fake drops it.
        up_for = [0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 31.0, 0.0]
        with trio.fail_after(TIMEOUT):
            for n, seconds in enumerate(up_for, start=1):
                await fake.wait_connected(n)
                await trio.sleep(seconds)
                await fake.drop()
            await fake.wait_connected(len(up_for) + 1)
            await rec.wait_status("connected", len(up_for) + 1)
        connected = [vtime(r) for r in rec.status("connected")]
        disconnected = [vtime(r) for r in rec.status("disconnected")]
        assert len(disconnected) == len(up_for)
        assert connected[0] == 0.0
        for n, seconds in enumerate(up_for):
            assert disconnected[n] == pytest.approx(connected[n] + seconds)
        delays = [connected[n + 1] - disconnected[n] for n in range(len(up_for))]
        # 1, 2, 4, 8, 8 (capped); 10 s up is not healthy: 8 again; 31 s up resets: 1, then 2.
        for delay, base in zip(delays, [1, 2, 4, 8, 16, 32, 1, 2], strict=True):
            assert_in_band(delay, base, cap=8.0)
        assert ctx.metrics.sample(
            "collector_websocket_disconnects_total",
            {"exchange": "binance", "reason": "connection_lost"},
        ) == len(up_for)
        nursery.cancel_scope.cancel()


async def test_failed_connects_are_retried_at_backoff_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that accepts TCP and closes at once: every handshake fails."""
    attempts: list[float] = []
    accepted = trio.Event()

    async def refuse(stream: trio.SocketStream) -> None:
        attempts.append(trio.current_time())
        if len(attempts) == 6:
            accepted.set()
        await stream.aclose()

    settings = ws_settings(initial_retry_delay_secs=2.0, max_retry_delay_secs=10.0)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, refuse, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        rec, ctx, plan = await start_supervised(nursery, f"ws://127.0.0.1:{port}", settings)
        with trio.fail_after(TIMEOUT):
            await accepted.wait()
            await trio.testing.wait_all_tasks_blocked()
        assert attempts[0] == 0.0
        delays = [b - a for a, b in itertools.pairwise(attempts)]
        for delay, base in zip(delays, [2, 4, 8, 16, 32], strict=True):
            assert_in_band(delay, base, cap=10.0)
        labels = {"exchange": "binance", "outcome": "failed"}
        assert ctx.metrics.sample("collector_websocket_connections_total", labels) == 6
        assert (
            ctx.metrics.sample(
                "collector_websocket_disconnects_total",
                {"exchange": "binance", "reason": "connect_failed"},
            )
            == 6
        )
        # Never connected: no connected/disconnected rows, and health says why.
        assert rec.events == []
        conn = ctx.health.connections[plan.name]
        assert not conn.up
        assert not conn.subscribed_once
        assert conn.last_error is not None
        assert "ConnectFailed" in conn.last_error
        nursery.cancel_scope.cancel()


async def test_connect_timeout_is_a_failed_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that accepts TCP but never answers the handshake: connect_timeout_secs."""
    attempts: list[float] = []
    third = trio.Event()

    async def hang(stream: trio.SocketStream) -> None:
        attempts.append(trio.current_time())
        if len(attempts) == 3:
            third.set()
        await trio.sleep_forever()

    settings = ws_settings(connect_timeout_secs=3.0, initial_retry_delay_secs=1.0)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hang, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        _, ctx, _ = await start_supervised(nursery, f"ws://127.0.0.1:{port}", settings)
        with trio.fail_after(TIMEOUT):
            await third.wait()
            await trio.testing.wait_all_tasks_blocked()
        assert attempts[0] == 0.0
        assert_in_band(attempts[1] - attempts[0] - 3.0, 1, cap=60)
        assert_in_band(attempts[2] - attempts[1] - 3.0, 2, cap=60)
        labels = {"exchange": "binance", "outcome": "timeout"}
        assert ctx.metrics.sample("collector_websocket_connections_total", labels) == 2
        nursery.cancel_scope.cancel()


def two_market_plans(good_url: str, bad_url: str) -> tuple[BinanceAdapter, list[ConnectionPlan]]:
    adapter = BinanceAdapter()
    markets = [
        MarketSettings(exchange="binance", symbols=("btcusdt",), feeds=("trades",), base_url=url)
        for url in (good_url, bad_url)
    ]
    return adapter, adapter.plan_connections(markets)


async def test_a_failing_connection_never_stops_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        adapter, plans = two_market_plans(fake.url, f"ws://127.0.0.1:{closed_port()}")
        good, bad = plans
        assert (good.name, bad.name) == ("binance-0", "binance-1")
        ctx = make_ctx(ws_settings(message_timeout_secs=100.0), plans)
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        exchange_scope = trio.CancelScope()

        async def exchange() -> None:
            with exchange_scope:
                await run_exchange(adapter, plans, ctx, tx)

        nursery.start_soon(exchange)
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed")
            for trade_id, at in enumerate([5.0, 10.0, 20.0, 40.0], start=1):
                await trio.sleep_until(at)
                await send_settled(fake, trade(trade_id))
            failed = ctx.metrics.sample(
                "collector_websocket_connections_total",
                {"exchange": "binance", "outcome": "failed"},
            )
            # Refused at 0, then after ~1, 2, 4, 8, 16 s: 6 attempts by t=40 at the least.
            assert failed >= 5
            assert [vtime(t) for t in rec.trades()] == [5.0, 10.0, 20.0, 40.0]
            assert [r.detail for r in rec.status("connected")] == [good.url]
            assert rec.status("disconnected") == []
            report = ctx.health.report()
            assert report["status"] == "degraded"
            assert report["connections"]["up"] == 1
            assert report["connections"]["total"] == 2
            assert set(report["problems"]) == {bad.name}
            assert not ctx.health.ready

            # run_exchange owns its channel: cancelling it ends the reader.
            exchange_scope.cancel()
            await rec.wait_for(lambda: rec.closed)
        assert [(r.symbol, r.detail) for r in rec.status("disconnected")] == [
            ("BTCUSDT", "cancelled")
        ]
        nursery.cancel_scope.cancel()


class _BuggySession(BinanceSession):
    def parse_batch(
        self, payloads: Sequence[bytes], received_us: int, events: list[Event]
    ) -> list[ParseError]:
        errors = super().parse_batch(payloads, received_us, events)
        if any(getattr(e, "trade_id", None) == "13" for e in events):
            raise RuntimeError("bug in a parser")
        return errors


class _BuggyAdapter(BinanceAdapter):
    def open_session(self, plan: ConnectionPlan) -> BinanceSession:
        return _BuggySession(plan)


async def test_a_bug_propagates_instead_of_reconnecting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance()
    rec = Recorder()
    with trio.fail_after(TIMEOUT):
        with pytest.RaisesGroup(
            pytest.RaisesExc(RuntimeError, match="bug in a parser"), flatten_subgroups=True
        ):
            async with trio.open_nursery() as nursery:
                await nursery.start(fake.run)
                adapter = _BuggyAdapter()
                _, plans = binance_plans(fake.url)
                ctx = make_ctx(ws_settings(), plans)
                tx, rx = trio.open_memory_channel[list[Event]](64)
                nursery.start_soon(rec.run, rx)
                await nursery.start(run_exchange, adapter, plans, ctx, tx)
                await rec.wait_status("subscribed")
                await send_settled(fake, trade(12))
                await fake.send(trade(13))
                await trio.sleep_forever()
    assert fake.connections == 1  # no reconnect
    assert [t.trade_id for t in rec.trades()] == ["12"]
    assert ctx.metrics.sum_samples("collector_websocket_disconnects_total") == 0


async def test_connect_pacer_spaces_attempts_across_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(per_second=2.0)
    started: list[float] = []

    async def attempt() -> None:
        await pacer.wait_turn()
        started.append(trio.current_time())

    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(attempt)
    assert [round(t - t0, 6) for t in started] == [0.0, 0.5, 1.0]
    # After a quiet spell an attempt goes at once.
    await trio.sleep(10)
    t1 = trio.current_time()
    await attempt()
    assert started[-1] == t1
