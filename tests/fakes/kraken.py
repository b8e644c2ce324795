"""A fake Kraken spot WebSocket v2 server on 127.0.0.1, and builders of realistic frames.

:class:`FakeKraken` speaks the v2 protocol the collector uses:

- it accepts ``/v2`` and refuses other paths with HTTP 404; on connect it sends the
  ``status`` channel message (system online, api v2);
- ``{"method":"subscribe","params":{"channel":C,"symbol":[..],...},"req_id":N}`` gets one
  answer **per symbol**: ``{"method":"subscribe","result":{"channel":C,"symbol":S,...},
  "success":true,"time_in":..,"time_out":..,"req_id":N}``, or for a symbol in
  ``reject_symbols`` (or not spelled BASE/QUOTE) ``{"error":"Currency pair not supported S",
  "method":"subscribe","success":false,"symbol":S,...}``; a second subscription to the same
  (channel, symbol) gets ``"Already subscribed"``; a bad ``depth`` fails the whole request;
- a ``book`` subscription with ``snapshot`` (default true) is followed by a snapshot of the
  fake's book of that symbol (set with :meth:`FakeKraken.set_book`), top ``depth`` levels,
  with its checksum; ``unsubscribe`` is acknowledged per symbol;
- ``{"method":"ping","req_id":N}`` -> ``{"method":"pong","req_id":N,...}``;
- it sends ``{"channel":"heartbeat"}`` every ``heartbeat_interval`` to subscribed clients;
- keepalive rule: a client that sends nothing (no ping, no request) for ``idle_timeout``
  seconds is dropped (TCP close, no close frame). Kraken's real idle timeout is not
  documented; the rule makes the client's application ping observable in tests.

Numbers are written as JSON numbers with the exact decimal text given (pass strings such as
``"0.10000000"`` to keep trailing zeros, as Kraken's wire does). Checksums are computed
here independently of the adapter (from the decimal strings).

Test controls: :meth:`~FakeKraken.send` (to clients subscribed to the frame's channel and
symbol), :meth:`~FakeKraken.broadcast`, :meth:`~FakeKraken.send_book_update` (applies the
change to the fake's book and sends it with the right, or a given wrong, checksum),
:meth:`~FakeKraken.drop`, and the waits :meth:`~FakeKraken.wait_connected`,
:meth:`~FakeKraken.wait_subscribed`, :meth:`~FakeKraken.wait_messages`.
All scheduling uses Trio's clock; callers own timeouts (wrap waits in ``trio.fail_after``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Final

import msgspec
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from tests.fakes.base import FakeServer, Watcher, abort, send_quietly

SYMBOL_RE: Final = re.compile(r"[A-Z0-9.]{1,16}/[A-Z0-9.]{1,16}")
BOOK_DEPTHS: Final = (10, 25, 100, 500, 1000)
CHANNELS: Final = ("trade", "book", "ticker")

Num = str | int | float
Levels = Sequence[tuple[Num, Num]]

_encode: Final = msgspec.json.Encoder(decimal_format="number").encode
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _dec(value: Num) -> Decimal:
    return Decimal(value) if isinstance(value, str | int) else Decimal(repr(value))


def rfc3339(time_us: int) -> str:
    """Kraken's timestamp spelling, e.g. ``2023-10-06T17:35:55.440295Z``."""
    return (_EPOCH + timedelta(microseconds=time_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _levels(levels: Levels) -> list[dict[str, Decimal]]:
    return [{"price": _dec(p), "qty": _dec(q)} for p, q in levels]


def _frame(obj: dict[str, Any]) -> str:
    return _encode(obj).decode()


# --------------------------------------------------------------------------- checksum


def _digits(value: Decimal) -> str:
    return format(value, "f").replace(".", "").lstrip("0")


def kraken_checksum(bids: Levels, asks: Levels) -> int:
    """Kraken's v2 book checksum of a book given as (price, qty) decimal texts."""
    best_asks = sorted(((_dec(p), _dec(q)) for p, q in asks), key=lambda lv: lv[0])[:10]
    best_bids = sorted(((_dec(p), _dec(q)) for p, q in bids), key=lambda lv: -lv[0])[:10]
    text = "".join(_digits(p) + _digits(q) for p, q in (*best_asks, *best_bids))
    return zlib.crc32(text.encode())


# --------------------------------------------------------------------------- frame builders


def trade_frame(
    symbol: str,
    trades: Sequence[tuple[int, Num, Num, str, int]],
    *,
    type_: str = "update",
    ord_type: str = "limit",
) -> str:
    """A ``trade`` frame; each trade is ``(trade_id, price, qty, side, time_us)``."""
    data = [
        {
            "symbol": symbol,
            "side": side,
            "price": _dec(price),
            "qty": _dec(qty),
            "ord_type": ord_type,
            "trade_id": trade_id,
            "timestamp": rfc3339(time_us),
        }
        for trade_id, price, qty, side, time_us in trades
    ]
    return _frame({"channel": "trade", "type": type_, "data": data})


def book_frame(
    symbol: str,
    bids: Levels,
    asks: Levels,
    *,
    checksum: int,
    time_us: int,
    type_: str = "update",
) -> str:
    """A ``book`` snapshot or update frame with the given checksum."""
    data = {
        "symbol": symbol,
        "bids": _levels(bids),
        "asks": _levels(asks),
        "checksum": checksum,
        "timestamp": rfc3339(time_us),
    }
    return _frame({"channel": "book", "type": type_, "data": [data]})


def ticker_frame(
    symbol: str,
    bid: Num,
    bid_qty: Num,
    ask: Num,
    ask_qty: Num,
    last: Num,
    volume: Num,
    *,
    time_us: int | None = None,
    type_: str = "update",
) -> str:
    """A ``ticker`` frame (the fields the collector reads, plus the venue's others)."""
    data: dict[str, Any] = {
        "symbol": symbol,
        "bid": _dec(bid),
        "bid_qty": _dec(bid_qty),
        "ask": _dec(ask),
        "ask_qty": _dec(ask_qty),
        "last": _dec(last),
        "volume": _dec(volume),
        "vwap": _dec(last),
        "low": _dec(bid),
        "high": _dec(ask),
        "change": 0,
        "change_pct": 0,
    }
    if time_us is not None:
        data["timestamp"] = rfc3339(time_us)
    return _frame({"channel": "ticker", "type": type_, "data": [data]})


def heartbeat_frame() -> str:
    return '{"channel":"heartbeat"}'


def status_frame(connection_id: int) -> str:
    """The ``status`` message the venue sends on connect."""
    data = {
        "version": "2.0.10",
        "system": "online",
        "api_version": "v2",
        "connection_id": connection_id,
    }
    return _frame({"channel": "status", "type": "update", "data": [data]})


def _target(frame: str) -> tuple[str, str] | None:
    """(channel, symbol) of a data frame, if it has exactly one symbol."""
    try:
        decoded = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return None
    if not isinstance(decoded, dict) or decoded.get("channel") not in CHANNELS:
        return None
    data = decoded.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return None
    channel, symbol = decoded["channel"], data[0].get("symbol")
    return (channel, symbol) if isinstance(symbol, str) else None


# --------------------------------------------------------------------------- server


class FakeClient:
    """One accepted connection, as the fake sees it."""

    def __init__(self, conn: WebSocketConnection, connection_id: int) -> None:
        self.conn = conn
        self.connection_id = connection_id
        self.subscriptions: set[tuple[str, str]] = set()  # (channel, symbol)
        self.book_depth: dict[str, int] = {}
        self.pings = 0
        self.idle_scope: trio.CancelScope | None = None


class FakeKraken(FakeServer[FakeClient]):
    """A Kraken spot v2 server for tests (see the module docstring).

    Start it with ``await nursery.start(fake.run)``; it serves until cancelled.
    """

    path = "/v2"

    def __init__(
        self,
        *,
        reject_symbols: Iterable[str] = (),
        idle_timeout: float | None = 60.0,
        heartbeat_interval: float | None = 1.0,
    ) -> None:
        super().__init__()
        self.reject_symbols = set(reject_symbols)
        self.idle_timeout = idle_timeout
        self.heartbeat_interval = heartbeat_interval
        self.idle_drops = 0  # clients dropped for sending nothing within idle_timeout
        self.pings = 0
        # The fake's books: symbol -> {"bids": {price: qty}, "asks": {...}} as decimal texts.
        self.books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
        self._clock_us = 1_700_000_000_000_000

    # ----------------------------------------------------------------- waiting

    async def wait_disconnected(self) -> None:
        await self._wait_for(lambda: not self.clients)

    async def wait_subscribed(self, channel: str, symbols: Iterable[str]) -> None:
        """Until an open connection is subscribed to ``channel`` for all ``symbols``."""
        wanted = {(channel, s) for s in symbols}
        await self._wait_for(lambda: any(wanted <= c.subscriptions for c in self.clients))

    async def wait_messages(self, predicate: Callable[[dict[str, Any]], bool], n: int = 1) -> None:
        """Until ``n`` client messages (decoded) satisfy ``predicate``."""
        await self._wait_for(lambda: self._count_json_messages(predicate) >= n)

    # ----------------------------------------------------------------- book state

    def set_book(self, symbol: str, bids: Levels, asks: Levels) -> None:
        """The fake's book of ``symbol`` (sent as the snapshot on subscribe)."""
        self.books[symbol] = {
            "bids": {_dec(p): _dec(q) for p, q in bids},
            "asks": {_dec(p): _dec(q) for p, q in asks},
        }

    def _book_levels(self, symbol: str, depth: int) -> tuple[Levels, Levels]:
        book = self.books[symbol]
        bids = sorted(book["bids"].items(), key=lambda lv: -lv[0])[:depth]
        asks = sorted(book["asks"].items(), key=lambda lv: lv[0])[:depth]
        return [(str(p), str(q)) for p, q in bids], [(str(p), str(q)) for p, q in asks]

    def checksum(self, symbol: str) -> int:
        bids, asks = self._book_levels(symbol, 10)
        return kraken_checksum(bids, asks)

    def snapshot_frame(self, symbol: str, depth: int = 10) -> str:
        bids, asks = self._book_levels(symbol, depth)
        return book_frame(
            symbol,
            bids,
            asks,
            checksum=kraken_checksum(bids, asks),
            time_us=self._next_time(),
            type_="snapshot",
        )

    def _next_time(self) -> int:
        self._clock_us += 1000
        return self._clock_us

    async def send_book_update(
        self,
        symbol: str,
        bids: Levels = (),
        asks: Levels = (),
        *,
        checksum: int | None = None,
    ) -> int:
        """Apply a change to the fake's book and send it; ``checksum`` overrides the right one."""
        book = self.books[symbol]
        for side, levels in (("bids", bids), ("asks", asks)):
            for price, qty in levels:
                if _dec(qty) == 0:
                    book[side].pop(_dec(price), None)
                else:
                    book[side][_dec(price)] = _dec(qty)
        right = self.checksum(symbol)
        frame = book_frame(
            symbol,
            bids,
            asks,
            checksum=right if checksum is None else checksum,
            time_us=self._next_time(),
        )
        return await self.send(frame)

    # ----------------------------------------------------------------- controls

    async def send(self, frame: str) -> int:
        """Send a data frame to every client subscribed to its channel and symbol.

        Frames that name no single (channel, symbol) go to every client.
        """
        target = _target(frame)
        if target is None:
            return await self.broadcast(frame)
        sent = 0
        for client in list(self.clients):
            if target in client.subscriptions:
                sent += await send_quietly(client.conn, frame)
        return sent

    # ----------------------------------------------------------------- serving

    def _new_client(self, conn: WebSocketConnection, request: WebSocketRequest) -> FakeClient:
        return FakeClient(conn, self.connections)

    async def _on_open(self, client: FakeClient) -> None:
        await send_quietly(client.conn, status_frame(client.connection_id))

    def _watchers(self, client: FakeClient) -> list[Watcher[FakeClient]]:
        if self.heartbeat_interval is None:
            return []
        return [partial(self._heartbeat_loop, interval=self.heartbeat_interval)]

    def _touch(self, client: FakeClient) -> None:
        if client.idle_scope is not None and self.idle_timeout is not None:
            client.idle_scope.deadline = trio.current_time() + self.idle_timeout

    async def _heartbeat_loop(self, client: FakeClient, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            if client.subscriptions and not await send_quietly(client.conn, heartbeat_frame()):
                return

    async def _receive_loop(self, client: FakeClient) -> None:
        """Answer the client until it closes, or drop it after ``idle_timeout`` of silence."""
        with trio.CancelScope() as idle:
            client.idle_scope = idle
            self._touch(client)
            while (text := await self._receive_text(client)) is not None:
                self._touch(client)
                for reply in self._replies(client, text):
                    if not await send_quietly(client.conn, reply):
                        return
                self._notify()
        if idle.cancelled_caught:
            self.idle_drops += 1
            await abort(client.conn)

    def _response(self, method: str, req_id: Any, **fields: Any) -> str:
        now = rfc3339(self._next_time())
        body: dict[str, Any] = {"method": method, **fields, "time_in": now, "time_out": now}
        if req_id is not None:
            body["req_id"] = req_id
        return _frame(body)

    def _replies(self, client: FakeClient, text: str) -> list[str]:
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return [_frame({"error": "Malformed request", "success": False})]
        if not isinstance(request, dict):
            return [_frame({"error": "Malformed request", "success": False})]
        method = request.get("method")
        req_id = request.get("req_id")
        if method == "ping":
            client.pings += 1
            self.pings += 1
            return [self._response("pong", req_id)]
        if method not in ("subscribe", "unsubscribe"):
            return [self._response(str(method), req_id, error="Method not found", success=False)]
        params = request.get("params") or {}
        channel = params.get("channel")
        symbols = params.get("symbol") or []
        if channel not in CHANNELS:
            return [self._response(method, req_id, error="Channel not found", success=False)]
        depth = params.get("depth", 10)
        if channel == "book" and depth not in BOOK_DEPTHS:
            return [self._response(method, req_id, error="Invalid depth", success=False)]
        trigger = params.get("event_trigger", "trades")
        if channel == "ticker" and trigger not in ("bbo", "trades"):
            return [self._response(method, req_id, error="Invalid event_trigger", success=False)]
        replies: list[str] = []
        for symbol in symbols:
            key = (channel, symbol)
            if method == "unsubscribe":
                if key not in client.subscriptions:
                    replies.append(
                        self._response(
                            method,
                            req_id,
                            error="Subscription Not Found",
                            success=False,
                            symbol=symbol,
                        )
                    )
                    continue
                client.subscriptions.discard(key)
                replies.append(
                    self._response(
                        method,
                        req_id,
                        result={"channel": channel, "symbol": symbol},
                        success=True,
                    )
                )
                continue
            if not SYMBOL_RE.fullmatch(symbol) or symbol in self.reject_symbols:
                error = f"Currency pair not supported {symbol}"
            elif key in client.subscriptions:
                error = "Already subscribed"
            else:
                error = None
            if error is not None:
                replies.append(
                    self._response(method, req_id, error=error, success=False, symbol=symbol)
                )
                continue
            client.subscriptions.add(key)
            result: dict[str, Any] = {"channel": channel, "symbol": symbol}
            snapshot = params.get("snapshot", True)
            if channel == "book":
                result.update(depth=depth, snapshot=snapshot)
                client.book_depth[symbol] = depth
            elif channel == "trade":
                result["snapshot"] = snapshot
            else:
                result.update(event_trigger=trigger, snapshot=snapshot)
            replies.append(self._response(method, req_id, result=result, success=True))
            if channel == "book" and snapshot and symbol in self.books:
                replies.append(self.snapshot_frame(symbol, depth))
        return replies
