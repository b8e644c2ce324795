"""EventSink: waits for room in a full channel (measured, reported to health); drops, counted
and recorded as ``dropped`` status rows, only when the writer is gone."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from collector.doorbell import Doorbell
from collector.events import Event, Status, Trade
from collector.health import WRITER_WAIT_DEGRADED_SECS, HealthState
from collector.ingest.sink import EventSink
from collector.metrics import Metrics

CONNECTION = "binance-0"


def a_trade(symbol: str, trade_id: int, received_us: int) -> Trade:
    return Trade("binance", symbol, None, received_us, trade_id, str(trade_id), 1.0, 1.0, "buy")


def batch_of(*events: Event) -> list[Event]:
    return list(events)


def dropped_metric(metrics: Metrics) -> float:
    return metrics.sample("collector_messages_dropped_total", {"exchange": "binance"})


def wait_metrics(metrics: Metrics) -> tuple[float, float]:
    """(seconds waited in ended waits, seconds of the wait under way)."""
    labels = {"exchange": "binance", "connection": CONNECTION}
    return (
        metrics.sample("collector_writer_wait_seconds_total", labels),
        metrics.sample("collector_writer_waiting_seconds", labels),
    )


def open_sink(
    size: int, doorbell: Doorbell | None = None
) -> tuple[EventSink, trio.MemoryReceiveChannel[list[Event]], Metrics, HealthState]:
    metrics = Metrics()
    health = HealthState(metrics)
    health.add_connection(CONNECTION, "binance", ("BTCUSDT",))
    health.set_up(CONNECTION)
    tx, rx = trio.open_memory_channel[list[Event]](size)
    sink = EventSink(tx, "binance", metrics, doorbell, connection=CONNECTION, health=health)
    return sink, rx, metrics, health


async def test_accepted_batches_go_through_unchanged_without_a_checkpoint() -> None:
    sink, rx, metrics, _ = open_sink(2)
    batch: list[Event] = [a_trade("BTCUSDT", 1, 10), a_trade("ETHUSDT", 2, 10)]
    with trio.CancelScope() as scope:
        scope.cancel()
        await sink.send(batch, 10)  # would raise Cancelled at a checkpoint
    assert rx.receive_nowait() == batch
    assert sink.total_dropped == 0
    assert dropped_metric(metrics) == 0
    assert not sink.waiting
    assert wait_metrics(metrics) == (0.0, 0.0)


async def test_a_full_channel_waits_for_the_writer_and_keeps_every_batch_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    doorbell = Doorbell(100)
    sink, rx, metrics, health = open_sink(1, doorbell)
    await sink.send([a_trade("BTCUSDT", 1, 100)], 100)  # fills the channel
    received: list[int | None] = []

    async def writer() -> None:
        await doorbell.wait()  # rung by the sender that found the channel full
        await trio.sleep(8.0)  # busy for a while, then drains
        async for batch in rx:
            received.extend(e.sequence for e in batch)

    with trio.fail_after(60.0):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            t0 = trio.current_time()
            async with trio.open_nursery() as senders:
                senders.start_soon(sink.send, batch_of(a_trade("BTCUSDT", 2, 200)), 200)
                await trio.testing.wait_all_tasks_blocked()
                assert health.connections[CONNECTION].writer_wait_since == t0
                await trio.sleep(WRITER_WAIT_DEGRADED_SECS - 1.0)
                assert health.report()["status"] == "healthy"  # a short wait is no problem
                assert wait_metrics(metrics) == (0.0, WRITER_WAIT_DEGRADED_SECS - 1.0)
                await trio.sleep(1.0)
                report = health.report()
                assert report["status"] == "degraded"
                assert report["problems"] == {
                    CONNECTION: "waiting 5s for the writer (the event channel is full)"
                }
            assert trio.current_time() - t0 == 8.0  # the send returned once the writer took
            await sink.send([a_trade("ETHUSDT", 3, 300)], 300)
            await sink.aclose(400)
    assert received == [1, 2, 3]
    assert not sink.waiting
    assert sink.wait_ended_at == t0 + 8.0
    assert wait_metrics(metrics) == (8.0, 0.0)
    assert health.report()["status"] == "healthy"
    assert sink.total_dropped == 0
    assert dropped_metric(metrics) == 0


async def test_overlapping_waits_count_the_connection_s_time_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink, rx, metrics, _ = open_sink(1)
    await sink.send([a_trade("BTCUSDT", 1, 100)], 100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.send, batch_of(a_trade("BTCUSDT", 2, 200)), 200)
        await trio.sleep(2.0)
        nursery.start_soon(sink.send, batch_of(a_trade("BTCUSDT", 3, 300)), 300)
        await trio.sleep(2.0)
        assert wait_metrics(metrics) == (0.0, 4.0)
        for _ in range(3):
            await rx.receive()
    assert wait_metrics(metrics) == (4.0, 0.0)


async def test_a_send_cancelled_while_waiting_is_held_and_goes_first_next_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink, rx, metrics, health = open_sink(1)
    await sink.send([a_trade("BTCUSDT", 1, 100)], 100)
    with trio.move_on_after(3.0):
        await sink.send([a_trade("BTCUSDT", 2, 200)], 200)
    assert not sink.waiting
    assert wait_metrics(metrics) == (3.0, 0.0)
    assert health.connections[CONNECTION].writer_wait_since is None
    assert [e.sequence for e in rx.receive_nowait()] == [1]
    await sink.send([a_trade("BTCUSDT", 3, 300)], 300)
    assert [e.sequence for e in rx.receive_nowait()] == [2, 3]
    assert sink.total_dropped == 0


async def test_close_delivers_held_events_waiting_for_the_writer_even_when_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At shutdown the channel may be full: held events wait (shielded) for the writer,
    which keeps draining until every sender has closed."""
    sink, rx, metrics, _ = open_sink(1)
    await sink.send([a_trade("BTCUSDT", 1, 100)], 100)
    with trio.move_on_after(0.1):
        await sink.send([a_trade("BTCUSDT", 2, 200)], 200)  # held
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
    assert [[e.sequence for e in batch] for batch in received] == [[1], [2]]
    assert dropped_metric(metrics) == 0


