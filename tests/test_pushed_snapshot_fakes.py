"""The fakes of venues that push a book's snapshot on subscribing never let a push of the
topic reach the client before that snapshot (checked with a plain client).

On the venue a subscription's stream starts with its snapshot. The fakes take a topic as
subscribed while answering the request, before the answer and the snapshot are sent; a
test's ``send`` in that window must wait, or the client gets a delta before any snapshot
(the collector then, rightly, records a gap and resubscribes: a test would see resets the
venue never causes). Here every frame the fake sends is slow (it yields to the scheduler
several times first), so a push started in the window would overtake the snapshot.
"""

from __future__ import annotations

import json

import trio
import trio.lowlevel
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.fakes.bybit import FakeBybit, FakeBybitClient, book_frame
from tests.fakes.deribit import FakeClient, FakeDeribit, book_change_frame

TIMEOUT = 5.0
SLOW = 20  # scheduler turns before each frame goes out


class SlowBybit(FakeBybit):
    async def _send_to(self, client: FakeBybitClient, frame: str | bytes) -> int:
        for _ in range(SLOW):
            await trio.lowlevel.checkpoint()
        return await super()._send_to(client, frame)


class SlowDeribit(FakeDeribit):
    async def _send_to(self, client: FakeClient, frame: str | bytes) -> int:
        for _ in range(SLOW):
            await trio.lowlevel.checkpoint()
        return await super()._send_to(client, frame)


async def _messages(ws: WebSocketConnection, count: int) -> list[dict[str, object]]:
    return [json.loads(await ws.get_message()) for _ in range(count)]


async def test_bybit_push_waits_for_the_subscriptions_snapshot(nursery: trio.Nursery) -> None:
    fake = SlowBybit()
    topic = "orderbook.50.BTCUSDT"
    fake.book_snapshots[topic] = book_frame("BTCUSDT", "snapshot", [(100, 1)], [(101, 1)], 7, 1)
    await nursery.start(fake.run)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"{fake.url}/v5/public/linear") as ws:
            await ws.send_message(json.dumps({"req_id": "1", "op": "subscribe", "args": [topic]}))
            while not any(topic in c.topics for c in fake.clients):
                await trio.lowlevel.checkpoint()  # taken; answer and snapshot not sent yet
            delta = book_frame("BTCUSDT", "delta", [(100, 2)], [], 8, 2)
            assert await fake.send(delta) == 1
            answer, snapshot, pushed = await _messages(ws, 3)
    assert answer["success"] is True
    assert (snapshot["type"], pushed["type"]) == ("snapshot", "delta")


async def test_deribit_push_waits_for_the_subscriptions_snapshot(nursery: trio.Nursery) -> None:
    fake = SlowDeribit()
    channel = "book.BTC-PERPETUAL.100ms"
    fake.books["BTC-PERPETUAL"] = (7, [(100.0, 1.0)], [(101.0, 1.0)], 1)
    await nursery.start(fake.run)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"{fake.url}/ws/api/v2") as ws:
            request = {"jsonrpc": "2.0", "id": 1, "method": "public/subscribe"}
            await ws.send_message(json.dumps(request | {"params": {"channels": [channel]}}))
            while not any(channel in c.channels for c in fake.clients):
                await trio.lowlevel.checkpoint()  # taken; answer and snapshot not sent yet
            change = book_change_frame("BTC-PERPETUAL", 7, 8, [("change", 100.0, 2.0)], [], 2)
            assert await fake.send(change) == 1
            answer, snapshot, pushed = await _messages(ws, 3)
    assert answer["result"] == [channel]
    kinds = [m["params"]["data"]["type"] for m in (snapshot, pushed)]  # type: ignore[index]
    assert kinds == ["snapshot", "change"]
