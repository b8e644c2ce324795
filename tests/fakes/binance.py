"""A fake Binance WebSocket server on 127.0.0.1 (spot, USD-M or COIN-M futures), and
builders of realistic frames.

:class:`FakeBinance` speaks the combined-streams protocol the collector uses:

- it accepts ``/stream`` (with any query; ``streams=a/b`` in the URL subscribes those) and
  refuses other paths with HTTP 404. As ``category="usdm"`` it is USD-M's routed endpoints:
  ``/public/stream`` pushes only book streams (``@depth...``, ``@bookTicker``),
  ``/market/stream`` only the others (``@aggTrade`` ...), and the unrouted ``/stream`` only
  the public ones; a stream subscribed on the wrong path is acknowledged and then gets
  nothing, silently, as the venue documents;
- ``{"method":"SUBSCRIBE","params":[...],"id":N}`` -> ``{"result":null,"id":N}``, or, when a
  stream is malformed or listed in ``reject_streams``, the flat error
  ``{"code":2,"msg":"Invalid request: invalid stream","id":N}`` for the whole request (nothing
  of it is subscribed, like the venue); ``UNSUBSCRIBE`` and ``LIST_SUBSCRIPTIONS`` work too;
- it records every text message a client sends (:attr:`FakeBinance.client_messages`) and
  closes a connection (code 1008) that sends more than ``max_messages_per_second`` in any
  one-second window (pongs are answered inside trio-websocket and are not counted);
- with ``ping_interval`` set it pings every client that often and drops one that does not
  pong within ``pong_timeout``;
- with ``max_age`` set it cuts every connection that age after accepting it (TCP close
  without a close frame), as the venue does at 24 h; connections whose number (1, 2, ...)
  is in ``unanswered`` get no reply to their requests (nothing is subscribed), like a
  connection that never comes up.

Test controls: :meth:`~FakeBinance.send` (to the clients subscribed to the frame's stream),
:meth:`~FakeBinance.send_to` (one connection, by number), :meth:`~FakeBinance.broadcast`,
:meth:`~FakeBinance.drop` (TCP close without a close frame),
:meth:`~FakeBinance.send_garbage`, :meth:`~FakeBinance.send_server_shutdown`, and the waits
:meth:`~FakeBinance.wait_connected` / :meth:`~FakeBinance.wait_subscribed`. Going silent
needs nothing: the fake never sends data on its own.

All scheduling uses Trio's clock; callers own timeouts (wrap waits in ``trio.fail_after``).
"""

from __future__ import annotations

import re
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

# Stream names the fake accepts (the venue's names are lowercase apart from the type).
STREAM_RE: Final = re.compile(
    r"[a-z0-9]{2,20}(_perp|_\d{6})?@(trade|aggTrade|bookTicker|ticker|miniTicker|avgPrice"
    r"|depth(5|10|20)?(@0ms|@100ms|@250ms|@500ms|@1000ms)?|kline_\w+|markPrice(@1s)?|forceOrder)"
)
# USD-M paths and the streams each pushes (None: every stream).
_USDM_PATHS: Final = {"/public/stream": "public", "/market/stream": "market", "/stream": "public"}
INVALID_STREAM_MSG: Final = "Invalid request: invalid stream"

PriceLike = float | str
Levels = Sequence[tuple[PriceLike, PriceLike]]

_encode: Final = msgspec.json.Encoder().encode


def _num(value: PriceLike) -> str:
    """The venue's decimal-string spelling: 8 decimals, e.g. ``"0.35210000"``."""
    return value if isinstance(value, str) else f"{value:.8f}"


def _levels(levels: Levels) -> list[list[str]]:
    return [[_num(price), _num(size)] for price, size in levels]


def combined_frame(stream: str, data: dict[str, Any]) -> str:
    """Wrap a payload as the combined-stream envelope."""
    return _encode({"stream": stream, "data": data}).decode()


# --------------------------------------------------------------------------- frame builders


