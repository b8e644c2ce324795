"""The router alone, with test-owned channels: what flush work it sends, and when it takes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from collector.clock import trio_wall_clock
from collector.config import StorageSettings
from collector.doorbell import Doorbell
from collector.events import Event, Status, Trade
from collector.storage.router import HOUR_US, NO_HOUR, FileKey, FlushWork, run_router

HOUR = 476_268  # 2024-05-01T12:00Z as an hour index
NOON = HOUR * HOUR_US


def trade(ts_us: int, n: int, symbol: str = "BTCUSDT") -> Trade:
    return Trade("binance", symbol, None, ts_us, n, f"id-{n}", 60000.0 + n, 0.5, "buy")


def key(hour: int = HOUR, symbol: str = "BTCUSDT", data_type: str = "trades") -> FileKey:
    return ("binance", symbol, data_type, hour)


def sequences(work: FlushWork, file_key: FileKey) -> list[int]:
    """The ``sequence`` column of one key's rows in ``work``."""
    batch = work.rows[file_key].columns.to_record_batch({"exchange": "x", "symbol": "y"})
    return list(batch.column("sequence").to_pylist())


@dataclass
class Router:
    events: trio.MemorySendChannel[list[Event]]
    doorbell: Doorbell
    work: trio.MemoryReceiveChannel[FlushWork]

    async def send(self, batch: list[Event]) -> None:
        """Send a batch and ring, as a connection's sink does."""
        await self.events.send(batch)
        self.doorbell.sent()

    def send_nowait(self, batch: list[Event]) -> None:
        self.events.send_nowait(batch)
        self.doorbell.sent()

    def waiting_batches(self) -> int:
        return self.events.statistics().current_buffer_used


@asynccontextmanager
async def open_router(
    wall_now_us: int = NOON, first_rows: list[Event] | None = None, **settings: Any
) -> AsyncIterator[Router]:
    """run_router with a wall clock at ``wall_now_us`` that moves with Trio's clock, a
    doorbell that rings per batch, and a rendezvous work channel the test receives from."""
    storage = StorageSettings(**settings)
    events_send, events = trio.open_memory_channel[list[Event]](16)
    work_out, work_in = trio.open_memory_channel[FlushWork](0)
    doorbell = Doorbell(1)
    wall_clock = trio_wall_clock(wall_now_us - round(trio.current_time() * 1_000_000))
    # Virtual time: nothing here runs in a thread. A router that never sends fails, not hangs.
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    run_router,
                    storage,
                    events,
                    work_out,
                    wall_clock=wall_clock,
                    doorbell=doorbell,
                    first_rows=first_rows or [],
                )
            )
            with events_send, work_in:
                yield Router(events_send, doorbell, work_in)
            nursery.cancel_scope.cancel()


async def test_rows_are_handed_over_at_the_tick_split_by_their_own_hour(
    autojump_clock: trio.testing.MockClock,
) -> None:
    last_hour = NOON - 1
    async with open_router(flush_interval_secs=2.0) as r:
        t0 = trio.current_time()
        await r.send([trade(last_hour, 0), trade(NOON, 1), trade(last_hour, 2)])
        await r.send([trade(NOON + 5, 3, "ETHUSDT")])
        work = await r.work.receive()
        assert trio.current_time() == t0 + 2.0
    assert list(work.rows) == [key(HOUR - 1), key(), key(symbol="ETHUSDT")]
    assert sequences(work, key(HOUR - 1)) == [0, 2]
    assert sequences(work, key()) == [1]
    assert [work.rows[k].first_us for k in work.rows] == [last_hour, NOON, NOON + 5]
    # The wall clock is in the noon hour: the previous hour's rows retire their file.
    assert work.retired == (key(HOUR - 1),)


async def test_without_hourly_rotation_keys_have_no_hour_and_never_retire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_router(NOON + 2 * HOUR_US, flush_interval_secs=1.0, rotate_hourly=False) as r:
        await r.send([trade(NOON - 1, 0), trade(NOON, 1)])
        work = await r.work.receive()
    assert list(work.rows) == [key(NO_HOUR)]
    assert sequences(work, key(NO_HOUR)) == [0, 1]
    assert work.retired == ()


