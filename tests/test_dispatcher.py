"""The dispatcher alone: what a session's results make a connection do, with test-owned
channels and a real health state."""

from __future__ import annotations

import pytest
import trio

from collector.exchanges.base import Actions, SnapshotRequest
from collector.health import HealthState
from collector.ingest.dispatcher import Dispatcher
from collector.ingest.errors import OutboxOverflow, VenueRequestedReconnect
from collector.metrics import Metrics


def make(
    outbox_size: int = 8, snapshots_size: int = 8
) -> tuple[
    Dispatcher,
    HealthState,
    trio.MemoryReceiveChannel[str],
    trio.MemoryReceiveChannel[SnapshotRequest],
]:
    health = HealthState(Metrics())
    health.add_connection("binance-0", "binance", ("BTCUSDT",))
    outbox_tx, outbox_rx = trio.open_memory_channel[str](outbox_size)
    snapshots_tx, snapshots_rx = trio.open_memory_channel[SnapshotRequest](snapshots_size)
    return Dispatcher("binance-0", health, outbox_tx, snapshots_tx), health, outbox_rx, snapshots_rx


def drain(
    channel: trio.MemoryReceiveChannel[str] | trio.MemoryReceiveChannel[SnapshotRequest],
) -> list[object]:
    items: list[object] = []
    while True:
        try:
            items.append(channel.receive_nowait())
        except trio.WouldBlock:
            return items


async def test_frames_and_snapshot_requests_are_queued_in_order_and_counted() -> None:
    dispatcher, _, outbox, snapshots = make()
    first, second = SnapshotRequest("BTCUSDT", "http://a"), SnapshotRequest("ETHUSDT", "http://b")
    dispatcher.follow(Actions(send=("sub-1", "sub-2"), fetch=(first,)))
    dispatcher.follow(Actions(send=("pong",), fetch=(second,)))
    assert drain(outbox) == ["sub-1", "sub-2", "pong"]
    assert drain(snapshots) == [first, second]
    assert dispatcher.awaiting == 2


async def test_a_completed_subscription_marks_the_connection_subscribed() -> None:
    dispatcher, health, _, _ = make()
    seen = []
    for actions in (Actions(), Actions(subscribed=True), Actions(subscribed=True)):
        dispatcher.follow(actions)
        seen.append(health.connections["binance-0"].subscribed_once)
    assert seen == [False, True, True]
    assert dispatcher.subscribed


async def test_a_reconnect_request_ends_the_connection_after_its_frames_are_queued() -> None:
    dispatcher, _, outbox, _ = make()
    with pytest.raises(VenueRequestedReconnect, match="shutdown notice"):
        dispatcher.follow(Actions(send=("bye",), reconnect="shutdown notice"))
    assert drain(outbox) == ["bye"]


@pytest.mark.parametrize(
    ("actions", "outbox_size", "snapshots_size"),
    [
        (Actions(send=("a", "b", "c")), 2, 8),
        (Actions(fetch=(SnapshotRequest("X", "u"),) * 3), 8, 2),
    ],
)
async def test_more_than_the_connection_holds_is_an_outbox_overflow(
    actions: Actions, outbox_size: int, snapshots_size: int
) -> None:
    dispatcher, _, _, _ = make(outbox_size, snapshots_size)
    with pytest.raises(OutboxOverflow, match="queued more than"):
        dispatcher.follow(actions)