def trade_frame(
    symbol: str,
    trade_id: int,
    price: PriceLike,
    qty: PriceLike,
    time_us: int,
    buyer_maker: bool,
) -> str:
    """A ``<sym>@trade`` frame (event and trade time both ``time_us``)."""
    sym = symbol.upper()
    data = {
        "e": "trade",
        "E": time_us,
        "s": sym,
        "t": trade_id,
        "p": _num(price),
        "q": _num(qty),
        "T": time_us,
        "m": buyer_maker,
        "M": True,
    }
    return combined_frame(f"{sym.lower()}@trade", data)


def agg_trade_frame(
    symbol: str,
    agg_id: int,
    price: PriceLike,
    qty: PriceLike,
    time_ms: int,
    buyer_maker: bool,
    *,
    first_trade_id: int = 1,
    trades: int = 1,
) -> str:
    """A futures ``<sym>@aggTrade`` frame: ``trades`` fills from ``first_trade_id`` (event
    time 5 ms after the trade time, in milliseconds like the venue)."""
    sym = symbol.upper()
    data = {
        "e": "aggTrade",
        "E": time_ms + 5,
        "a": agg_id,
        "s": sym,
        "p": _num(price),
        "q": _num(qty),
        "f": first_trade_id,
        "l": first_trade_id + trades - 1,
        "T": time_ms,
        "m": buyer_maker,
    }
    return combined_frame(f"{sym.lower()}@aggTrade", data)


def depth_diff_frame(
    symbol: str,
    first_id: int,
    last_id: int,
    bids: Levels,
    asks: Levels,
    time_us: int,
    *,
    prev_id: int | None = None,
) -> str:
    """A ``<sym>@depth@100ms`` diff frame covering update ids ``first_id..last_id``; with
    ``prev_id`` a futures one (``pu``, the previous frame's ``u``, and a transaction time
    ``T``; times are then milliseconds)."""
    sym = symbol.upper()
    data: dict[str, Any] = {"e": "depthUpdate", "E": time_us}
    if prev_id is not None:
        data["T"] = time_us - 2
    data |= {"s": sym, "U": first_id, "u": last_id}
    if prev_id is not None:
        data["pu"] = prev_id
    data |= {"b": _levels(bids), "a": _levels(asks)}
    return combined_frame(f"{sym.lower()}@depth@100ms", data)


def futures_partial_depth_frame(
    symbol: str,
    first_id: int,
    last_id: int,
    prev_id: int,
    bids: Levels,
    asks: Levels,
    time_ms: int,
    *,
    depth: int = 20,
) -> str:
    """A futures ``<sym>@depth<depth>@100ms`` frame: unlike spot's, it names its event and
    symbol and carries the ids of a diff frame."""
    sym = symbol.upper()
    data = {
        "e": "depthUpdate",
        "E": time_ms,
        "T": time_ms - 2,
        "s": sym,
        "U": first_id,
        "u": last_id,
        "pu": prev_id,
        "b": _levels(bids),
        "a": _levels(asks),
    }
    return combined_frame(f"{sym.lower()}@depth{depth}@100ms", data)


def depth20_frame(
    symbol: str, last_update_id: int, bids: Levels, asks: Levels, *, depth: int = 20
) -> str:
    """A ``<sym>@depth<depth>@100ms`` partial book frame (no ``e``/``E``/``s``, like the venue)."""
    data = {"lastUpdateId": last_update_id, "bids": _levels(bids), "asks": _levels(asks)}
    return combined_frame(f"{symbol.lower()}@depth{depth}@100ms", data)


def book_ticker_frame(
    symbol: str,
    update_id: int,
    bid: PriceLike,
    bid_qty: PriceLike,
    ask: PriceLike,
    ask_qty: PriceLike,
    *,
    time_ms: int | None = None,
) -> str:
    """A ``<sym>@bookTicker`` frame: spot's has no event time; with ``time_ms`` a futures
    one (``e``, event time ``E`` and transaction time ``T``)."""
    sym = symbol.upper()
    data: dict[str, Any] = {} if time_ms is None else {"e": "bookTicker"}
    data |= {
        "u": update_id,
        "s": sym,
        "b": _num(bid),
        "B": _num(bid_qty),
        "a": _num(ask),
        "A": _num(ask_qty),
    }
    if time_ms is not None:
        data |= {"T": time_ms - 1, "E": time_ms}
    return combined_frame(f"{sym.lower()}@bookTicker", data)


