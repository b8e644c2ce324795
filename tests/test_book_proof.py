"""Proof that the book the reader rebuilds is the venue's book (issue 19, item 6).

Real recorded traffic (``../shared/samples``: Binance spot and USD-M diff depth, Bybit v5
``orderbook.200``, Deribit ``book.*``) goes through the real service and back out of the
reader:

- a fake venue on 127.0.0.1 replays a recording's frames at their recorded pace, in
  virtual time (Trio's MockClock, moved by the test; the wall clock follows it), with the
  hour boundary inside the replay, files rotated by size as well, and the connection
  dropped twice mid-way (the frames sent meanwhile are lost, as on the venue; the book
  resumes from a fresh snapshot);
- the first snapshot is the recorded one; after a drop it is the venue's book as the
  reference has it: on Binance (REST) at a chosen id, older than the deltas the collector
  has already received (they must be joined to it) or newer (the deltas it already holds
  must be dropped); on Bybit and Deribit (pushed on subscribing) where the stream resumes;
- a reference book (``tests/book_reference.py``: plain dicts, the venue's documented rules,
  nothing of the collector) is fed the recording's frames.

Asserted, for the whole book (every level, ``depth=None``) of every symbol:

1. the reader's view after each update is the reference book at the view's update id
   (``sequence``), and the views between two resets are exactly the updates a venue client
   applies: the snapshot, then every delta received until the next hole whose id is past it;
2. across each drop the reader says the book is unknown (``BookReset``) and gives no view
   until the next snapshot;
3. ``book_at`` at every 50th view's time is that view;
4. each order book file alone (plus the symbol's status files) gives, at every row time
   inside it, the same book as the full history does.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection, WebSocketRequest

from collector.reader import BookReset, BookView, DataReader
from collector.reader.times import from_us
from collector.service import EXIT_OK, ServiceHandle
from collector.settings_check import parse_settings
from tests.book_reference import BinanceDiffBook, BookState, BybitBook, DeribitBook
from tests.fakes.binance import FakeBinance
from tests.fakes.binance_rest import FakeBinanceRest
from tests.fakes.bybit import FakeBybit, FakeBybitClient
from tests.fakes.deribit import FakeClient as FakeDeribitClient
from tests.fakes.deribit import FakeDeribit, notification
from tests.samples import read_f2, require_sample
from tests.venue_helpers import QUIET_WEBSOCKET, received, run_until_stopped

DISCONNECTS = "collector_websocket_disconnects_total"

pytestmark = pytest.mark.slow

# The UTC hour the replay crosses, and how far into the replay it falls.
HOUR_US = 1_754_740_800_000_000  # 2025-08-09T12:00:00Z
HOUR_AT_SECS = 12.0
EVERY_NTH_INSTANT = 50


@dataclass(frozen=True)
class Recording:
    sample: str
    category: str  # the market's category
    exchange: str  # as in rows

    @property
    def futures(self) -> bool:
        return self.category != "spot"


SPOT = Recording("cryptofeed-v3/BINANCE.jsonl.zst", "spot", "binance")
USDM = Recording("cryptofeed-v3/BINANCE_FUTURES.jsonl.zst", "usdm", "binance-usdm")


@dataclass(frozen=True)
class Frame:
    offset: float  # seconds after the recording's first frame
    symbol: str
    text: str
    data: dict[str, Any]
    update_id: int  # the venue's id of the update: Binance u, Bybit u, Deribit change_id


@dataclass
class Truth:
    """Per symbol: the recorded snapshot, and the reference book after every update id."""

    snapshots: dict[str, dict[str, Any]]
    frames: list[Frame]
    books: dict[str, dict[int, BookState]] = field(default_factory=dict)

    def body_at(self, symbol: str, update_id: int, *, futures: bool) -> bytes:
        """The venue's REST depth answer for the book at ``update_id`` (futures ones carry
        event and transaction times)."""
        bids, asks = self.books[symbol][update_id]
        body: dict[str, Any] = {"lastUpdateId": update_id}
        if futures:
            body |= {"E": 1_626_992_741_264, "T": 1_626_992_741_261}
        body |= {
            "bids": [[f"{p:.8f}", f"{s:.8f}"] for p, s in bids],
            "asks": [[f"{p:.8f}", f"{s:.8f}"] for p, s in asks],
        }
        return json.dumps(body).encode()


def load(recording: Recording) -> Truth:
    capture = read_f2(require_sample(recording.sample))
    snapshots: dict[str, dict[str, Any]] = {}
    for record in capture.http("depth?"):
        assert record.url is not None
        assert record.data is not None
        symbol = record.url.split("symbol=")[1].split("&")[0]
        snapshots[symbol] = json.loads(record.data)
    frames: list[Frame] = []
    start: float | None = None
    for record in capture.received():
        assert record.data is not None
        assert record.ts is not None
        message = json.loads(record.data)
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, dict) or data.get("e") != "depthUpdate":
            continue
        start = record.ts if start is None else start
        frames.append(Frame(record.ts - start, data["s"], record.data, data, int(data["u"])))
    truth = Truth(snapshots, frames)
    for symbol, body in snapshots.items():
        book = BinanceDiffBook(futures=recording.futures)
        book.snapshot(body)
        states = {int(body["lastUpdateId"]): book.state()}
        for frame in frames:
            if frame.symbol == symbol and book.apply(frame.data):
                states[int(frame.data["u"])] = book.state()
        truth.books[symbol] = states
    return truth


def virtual_wall_clock(t0: float) -> Callable[[], int]:
    """Virtual wall time, ``HOUR_AT_SECS`` before the hour at Trio time ``t0``. Like a real
    clock, two reads never give the same microsecond: time frozen between the test's moves
    would otherwise stamp a REST answer and the next frame alike, which no real clock does
    (and within a microsecond the reader cannot tell a gap row's place among book rows)."""
    last_read = [0]

    def wall_clock() -> int:
        now = HOUR_US - int(HOUR_AT_SECS * 1e6) + int((trio.current_time() - t0) * 1e6)
        last_read[0] = max(now, last_read[0] + 1)
        return last_read[0]

    return wall_clock


class ReplayRest(FakeBinanceRest):
    """Depth snapshots chosen by the test at the moment each is asked for."""

    def __init__(self, answer: Callable[[str], bytes]) -> None:
        super().__init__()
        self.answer = answer

    def _respond(self, target: str) -> tuple[int, bytes]:
        if "/depth?" in target:
            return 200, self.answer(target.split("symbol=")[1].split("&")[0])
        return super()._respond(target)


@dataclass
class Connection:
    """What one connection of the collector got: the update ids of the frames delivered to
    it, per symbol."""

    delivered: dict[str, list[int]] = field(default_factory=dict)


async def wait_real(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    """Let the service (and its worker threads) run, virtual time frozen, until
    ``predicate`` holds."""
    give_up = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < give_up, "condition not reached"
        await trio.to_thread.run_sync(time.sleep, 0.0005)


async def replay(
    recording: Recording,
    truth: Truth,
    data_dir: Path,
    clock: trio.testing.MockClock,
    drops: list[tuple[float, float, int]],
) -> list[Connection]:
    """Replay ``truth``'s frames through the service into ``data_dir``.

    ``drops``: (offset, outage seconds, snapshot lag) per forced reconnect: the fake drops
    the connection at that offset, sends nothing for the outage, and on the new connection
    answers each snapshot with the reference book ``lag`` updates of that symbol before the
    last one delivered (``lag`` < 0: after it, not delivered yet).
    """
    clock.autojump_threshold = math.inf  # time moves only when the test moves it
    t0 = trio.current_time()

    wall_clock = virtual_wall_clock(t0)

    connections: list[Connection] = []
    lag: int | None = None
    symbols = sorted(truth.snapshots)
    ids_by_symbol = {s: [int(f.data["u"]) for f in truth.frames if f.symbol == s] for s in symbols}

    def answer(symbol: str) -> bytes:
        connection = connections[-1]
        if lag is None:  # the first connection: the recorded snapshot
            body = truth.snapshots[symbol]
            return json.dumps(body).encode()
        # The venue's position: its last update sent by now.
        now = trio.current_time() - t0
        frames = [f for f in truth.frames if f.symbol == symbol]
        position = max((i for i, f in enumerate(frames) if f.offset <= now), default=0)
        delivered = connection.delivered.get(symbol, [])
        if lag > 0:  # older than what was delivered, but not older than this connection
            first = ids_by_symbol[symbol].index(delivered[0]) - 1 if delivered else position
            chosen = max(position - lag, first)
        else:
            chosen = min(position - lag, len(frames) - 1)
        wanted = ids_by_symbol[symbol][max(chosen, 0)]
        update_id = min(i for i in truth.books[symbol] if i >= wanted)
        return truth.body_at(symbol, update_id, futures=recording.futures)

    ws = FakeBinance(category=recording.category)
    rest = ReplayRest(answer)
    streams = [f"{s.lower()}@depth@100ms" for s in symbols]
    async with trio.open_nursery() as nursery:
        await nursery.start(ws.run)
        await nursery.start(rest.run)
        settings = parse_settings(
            {
                "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                "storage": {"data_dir": str(data_dir), "max_file_size_mb": 0.25},
                "websocket": dict(QUIET_WEBSOCKET),
                "markets": [
                    {
                        "exchange": "binance",
                        "category": recording.category,
                        "symbols": symbols,
                        "feeds": ["orderbook"],
                        "book_mode": "diff",
                        "base_url": ws.url,
                        "rest_url": rest.url,
                    }
                ],
            }
        )
        connections.append(Connection())
        handle, stop = await run_until_stopped(nursery, settings, wall_clock=wall_clock)
        await ws.wait_subscribed(streams)
        await wait_real(lambda: received(handle) >= 1)  # the acknowledgement
        delivered_total = 1.0
        pending_drops = sorted(drops)
        for frame in truth.frames:
            if pending_drops and frame.offset >= pending_drops[0][0]:
                at, outage, lag = pending_drops.pop(0)
                await ws.drop()
                connections.append(Connection())  # its snapshots are asked for at once
                await advance_until(
                    clock,
                    t0,
                    at + outage,
                    partial(_accepted, ws, len(connections)),
                    partial(_subscribed, ws, streams),
                    handle,
                )
                delivered_total = received(handle)
            if frame.offset < trio.current_time() - t0:
                continue  # sent while the collector was not connected: lost
            clock.jump(frame.offset - (trio.current_time() - t0))
            if await ws.send(frame.text):
                delivered = connections[-1].delivered.setdefault(frame.symbol, [])
                delivered.append(frame.update_id)
                delivered_total += 1
                await wait_real(partial(_received_at_least, handle, delivered_total))
        clock.jump(1.0)
        assert await stop() == EXIT_OK
        nursery.cancel_scope.cancel()
    return connections


async def advance_until(
    clock: trio.testing.MockClock,
    t0: float,
    not_before: float,
    accepted: Callable[[], bool],
    subscribed: Callable[[], bool],
    handle: ServiceHandle,
    *,
    pace: float = 0.0,
) -> None:
    """Move virtual time on until the fake has ``accepted`` the new connection, then (time
    frozen, or moving ``pace`` seconds a real millisecond for a client that paces its
    requests) until it is ``subscribed`` and the acknowledgement received; then on to
    ``not_before`` (seconds after ``t0``), the outage's end."""
    before = received(handle)
    give_up = time.monotonic() + 20
    while not accepted():  # moving time only until the reconnect starts
        assert time.monotonic() < give_up, "no reconnect"
        clock.jump(0.05)
        await trio.to_thread.run_sync(time.sleep, 0.0005)
    while not (subscribed() and received(handle) > before):
        assert time.monotonic() < give_up, "not subscribed"
        clock.jump(pace)
        await trio.to_thread.run_sync(time.sleep, 0.001)
    if trio.current_time() - t0 < not_before:
        clock.jump(not_before - (trio.current_time() - t0))


def _disconnected(handle: ServiceHandle, disconnects_before: float) -> bool:
    return handle.metrics.sum_samples(DISCONNECTS) > disconnects_before


def _received_at_least(handle: ServiceHandle, count: float) -> bool:
    return received(handle) >= count


def _accepted(ws: FakeBinance | FakeBybit | FakeDeribit, connections: int) -> bool:
    return ws.connections >= connections


def _subscribed(ws: FakeBinance, streams: list[str]) -> bool:
    return any(set(streams) <= client.streams for client in ws.clients)


def items(reader: DataReader, exchange: str, symbol: str) -> list[BookView | BookReset]:
    return list(
        reader.book(
            exchange, symbol, HOUR_US // 1000 - 3_600_000, HOUR_US // 1000 + 3_600_000, depth=None
        )
    )


def views_by_symbol(
    reader: DataReader, exchange: str, symbols: list[str]
) -> dict[str, list[BookView | BookReset]]:
    return {s: items(reader, exchange, s) for s in symbols}


def check_against_reference(
    recording: Recording, truth: Truth, connections: list[Connection], data_dir: Path
) -> dict[str, list[BookView | BookReset]]:
    """Per symbol: every view is the reference book at its update id, and each run of views
    (from a snapshot to the next reset) holds exactly the updates a venue client applies:
    the snapshot (which may already hold the deltas received before it: its id is then the
    last of them), then every delta received until the reset whose id is past it."""
    reader = DataReader(data_dir)
    result: dict[str, list[BookView | BookReset]] = {}
    for symbol in sorted(truth.snapshots):
        replayed = items(reader, recording.exchange, symbol)
        result[symbol] = replayed
        runs: list[tuple[list[BookView], int | None]] = []  # views, and when they end
        current: list[BookView] = []
        for item in replayed[1:]:
            if isinstance(item, BookReset):
                if current:
                    runs.append((current, _us(item)))
                current = []
            else:
                current.append(item)
        if current:
            runs.append((current, None))
        for run, _ in runs:
            for view in run:
                assert view.sequence is not None
                assert (view.bids, view.asks) == truth.books[symbol][view.sequence], (
                    f"{symbol}: the book at update {view.sequence} ({view.kind}) "
                    "differs from the reference"
                )
        # When each delivered delta was received: its row's time (a delta the collector
        # dropped as already in a snapshot has none, and no run may hold it).
        received_at = _delta_times(reader, recording.exchange, symbol)
        delivered = [u for c in connections for u in c.delivered.get(symbol, [])]
        deliveries = sorted((received_at[u], u) for u in delivered if u in received_at)
        for run, end in runs:
            first, start = run[0].sequence, _us(run[0])
            assert first is not None
            applied = [
                u for at, u in deliveries if start <= at and (end is None or at < end) and u > first
            ]
            assert [v.sequence for v in run] == [first, *applied], symbol
        # The book came back after every drop (and a gap may have cost one more snapshot).
        assert len(runs) >= len(connections), symbol
    return result


def _delta_times(reader: DataReader, exchange: str, symbol: str) -> dict[int, int]:
    table = reader.table(
        "orderbook",
        exchange=exchange,
        symbol=symbol,
        columns=["timestamp_collector", "kind", "sequence"],
    ).to_pylist()
    return {
        row["sequence"]: round(row["timestamp_collector"].timestamp() * 1e6)
        for row in table
        if row["kind"] == "delta"
    }


def _us(item: BookView | BookReset) -> int:
    return round(item.time.timestamp() * 1e6)


def check_instants(
    data_dir: Path, exchange: str, symbol: str, replayed: list[BookView | BookReset]
) -> int:
    """``book_at`` at every 50th update's time is the replay's book at that time."""
    reader = DataReader(data_dir)
    views = [v for v in replayed[1:] if isinstance(v, BookView)]
    last_at: dict[int, BookView] = {}
    for view in views:
        last_at[int(view.time.timestamp() * 1e6)] = view
    checked = 0
    for view in views[::EVERY_NTH_INSTANT]:
        at_us = round(view.time.timestamp() * 1e6)
        got = reader.book_at(exchange, symbol, from_us(at_us), depth=None)
        assert isinstance(got, BookView)
        want = last_at[at_us]
        assert (got.bids, got.asks, got.sequence) == (want.bids, want.asks, want.sequence)
        checked += 1
    return checked


def check_each_file_alone(
    data_dir: Path, exchange: str, symbol: str, tmp: Path, full: list[BookView | BookReset]
) -> int:
    """Each order book file, read with only the symbol's status files beside it, gives
    the full history's book at every update inside it."""
    reader = DataReader(data_dir)
    files = reader.files("orderbook", exchange=exchange, symbol=symbol)
    status = reader.files("status", exchange=exchange, symbol=symbol)
    assert len(files) >= 2  # the hour rotated the files (and the size, for busy symbols)
    full_views = {round(v.time.timestamp() * 1e6): v for v in full[1:] if isinstance(v, BookView)}
    times_by_file = [_file_times(file.path) for file in files]
    checked = 0
    for index, file in enumerate(files):
        # Rows of one microsecond may end one file and start the next: there the full
        # history's book is the one after the next file's rows.
        elsewhere = set().union(*(t for i, t in enumerate(times_by_file) if i != index))
        alone = tmp / f"alone-{symbol}-{index}"
        for kept in [file, *status]:
            target = alone / Path(kept.path).relative_to(data_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(kept.path, target)
        one = DataReader(alone)
        times = _times(one, exchange, symbol)
        got = one.book(exchange, symbol, from_us(times[0]), from_us(times[-1] + 1), depth=None)
        alone_views = {round(v.time.timestamp() * 1e6): v for v in got if isinstance(v, BookView)}
        # The file's first row (a checkpoint, when the book was known) makes it known at
        # once: the same book as the full history's at every time a row of it was received.
        known_then = [t for t in times if t in full_views and t not in elsewhere]
        assert set(known_then) <= set(alone_views), file.path
        for at in known_then:
            view, want = alone_views[at], full_views[at]
            assert (view.bids, view.asks) == (want.bids, want.asks), (file.path, at)
            checked += 1
    return checked


def _file_times(path: str) -> set[int]:
    column = pq.read_table(path, columns=["timestamp_collector"]).column(0)
    return {int(t) for t in column.cast("int64").to_pylist()}


def _times(reader: DataReader, exchange: str, symbol: str) -> list[int]:
    """The receive times of the book rows, in µs."""
    table = reader.table(
        "orderbook", exchange=exchange, symbol=symbol, columns=["timestamp_collector"]
    )
    return [int(t) for t in table.column("timestamp_collector").cast("int64").to_pylist()]


@pytest.mark.parametrize("recording", [SPOT, USDM], ids=["spot", "usdm"])
async def test_the_reader_rebuilds_the_venues_book(
    recording: Recording, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    truth = load(recording)
    data_dir = tmp_path / "data"
    # Drop twice: the next snapshot older than what the collector already has, then newer.
    drops = [(9.0, 1.5, 2), (20.0, 1.0, -2)]
    connections = await replay(recording, truth, data_dir, autojump_clock, drops)
    assert len(connections) == 3
    replayed = check_against_reference(recording, truth, connections, data_dir)
    for symbol, symbol_items in replayed.items():
        resets = [i for i in symbol_items[1:] if isinstance(i, BookReset)]
        # Each drop, and the shutdown after the last view (and a gap where the snapshot
        # after a reconnect was older than the first delta the new connection got).
        assert [r.event for r in resets if r.event != "gap"] == ["disconnected"] * 3, symbol
        assert symbol_items[-1] == resets[-1]
        check_instants(data_dir, recording.exchange, symbol, symbol_items)
        check_each_file_alone(data_dir, recording.exchange, symbol, tmp_path, symbol_items)


# --------------------------------------------------------------------------- pushed snapshots
# Venues that send the book's snapshot on the WebSocket after each subscription.


class Position:
    """Which snapshot the fake pushes on a subscription: the recorded one on the first
    connection, later the reference book as the venue stands then (its last update sent
    before now; the stream then resumes right after it)."""

    def __init__(self, truth: Truth, t0: float) -> None:
        self.truth = truth
        self.t0 = t0
        self.first = True
        self.served: dict[str, int] = {}  # the update id of the last book pushed

    def update_id(self, symbol: str) -> int | None:
        """None: the recorded snapshot; else the update id of the book to push."""
        if self.first:
            return None
        now = trio.current_time() - self.t0
        before = [f for f in self.truth.frames if f.symbol == symbol and f.offset < now]
        update_id = before[-1].update_id if before else min(self.truth.books[symbol])
        self.served[symbol] = update_id
        return update_id


class ReplayBybit(FakeBybit):
    """Answers each ``orderbook`` subscription with the snapshot :class:`Position` picks;
    counts the frames it sends on each connection."""

    def __init__(self, truth: Truth, position: Position) -> None:
        super().__init__(ping_timeout=3600.0)
        self.truth, self.position = truth, position
        self.sent: dict[int, int] = {}  # frames sent, by connection number (1 = the first)

    async def _send_to(self, client: FakeBybitClient, frame: str | bytes) -> int:
        done = await super()._send_to(client, frame)
        number = int(client.conn_id.rsplit("-", 1)[1])
        self.sent[number] = self.sent.get(number, 0) + done
        return done

    def sent_on_open_connection(self) -> int | None:
        """Frames sent on the open connection, None while none is open or a request of
        it is being answered (more are coming)."""
        if not self.clients or self.replying(self.clients[-1]).locked():
            return None
        return self.sent.get(self.connections, 0)

    def _replies(self, client: FakeBybitClient, text: str) -> list[str]:
        request = json.loads(text)
        if request.get("op") == "subscribe":
            for topic in request.get("args") or []:
                self.book_snapshots[topic] = self._snapshot(topic)
        return super()._replies(client, text)

    def _snapshot(self, topic: str) -> str:
        symbol = topic.rsplit(".", 1)[1]
        recorded = self.truth.snapshots[symbol]
        update_id = self.position.update_id(symbol)
        if update_id is None:
            return json.dumps(recorded)
        bids, asks = self.truth.books[symbol][update_id]
        data = {
            "s": symbol,
            "b": [[repr(p), repr(q)] for p, q in bids],
            "a": [[repr(p), repr(q)] for p, q in asks],
            "u": update_id,
            "seq": int(recorded["data"]["seq"]) + update_id,
        }
        push = {"topic": topic, "type": "snapshot", "ts": recorded["ts"], "data": data}
        return json.dumps(push | {"cts": recorded.get("cts", recorded["ts"])})


class ReplayDeribit(FakeDeribit):
    """Sends each subscribed book the snapshot :class:`Position` picks; counts the frames
    it sends on each connection."""

    def __init__(self, truth: Truth, position: Position) -> None:
        super().__init__(test_request_timeout=3600.0)
        self.truth, self.position = truth, position
        self.sent: dict[int, int] = {}  # frames sent, by connection number (1 = the first)
        self._numbers: dict[int, int] = {}  # id of a client -> its connection number

    def _new_client(
        self, conn: WebSocketConnection, request: WebSocketRequest
    ) -> FakeDeribitClient:
        client = super()._new_client(conn, request)
        self._numbers[id(client)] = self.connections
        return client

    async def _send_to(self, client: FakeDeribitClient, frame: str | bytes) -> int:
        done = await super()._send_to(client, frame)
        number = self._numbers[id(client)]
        self.sent[number] = self.sent.get(number, 0) + done
        return done

    def sent_on_open_connection(self) -> int | None:
        """Frames sent on the open connection, None while none is open or a request of
        it is being answered (more are coming)."""
        if not self.clients or self.replying(self.clients[-1]).locked():
            return None
        return self.sent.get(self.connections, 0)

    def _reply(self, client: FakeDeribitClient, text: str) -> list[str]:
        replies = super()._reply(client, text)
        request = json.loads(text)
        if request.get("method") == "public/subscribe":
            for channel in request["params"]["channels"]:
                kind, instrument, interval = channel.split(".")
                if kind == "book" and instrument in self.truth.snapshots:
                    replies.append(self._snapshot(instrument, interval))
        return replies

    def _snapshot(self, instrument: str, interval: str) -> str:
        recorded = self.truth.snapshots[instrument]
        update_id = self.position.update_id(instrument)
        if update_id is None:
            data = recorded["params"]["data"]
        else:
            bids, asks = self.truth.books[instrument][update_id]
            data = {
                "type": "snapshot",
                "timestamp": recorded["params"]["data"]["timestamp"],
                "instrument_name": instrument,
                "change_id": update_id,
                "bids": [["new", p, a] for p, a in bids],
                "asks": [["new", p, a] for p, a in asks],
            }
        return notification(f"book.{instrument}.{interval}", data)


async def replay_pushed(
    truth: Truth,
    data_dir: Path,
    clock: trio.testing.MockClock,
    drops: list[float],
    fake: ReplayBybit | ReplayDeribit,
    position: Position,
    market: dict[str, Any],
    subscribed: Callable[[], bool],
) -> list[Connection]:
    """Replay ``truth``'s deltas through the service (``market``: the settings' market
    without its URL); the fake drops the connection at each offset in ``drops``.

    Virtual time moves on only once the collector has received every frame the fake sent
    on the open connection (answers, snapshots, deltas, pongs, heartbeats: counted by the
    fake, against the service's received count since that connection opened), so each
    delta is received at its own time and ``delivered`` is exactly what reached the
    collector: a drop loses nothing sent, it comes after the last frame was received."""
    clock.autojump_threshold = math.inf
    wall_clock = virtual_wall_clock(position.t0)
    connections: list[Connection] = [Connection()]
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        settings = parse_settings(
            {
                "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                "storage": {"data_dir": str(data_dir), "max_file_size_mb": 0.25},
                "websocket": dict(QUIET_WEBSOCKET),
                "markets": [market | {"base_url": fake.url}],
            }
        )
        handle, stop = await run_until_stopped(nursery, settings, wall_clock=wall_clock)
        base = 0.0  # messages the service received before the open connection

        def caught_up() -> bool:
            sent = fake.sent_on_open_connection()
            return sent is not None and received(handle) >= base + sent

        give_up = time.monotonic() + 20
        while not subscribed():  # a venue's client may pace its requests (Deribit)
            assert time.monotonic() < give_up, "not subscribed"
            clock.jump(0.001)
            await trio.to_thread.run_sync(time.sleep, 0.001)
        await wait_real(caught_up)  # the answers and every snapshot
        position.first = False
        position.t0 = trio.current_time()  # the replay starts now
        pending = sorted(drops)
        for frame in truth.frames:
            if pending and frame.offset >= pending[0]:
                pending.pop(0)
                disconnects = handle.metrics.sum_samples(DISCONNECTS)
                await fake.drop()
                # The old connection has ended (time frozen: no reconnect yet); what the
                # service received so far came on it.
                await wait_real(partial(_disconnected, handle, disconnects))
                base = received(handle)
                connections.append(Connection())
                await advance_until(
                    clock,
                    position.t0,
                    0.0,
                    partial(_accepted, fake, len(connections)),
                    subscribed,
                    handle,
                    pace=0.001,
                )
                await wait_real(caught_up)  # the answers and the snapshots
            if frame.update_id <= position.served.get(frame.symbol, -1):
                continue  # lost in the outage, or already in the snapshot pushed since
            now = trio.current_time() - position.t0
            clock.jump(max(0.0, frame.offset - now))  # (late ones go at once)
            if await fake.send(frame.text):
                delivered = connections[-1].delivered.setdefault(frame.symbol, [])
                delivered.append(frame.update_id)
            await wait_real(caught_up)
        clock.jump(1.0)
        assert await stop() == EXIT_OK
        nursery.cancel_scope.cancel()
    return connections


def check_all(
    recording: Recording, truth: Truth, connections: list[Connection], data_dir: Path, tmp: Path
) -> None:
    """Every check of the module docstring, for every symbol; no reset but the drops and
    the shutdown; and the delta rows are exactly the deltas delivered (the replay lets
    none be lost: each is received before time moves on or the connection is dropped)."""
    replayed = check_against_reference(recording, truth, connections, data_dir)
    reader = DataReader(data_dir)
    for symbol, symbol_items in replayed.items():
        rows = reader.table(
            "orderbook", exchange=recording.exchange, symbol=symbol, columns=["kind", "sequence"]
        ).to_pylist()
        deltas = [row["sequence"] for row in rows if row["kind"] == "delta"]
        delivered = [u for c in connections for u in c.delivered.get(symbol, [])]
        assert sorted(deltas) == sorted(delivered), symbol
        resets = [i for i in symbol_items[1:] if isinstance(i, BookReset)]
        assert [r.event for r in resets] == ["disconnected"] * len(connections), symbol
        assert symbol_items[-1] == resets[-1]
        check_instants(data_dir, recording.exchange, symbol, symbol_items)
        check_each_file_alone(data_dir, recording.exchange, symbol, tmp, symbol_items)


# --------------------------------------------------------------------------- Bybit

BYBIT = Recording("cryptofeed-v3/BYBIT.jsonl.zst", "linear", "bybit-linear")
BYBIT_CONNECTION = "BYBIT.ws.2"  # the linear one: BTC, ETH, SOL and DOGE perpetuals


def load_bybit() -> Truth:
    """The recording's ``orderbook.200`` pushes of the linear connection: each symbol's
    snapshot, the deltas after it, and the reference book after every ``u``."""
    capture = read_f2(require_sample(BYBIT.sample))
    snapshots: dict[str, dict[str, Any]] = {}
    frames: list[Frame] = []
    start: float | None = None
    for record in capture.received(BYBIT_CONNECTION):
        assert record.data is not None
        assert record.ts is not None
        message = json.loads(record.data)
        if not str(message.get("topic", "")).startswith("orderbook."):
            continue
        symbol = message["data"]["s"]
        if message["type"] == "snapshot":
            snapshots[symbol] = message
            continue
        start = record.ts if start is None else start
        frames.append(
            Frame(record.ts - start, symbol, record.data, message, int(message["data"]["u"]))
        )
    truth = Truth(snapshots, frames)
    for symbol, snapshot in snapshots.items():
        book = BybitBook()
        book.apply(snapshot)
        states = {int(snapshot["data"]["u"]): book.state()}
        for frame in frames:
            if frame.symbol == symbol:
                book.apply(frame.data)
                states[frame.update_id] = book.state()
        truth.books[symbol] = states
    return truth


async def test_the_reader_rebuilds_bybits_book(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    truth = load_bybit()
    position = Position(truth, trio.current_time())
    fake = ReplayBybit(truth, position)
    topics = {f"orderbook.200.{s}" for s in truth.snapshots}
    market = {
        "exchange": "bybit",
        "category": "linear",
        "symbols": sorted(truth.snapshots),
        "feeds": ["orderbook"],
        "book_depth": 200,
    }

    def subscribed() -> bool:
        return any(topics <= client.topics for client in fake.clients)

    data_dir = tmp_path / "data"
    connections = await replay_pushed(
        truth, data_dir, autojump_clock, [9.0, 20.0], fake, position, market, subscribed
    )
    assert len(connections) == 3
    check_all(BYBIT, truth, connections, data_dir, tmp_path)


# --------------------------------------------------------------------------- Deribit

DERIBIT = Recording("cryptofeed-v3/DERIBIT.jsonl.zst", "option", "deribit")


def load_deribit() -> Truth:
    """The recording's ``book.*`` notifications (options), on the collector's ``100ms``
    channels (the recording used ``raw``, which needs an authenticated connection; the
    messages are alike), and the reference book after every ``change_id``."""
    capture = read_f2(require_sample(DERIBIT.sample))
    snapshots: dict[str, dict[str, Any]] = {}
    frames: list[Frame] = []
    start: float | None = None
    for record in capture.received():
        assert record.data is not None
        assert record.ts is not None
        message = json.loads(record.data.replace('.raw"', '.100ms"'))
        channel = str(message.get("params", {}).get("channel", ""))
        if not channel.startswith("book."):
            continue
        data = message["params"]["data"]
        instrument = data["instrument_name"]
        if data["type"] == "snapshot":
            snapshots[instrument] = message
            continue
        start = record.ts if start is None else start
        text = json.dumps(message)
        frames.append(Frame(record.ts - start, instrument, text, data, int(data["change_id"])))
    truth = Truth(snapshots, frames)
    for instrument, snapshot in snapshots.items():
        book = DeribitBook()
        book.apply(snapshot["params"]["data"])
        states = {int(snapshot["params"]["data"]["change_id"]): book.state()}
        for frame in frames:
            if frame.symbol == instrument:
                book.apply(frame.data)
                states[frame.update_id] = book.state()
        truth.books[instrument] = states
    return truth


async def test_the_reader_rebuilds_deribits_book(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    truth = load_deribit()
    position = Position(truth, trio.current_time())
    fake = ReplayDeribit(truth, position)
    channels = {f"book.{i}.100ms" for i in truth.snapshots}
    market = {"exchange": "deribit", "symbols": sorted(truth.snapshots), "feeds": ["orderbook"]}

    def subscribed() -> bool:
        return any(channels <= client.channels for client in fake.clients)

    data_dir = tmp_path / "data"
    connections = await replay_pushed(
        truth, data_dir, autojump_clock, [9.0, 20.0], fake, position, market, subscribed
    )
    assert len(connections) == 3
    check_all(DERIBIT, truth, connections, data_dir, tmp_path)
