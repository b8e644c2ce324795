"""REST book snapshots: the fetcher only fetches, the connection task applies the bodies.

These run in real time: the fetcher's HTTP runs in a worker thread against the fake
Binance REST API, which a virtual clock would jump past.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from itertools import count

import pytest
import trio
import trio.testing

from collector.config import MarketSettings
from collector.events import BookUpdate, Event
from collector.exchanges.base import Actions, ConnectionPlan, SnapshotRequest
from collector.exchanges.binance import BinanceAdapter, BinanceSession
from collector.ingest import connection, snapshots
from collector.ingest.connection import run_connection
from collector.ingest.errors import ConnectionLost
from collector.ingest.pacer import Pacer
from collector.ingest.sink import EventSink
from collector.ingest.snapshots import FetchedSnapshot, run_snapshot_fetcher
from tests.fakes.binance import depth_diff_frame
from tests.fakes.binance_rest import FakeBinanceRest
from tests.test_connection import EPOCH_US, make_ctx, ws_settings

TIMEOUT = 15.0
ACK = b'{"result":null,"id":1}'


def depth_url(rest: FakeBinanceRest, symbol: str) -> str:
    return f"{rest.url}/api/v3/depth?symbol={symbol}&limit=1000"


async def test_the_fetcher_sends_every_body_back_in_order_and_retries_refusals() -> None:
    rest = FakeBinanceRest()
    rest.fail_next = [429]
    rest.set_book("BTCUSDT", 105, bids=[(100.0, 5.0)], asks=[(101.0, 2.0)])
    rest.set_book("ETHUSDT", 7, bids=[(10.0, 1.0)], asks=[])
    wall_clock = partial(next, count(EPOCH_US))
    requests_tx, requests_rx = trio.open_memory_channel[SnapshotRequest](8)
    bodies_tx, bodies_rx = trio.open_memory_channel[FetchedSnapshot](0)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(rest.run)
            nursery.start_soon(
                partial(
                    run_snapshot_fetcher,
                    requests_rx,
                    bodies_tx,
                    "binance",
                    wall_clock,
                    Pacer(1000.0),
                    initial_retry_secs=0.01,
                )
            )
            wanted = [SnapshotRequest(s, depth_url(rest, s)) for s in ("BTCUSDT", "ETHUSDT")]
            with requests_tx:
                for request in wanted:
                    requests_tx.send_nowait(request)
            # The fetcher closes its output once its input has ended.
            fetched = [body async for body in bodies_rx]
            nursery.cancel_scope.cancel()
    assert [f.request for f in fetched] == wanted
    assert [json.loads(f.body)["lastUpdateId"] for f in fetched] == [105, 7]
    assert fetched[0].received_us < fetched[1].received_us  # when each body arrived
    path = "/api/v3/depth?symbol={}&limit=1000"
    assert rest.requests == [path.format("BTCUSDT")] * 2 + [path.format("ETHUSDT")]


class _TaskRecordingSession(BinanceSession):
    """Notes which task makes each call of the session's owner."""

    def __init__(self, plan: ConnectionPlan) -> None:
        super().__init__(plan)
        self.calls: list[tuple[str, trio.lowlevel.Task]] = []

    def receive(self, payloads: Sequence[bytes], received_us: int, events: list[Event]) -> Actions:
        self.calls.append(("receive", trio.lowlevel.current_task()))
        return super().receive(payloads, received_us, events)

    def receive_snapshot(
        self, request: SnapshotRequest, body: bytes, received_us: int, events: list[Event]
    ) -> Actions:
        self.calls.append(("receive_snapshot", trio.lowlevel.current_task()))
        return super().receive_snapshot(request, body, received_us, events)


class _RecordingAdapter(BinanceAdapter):
    def __init__(self) -> None:
        self.sessions: list[_TaskRecordingSession] = []

    def open_session(self, plan: ConnectionPlan) -> BinanceSession:
        self.sessions.append(_TaskRecordingSession(plan))
        return self.sessions[-1]


class _FedWebSocket:
    """Each read is what the test sends next; the end of the script is a lost connection."""

    def __init__(self, reads: trio.MemoryReceiveChannel[list[bytes]]) -> None:
        self.reads = reads

    async def receive_messages(self) -> list[bytes]:
        try:
            return await self.reads.receive()
        except trio.EndOfChannel:
            raise ConnectionLost("script ended") from None

    async def send_text(self, text: str) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self, code: int = 1000) -> None:
        pass