async def test_a_flush_worth_is_sent_at_once_and_intake_stops_while_the_send_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_router(flush_interval_secs=60.0, flush_max_rows=3) as r:
        t0 = trio.current_time()
        # All three wait when the router runs: it takes a flush's worth and stops there.
        r.send_nowait([trade(NOON, 0), trade(NOON, 1)])
        r.send_nowait([trade(NOON, 2)])  # 3 rows: a flush's worth
        r.send_nowait([trade(NOON, 3)])
        await trio.sleep(1)
        # Nobody receives: the router waits in its send and takes no more batches.
        assert r.waiting_batches() == 1
        work = await r.work.receive()
        assert trio.current_time() == t0 + 1
        assert sequences(work, key()) == [0, 1, 2]
        await trio.testing.wait_all_tasks_blocked()
        assert r.waiting_batches() == 0  # taken as soon as the send went through
        # The rest waits for the tick (the early flush did not move it).
        with trio.move_on_at(t0 + 59.999):
            await r.work.receive()
            pytest.fail("work sent before the tick")
        work = await r.work.receive()
        assert trio.current_time() == t0 + 60
        assert sequences(work, key()) == [3]


async def test_a_tick_while_the_flusher_is_busy_keeps_intake_going(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_router(flush_interval_secs=1.0, flush_max_rows=100) as r:
        t0 = trio.current_time()
        await r.send([trade(NOON, 0)])
        await trio.sleep(1.5)  # the tick at 1.0 offers the row; nobody takes it
        await r.send([trade(NOON, 1)])
        await trio.sleep(1.0)  # the tick at 2.0 too
        await r.send([trade(NOON, 2)])
        await trio.testing.wait_all_tasks_blocked()
        assert r.waiting_batches() == 0  # intake went on
        # The flusher comes: it gets every row taken until then, at once.
        work = await r.work.receive()
        assert trio.current_time() == t0 + 2.5
        assert sequences(work, key()) == [0, 1, 2]


async def test_an_hour_the_wall_clock_left_is_retired_and_a_late_row_starts_it_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_router(NOON + HOUR_US - 1_500_000, flush_interval_secs=1.0) as r:
        t0 = trio.current_time()
        await r.send([trade(NOON, 0)])
        first = await r.work.receive()
        assert (list(first.rows), first.retired) == ([key()], ())
        # The wall clock leaves the hour at t0 + 1.5: the tick at 2.0 retires its key.
        second = await r.work.receive()
        assert trio.current_time() == t0 + 2.0
        assert (second.rows, second.retired) == ({}, (key(),))
        # Nothing is open any more: later ticks send nothing ...
        with trio.move_on_at(t0 + 3.5):
            await r.work.receive()
            pytest.fail("work without rows or retired keys")
        # ... until a late row of that hour: its own new file, retired after it.
        await r.send([trade(NOON + 7, 7)])
        late = await r.work.receive()
        assert trio.current_time() == t0 + 4.0
        assert (list(late.rows), late.retired) == ([key()], (key(),))
        assert sequences(late, key()) == [7]


async def test_the_end_of_events_sends_what_waits_and_closes_the_work_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_router(flush_interval_secs=60.0) as r:
        t0 = trio.current_time()
        await r.send([trade(NOON, 0)])
        await r.events.aclose()
        r.doorbell.ring()
        work = await r.work.receive()
        assert sequences(work, key()) == [0]
        with pytest.raises(trio.EndOfChannel):
            await r.work.receive()
        assert trio.current_time() == t0  # no tick waited for


async def test_first_rows_are_routed_before_any_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stop = Status("binance", "BTCUSDT", None, NOON + 10, None, "disconnected")
    async with open_router(first_rows=[stop], flush_interval_secs=1.0) as r:
        await r.send([trade(NOON, 1)])
        work = await r.work.receive()
    assert list(work.rows) == [key(data_type="status"), key()]
    assert work.rows[key(data_type="status")].first_us == NOON + 10
