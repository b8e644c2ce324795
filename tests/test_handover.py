"""Planned reconnects against the fake Binance that cuts connections at a set age, in
virtual time: the successor is opened before the old connection is due and the switch
leaves no hole (no gap or disconnected rows, no trade id twice, a continuous book); a
successor that cannot come up in time falls back to an ordinary, marked reconnect."""

from __future__ import annotations

import itertools
from typing import ClassVar

import trio
import trio.testing

from collector.config import MarketSettings
from collector.events import BookUpdate, Event
from collector.exchanges.base import ConnectionPlan
from collector.exchanges.binance import BinanceAdapter
from collector.ingest.handover import QUIET_SECS
from collector.ingest.supervisor import supervise_connection
from tests.fakes.binance import FakeBinance, depth_diff_frame
from tests.fakes.binance_rest import FakeBinanceRest
from tests.test_connection import (
    EPOCH_US,
    TIMEOUT,
    Recorder,
    make_ctx,
    send_settled,
    trade,
    vtime,
    ws_settings,
)

LIFETIME = 120.0


class ShortLivedBinance(BinanceAdapter):
    """Binance with a 2-minute connection lifetime, so virtual runs stay short."""

    max_connection_lifetime_secs: ClassVar[float | None] = LIFETIME


def plans_for(url: str, feeds: tuple[str, ...], **options: str) -> list[ConnectionPlan]:
    market = MarketSettings(
        exchange="binance",
        symbols=("btcusdt",),
        feeds=feeds,  # type: ignore[arg-type]
        base_url=url,
        **options,  # type: ignore[arg-type]
    )
    return ShortLivedBinance().plan_connections([market])


def handovers(ctx_metrics: object, outcome: str) -> float:
    return ctx_metrics.sample(  # type: ignore[attr-defined, no-any-return]
        "collector_planned_handovers_total", {"exchange": "binance", "outcome": outcome}
    )


async def feed_trades(fake: FakeBinance, until: float) -> int:
    """A trade a second, ids 1, 2, ..., sent to every subscribed connection; the last id."""
    trade_id = 0
    while trio.current_time() < until:
        await trio.sleep(1.0)
        trade_id += 1
        await fake.send(trade(trade_id))
    return trade_id