async def test_a_body_is_applied_by_the_connection_task_at_its_next_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rest = FakeBinanceRest()
    rest.set_book("BTCUSDT", 105, bids=[(100.0, 5.0)], asks=[(101.0, 2.0)])
    reads_tx, reads_rx = trio.open_memory_channel[list[bytes]](0)
    ws = _FedWebSocket(reads_rx)

    async def connect(url: str, *, max_message_size: int) -> _FedWebSocket:
        return ws

    monkeypatch.setattr(connection, "connect_websocket", connect)
    adapter = _RecordingAdapter()
    events_tx, events_rx = trio.open_memory_channel[list[Event]](1000)

    async def run() -> None:
        market = MarketSettings(
            exchange="binance",
            symbols=("btcusdt",),
            feeds=("orderbook",),
            book_mode="diff",
            rest_url=rest.url,
        )
        (plan,) = adapter.plan_connections([market])
        ctx = make_ctx(ws_settings(), [plan])
        sink = EventSink(events_tx, "binance", ctx.metrics)
        with pytest.raises(ConnectionLost):
            await run_connection(plan, adapter, ctx, sink)
        events_tx.close()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(rest.run)
            nursery.start_soon(run)
            async with reads_tx:
                await reads_tx.send([ACK])  # the diff stream is acknowledged: a snapshot is due
                await rest.wait_requests(1)
                (session,) = adapter.sessions
                # The body comes back while the connection waits for a read: each read
                # (a rendezvous: taken when ``send`` returns) may be the one that applies it.
                first = 101
                while not any(call == "receive_snapshot" for call, _ in session.calls):
                    await reads_tx.send(
                        [depth_diff_frame("btcusdt", first, first + 9, [], [], 0).encode()]
                    )
                    await trio.testing.wait_all_tasks_blocked()
                    first += 10
                await reads_tx.send(
                    [depth_diff_frame("btcusdt", first, first + 9, [], [], 0).encode()]
                )
            rows = [e for batch in [b async for b in events_rx] for e in batch]
            nursery.cancel_scope.cancel()

    # One task makes every call of the session: the connection's receive loop.
    assert len({task for _, task in session.calls}) == 1
    names = [call for call, _ in session.calls]
    assert names.count("receive_snapshot") == 1
    # Applied when a read came back, before that read's frames.
    at = names.index("receive_snapshot")
    assert names[at - 1 : at + 2] == ["receive", "receive_snapshot", "receive"]
    books = [e for e in rows if type(e) is BookUpdate]
    (snapshot,) = [b for b in books if b.kind == "snapshot"]
    # It holds the deltas that came before it (their ids are past its lastUpdateId).
    before = books[: books.index(snapshot)]
    assert snapshot.first_sequence == 105
    assert snapshot.sequence == (before[-1].sequence if before else 105)
    # Its rows keep the time the body arrived, before the read that applied it.
    after = books[books.index(snapshot) + 1]
    assert snapshot.timestamp_collector < after.timestamp_collector


async def test_a_connection_with_more_books_than_the_outbox_asks_every_snapshot(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """300 diff books on one connection (more than OUTBOX_SIZE): every acknowledged book asks
    for its snapshot at once, and the requests wait for the fetcher instead of overflowing
    (which ended the connection, and every reconnect after it, with OutboxOverflow)."""
    books = 300
    assert books > connection.OUTBOX_SIZE
    reads_tx, reads_rx = trio.open_memory_channel[list[bytes]](0)
    ws = _FedWebSocket(reads_rx)

    async def connect(url: str, *, max_message_size: int) -> _FedWebSocket:
        return ws

    asked: list[str] = []

    async def get(url: str) -> bytes:
        asked.append(url)
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    monkeypatch.setattr(connection, "connect_websocket", connect)
    monkeypatch.setattr(snapshots, "get", get)
    adapter = _RecordingAdapter()
    events_tx, _events_rx = trio.open_memory_channel[list[Event]](10_000)
    market = MarketSettings(
        exchange="binance",
        symbols=tuple(f"S{i:03d}USDT" for i in range(books)),
        feeds=("orderbook",),
        book_mode="diff",
        rest_url="http://127.0.0.1:9",
    )
    (plan,) = adapter.plan_connections([market])
    ctx = make_ctx(ws_settings(), [plan])

    async def run() -> None:
        sink = EventSink(events_tx, "binance", ctx.metrics)
        with pytest.raises(ConnectionLost):
            await run_connection(plan, adapter, ctx, sink)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        async with reads_tx:
            # The venue acknowledges both SUBSCRIBE frames (200 streams each at most).
            await reads_tx.send([b'{"result":null,"id":1}', b'{"result":null,"id":2}'])
            await reads_tx.send([depth_diff_frame("s000usdt", 1, 2, [], [], 0).encode()])
            await trio.sleep(5)  # the shared pacer lets a few requests out
    (session,) = adapter.sessions
    assert len(session._snapshot_pending) == books
    assert asked  # the fetcher took requests from the channel
    assert ctx.metrics.sum_samples("collector_websocket_disconnects_total") == 0
