"""Binance futures derivative data through real connections, in virtual time: open interest
polled over REST (fake REST API on loopback) and merged with ``@markPrice@1s``; a failed
poll is a ``poll_error`` row and a count, never an end; and planned reconnects (the fake cuts
connections at a set age) keep mark price rows, which carry no id, without a hole or a
repeat, ordered by their event time ``E``."""

from __future__ import annotations

from typing import ClassVar

import attrs
import trio
import trio.testing

from collector.config import MarketSettings
from collector.events import DerivativeTicker, Event, Status
from collector.exchanges.base import ConnectionPlan
from collector.exchanges.binance import OPEN_INTEREST_REQUESTS_PER_SECOND, BinanceAdapter
from collector.ingest.supervisor import supervise_connection
from tests.fakes.binance import FakeBinance, mark_price_frame
from tests.fakes.binance_rest import FakeBinanceRest
from tests.test_connection import TIMEOUT, Recorder, make_ctx, vtime, ws_settings

LIFETIME = 120.0
SYMBOL = "BTCUSD_PERP"
E0_MS = 1_700_000_000_000
OI_PATH = "/dapi/v1/openInterest"


class ShortLivedBinance(BinanceAdapter):
    """Binance with a 2-minute connection lifetime, so virtual runs stay short."""

    max_connection_lifetime_secs: ClassVar[float | None] = LIFETIME


def coinm_plan(url: str, rest_url: str, interval: float = 10.0) -> ConnectionPlan:
    market = MarketSettings(
        exchange="binance",
        category="coinm",
        symbols=(SYMBOL,),
        feeds=("derivatives",),
        base_url=url,
        rest_url=rest_url,
        open_interest_interval_secs=interval,
    )
    (plan,) = ShortLivedBinance().plan_connections([market])
    return plan


def mark(k: int) -> str:
    """The k-th mark price of the run (E grows by one second each)."""
    return mark_price_frame(
        SYMBOL, E0_MS + k * 1000, 65000 + k, 64990 + k, 65001, "0.0001", E0_MS + 8 * 3600_000
    )


async def feed_marks(fake: FakeBinance, rest: FakeBinanceRest, until: float) -> int:
    """A mark price every 0.1 s (virtual) to every subscribed connection, and an open
    interest that changes with it; returns the last k sent."""
    k = 0
    while trio.current_time() < until:
        # Often, so that virtual time moves slowly while a poll runs in a worker thread
        # (the clock jumps from one of these sends to the next while the thread works).
        await trio.sleep(0.1)
        k += 1
        rest.open_interest[SYMBOL] = (1000.0 + k, E0_MS + k * 1000 + 500)
        await fake.send(mark(k))
    return k


def derivative_rows(rec: Recorder, source: str) -> list[DerivativeTicker]:
    return [e for e in rec.events if type(e) is DerivativeTicker and e.source == source]


def oi_requests(rest: FakeBinanceRest) -> list[float]:
    return [t for r, t in zip(rest.requests, rest.request_times, strict=True) if OI_PATH in r]


