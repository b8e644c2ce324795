"""A fake OKX v5 public WebSocket server on 127.0.0.1, and builders of realistic frames.

:class:`FakeOkx` speaks the part of the v5 public protocol the collector uses:

- it accepts ``/ws/v5/public`` and refuses other paths with HTTP 404;
- ``{"id":"N","op":"subscribe","args":[{"channel":..,"instId":..}, ...]}`` -> one ack per
  arg ``{"id":"N","event":"subscribe","arg":{...},"connId":".."}``, or for an unknown
  channel / malformed instId / an instId in ``reject``, the venue's per-arg error
  ``{"id":"N","event":"error","code":"60018","msg":"Wrong URL or channel:books,instId:X
  doesn't exist. ...","connId":".."}`` (the socket stays open, like the venue);
  ``unsubscribe`` works the same way. After acknowledging a ``books`` subscription it sends
  the snapshot frame in :attr:`FakeOkx.book_snapshots` for that instId, if any;
- text ``ping`` -> text ``pong``;
- the venue's idle rule: a connection with no traffic in either direction (no frame pushed,
  nothing received) for ``idle_timeout`` seconds (30 s, like the venue) is closed.

Test controls: :meth:`~FakeOkx.send` (to the clients subscribed to the frame's arg),
:meth:`~FakeOkx.broadcast`, :meth:`~FakeOkx.drop`, and the waits
:meth:`~FakeOkx.wait_connected` / :meth:`~FakeOkx.wait_subscribed` /
:meth:`~FakeOkx.wait_for_message`. Every client message is recorded in
:attr:`FakeOkx.client_messages`. All scheduling uses Trio's clock; callers own timeouts.
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

PATH: Final = "/ws/v5/public"
CHANNELS: Final = frozenset({"trades", "books", "books5", "tickers", "bbo-tbt"})
INST_RE: Final = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}(-SWAP|-\d{6}(-\d+(\.\d+)?-[CP])?)?")

PriceLike = float | str
Levels = Sequence[tuple[PriceLike, PriceLike]]

_encode: Final = msgspec.json.Encoder().encode


def _num(value: PriceLike) -> str:
    """The venue's decimal-string spelling (no trailing zeros): ``"42219.9"``."""
    return value if isinstance(value, str) else f"{value:.8f}".rstrip("0").rstrip(".")


def _book_levels(levels: Levels) -> list[list[str]]:
    return [[_num(p), _num(s), "0", "0" if _num(s) == "0" else "1"] for p, s in levels]


async def _abort(conn: WebSocketConnection) -> None:
    """Close the TCP stream under a WebSocket without a close frame (what the venue does)."""
    await conn._stream.aclose()  # trio-websocket keeps the transport here


def _frame(obj: Any) -> str:
    return _encode(obj).decode()


def error_msg(channel: str, inst_id: str) -> str:
    return (
        f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. Please use the "
        "correct URL, channel and parameters referring to API document."
    )


# --------------------------------------------------------------------------- frame builders


def trade_frame(
    inst_id: str,
    trade_id: int,
    price: PriceLike,
    size: PriceLike,
    side: str,
    ts_ms: int,
    *,
    count: int = 1,
    seq_id: int | None = None,
) -> str:
    """A ``trades`` push (one aggregated trade; ``trade_id`` is its last fill)."""
    data: dict[str, Any] = {
        "instId": inst_id,
        "tradeId": str(trade_id),
        "px": _num(price),
        "sz": _num(size),
        "side": side,
        "ts": str(ts_ms),
        "count": str(count),
        "source": "0",
    }
    if seq_id is not None:
        data["seqId"] = seq_id
    return _frame({"arg": {"channel": "trades", "instId": inst_id}, "data": [data]})


def book_frame(
    inst_id: str,
    action: str,
    bids: Levels,
    asks: Levels,
    ts_ms: int,
    seq_id: int,
    prev_seq_id: int,
    *,
    channel: str = "books",
) -> str:
    """A ``books`` push (``action`` = ``snapshot`` or ``update``); checksum 0 as since 2026."""
    data = {
        "asks": _book_levels(asks),
        "bids": _book_levels(bids),
        "ts": str(ts_ms),
        "checksum": 0,
        "prevSeqId": prev_seq_id,
        "seqId": seq_id,
    }
    body: dict[str, Any] = {"arg": {"channel": channel, "instId": inst_id}}
    if channel == "books":
        body["action"] = action
    body["data"] = [data]
    return _frame(body)


def ticker_frame(
    inst_id: str,
    *,
    last: PriceLike,
    bid: PriceLike,
    bid_size: PriceLike,
    ask: PriceLike,
    ask_size: PriceLike,
    vol24h: PriceLike,
    ts_ms: int,
    inst_type: str = "SPOT",
) -> str:
    """A ``tickers`` push."""
    data = {
        "instType": inst_type,
        "instId": inst_id,
        "last": _num(last),
        "lastSz": "0.1",
        "askPx": _num(ask),
        "askSz": _num(ask_size),
        "bidPx": _num(bid),
        "bidSz": _num(bid_size),
        "open24h": _num(last),
        "high24h": _num(last),
        "low24h": _num(last),
        "volCcy24h": "1000",
        "vol24h": _num(vol24h),
        "sodUtc0": _num(last),
        "sodUtc8": _num(last),
        "ts": str(ts_ms),
    }
    return _frame({"arg": {"channel": "tickers", "instId": inst_id}, "data": [data]})


def notice_frame(code: str = "64008") -> str:
    return _frame(
        {
            "event": "notice",
            "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
            "code": code,
            "connId": "a4d3ae55",
        }
    )


