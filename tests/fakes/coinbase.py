"""A fake Coinbase Advanced Trade WebSocket server on 127.0.0.1, and realistic frame builders.

:class:`FakeCoinbase` speaks the venue's protocol as the collector uses it:

- ``{"type":"subscribe","product_ids":[...],"channel":C}`` (optionally with ``"jwt"``):
  for ``level2`` a ``snapshot`` event per product (from :attr:`FakeCoinbase.books`), for
  ``market_trades`` a ``snapshot`` of :attr:`FakeCoinbase.recent_trades`, then the
  cumulative ``subscriptions`` message. A product in ``reject_products`` fails the whole
  request with ``{"type":"error","message":"Failed to subscribe","reason":"X is not a valid
  product"}`` (nothing of it is subscribed). ``unsubscribe`` removes and answers likewise;
- every message to a client carries that connection's ``sequence_num`` (0, 1, 2 ...);
  :meth:`~FakeCoinbase.send` can skip numbers to make a gap;
- ``heartbeats`` subscribers get a heartbeat every second;
- keepalive rules: a client that has not subscribed within ``subscribe_timeout`` (5 s) is
  dropped, and so is one without a ``heartbeats`` subscription that has received nothing
  for ``idle_timeout`` (60 s; the venue closes idle channels after 60-90 s);
- it records every client message (:attr:`FakeCoinbase.client_messages`) and closes a
  connection (1008) that sends more than ``max_messages_per_second``.

Controls: :meth:`send`, :meth:`drop`, :meth:`send_raw`, waits :meth:`wait_connected`,
:meth:`wait_subscribed`, :meth:`wait_messages`. Callers own timeouts.
"""

from __future__ import annotations

import datetime
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from tests.fakes.base import FakeServer, Watcher, abort, send_quietly

_encode: Final = msgspec.json.Encoder().encode

Levels = Sequence[tuple[float, float]]


def iso(time_us: int) -> str:
    """RFC 3339 with nanoseconds, like the venue (``2026-08-09T21:05:48.228568804Z``)."""
    seconds, micros = divmod(time_us, 1_000_000)
    dt = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}000Z"


# --------------------------------------------------------------------------- builders


def envelope(channel: str, events: list[dict[str, Any]], seq: int, time_us: int) -> str:
    """A whole server message (the 2026 recording has no ``client_id``)."""
    return _encode(
        {"channel": channel, "timestamp": iso(time_us), "sequence_num": seq, "events": events}
    ).decode()


def l2_event(
    product: str, bids: Levels, asks: Levels, time_us: int, *, kind: str = "update"
) -> dict[str, Any]:
    """A ``l2_data`` event: ``kind`` ``snapshot`` or ``update``; sides ``bid``/``offer``."""
    t = iso(time_us)
    updates = [
        {"side": "bid", "event_time": t, "price_level": f"{p}", "new_quantity": f"{q}"}
        for p, q in bids
    ] + [
        {"side": "offer", "event_time": t, "price_level": f"{p}", "new_quantity": f"{q}"}
        for p, q in asks
    ]
    return {"type": kind, "product_id": product, "updates": updates}


def trade(
    product: str, trade_id: int, price: float, size: float, time_us: int, side: str
) -> dict[str, Any]:
    """One ``market_trades`` trade (``side`` ``BUY``/``SELL`` as the venue spells it)."""
    return {
        "product_id": product,
        "trade_id": str(trade_id),
        "price": f"{price}",
        "size": f"{size}",
        "time": iso(time_us),
        "side": side,
    }


def trades_event(trades: list[dict[str, Any]], *, kind: str = "update") -> dict[str, Any]:
    return {"type": kind, "trades": trades}


