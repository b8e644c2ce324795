"""A connection's discards against the fake Binance, in virtual time: the metric counts
them as the session reports them, and ``discarded`` status rows write them down at most
once per summary period and when the connection ends."""

from __future__ import annotations

import trio
import trio.testing

from collector.events import Status
from collector.exchanges.base import DISCARD_REASONS
from collector.ingest.discards import SUMMARY_PERIOD_SECS
from collector.metrics import Metrics
from tests.fakes.binance import FakeBinance
from tests.test_connection import (
    EPOCH_US,
    TIMEOUT,
    send_settled,
    start_supervised,
    trade,
    vtime,
    ws_settings,
)


def discarded_total(metrics: Metrics, reason: str) -> float:
    return metrics.sample(
        "collector_messages_discarded_total", {"exchange": "binance", "reason": reason}
    )


def row(symbol: str, data_type: str, reason: str, count: int, at: float) -> Status:
    """The ``discarded`` row written at virtual time ``at``."""
    return Status(
        "binance",
        symbol,
        None,
        EPOCH_US + int(at * 1_000_000),
        None,
        "discarded",
        data_type,
        None,
        None,
        count,
        reason,
    )


async def test_duplicates_are_counted_at_once_and_written_once_a_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, ctx, _ = await start_supervised(
            nursery,
            fake.url,
            ws_settings(),
            symbols=("btcusdt", "ethusdt"),
        )
        metrics = ctx.metrics
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed", 2)
            await send_settled(fake, trade(1))
            await send_settled(fake, trade(2))
            await send_settled(fake, trade(2))  # t = 0: a repeat
            await send_settled(fake, trade(50, "ethusdt"))
            await trio.sleep(0.5)
            await send_settled(fake, trade(1))  # t = 0.5: late
            await send_settled(fake, trade(50, "ethusdt"))
            # Counted as the session reported them; no row before the period has passed.
            assert discarded_total(metrics, "duplicate") == 3
            assert rec.status("discarded") == []

            await trio.sleep(SUMMARY_PERIOD_SECS - 0.5)  # t = 1.0: the period is over
            await send_settled(fake, trade(3))  # the next read writes the rows
            assert rec.status("discarded") == [
                row("BTCUSDT", "trades", "duplicate", 2, 1.0),
                row("ETHUSDT", "trades", "duplicate", 1, 1.0),
            ]
            assert [t.trade_id for t in rec.trades()] == ["1", "2", "50", "3"]

            # Nothing discarded since: no rows, however many reads and periods pass.
            for trade_id in (4, 5, 6):
                await trio.sleep(SUMMARY_PERIOD_SECS)
                await send_settled(fake, trade(trade_id))
            assert len(rec.status("discarded")) == 2

            # A new discard starts a new period (t = 4.0), written at its first read after.
            await send_settled(fake, trade(6))
            await trio.sleep(0.25)
            await send_settled(fake, trade(7))
            assert len(rec.status("discarded")) == 2
            await trio.sleep(0.75)
            await send_settled(fake, trade(8))
            assert rec.status("discarded")[2:] == [row("BTCUSDT", "trades", "duplicate", 1, 5.0)]
            assert discarded_total(metrics, "duplicate") == 4
            assert discarded_total(metrics, "stale") == 0
        nursery.cancel_scope.cancel()


async def test_discards_pending_at_the_end_are_written_before_the_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, ctx, _ = await start_supervised(nursery, fake.url, ws_settings())
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed")
            await send_settled(fake, trade(1))
            await send_settled(fake, trade(1))
            await trio.sleep(0.25)  # within the period: the row is still pending
            await fake.drop()
            [disconnected] = await rec.wait_status("disconnected")
        [discarded] = rec.status("discarded")
        assert discarded == row("BTCUSDT", "trades", "duplicate", 1, 0.25)
        assert rec.events.index(discarded) < rec.events.index(disconnected)
        assert discarded_total(ctx.metrics, "duplicate") == 1
        nursery.cancel_scope.cancel()


async def test_nothing_discarded_writes_no_row_and_the_counters_start_at_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, ctx, _ = await start_supervised(nursery, fake.url, ws_settings())
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed")
            for trade_id in range(1, 5):
                await send_settled(fake, trade(trade_id))
                await trio.sleep(SUMMARY_PERIOD_SECS)
            await fake.drop()
            await rec.wait_status("disconnected")
        assert [t.trade_id for t in rec.trades()] == ["1", "2", "3", "4"]
        assert rec.status("discarded") == []
        rendered = ctx.metrics.render().decode()
        for reason in DISCARD_REASONS:
            assert (
                f'collector_messages_discarded_total{{exchange="binance",reason="{reason}"}} 0.0'
                in rendered
            )
        assert vtime(rec.status("disconnected")[0]) == 4 * SUMMARY_PERIOD_SECS
        nursery.cancel_scope.cancel()