def _arg_of(frame: str) -> tuple[str, str] | None:
    try:
        decoded = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return None
    arg = decoded.get("arg") if isinstance(decoded, dict) and "data" in decoded else None
    if not isinstance(arg, dict):
        return None
    return (str(arg.get("channel")), str(arg.get("instId")))


# --------------------------------------------------------------------------- server


class FakeOkxClient:
    def __init__(self, conn: WebSocketConnection, conn_id: str) -> None:
        self.conn = conn
        self.conn_id = conn_id
        self.args: set[tuple[str, str]] = set()
        self.last_activity = trio.current_time()


class FakeOkx:
    """An OKX v5 public server for tests (see the module docstring).

    Start it with ``await nursery.start(fake.run)``; it serves until cancelled.
    """

    def __init__(self, *, reject: Iterable[str] = (), idle_timeout: float = 30.0) -> None:
        self.reject = set(reject)
        self.idle_timeout = idle_timeout
        self.book_snapshots: dict[str, str] = {}
        self.client_messages: list[str] = []
        self.connections = 0
        self.clients: list[FakeOkxClient] = []
        self.pings = 0
        self.idle_drops = 0
        self._port: int | None = None
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeOkx is not running (start it with nursery.start)")
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

    async def wait_subscribed(self, args: Iterable[tuple[str, str]]) -> None:
        """Until open connections hold every ``(channel, instId)`` of ``args``."""
        wanted = set(args)
        await self._wait_for(lambda: wanted <= {a for c in self.clients for a in c.args})

    async def wait_for_message(self, predicate: Callable[[str], bool]) -> None:
        await self._wait_for(lambda: any(predicate(m) for m in self.client_messages))

    # ----------------------------------------------------------------- controls

    async def send(self, frame: str) -> int:
        """Send a push to every client subscribed to its arg (others: to every client)."""
        arg = _arg_of(frame)
        sent = 0
        for client in list(self.clients):
            if arg is None or arg in client.args:
                sent += await self._send(client, frame)
        return sent

    async def broadcast(self, frame: str) -> int:
        sent = 0
        for client in list(self.clients):
            sent += await self._send(client, frame)
        return sent

    async def drop(self) -> None:
        """Close every client's TCP connection abruptly (no close frame)."""
        for client in list(self.clients):
            await _abort(client.conn)

    # ----------------------------------------------------------------- serving

    async def _send(self, client: FakeOkxClient, frame: str) -> int:
        try:
            await client.conn.send_message(frame)
        except ConnectionClosed:
            return 0
        client.last_activity = trio.current_time()
        return 1

    async def _handle(self, request: WebSocketRequest) -> None:
        if urlsplit(request.path).path != PATH:
            await request.reject(404, body=b"not found")
            return
        conn = await request.accept()
        self.connections += 1
        client = FakeOkxClient(conn, f"{self.connections:08x}")
        self.clients.append(client)
        self._notify()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._idle_watch, client)
                await self._receive_loop(client)
                nursery.cancel_scope.cancel()
        finally:
            self.clients.remove(client)
            self._notify()

    async def _idle_watch(self, client: FakeOkxClient) -> None:
        while True:
            deadline = client.last_activity + self.idle_timeout
            if trio.current_time() >= deadline:
                self.idle_drops += 1
                self._notify()
                await _abort(client.conn)
                return
            await trio.sleep_until(deadline)

    async def _receive_loop(self, client: FakeOkxClient) -> None:
        while True:
            try:
                message = await client.conn.get_message()
            except ConnectionClosed:
                return
            client.last_activity = trio.current_time()
            text = message if isinstance(message, str) else message.decode(errors="replace")
            self.client_messages.append(text)
            if text == "ping":
                self.pings += 1
                replies = ["pong"]
            else:
                replies = self._replies(client, text)
            for reply in replies:
                if not await self._send(client, reply):
                    return
            self._notify()

    def _replies(self, client: FakeOkxClient, text: str) -> list[str]:
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return [
                _frame(
                    {
                        "event": "error",
                        "msg": f"Illegal request: {text}",
                        "code": "60012",
                        "connId": client.conn_id,
                    }
                )
            ]
        op = request.get("op") if isinstance(request, dict) else None
        request_id = request.get("id") if isinstance(request, dict) else None
        if op not in ("subscribe", "unsubscribe"):
            return [
                _frame(
                    {
                        "event": "error",
                        "msg": f"Illegal request: {text}",
                        "code": "60012",
                        "connId": client.conn_id,
                    }
                )
            ]
        replies: list[str] = []
        for arg in request.get("args") or []:
            channel, inst_id = str(arg.get("channel")), str(arg.get("instId"))
            head: dict[str, Any] = {} if request_id is None else {"id": request_id}
            if channel not in CHANNELS or not INST_RE.fullmatch(inst_id) or inst_id in self.reject:
                replies.append(
                    _frame(
                        {
                            **head,
                            "event": "error",
                            "code": "60018",
                            "msg": error_msg(channel, inst_id),
                            "connId": client.conn_id,
                        }
                    )
                )
                continue
            key = (channel, inst_id)
            replies.append(
                _frame(
                    {
                        **head,
                        "event": op,
                        "arg": {"channel": channel, "instId": inst_id},
                        "connId": client.conn_id,
                    }
                )
            )
            if op == "subscribe":
                client.args.add(key)
                if channel == "books" and inst_id in self.book_snapshots:
                    replies.append(self.book_snapshots[inst_id])
            else:
                client.args.discard(key)
        return replies