async def test_trades_continue_across_planned_reconnects_without_a_hole_or_a_repeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance(max_age=LIFETIME)
    settings = ws_settings(planned_reconnect_lead_secs=30.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        (plan,) = plans_for(fake.url, ("trades",))
        ctx = make_ctx(settings, [plan])
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        nursery.start_soon(supervise_connection, plan, ShortLivedBinance(), ctx, tx)
        with trio.fail_after(TIMEOUT):
            last = await feed_trades(fake, until=250.0)
            await trio.testing.wait_all_tasks_blocked()
        # Each connection was replaced 90 s after it came up (120 s lifetime, 30 s lead).
        assert fake.connections == 3
        assert fake.cut_at_max_age == 0
        assert len(fake.clients) == 1
        ids = [int(t.trade_id) for t in rec.trades()]
        assert ids == list(range(1, last + 1))  # every trade once, in order
        assert rec.status("gap") == []
        assert rec.status("disconnected") == []
        assert len(rec.status("connected")) == 1  # the first connection only
        switches = rec.status("handover")
        assert [round(vtime(r)) for r in switches] == [91, 181]
        assert all(r.symbol == "BTCUSDT" for r in switches)
        assert switches[0].detail is not None
        assert "planned reconnect before the venue's 120 s connection limit" in switches[0].detail
        assert "trades after " in switches[0].detail
        assert handovers(ctx.metrics, "ok") == 2
        assert ctx.metrics.sum_samples("collector_websocket_disconnects_total") == 0
        assert ctx.health.connections[plan.name].up
        nursery.cancel_scope.cancel()


async def test_a_lagging_old_connection_is_waited_for_and_its_late_rows_are_not_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The successor gets trade 12 while the old connection has only written 10 (it is
    behind): the switch waits until the old one wrote 11, so nothing falls between the two,
    and what the old connection receives after the switch is not written again."""
    fake = FakeBinance()
    settings = ws_settings(planned_reconnect_lead_secs=LIFETIME - 20.0)  # successor at 20 s
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        (plan,) = plans_for(fake.url, ("trades",))
        ctx = make_ctx(settings, [plan])
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        nursery.start_soon(supervise_connection, plan, ShortLivedBinance(), ctx, tx)
        with trio.fail_after(TIMEOUT):
            await fake.wait_subscribed()
            for trade_id in range(1, 11):
                await send_settled(fake, trade(trade_id))
            await fake.wait_connected(2)
            await fake._wait_for(lambda: any(c.number == 2 and c.streams for c in fake.clients))
            assert await fake.send_to(2, trade(12)) == 1  # the successor is ahead
            await trio.testing.wait_all_tasks_blocked()
            assert rec.status("handover") == []  # 11 is not written yet: no switch
            assert await fake.send_to(1, trade(11)) == 1
            await trio.testing.wait_all_tasks_blocked()
            assert len(rec.status("handover")) == 1
            await fake.send_to(1, trade(12))  # late, on the replaced connection (if still open)
            for trade_id in range(13, 16):
                await send_settled(fake, trade(trade_id))
        assert [int(t.trade_id) for t in rec.trades()] == list(range(1, 16))
        assert rec.status("disconnected") == []
        assert handovers(ctx.metrics, "ok") == 1
        nursery.cancel_scope.cancel()


async def test_a_stream_quiet_on_both_connections_lets_the_switch_happen_after_a_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No ticker update comes at all: the ticker has nothing to join, so the switch waits
    only until QUIET_SECS after the successor subscribed (an update in flight to the old
    connection would have come by then), not for the old connection's end."""
    fake = FakeBinance(max_age=LIFETIME)
    settings = ws_settings(planned_reconnect_lead_secs=30.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        (plan,) = plans_for(fake.url, ("trades", "ticker"))
        ctx = make_ctx(settings, [plan])
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        nursery.start_soon(supervise_connection, plan, ShortLivedBinance(), ctx, tx)
        with trio.fail_after(TIMEOUT):
            last = await feed_trades(fake, until=110.0)
            await trio.testing.wait_all_tasks_blocked()
        (switch,) = rec.status("handover")
        # The successor came up at 90 s and subscribed at once; trades joined at 91 s.
        assert 90.0 + QUIET_SECS <= vtime(switch) <= 90.0 + 2 * QUIET_SECS
        assert [int(t.trade_id) for t in rec.trades()] == list(range(1, last + 1))
        assert rec.status("disconnected") == []
        nursery.cancel_scope.cancel()


async def feed_book(fake: FakeBinance, rest: FakeBinanceRest, until: float) -> None:
    """A diff every 0.1 s covering the next 10 update ids; the REST book follows the last.

    Often, so that virtual time moves slowly while a REST snapshot is fetched in a worker
    thread (the clock jumps from one of these sends to the next while the thread works).
    """
    last = 100
    rest.set_book("BTCUSDT", last, bids=[(100.0, 1.0)], asks=[(101.0, 1.0)])
    while trio.current_time() < until:
        await trio.sleep(0.1)
        first, last = last + 1, last + 10
        size = float(last % 7 + 1)
        await fake.send(
            depth_diff_frame("btcusdt", first, last, [(100.0, size)], [], EPOCH_US + last)
        )
        rest.set_book("BTCUSDT", last, bids=[(100.0, size)], asks=[(101.0, 1.0)])


async def test_a_diff_book_switches_only_once_the_successor_is_synced_and_stays_continuous(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, rest = FakeBinance(max_age=LIFETIME), FakeBinanceRest()
    settings = ws_settings(planned_reconnect_lead_secs=60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        await nursery.start(rest.run)
        (plan,) = plans_for(fake.url, ("orderbook",), book_mode="diff", rest_url=rest.url)
        ctx = make_ctx(settings, [plan])
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        nursery.start_soon(supervise_connection, plan, ShortLivedBinance(), ctx, tx)
        feeder = trio.CancelScope()

        async def feed() -> None:
            with feeder:
                await feed_book(fake, rest, until=TIMEOUT)

        nursery.start_soon(feed)
        with trio.fail_after(TIMEOUT):
            await rest.wait_requests(1)  # the first connection's snapshot
            # The successor's snapshot is refused twice (HTTP 429): it syncs late, after
            # backoff, and the switch must wait for it.
            await fake.wait_connected(2)
            rest.fail_next = [429, 429]
            await rest.wait_requests(4)
            await rec.wait_status("handover")
            await trio.sleep(10.0)
            feeder.cancel()
            await trio.testing.wait_all_tasks_blocked()
        synced_at = rest.request_times[3]
        switch = rec.status("handover")[0]
        # (Row times are whole microseconds of the virtual clock.)
        assert vtime(switch) >= synced_at - 1e-6 > rest.request_times[1] + 2.0
        assert rec.status("gap") == []
        assert rec.status("disconnected") == []
        assert handovers(ctx.metrics, "ok") >= 1
        assert handovers(ctx.metrics, "cut") == handovers(ctx.metrics, "failed") == 0

        books = [e for e in rec.events if type(e) is BookUpdate]
        deltas = [(b.first_sequence, b.sequence) for b in books if b.kind == "delta"]
        assert deltas, "deltas were written"
        for (_, before), (first, last) in itertools.pairwise(deltas):
            assert first is not None
            assert before is not None
            assert last is not None
            assert first <= before + 1 < last + 1, (before, first, last)  # joined, no hole
            assert last > before  # nothing written twice
        # Every snapshot written (the first connection's; the successor's only if it was
        # newer than what the old connection wrote) is joined by a written delta.
        snapshots = [b.sequence for b in books if b.kind == "snapshot"]
        assert snapshots
        for snapshot in snapshots:
            assert snapshot is not None
            assert any(
                f is not None and u is not None and f <= snapshot + 1 <= u for f, u in deltas
            )
        written_before_switch = [
            b.sequence for b in books if b.kind == "delta" and vtime(b) < vtime(switch)
        ]
        assert written_before_switch
        assert deltas[-1][1] is not None
        assert deltas[-1][1] > max(s for s in written_before_switch if s is not None)
        nursery.cancel_scope.cancel()


async def test_a_successor_that_cannot_come_up_in_time_falls_back_to_a_marked_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The second connection (the successor) is never answered: it never subscribes.
    fake = FakeBinance(max_age=LIFETIME, unanswered={2})
    settings = ws_settings(planned_reconnect_lead_secs=30.0, initial_retry_delay_secs=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        (plan,) = plans_for(fake.url, ("trades",))
        ctx = make_ctx(settings, [plan])
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        nursery.start_soon(supervise_connection, plan, ShortLivedBinance(), ctx, tx)
        with trio.fail_after(TIMEOUT):
            last = await feed_trades(fake, until=150.0)
            await trio.testing.wait_all_tasks_blocked()
        assert fake.cut_at_max_age == 1  # the first connection, at 120 s
        assert fake.connections == 3  # the first, the successor that never came up, a new one
        assert handovers(ctx.metrics, "cut") == 1
        assert handovers(ctx.metrics, "ok") == 0
        assert rec.status("handover") == []
        # Today's behaviour: the hole is marked, the reconnect is an ordinary one.
        (disconnected,) = rec.status("disconnected")
        assert disconnected.detail is not None
        assert "ConnectionLost" in disconnected.detail
        assert round(vtime(disconnected)) == 120
        connected = rec.status("connected")
        assert len(connected) == 2  # the successor's own row was never written
        assert vtime(connected[1]) > vtime(disconnected)
        ids = [int(t.trade_id) for t in rec.trades()]
        assert len(ids) == len(set(ids))
        before = [i for i in ids if i < 120]
        assert before == list(range(1, 120))
        assert ids[-1] == last  # recording goes on after the reconnect
        assert (
            ctx.metrics.sample(
                "collector_websocket_disconnects_total",
                {"exchange": "binance", "reason": "connection_lost"},
            )
            == 1
        )
        nursery.cancel_scope.cancel()


async def test_a_successor_that_fails_is_tried_again_while_the_old_connection_lasts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first successor is never answered, so its watchdog ends it after 30 s without
    data; the next one, opened after a backoff delay, takes over before the old
    connection's end at 120 s: no hole, and nothing of the failed successor is written."""
    fake = FakeBinance(max_age=LIFETIME, unanswered={2})
    settings = ws_settings(planned_reconnect_lead_secs=60.0, message_timeout_secs=30.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        (plan,) = plans_for(fake.url, ("trades",))
        ctx = make_ctx(settings, [plan])
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        nursery.start_soon(supervise_connection, plan, ShortLivedBinance(), ctx, tx)
        with trio.fail_after(TIMEOUT):
            last = await feed_trades(fake, until=115.0)
            await trio.testing.wait_all_tasks_blocked()
        assert handovers(ctx.metrics, "failed") == 1
        assert handovers(ctx.metrics, "ok") == 1
        assert fake.cut_at_max_age == 0
        (switch,) = rec.status("handover")
        assert 90.0 < vtime(switch) < LIFETIME
        assert [int(t.trade_id) for t in rec.trades()] == list(range(1, last + 1))
        assert len(rec.status("connected")) == 1
        assert rec.status("disconnected") == []
        assert ctx.metrics.sum_samples("collector_websocket_disconnects_total") == 0
        assert ctx.health.connections[plan.name].up
        nursery.cancel_scope.cancel()