async def test_mark_prices_continue_across_planned_reconnects_and_open_interest_joins_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, rest = FakeBinance(category="coinm", max_age=LIFETIME), FakeBinanceRest()
    rest.open_interest[SYMBOL] = (1000.0, E0_MS)
    settings = ws_settings(planned_reconnect_lead_secs=30.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        await nursery.start(rest.run)
        plan = coinm_plan(fake.url, rest.url)
        ctx = make_ctx(settings, [plan])
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        nursery.start_soon(supervise_connection, plan, ShortLivedBinance(), ctx, tx)
        with trio.fail_after(TIMEOUT):
            last = await feed_marks(fake, rest, until=250.0)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert fake.connections == 3
        assert fake.cut_at_max_age == 0
        assert len(rec.status("handover")) == 2
        assert rec.status("gap") == rec.status("disconnected") == rec.status("poll_error") == []
        # Every mark price once, in order, across both switches.
        marks = derivative_rows(rec, "markPrice")
        assert [m.sequence for m in marks] == [E0_MS + k * 1000 for k in range(1, last + 1)]
        assert [m.mark_price for m in marks] == [65000.0 + k for k in range(1, last + 1)]
        switches = [vtime(r) for r in rec.status("handover")]
        # Open interest rows: polled every 10 s (by both connections during an overlap),
        # each carrying the mark price state it joined (its sequence is that state's E).
        ois = derivative_rows(rec, "openInterest")
        # Polled on every connection: rows before, between and after the switches.
        assert all(
            any(start <= vtime(oi) < end for oi in ois)
            for start, end in [(0.0, switches[0]), (switches[0], switches[1]), (switches[1], 1e9)]
        )
        by_e = {m.sequence: m for m in marks}
        for oi in ois:
            joined = by_e[oi.sequence]
            assert oi.mark_price == joined.mark_price
            assert oi.open_interest_unit == "contracts"
            assert oi.open_interest is not None
            assert oi.timestamp_collector >= joined.timestamp_collector
        # A connection's rows carry open interest from its first poll on (at connect; its
        # first rows may come before the answer): rows without one only open a segment.
        segments: list[list[bool]] = [[]]
        for event in rec.events:
            if type(event) is Status and event.event == "handover":
                segments.append([])
            elif type(event) is DerivativeTicker and event.source == "markPrice":
                segments[-1].append(event.open_interest is None)
        assert len(segments) == 3
        for segment in segments:
            assert segment
            assert segment == sorted(segment, reverse=True), segment
        nursery.cancel_scope.cancel()


async def test_the_switch_waits_for_the_old_connection_to_reach_the_successors_first_mark(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The successor gets mark price 12 while the old connection has only written 10. Event
    times name no "next" the way ids do, so the switch waits until the old connection has
    written 12 itself; the successor's 12 is then not written again, nothing is missing."""
    fake, rest = FakeBinance(category="coinm"), FakeBinanceRest()
    rest.open_interest[SYMBOL] = (1000.0, E0_MS)
    settings = ws_settings(planned_reconnect_lead_secs=LIFETIME - 20.0)  # successor at 20 s
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        await nursery.start(rest.run)
        plan = coinm_plan(fake.url, rest.url, interval=60.0)
        ctx = make_ctx(settings, [plan])
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        nursery.start_soon(supervise_connection, plan, ShortLivedBinance(), ctx, tx)
        with trio.fail_after(TIMEOUT):
            await fake.wait_subscribed()
            for k in range(1, 11):
                assert await fake.send(mark(k)) == 1
                await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            await fake.wait_connected(2)
            await fake._wait_for(lambda: any(c.number == 2 and c.streams for c in fake.clients))
            assert await fake.send_to(2, mark(12)) == 1  # the successor is ahead
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            assert rec.status("handover") == []
            assert await fake.send_to(1, mark(11)) == 1
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            assert rec.status("handover") == []  # the old one has not reached 12 yet
            assert await fake.send_to(1, mark(12)) == 1
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            assert len(rec.status("handover")) == 1
            for k in range(13, 16):
                await fake.send(mark(k))
                await trio.testing.wait_all_tasks_blocked(cushion=0.01)
        marks = derivative_rows(rec, "markPrice")
        assert [m.sequence for m in marks] == [E0_MS + k * 1000 for k in range(1, 16)]
        assert rec.status("disconnected") == []
        nursery.cancel_scope.cancel()


async def test_a_failed_poll_is_a_status_row_and_a_count_and_the_next_round_asks_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, rest = FakeBinance(category="coinm"), FakeBinanceRest()
    rest.open_interest[SYMBOL] = (1000.0, E0_MS)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        await nursery.start(rest.run)
        plan = coinm_plan(fake.url, rest.url, interval=10.0)
        ctx = make_ctx(ws_settings(), [plan])
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        rest.fail_next = [500]  # the first poll
        nursery.start_soon(supervise_connection, plan, BinanceAdapter(), ctx, tx)
        with trio.fail_after(TIMEOUT):
            await feed_marks(fake, rest, until=25.0)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        [failed] = rec.status("poll_error")
        assert failed.symbol == SYMBOL
        assert failed.data_type == "derivative_ticker"
        assert failed.detail is not None
        assert "HTTP 500" in failed.detail
        errors = ctx.metrics.sample(
            "collector_rest_poll_errors_total", {"exchange": "binance-coinm"}
        )
        assert errors == 1
        assert rec.status("disconnected") == []  # the connection went on
        assert len(oi_requests(rest)) >= 2
        ois = derivative_rows(rec, "openInterest")  # the next rounds asked again
        assert ois
        assert all(vtime(oi) > vtime(failed) for oi in ois)
        assert [o.open_interest for o in ois] == sorted(o.open_interest or 0 for o in ois)
        nursery.cancel_scope.cancel()


async def test_the_polls_of_every_connection_of_a_budget_share_one_pace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two COIN-M connections (one REST budget, limited per IP) of four symbols each: their
    open interest requests take turns of the budget's one pace, so a round of eight takes
    3.5 s at 2 a second (one pace per connection would finish it in 1.5 s)."""
    fake, rest = FakeBinance(category="coinm"), FakeBinanceRest()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        await nursery.start(rest.run)
        plans = []
        for base in ("BTC", "ETH"):
            symbols = tuple(
                f"{base}USD_{suffix}" for suffix in ("PERP", "250627", "250926", "251226")
            )
            for symbol in symbols:
                rest.open_interest[symbol] = (1000.0, E0_MS)
            market = MarketSettings(
                exchange="binance",
                category="coinm",
                symbols=symbols,
                feeds=("derivatives",),
                base_url=fake.url,
                rest_url=rest.url,
                open_interest_interval_secs=30.0,
            )
            (plan,) = BinanceAdapter().plan_connections([market])
            plans.append(attrs.evolve(plan, name=f"binance-coinm-{base.lower()}"))
        ctx = make_ctx(ws_settings(), plans)
        tx, rx = trio.open_memory_channel[list[Event]](64)
        rec = Recorder()
        nursery.start_soon(rec.run, rx)
        for plan in plans:
            nursery.start_soon(supervise_connection, plan, BinanceAdapter(), ctx, tx.clone())
        with trio.fail_after(TIMEOUT):
            await feed_marks(fake, rest, until=10.0)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        times = sorted(oi_requests(rest))
        assert len(times) == 8  # one round (the next is 30 s on)
        # A request arrives at its turn or later (a worker thread's HTTP may see the clock
        # jump), so the eighth's turn, 7 spacings after the first's, bounds it from below.
        spacing = 1.0 / OPEN_INTEREST_REQUESTS_PER_SECOND
        assert times[-1] >= 7 * spacing
        assert rec.status("poll_error") == []
        nursery.cancel_scope.cancel()
