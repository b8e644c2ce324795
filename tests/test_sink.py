"""EventSink: never blocks; drops are counted and recorded as ``dropped`` status rows."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from collector.events import Event, Status, Trade
from collector.ingest.sink import EventSink
from collector.ingest.supervisor import supervise_connection
from collector.metrics import Metrics
from tests.fakes.binance import FakeBinance
from tests.test_connection import (
    EPOCH_US,
    TIMEOUT,
    binance_plans,
    make_ctx,
    send_settled,
    trade,
    vtime,
    ws_settings,
)


def a_trade(symbol: str, trade_id: int, received_us: int) -> Trade:
    return Trade("binance", symbol, None, received_us, trade_id, str(trade_id), 1.0, 1.0, "buy")


def dropped_metric(metrics: Metrics) -> float:
    return metrics.sample("collector_messages_dropped_total", {"exchange": "binance"})


def test_accepted_batches_go_through_unchanged() -> None:
    metrics = Metrics()
    tx, rx = trio.open_memory_channel[list[Event]](2)
    sink = EventSink(tx, "binance", metrics)
    batch: list[Event] = [a_trade("BTCUSDT", 1, 10), a_trade("ETHUSDT", 2, 10)]
    assert sink.send(batch, 10) is True
    assert rx.receive_nowait() == batch
    assert sink.total_dropped == 0
    assert dropped_metric(metrics) == 0


def test_full_channel_drops_counts_and_records_the_hole_first() -> None:
    metrics = Metrics()
    tx, rx = trio.open_memory_channel[list[Event]](1)
    sink = EventSink(tx, "binance", metrics)
    assert sink.send([a_trade("BTCUSDT", 1, 100)], 100) is True  # fills the channel
    assert sink.send([a_trade("BTCUSDT", 2, 200), a_trade("ETHUSDT", 1, 200)], 200) is False
    assert sink.send([a_trade("BTCUSDT", 3, 300)], 300) is False
    assert sink.total_dropped == 3
    assert dropped_metric(metrics) == 3

    assert [e.sequence for e in rx.receive_nowait()] == [1]  # the channel drains
    assert sink.send([a_trade("BTCUSDT", 4, 400)], 400) is True
    drop_btc, drop_eth, kept = rx.receive_nowait()
    detail = "event channel full: events dropped between 200 and 300 (us since epoch)"
    assert drop_btc == Status(
        "binance", "BTCUSDT", None, 200, None, "dropped", None, None, None, 2, detail
    )
    assert drop_eth == Status(
        "binance", "ETHUSDT", None, 200, None, "dropped", None, None, None, 1, detail
    )
    assert kept == a_trade("BTCUSDT", 4, 400)

    # Recorded once: the next batch carries no drop rows.
    assert sink.send([a_trade("BTCUSDT", 5, 500)], 500) is True
    assert [type(e) for e in rx.receive_nowait()] == [Trade]
    assert dropped_metric(metrics) == 3


def test_drop_rows_that_cannot_be_sent_are_not_counted_as_lost_events() -> None:
    metrics = Metrics()
    tx, rx = trio.open_memory_channel[list[Event]](1)
    sink = EventSink(tx, "binance", metrics)
    sink.send([a_trade("BTCUSDT", 1, 100)], 100)
    sink.send([a_trade("BTCUSDT", 2, 200)], 200)  # dropped: 1
    sink.send([a_trade("BTCUSDT", 3, 300)], 300)  # dropped again, with a drop row in front
    assert sink.total_dropped == 2
    assert dropped_metric(metrics) == 2
    rx.receive_nowait()
    sink.send([], 400)
    (row,) = rx.receive_nowait()
    assert isinstance(row, Status)
    assert (row.event, row.count, row.timestamp_collector) == ("dropped", 2, 200)
    assert row.detail is not None
    assert "between 200 and 300" in row.detail


async def test_close_delivers_the_pending_drop_record_and_closes_the_clone() -> None:
    metrics = Metrics()
    tx, rx = trio.open_memory_channel[list[Event]](1)
    sink = EventSink(tx, "binance", metrics)
    sink.send([a_trade("BTCUSDT", 1, 100)], 100)
    sink.send([a_trade("BTCUSDT", 2, 200)], 200)
    rx.receive_nowait()
    await sink.aclose(300)
    (row,) = rx.receive_nowait()
    assert isinstance(row, Status)
    assert (row.symbol, row.event, row.count) == ("BTCUSDT", "dropped", 1)
    with pytest.raises(trio.EndOfChannel):
        rx.receive_nowait()


async def test_close_with_a_full_channel_waits_for_the_writer_even_when_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At shutdown the channel may be full: the drop record waits (shielded) for the
    writer, which keeps draining until every sender has closed."""
    metrics = Metrics()
    tx, rx = trio.open_memory_channel[list[Event]](1)
    sink = EventSink(tx, "binance", metrics)
    sink.send([a_trade("BTCUSDT", 1, 100)], 100)
    sink.send([a_trade("BTCUSDT", 2, 200)], 200)  # channel full: dropped
    received: list[list[Event]] = []

    async def writer() -> None:
        await trio.sleep(0.5)  # busy for a while, then drains
        async for batch in rx:
            received.append(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        with trio.CancelScope() as scope:
            scope.cancel()  # the connection is being cancelled
            await sink.aclose(300)
    assert [e.sequence for e in received[0]] == [1]
    (row,) = received[1]
    assert isinstance(row, Status)
    assert (row.event, row.count) == ("dropped", 1)


async def test_close_when_the_writer_takes_nothing_warns_and_still_closes(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    tx, rx = trio.open_memory_channel[list[Event]](1)
    sink = EventSink(tx, "binance", metrics)
    sink.send([a_trade("BTCUSDT", 1, 100)], 100)
    sink.send([a_trade("BTCUSDT", 2, 200)], 200)
    with caplog.at_level(logging.WARNING, logger="collector.ingest.sink"):
        await sink.aclose(300, max_wait_secs=1.0)
    assert "could not record 1 dropped events" in caplog.text
    assert [e.sequence for e in rx.receive_nowait()] == [1]
    with pytest.raises(trio.EndOfChannel):
        rx.receive_nowait()


async def test_a_closed_receiver_counts_as_a_drop_not_an_error() -> None:
    """If the writer is gone (e.g. cancelled at the shutdown deadline), a connection's
    last rows are lost and counted; sending must not raise inside its cleanup."""
    metrics = Metrics()
    tx, rx = trio.open_memory_channel[list[Event]](4)
    sink = EventSink(tx, "binance", metrics)
    rx.close()
    assert sink.send([a_trade("BTCUSDT", 1, 100)], 100) is False
    assert dropped_metric(metrics) == 1
    await sink.aclose(200)  # best effort, no error


async def test_a_channel_nobody_reads_drops_frames_and_the_hole_is_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        adapter, plans = binance_plans(fake.url, ("btcusdt", "ethusdt"))
        (plan,) = plans
        ctx = make_ctx(ws_settings(message_timeout_secs=30.0), plans)
        tx, rx = trio.open_memory_channel[list[Event]](1)
        nursery.start_soon(supervise_connection, plan, adapter, ctx, tx)
        with trio.fail_after(TIMEOUT):
            await fake.wait_subscribed(["btcusdt@trade", "ethusdt@trade"])
            # Nobody reads: the connected rows fill the channel, the subscribed rows and
            # every trade after them are dropped, and the receive loop never waits.
            await trio.testing.wait_all_tasks_blocked()
            for trade_id in (1, 2, 3):
                await send_settled(fake, trade(trade_id, "btcusdt"))
            await trio.sleep(0.5)
            await send_settled(fake, trade(1, "ethusdt"))
            labels = {"exchange": "binance"}
            assert ctx.metrics.sample("collector_messages_dropped_total", labels) == 2 + 4
            assert ctx.metrics.sample("collector_messages_received_total", labels) == 1 + 4
            assert ctx.health.report()["messages_dropped"] == 6
            assert rx.statistics().current_buffer_used == 1

            first = rx.receive_nowait()  # the channel drains
            assert [(e.symbol, e.event) for e in first if type(e) is Status] == [
                ("BTCUSDT", "connected"),
                ("ETHUSDT", "connected"),
            ]
            await trio.sleep(0.5)
            await send_settled(fake, trade(4, "btcusdt"))
            batch = rx.receive_nowait()
        drops = [e for e in batch if type(e) is Status]
        assert [(d.symbol, d.event, d.count) for d in drops] == [
            ("BTCUSDT", "dropped", 1 + 3),
            ("ETHUSDT", "dropped", 1 + 1),
        ]
        assert all(vtime(d) == 0.0 for d in drops)  # from the first drop
        assert drops[0].detail == (
            f"event channel full: events dropped between {EPOCH_US} and "
            f"{EPOCH_US + 500_000} (us since epoch)"
        )
        (kept,) = [e for e in batch if type(e) is Trade]
        assert batch[-1] is kept  # the drop record goes first
        assert (kept.trade_id, vtime(kept)) == ("4", 1.0)
        nursery.cancel_scope.cancel()