async def test_close_when_the_writer_takes_nothing_drops_the_held_events_and_warns(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    sink, rx, metrics, _ = open_sink(1)
    await sink.send([a_trade("BTCUSDT", 1, 100)], 100)
    with trio.move_on_after(0.1):
        await sink.send([a_trade("BTCUSDT", 2, 200), a_trade("ETHUSDT", 3, 200)], 200)
    t0 = trio.current_time()
    with caplog.at_level(logging.WARNING, logger="collector.ingest.sink"):
        await sink.aclose(300, max_wait_secs=1.0)
    assert trio.current_time() - t0 == 1.0
    assert "could not record 2 dropped events" in caplog.text
    assert sink.total_dropped == 2
    assert dropped_metric(metrics) == 2
    assert [e.sequence for e in rx.receive_nowait()] == [1]
    with pytest.raises(trio.EndOfChannel):
        rx.receive_nowait()


async def test_a_closed_receiver_counts_as_a_drop_not_an_error() -> None:
    """If the writer is gone (e.g. cancelled at the shutdown deadline), a connection's
    last rows are lost and counted; sending must not raise inside its cleanup."""
    sink, rx, metrics, _ = open_sink(4)
    rx.close()
    await sink.send([a_trade("BTCUSDT", 1, 100)], 100)
    assert dropped_metric(metrics) == 1
    await sink.aclose(200)  # best effort, no error
    assert not sink.waiting


async def test_a_writer_that_goes_away_during_a_wait_drops_that_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink, rx, metrics, health = open_sink(1)
    await sink.send([a_trade("BTCUSDT", 1, 100)], 100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            sink.send, batch_of(a_trade("BTCUSDT", 2, 200), a_trade("ETHUSDT", 3, 200)), 200
        )
        await trio.sleep(2.0)
        rx.close()  # the writer is cancelled
    assert sink.total_dropped == 2
    assert dropped_metric(metrics) == 2
    assert not sink.waiting
    assert wait_metrics(metrics) == (2.0, 0.0)
    assert health.connections[CONNECTION].writer_wait_since is None


async def test_drops_are_recorded_first_in_the_next_batch_that_goes_through() -> None:
    """The record of what was dropped goes in front of the next batch any channel takes
    (in the service the writer never comes back once gone, so only the counts and a
    warning at close remain; the record's form is pinned here)."""
    sink, gone, metrics, _ = open_sink(4)
    gone.close()
    await sink.send([a_trade("BTCUSDT", 1, 200), a_trade("ETHUSDT", 1, 200)], 200)
    await sink.send([a_trade("BTCUSDT", 2, 300)], 300)  # drop rows in front: not counted
    assert sink.total_dropped == 3
    assert dropped_metric(metrics) == 3
    tx, rx = trio.open_memory_channel[list[Event]](4)
    sink.channel = tx
    await sink.send([a_trade("BTCUSDT", 3, 400)], 400)
    drop_btc, drop_eth, kept = rx.receive_nowait()
    detail = "the writer had stopped: events dropped between 200 and 300 (us since epoch)"
    assert drop_btc == Status(
        "binance", "BTCUSDT", None, 200, None, "dropped", None, None, None, 2, detail
    )
    assert drop_eth == Status(
        "binance", "ETHUSDT", None, 200, None, "dropped", None, None, None, 1, detail
    )
    assert kept == a_trade("BTCUSDT", 3, 400)
    # Recorded once: the next batch carries no drop rows.
    await sink.send([a_trade("BTCUSDT", 4, 500)], 500)
    assert [type(e) for e in rx.receive_nowait()] == [Trade]
    assert dropped_metric(metrics) == 3