def mark_price_frame(
    symbol: str,
    time_ms: int,
    mark: PriceLike,
    index: PriceLike,
    settle: PriceLike,
    funding_rate: PriceLike | None,
    next_funding_ms: int,
) -> str:
    """A futures ``<sym>@markPrice@1s`` frame; ``funding_rate`` None is a COIN-M delivery
    contract's (``"r":""``, with ``next_funding_ms`` 0 there)."""
    sym = symbol.upper()
    data = {
        "e": "markPriceUpdate",
        "E": time_ms,
        "s": sym,
        "p": _num(mark),
        "i": _num(index),
        "P": _num(settle),
        "r": "" if funding_rate is None else _num(funding_rate),
        "T": next_funding_ms,
    }
    return combined_frame(f"{sym.lower()}@markPrice@1s", data)


def force_order_frame(
    symbol: str,
    side: str,
    price: PriceLike,
    qty: PriceLike,
    time_ms: int,
    *,
    avg_price: PriceLike | None = None,
    status: str = "FILLED",
    filled: PriceLike | None = None,
) -> str:
    """A futures ``<sym>@forceOrder`` frame: one liquidation order (``side`` ``BUY`` or
    ``SELL``), filled at ``avg_price`` (default: ``price``); COIN-M's carries the pair."""
    sym = symbol.upper()
    order: dict[str, Any] = {
        "s": sym,
        "S": side,
        "o": "LIMIT",
        "f": "IOC",
        "q": _num(qty),
        "p": _num(price),
        "ap": _num(price if avg_price is None else avg_price),
        "X": status,
        "l": _num(qty if filled is None else filled),
        "z": _num(qty if filled is None else filled),
        "T": time_ms,
    }
    if "_" in sym:
        order["ps"] = sym.split("_")[0]
    data = {"e": "forceOrder", "E": time_ms + 3, "o": order}
    return combined_frame(f"{sym.lower()}@forceOrder", data)


def server_shutdown_frame(time_us: int, *, wrapped: bool = True) -> str:
    """The notice the venue pushes before a planned disconnect."""
    data = {"e": "serverShutdown", "E": time_us}
    return combined_frame("!serverShutdown", data) if wrapped else _encode(data).decode()


def _stream_of(frame: str) -> str | None:
    try:
        decoded = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return None
    stream = decoded.get("stream") if isinstance(decoded, dict) else None
    return stream if isinstance(stream, str) and not stream.startswith("!") else None


# --------------------------------------------------------------------------- server


def stream_route(stream: str) -> str:
    """The USD-M endpoint of a stream: ``public`` (book streams) or ``market``."""
    kind = stream.partition("@")[2]
    return "public" if kind.startswith("depth") or kind == "bookTicker" else "market"


class FakeClient:
    """One accepted connection, as the fake sees it."""

    def __init__(self, conn: WebSocketConnection, path: str, route: str | None = None) -> None:
        self.conn = conn
        self.path = path
        # USD-M: the streams this path pushes ("public" or "market"); None: every stream.
        self.route = route
        query = parse_qs(urlsplit(path).query)
        self.time_unit: str | None = query["timeUnit"][0] if "timeUnit" in query else None
        self.streams: set[str] = set()
        self.acked_requests = 0
        self.number = 0  # the connection's number since the fake started (1, 2, ...)
        self._sent_times: deque[float] = deque()


