"""A fake Upbit quotation WebSocket server on 127.0.0.1, and realistic frame builders.

:class:`FakeUpbit` speaks the venue's protocol as the collector uses it:

- it accepts ``/websocket/v1`` only (HTTP 404 otherwise);
- a request is a JSON array: ``{"ticket":..}``, type objects ``{"type":T,"codes":[..]}``,
  an optional ``{"format":"DEFAULT"|"SIMPLE"}``, or ``{"method":"LIST_SUBSCRIPTIONS"}``.
  Malformed requests get the venue's errors ``{"error":{"name":N,"message":M}}`` with
  ``WRONG_FORMAT`` (not an array / not JSON), ``NO_TICKET``, ``NO_TYPE``, ``NO_CODES``,
  ``INVALID_PARAM`` (a code not in the venue's ``QUOTE-BASE`` uppercase form). A new data
  request replaces the connection's subscriptions (the safe assumption, exchanges.md 3.1).
  Codes in ``unknown_codes`` are accepted but never subscribed (left out of
  ``LIST_SUBSCRIPTIONS``); there is no success acknowledgement;
- every server message goes out as a **binary** frame of UTF-8 JSON;
- the text ``PING`` is answered with ``{"status":"UP"}``;
- keepalive rule: a client that sends nothing (request or ``PING``) for ``idle_timeout``
  (120 s) is dropped; more than ``max_requests_per_second`` messages in a second closes it.

Controls: :meth:`send` (to subscribers of a type and code), :meth:`send_raw`, :meth:`drop`;
waits :meth:`wait_connected`, :meth:`wait_subscribed`, :meth:`wait_messages`.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from tests.fakes.base import FakeServer, Watcher, abort, send_quietly, wait_idle

_encode: Final = msgspec.json.Encoder().encode
CODE_RE: Final = re.compile(r"[A-Z0-9]{2,10}-[A-Z0-9]{1,20}(\.(1|5|15|30))?")
TYPES: Final = frozenset({"trade", "orderbook", "ticker", "candle.1s", "candle.1m"})

Levels = Sequence[tuple[float, float]]


# --------------------------------------------------------------------------- builders


def trade_message(
    code: str,
    sequential_id: int,
    price: float,
    volume: float,
    time_ms: int,
    ask_bid: str,
    *,
    stream_type: str = "REALTIME",
) -> bytes:
    """A DEFAULT-format ``trade`` message (JSON numbers, ms times), as the docs show it."""
    return _encode(
        {
            "type": "trade",
            "code": code,
            "timestamp": time_ms + 30,
            "trade_date": "2026-08-09",
            "trade_time": "21:05:48",
            "trade_timestamp": time_ms,
            "trade_price": price,
            "trade_volume": volume,
            "ask_bid": ask_bid,
            "prev_closing_price": price,
            "change": "RISE",
            "change_price": 1.0,
            "sequential_id": sequential_id,
            "best_ask_price": price,
            "best_ask_size": 1.0,
            "best_bid_price": price,
            "best_bid_size": 1.0,
            "stream_type": stream_type,
        }
    )


def orderbook_message(
    code: str,
    bids: Levels,
    asks: Levels,
    time_ms: int,
    *,
    stream_type: str = "REALTIME",
) -> bytes:
    """A DEFAULT-format ``orderbook`` message: the whole top-N book (bids and asks paired)."""
    units = [
        {"ask_price": a[0], "bid_price": b[0], "ask_size": a[1], "bid_size": b[1]}
        for a, b in zip(asks, bids, strict=True)
    ]
    return _encode(
        {
            "type": "orderbook",
            "code": code,
            "timestamp": time_ms,
            "total_ask_size": sum(a[1] for a in asks),
            "total_bid_size": sum(b[1] for b in bids),
            "orderbook_units": units,
            "stream_type": stream_type,
            "level": 0,
        }
    )


def ticker_message(
    code: str, price: float, volume_24h: float, time_ms: int, *, stream_type: str = "REALTIME"
) -> bytes:
    """A DEFAULT-format ``ticker`` message (trimmed to the fields that matter plus a few)."""
    return _encode(
        {
            "type": "ticker",
            "code": code,
            "opening_price": price,
            "high_price": price,
            "low_price": price,
            "trade_price": price,
            "prev_closing_price": price,
            "change": "EVEN",
            "trade_volume": 0.1,
            "acc_trade_volume": 10.0,
            "acc_trade_volume_24h": volume_24h,
            "acc_trade_price_24h": volume_24h * price,
            "trade_timestamp": time_ms - 5,
            "ask_bid": "BID",
            "market_state": "ACTIVE",
            "timestamp": time_ms,
            "stream_type": stream_type,
        }
    )


def error_message(name: str, message: str) -> bytes:
    return _encode({"error": {"name": name, "message": message}})


STATUS_UP: Final = b'{"status":"UP"}'


# --------------------------------------------------------------------------- server


class FakeClient:
    def __init__(self, fake: FakeUpbit, conn: WebSocketConnection, opened: float) -> None:
        self.fake = fake
        self.conn = conn
        self.subs: dict[str, set[str]] = {}
        self.last_heard = opened
        self.requests = 0
        self.pings = 0
        self._times: deque[float] = deque()


class FakeUpbit(FakeServer[FakeClient]):
    """See the module docstring. Start with ``await nursery.start(fake.run)``."""

    path = "/websocket/v1"
    url_path = "/websocket/v1"

    def __init__(
        self,
        *,
        unknown_codes: Iterable[str] = (),
        idle_timeout: float = 120.0,
        max_requests_per_second: int = 5,
    ) -> None:
        super().__init__()
        self.unknown_codes = set(unknown_codes)
        self.idle_timeout = idle_timeout
        self.max_requests_per_second = max_requests_per_second
        self.dropped_idle = 0
        self.rate_limited = 0
        self.pings = 0
        self.frames_sent = 0  # every frame sent to any client

    # ----------------------------------------------------------------- waiting

    async def wait_subscribed(self, type_: str, codes: Iterable[str]) -> None:
        wanted = set(codes)
        await self._wait_for(lambda: any(wanted <= c.subs.get(type_, set()) for c in self.clients))

    async def wait_messages(self, n: int) -> None:
        await self._wait_for(lambda: len(self.client_messages) >= n)

    # ----------------------------------------------------------------- controls

    async def send(self, type_: str, code: str, message: bytes) -> int:
        """Send ``message`` (binary) to every client subscribed to ``code`` for ``type_``."""
        sent = 0
        for client in list(self.clients):
            if code in client.subs.get(type_, set()):
                sent += await _send_quietly(client, message)
        return sent

    async def send_raw(self, message: bytes | str) -> int:
        return await self.broadcast(message)

    # ----------------------------------------------------------------- serving

    def _new_client(self, conn: WebSocketConnection, request: WebSocketRequest) -> FakeClient:
        return FakeClient(self, conn, trio.current_time())

    def _watchers(self, client: FakeClient) -> list[Watcher[FakeClient]]:
        return [self._watch_idle]

    async def _send_to(self, client: FakeClient, frame: str | bytes) -> int:
        return await _send_quietly(client, frame)

    async def _watch_idle(self, client: FakeClient) -> None:
        await wait_idle(lambda: client.last_heard, self.idle_timeout)
        self.dropped_idle += 1
        await abort(client.conn)

    async def _receive_loop(self, client: FakeClient) -> None:
        while (text := await self._receive_text(client)) is not None:
            now = trio.current_time()
            client.last_heard = now
            self._notify()
            if text == "PING":
                client.pings += 1
                self.pings += 1
                await _send_quietly(client, STATUS_UP)
                self._notify()
                continue
            client._times.append(now)
            while client._times and client._times[0] <= now - 1.0:
                client._times.popleft()
            if len(client._times) > self.max_requests_per_second:
                self.rate_limited += 1
                await client.conn.aclose(1008, "Too many requests")
                return
            reply = self._answer(client, text)
            if reply is not None:
                await _send_quietly(client, reply)
            self._notify()

    def _answer(self, client: FakeClient, text: str) -> bytes | None:
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return error_message("WRONG_FORMAT", "요청 형식이 올바르지 않습니다.")
        if not isinstance(request, list) or not all(isinstance(o, dict) for o in request):
            return error_message("WRONG_FORMAT", "요청 형식이 올바르지 않습니다.")
        ticket = next((o["ticket"] for o in request if "ticket" in o), None)
        if not ticket:
            return error_message("NO_TICKET", "티켓이 존재하지 않습니다.")
        if any(o.get("method") == "LIST_SUBSCRIPTIONS" for o in request):
            result = [
                {"type": t, "codes": sorted(codes)} for t, codes in sorted(client.subs.items())
            ]
            return _encode({"method": "LIST_SUBSCRIPTIONS", "result": result, "ticket": ticket})
        types = [o for o in request if "type" in o]
        if not types:
            return error_message("NO_TYPE", "타입 필드가 존재하지 않습니다.")
        subs: dict[str, set[str]] = {}
        for obj in types:
            type_ = obj["type"]
            codes = obj.get("codes")
            if type_ not in TYPES:
                return error_message("INVALID_PARAM", f"지원하지 않는 타입입니다: {type_}")
            if not codes:
                return error_message("NO_CODES", "코드 필드가 존재하지 않습니다.")
            for code in codes:
                if not isinstance(code, str) or not CODE_RE.fullmatch(code):
                    return error_message("INVALID_PARAM", f"잘못된 코드입니다: {code}")
            known = {c.partition(".")[0] for c in codes} - self.unknown_codes
            subs.setdefault(type_, set()).update(known)
        client.requests += 1
        client.subs = subs  # a new request replaces the previous one
        return None


async def _send_quietly(client: FakeClient, message: bytes | str) -> int:
    if not await send_quietly(client.conn, message):
        return 0
    client.fake.frames_sent += 1
    return 1
