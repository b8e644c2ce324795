"""A fake Bybit v5 public WebSocket server on 127.0.0.1, and builders of realistic frames.

:class:`FakeBybit` speaks the part of the v5 public protocol the collector uses:

- it accepts ``/v5/public/spot`` and ``/v5/public/linear`` (the category of the client)
  and refuses other paths with HTTP 404;
- ``{"req_id":"N","op":"subscribe","args":[...]}`` -> one answer per request: success
  (spot ``ret_msg`` ``"subscribe"``, linear ``""``, like the recordings), or
  ``"success": false`` with ``error:handler not found,topic:X`` for the first unknown topic
  (or a symbol in ``reject``; then nothing of the request is subscribed),
  ``error:already subscribed,topic:X``, or ``args size >10`` on spot. After subscribing an
  ``orderbook.*`` topic it sends the frame in :attr:`FakeBybit.book_snapshots` for it;
- ``{"req_id":"..","op":"ping"}`` -> the category's pong;
- the venue's keepalive rule: a client that has not sent ``op: ping`` for
  ``ping_timeout`` seconds (data does not count) is disconnected.

Test controls: :meth:`~FakeBybit.send` (to the clients subscribed to the frame's topic),
:meth:`~FakeBybit.broadcast`, :meth:`~FakeBybit.drop`, and the waits. Every client
message is recorded in :attr:`FakeBybit.client_messages`. All scheduling uses Trio's
clock; callers own timeouts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

PATHS: Final = {"/v5/public/spot": "spot", "/v5/public/linear": "linear"}
TOPIC_RE: Final = re.compile(
    r"(publicTrade|tickers|orderbook\.(1|50|200|1000))\.(?P<symbol>[A-Z0-9]{2,30}(-\w+)?)"
)
SPOT_MAX_ARGS: Final = 10

PriceLike = float | str
Levels = Sequence[tuple[PriceLike, PriceLike]]

_encode: Final = msgspec.json.Encoder().encode


def _frame(obj: Any) -> str:
    return _encode(obj).decode()


def _num(value: PriceLike) -> str:
    return value if isinstance(value, str) else f"{value:.8f}".rstrip("0").rstrip(".")


def _levels(levels: Levels) -> list[list[str]]:
    return [[_num(p), _num(s)] for p, s in levels]


async def _abort(conn: WebSocketConnection) -> None:
    """Close the TCP stream under a WebSocket without a close frame."""
    await conn._stream.aclose()  # trio-websocket keeps the transport here


# --------------------------------------------------------------------------- frame builders


def trade_frame(
    symbol: str,
    trade_id: str,
    price: PriceLike,
    size: PriceLike,
    side: str,
    time_ms: int,
    seq: int,
) -> str:
    """A ``publicTrade`` push with one trade (``side`` ``Buy``/``Sell`` = the taker)."""
    trade = {
        "T": time_ms,
        "s": symbol,
        "S": side,
        "v": _num(size),
        "p": _num(price),
        "L": "PlusTick",
        "i": trade_id,
        "BT": False,
        "RPI": False,
        "seq": seq,
    }
    return _frame(
        {"topic": f"publicTrade.{symbol}", "type": "snapshot", "ts": time_ms + 1, "data": [trade]}
    )


def book_frame(
    symbol: str,
    kind: str,
    bids: Levels,
    asks: Levels,
    u: int,
    ts_ms: int,
    *,
    depth: int = 50,
    seq: int | None = None,
) -> str:
    """An ``orderbook.{depth}`` push (``kind`` = ``snapshot`` or ``delta``); cts = ts - 2."""
    data = {
        "s": symbol,
        "b": _levels(bids),
        "a": _levels(asks),
        "u": u,
        "seq": seq if seq is not None else 7_961_638_724 + u,
    }
    return _frame(
        {
            "topic": f"orderbook.{depth}.{symbol}",
            "type": kind,
            "ts": ts_ms,
            "data": data,
            "cts": ts_ms - 2,
        }
    )


def ticker_frame(symbol: str, kind: str, fields: dict[str, str], ts_ms: int, cs: int) -> str:
    """A ``tickers`` push: ``fields`` are the wire fields (a delta carries the changed ones)."""
    return _frame(
        {
            "topic": f"tickers.{symbol}",
            "type": kind,
            "data": {"symbol": symbol, **fields},
            "cs": cs,
            "ts": ts_ms,
        }
    )


def _topic_of(frame: str) -> str | None:
    try:
        decoded = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return None
    topic = decoded.get("topic") if isinstance(decoded, dict) else None
    return topic if isinstance(topic, str) else None


# --------------------------------------------------------------------------- server


class FakeBybitClient:
    def __init__(self, conn: WebSocketConnection, category: str, conn_id: str) -> None:
        self.conn = conn
        self.category = category
        self.conn_id = conn_id
        self.topics: set[str] = set()
        self.last_ping = trio.current_time()


class FakeBybit:
    """A Bybit v5 public server for tests (see the module docstring).

    Start it with ``await nursery.start(fake.run)``; it serves until cancelled.
    """

    def __init__(self, *, reject: Iterable[str] = (), ping_timeout: float = 30.0) -> None:
        self.reject = set(reject)
        self.ping_timeout = ping_timeout
        self.book_snapshots: dict[str, str] = {}
        self.client_messages: list[str] = []
        self.paths: list[str] = []
        self.connections = 0
        self.clients: list[FakeBybitClient] = []
        self.pings = 0
        self.ping_drops = 0
        self._port: int | None = None
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeBybit is not running (start it with nursery.start)")
        return f"ws://127.0.0.1:{self._port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (a free port) and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_websocket, self._handle, "127.0.0.1", 0, ssl_context=None)
            )
            self._port = server.port
            task_status.started()

    # ----------------------------------------------------------------- waiting

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_connected(self, n: int = 1) -> None:
        await self._wait_for(lambda: self.connections >= n)

    async def wait_subscribed(self, topics: Iterable[str]) -> None:
        """Until open connections hold every topic of ``topics``."""
        wanted = set(topics)
        await self._wait_for(lambda: wanted <= {t for c in self.clients for t in c.topics})

    async def wait_for_message(self, predicate: Callable[[str], bool]) -> None:
        await self._wait_for(lambda: any(predicate(m) for m in self.client_messages))

    # ----------------------------------------------------------------- controls

    async def send(self, frame: str) -> int:
        """Send a push to every client subscribed to its topic (others: to every client)."""
        topic = _topic_of(frame)
        sent = 0
        for client in list(self.clients):
            if topic is None or topic in client.topics:
                sent += await self._send(client, frame)
        return sent

    async def broadcast(self, frame: str) -> int:
        sent = 0
        for client in list(self.clients):
            sent += await self._send(client, frame)
        return sent

    async def drop(self) -> None:
        for client in list(self.clients):
            await _abort(client.conn)

    # ----------------------------------------------------------------- serving

    async def _send(self, client: FakeBybitClient, frame: str) -> int:
        try:
            await client.conn.send_message(frame)
        except ConnectionClosed:
            return 0
        return 1

    async def _handle(self, request: WebSocketRequest) -> None:
        category = PATHS.get(urlsplit(request.path).path)
        if category is None:
            await request.reject(404, body=b"not found")
            return
        conn = await request.accept()
        self.connections += 1
        self.paths.append(request.path)
        client = FakeBybitClient(conn, category, f"d9avt8shteepr00gfc1g-{self.connections}")
        self.clients.append(client)
        self._notify()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ping_watch, client)
                await self._receive_loop(client)
                nursery.cancel_scope.cancel()
        finally:
            self.clients.remove(client)
            self._notify()

    async def _ping_watch(self, client: FakeBybitClient) -> None:
        while True:
            deadline = client.last_ping + self.ping_timeout
            if trio.current_time() >= deadline:
                self.ping_drops += 1
                self._notify()
                await _abort(client.conn)
                return
            await trio.sleep_until(deadline)

    async def _receive_loop(self, client: FakeBybitClient) -> None:
        while True:
            try:
                message = await client.conn.get_message()
            except ConnectionClosed:
                return
            text = message if isinstance(message, str) else message.decode(errors="replace")
            self.client_messages.append(text)
            for reply in self._replies(client, text):
                if not await self._send(client, reply):
                    return
            self._notify()

    def _answer(self, client: FakeBybitClient, op: str, req_id: Any, ok: bool, msg: str) -> str:
        body: dict[str, Any] = {"success": ok, "ret_msg": msg, "conn_id": client.conn_id}
        if req_id is not None:
            body["req_id"] = req_id
        elif client.category == "linear":
            body["req_id"] = ""
        body["op"] = op
        return _frame(body)

    def _replies(self, client: FakeBybitClient, text: str) -> list[str]:
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            request = None
        if not isinstance(request, dict):
            return [
                _frame(
                    {
                        "success": False,
                        "ret_msg": f"Failed to decode incoming data:readObjectStart: {text[:20]}",
                        "conn_id": client.conn_id,
                    }
                )
            ]
        op, req_id = request.get("op"), request.get("req_id")
        if op == "ping":
            self.pings += 1
            client.last_ping = trio.current_time()
            return [self._answer(client, "ping", req_id, True, "pong")]
        if op not in ("subscribe", "unsubscribe"):
            return [self._answer(client, str(op), req_id, False, "error:invalid op")]
        args = [str(a) for a in request.get("args") or []]
        if client.category == "spot" and len(args) > SPOT_MAX_ARGS:
            return [self._answer(client, op, req_id, False, f"args size >{SPOT_MAX_ARGS}")]
        if op == "unsubscribe":
            client.topics.difference_update(args)
            return [self._answer(client, op, req_id, True, "")]
        for topic in args:
            match = TOPIC_RE.fullmatch(topic)
            if match is None or match.group("symbol") in self.reject:
                msg = f"error:handler not found,topic:{topic}"
                return [self._answer(client, op, req_id, False, msg)]
        for topic in args:
            if topic in client.topics:
                msg = f"error:already subscribed,topic:{topic}"
                return [self._answer(client, op, req_id, False, msg)]
        client.topics.update(args)
        ok = "subscribe" if client.category == "spot" else ""
        replies = [self._answer(client, op, req_id, True, ok)]
        replies.extend(self.book_snapshots[t] for t in args if t in self.book_snapshots)
        return replies