def ticker_event(
    product: str,
    price: float,
    bid: float,
    bid_qty: float,
    ask: float,
    ask_qty: float,
    volume: float,
    *,
    kind: str = "update",
) -> dict[str, Any]:
    return {
        "type": kind,
        "tickers": [
            {
                "type": "ticker",
                "product_id": product,
                "price": f"{price}",
                "volume_24_h": f"{volume}",
                "low_24_h": f"{price}",
                "high_24_h": f"{price}",
                "low_52_w": f"{price}",
                "high_52_w": f"{price}",
                "price_percent_chg_24_h": "0.1",
                "best_bid": f"{bid}",
                "best_ask": f"{ask}",
                "best_bid_quantity": f"{bid_qty}",
                "best_ask_quantity": f"{ask_qty}",
            }
        ],
    }


def heartbeat_event(counter: int) -> dict[str, Any]:
    return {
        "current_time": "2026-08-09 21:05:48.854840045 +0000 UTC m=+41691.260485341",
        "heartbeat_counter": counter,
    }


def subscriptions_event(subs: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    return {"subscriptions": {c: sorted(p) for c, p in sorted(subs.items()) if p}}


def error_frame(message: str, reason: str) -> str:
    return _encode({"type": "error", "message": message, "reason": reason}).decode()


# --------------------------------------------------------------------------- server


class FakeClient:
    def __init__(self, fake: FakeCoinbase, conn: WebSocketConnection, opened: float) -> None:
        self.fake = fake
        self.conn = conn
        self.subs: dict[str, set[str]] = {}
        self.seq = 0
        self.subscribed_once = False
        self.last_sent = opened
        self.jwts: list[str] = []
        self._times: deque[float] = deque()

    def channels_of(self, product: str) -> set[str]:
        return {c for c, products in self.subs.items() if product in products}


class FakeCoinbase(FakeServer[FakeClient]):
    """See the module docstring. Start with ``await nursery.start(fake.run)``."""

    def __init__(
        self,
        *,
        reject_products: Iterable[str] = (),
        subscribe_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        max_messages_per_second: int = 8,
        clock_us: Callable[[], int] | None = None,
    ) -> None:
        super().__init__()
        self.reject_products = set(reject_products)
        self.subscribe_timeout = subscribe_timeout
        self.idle_timeout = idle_timeout
        self.max_messages_per_second = max_messages_per_second
        self.clock_us = clock_us or (lambda: 1_786_309_548_000_000 + int(trio.current_time() * 1e6))
        # product -> (bids, asks) sent as the level2 snapshot on subscribe.
        self.books: dict[str, tuple[Levels, Levels]] = {}
        # product -> trades sent as the market_trades snapshot on subscribe (newest first).
        self.recent_trades: dict[str, list[dict[str, Any]]] = {}
        self.dropped_idle = 0
        self.dropped_unsubscribed = 0
        self.rate_limited = 0
        self.heartbeats_sent = 0
        self.frames_sent = 0  # every frame sent to any client

    # ----------------------------------------------------------------- waiting

    async def wait_subscribed(self, channel: str, products: Iterable[str]) -> None:
        """Until an open connection has ``channel`` subscribed for all ``products``."""
        wanted = set(products)
        await self._wait_for(
            lambda: any(wanted <= c.subs.get(channel, set()) for c in self.clients)
        )

    async def wait_messages(self, n: int) -> None:
        """Until ``n`` client messages have been received since start."""
        await self._wait_for(lambda: len(self.client_messages) >= n)

    # ----------------------------------------------------------------- controls

    async def send(
        self, channel: str, events: list[dict[str, Any]], *, product: str, skip: int = 0
    ) -> int:
        """Send one message on ``channel`` to every client subscribed to ``product`` there.

        ``skip`` numbers are left out of the sequence first (a gap of that size).
        """
        sub_channel = {"l2_data": "level2"}.get(channel, channel)
        sent = 0
        for client in list(self.clients):
            if product in client.subs.get(sub_channel, set()):
                client.seq += skip
                sent += await self._send(client, channel, events)
        return sent

    async def send_raw(self, frame: str) -> int:
        return await self.broadcast(frame)

    async def _send(self, client: FakeClient, channel: str, events: list[dict[str, Any]]) -> int:
        frame = envelope(channel, events, client.seq, self.clock_us())
        client.seq += 1
        return await _send_quietly(client, frame)

    # ----------------------------------------------------------------- serving

    def _new_client(self, conn: WebSocketConnection, request: WebSocketRequest) -> FakeClient:
        return FakeClient(self, conn, trio.current_time())

    def _watchers(self, client: FakeClient) -> list[Watcher[FakeClient]]:
        return [self._watch, self._heartbeats]

    async def _send_to(self, client: FakeClient, frame: str | bytes) -> int:
        return await _send_quietly(client, frame)

    async def _watch(self, client: FakeClient) -> None:
        """The venue's rules: subscribe within 5 s; idle channels close without heartbeats."""
        await trio.sleep(self.subscribe_timeout)
        if not client.subscribed_once:
            self.dropped_unsubscribed += 1
            await abort(client.conn)
            return
        while True:
            deadline = client.last_sent + self.idle_timeout
            if trio.current_time() >= deadline and HEARTBEAT not in client.subs:
                self.dropped_idle += 1
                await abort(client.conn)
                return
            await trio.sleep_until(max(deadline, trio.current_time() + 0.001))

    async def _heartbeats(self, client: FakeClient) -> None:
        counter = 0
        while True:
            await trio.sleep(1.0)
            if HEARTBEAT in client.subs:
                counter += 1
                self.heartbeats_sent += 1
                await self._send(client, "heartbeats", [heartbeat_event(counter)])

    async def _receive_loop(self, client: FakeClient) -> None:
        while (text := await self._receive_text(client)) is not None:
            self._notify()
            now = trio.current_time()
            client._times.append(now)
            while client._times and client._times[0] <= now - 1.0:
                client._times.popleft()
            if len(client._times) > self.max_messages_per_second:
                self.rate_limited += 1
                await client.conn.aclose(1008, "rate limit exceeded")
                return
            try:
                await self._answer(client, text)
            except ConnectionClosed:
                return
            self._notify()

    async def _answer(self, client: FakeClient, text: str) -> None:
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            await _send_quietly(client, error_frame("Failed to parse", "invalid JSON"))
            return
        kind = request.get("type") if isinstance(request, dict) else None
        channel = request.get("channel") if isinstance(request, dict) else None
        products = request.get("product_ids") or [] if isinstance(request, dict) else []
        if kind not in ("subscribe", "unsubscribe") or not isinstance(channel, str):
            await _send_quietly(
                client, error_frame("Failed to subscribe", "type and channel are required")
            )
            return
        if isinstance(request.get("jwt"), str):
            client.jwts.append(request["jwt"])
        if channel != HEARTBEAT:
            bad = [p for p in products if p in self.reject_products]
            if bad:
                await _send_quietly(
                    client, error_frame("Failed to subscribe", f"{bad[0]} is not a valid product")
                )
                return
        if kind == "subscribe":
            client.subscribed_once = True
            client.subs.setdefault(channel, set()).update(
                products if channel != HEARTBEAT else [HEARTBEAT]
            )
            if channel == "level2":
                for product in products:
                    bids, asks = self.books.get(product, ((), ()))
                    event = l2_event(product, bids, asks, self.clock_us(), kind="snapshot")
                    await self._send(client, "l2_data", [event])
            elif channel == "market_trades":
                for product in products:
                    recent = self.recent_trades.get(product)
                    if recent:
                        await self._send(
                            client, "market_trades", [trades_event(recent, kind="snapshot")]
                        )
        else:
            remaining = client.subs.get(channel, set())
            remaining.difference_update(products)
            if not remaining or not products:
                client.subs.pop(channel, None)
        await self._send(client, "subscriptions", [subscriptions_event(client.subs)])


HEARTBEAT: Final = "heartbeats"


async def _send_quietly(client: FakeClient, frame: str | bytes) -> int:
    if not await send_quietly(client.conn, frame):
        return 0
    client.last_sent = trio.current_time()
    client.fake.frames_sent += 1
    return 1