class FakeBinance:
    """A Binance combined-streams server for tests (see the module docstring).

    ``category`` is ``spot`` (default), ``usdm`` (routed paths) or ``coinm``. Start it with
    ``await nursery.start(fake.run)``; it serves until cancelled.
    """

    def __init__(
        self,
        *,
        category: str = "spot",
        reject_streams: Iterable[str] = (),
        max_messages_per_second: int = 5,
        ping_interval: float | None = None,
        pong_timeout: float = 60.0,
        max_age: float | None = None,
        unanswered: Iterable[int] = (),
    ) -> None:
        self.category = category
        self.reject_streams = set(reject_streams)
        self.max_messages_per_second = max_messages_per_second
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.max_age = max_age
        self.unanswered = set(unanswered)
        self.cut_at_max_age = 0  # connections cut for reaching max_age
        # Every text message received from any client, in order.
        self.client_messages: list[str] = []
        # Connections accepted since start (including closed ones).
        self.connections = 0
        # Request paths (with query) of every accepted connection.
        self.paths: list[str] = []
        self.clients: list[FakeClient] = []  # open connections
        self.rate_limited = 0  # connections closed for sending too fast
        self.ping_timeouts = 0  # connections dropped for a missing pong
        self.pongs = 0  # pongs received in time
        self._port: int | None = None
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeBinance is not running (start it with nursery.start)")
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
        """Until ``n`` connections have been accepted since start (so 2 = one reconnect)."""
        await self._wait_for(lambda: self.connections >= n)

    async def wait_disconnected(self) -> None:
        """Until no client is connected."""
        await self._wait_for(lambda: not self.clients)

    async def wait_unsubscribed(self, streams: Iterable[str]) -> None:
        """Until no open connection holds any of ``streams``."""
        unwanted = set(streams)
        await self._wait_for(lambda: not any(c.streams & unwanted for c in self.clients))

    async def wait_clients(self, n: int) -> None:
        """Until exactly ``n`` clients are connected."""
        await self._wait_for(lambda: len(self.clients) == n)

    async def wait_subscribed(
        self, streams: Iterable[str] | None = None, *, number: int | None = None
    ) -> None:
        """Until an open connection has subscribed all of ``streams`` (with ``number``: the
        open connection of that number, 1, 2, ...).

        Without ``streams``: until an open connection has had a SUBSCRIBE acknowledged.
        """
        wanted = set(streams) if streams is not None else None

        def done() -> bool:
            clients = [c for c in self.clients if number is None or c.number == number]
            if wanted is None:
                return any(c.acked_requests for c in clients)
            subscribed: set[str] = set()
            for client in clients:
                subscribed |= client.streams
            return wanted <= subscribed

        await self._wait_for(done)

    # ----------------------------------------------------------------- controls

    async def send(self, frame: str) -> int:
        """Send a frame to every client subscribed to its ``stream`` on a path that pushes
        it (USD-M routing); returns how many.

        Frames without a subscribable stream (``!serverShutdown``, bare or broken JSON)
        go to every client.
        """
        stream = _stream_of(frame)
        if stream is None:
            return await self.broadcast(frame)
        sent = 0
        for client in list(self.clients):
            if stream in client.streams and client.route in (None, stream_route(stream)):
                sent += await _send_quietly(client, frame)
        return sent

    async def send_to(self, number: int, frame: str) -> int:
        """Send a frame to the open connection with that number (1, 2, ...) only."""
        sent = 0
        for client in list(self.clients):
            if client.number == number:
                sent += await _send_quietly(client, frame)
        return sent

    async def broadcast(self, frame: str) -> int:
        """Send a frame to every connected client; returns how many got it."""
        sent = 0
        for client in list(self.clients):
            sent += await _send_quietly(client, frame)
        return sent

    async def send_garbage(self, data: str = '{"stream":"btcusdt@trade","data":{"e":') -> int:
        """Send a frame that is not valid JSON to every client."""
        return await self.broadcast(data)

    async def send_server_shutdown(self, time_us: int = 0, *, wrapped: bool = True) -> int:
        """Push the ``serverShutdown`` notice to every client."""
        return await self.broadcast(server_shutdown_frame(time_us, wrapped=wrapped))

    async def drop(self, *, reset: bool = False) -> None:
        """Close every client's TCP connection abruptly: no close frame (RST if ``reset``)."""
        for client in list(self.clients):
            await _abort(client.conn, reset=reset)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close every client with a proper WebSocket close handshake."""
        for client in list(self.clients):
            await client.conn.aclose(code, reason)

    # ----------------------------------------------------------------- serving

    async def _handle(self, request: WebSocketRequest) -> None:
        path = request.path
        route: str | None = None
        if self.category == "usdm":
            if urlsplit(path).path not in _USDM_PATHS:
                await request.reject(404, body=b"not found")
                return
            route = _USDM_PATHS[urlsplit(path).path]
        elif urlsplit(path).path != "/stream":
            await request.reject(404, body=b"not found")
            return
        conn = await request.accept()
        client = FakeClient(conn, path, route)
        client.number = self.connections + 1
        for stream in (parse_qs(urlsplit(path).query).get("streams") or [""])[0].split("/"):
            if stream:
                client.streams.add(stream)
        self.connections += 1
        self.paths.append(path)
        self.clients.append(client)
        self._notify()
        try:
            async with trio.open_nursery() as nursery:
                if self.ping_interval is not None:
                    nursery.start_soon(self._ping_loop, client, self.ping_interval)
                if self.max_age is not None:
                    nursery.start_soon(self._cut_at, client, self.max_age)
                await self._receive_loop(client)
                nursery.cancel_scope.cancel()
        finally:
            self.clients.remove(client)
            self._notify()

    async def _receive_loop(self, client: FakeClient) -> None:
        conn = client.conn
        while True:
            try:
                message = await conn.get_message()
            except ConnectionClosed:
                return
            text = message if isinstance(message, str) else message.decode(errors="replace")
            self.client_messages.append(text)
            self._notify()
            now = trio.current_time()
            times = client._sent_times
            times.append(now)
            while times and times[0] <= now - 1.0:
                times.popleft()
            if len(times) > self.max_messages_per_second:
                self.rate_limited += 1
                await conn.aclose(1008, "Too many requests")
                return
            if client.number in self.unanswered:
                continue
            reply = self._reply(client, text)
            if reply is not None:
                try:
                    await conn.send_message(reply)
                except ConnectionClosed:
                    return
            self._notify()

    def _reply(self, client: FakeClient, text: str) -> str | None:
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return _encode({"code": 3, "msg": "Invalid JSON", "id": None}).decode()
        if not isinstance(request, dict):
            return _encode({"code": 3, "msg": "Invalid JSON", "id": None}).decode()
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return _error(1, "Invalid value type: expected array of strings", request_id)
            if any(not STREAM_RE.fullmatch(p) or p in self.reject_streams for p in params):
                return _error(2, INVALID_STREAM_MSG, request_id)
            if method == "SUBSCRIBE":
                client.streams.update(params)
                client.acked_requests += 1
            else:
                client.streams.difference_update(params)
            return _encode({"result": None, "id": request_id}).decode()
        if method == "LIST_SUBSCRIPTIONS":
            return _encode({"result": sorted(client.streams), "id": request_id}).decode()
        return _error(2, f"Invalid request: unknown method {method!r}", request_id)

    async def _cut_at(self, client: FakeClient, age: float) -> None:
        await trio.sleep(age)
        self.cut_at_max_age += 1
        await _abort(client.conn, reset=False)

    async def _ping_loop(self, client: FakeClient, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(self.pong_timeout) as scope:
                try:
                    await client.conn.ping()
                except ConnectionClosed:
                    return
            if scope.cancelled_caught:
                self.ping_timeouts += 1
                await _abort(client.conn, reset=False)
                return
            self.pongs += 1
            self._notify()


def _error(code: int, msg: str, request_id: Any) -> str:
    return _encode({"code": code, "msg": msg, "id": request_id}).decode()


async def _send_quietly(client: FakeClient, frame: str) -> int:
    try:
        await client.conn.send_message(frame)
    except ConnectionClosed:
        return 0
    return 1


async def _abort(conn: WebSocketConnection, *, reset: bool) -> None:
    """Close the TCP stream under a WebSocket without a close frame."""
    stream = conn._stream  # trio-websocket keeps the transport here
    if reset:
        sock = getattr(stream, "socket", None)
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
