"""A fake Bitfinex WebSocket v2 server on 127.0.0.1, and frame builders.

:class:`FakeBitfinex` speaks the part of the protocol the collector uses:

- it accepts the path ``/ws/2`` (else HTTP 404) and greets with
  ``{"event":"info","version":2,"serverId":...,"platform":{"status":1}}``;
- ``{"event":"conf","flags":F}`` -> ``{"event":"conf","status":"OK","flags":F}``; with SEQ_ALL
  (65536) every channel frame to that client gets a per-connection sequence number
  appended, and with TIMESTAMP (32768) a millisecond time after it (``[chanId, ..., SEQ, MTS]``);
- ``subscribe`` -> ``{"event":"subscribed","channel":..,"chanId":N,"symbol":..,"pair":..}``
  (books also echo prec/freq/len), followed by the channel's snapshot (book: the levels in
  :attr:`FakeBitfinex.books`; trades: :attr:`FakeBitfinex.trade_snapshots`); errors echo
  channel and symbol like the venue: 10300 ``symbol: invalid`` (malformed or in
  ``unknown_symbols``), 10301 already subscribed, 10305 ``subscribe: limit`` beyond
  ``max_channels`` per connection; ``unsubscribe`` -> ``unsubscribed``;
- ``{"event":"subscribe","channel":"status","key":K}`` for ``deriv:{perpetual}`` or
  ``liq:global`` -> ``{"event":"subscribed","channel":"status","chanId":N,"key":K}`` (no
  snapshot); a malformed key, or a ``deriv:`` key of a non-perpetual pair or one in
  ``unknown_symbols``, -> error 10300 ``key: invalid`` echoing channel and key. Channels are
  kept as (channel, symbol or key), so tests send status frames with
  ``send_channel("status", "deriv:tBTCF0:USTF0", [...])``;
- ``{"event":"ping","cid":N}`` -> ``{"event":"pong","ts":...,"cid":N}``;
- every ``hb_interval`` seconds it sends ``[chanId,"hb",SEQ,MTS]`` on every channel of a client;
- with ``client_idle_timeout`` set it DROPS a client that sent nothing for that long (the
  venue's own idle rule is not documented; the collector pings every 15 s);
- it records every text message from clients (:attr:`FakeBitfinex.client_messages`).

Test controls: :meth:`~FakeBitfinex.send_channel` (composes ``[chanId, *parts, SEQ, MTS]``
for each subscribed client), :meth:`~FakeBitfinex.skip_sequence` (make a gap),
:meth:`~FakeBitfinex.send_info`, :meth:`~FakeBitfinex.broadcast`, :meth:`~FakeBitfinex.drop`,
and waits. Callers own timeouts (``trio.fail_after``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, Final

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from tests.fakes.base import FakeServer, Watcher, abort, send_quietly, wait_idle

FLAG_TIMESTAMP: Final = 32768
FLAG_SEQ_ALL: Final = 65536
SYMBOL_RE: Final = re.compile(r"t([A-Z0-9]{6}|[A-Z0-9]{2,15}:[A-Z0-9]{2,15})")
PERPETUAL_RE: Final = re.compile(r"t[A-Z0-9]{1,13}F0:[A-Z0-9]{1,13}F0")
LIQUIDATION_KEY: Final = "liq:global"
EPOCH_MS: Final = 1_700_000_000_000
_encode: Final = msgspec.json.Encoder().encode

BookLevel = tuple[float, int, float]  # (PRICE, COUNT, AMOUNT): AMOUNT > 0 bid, < 0 ask
TradeRow = tuple[int, int, float, float]  # (ID, MTS, AMOUNT, PRICE): AMOUNT < 0 taker sell
TickerRow = tuple[float, float, float, float, float, float, float, float, float, float]


def fake_mts() -> int:
    """The fake's millisecond clock: Trio time after a fixed epoch (MockClock-friendly)."""
    return EPOCH_MS + int(trio.current_time() * 1000)


class FakeClient:
    """One accepted connection, as the fake sees it."""

    def __init__(self, conn: WebSocketConnection) -> None:
        self.conn = conn
        self.flags = 0
        self.seq = 0
        # chanId -> (channel, symbol)
        self.channels: dict[int, tuple[str, str]] = {}
        self.last_message_at = trio.current_time()
        self.pings = 0

    def chan_id(self, channel: str, symbol: str) -> int | None:
        for chan_id, key in self.channels.items():
            if key == (channel, symbol):
                return chan_id
        return None


class FakeBitfinex(FakeServer[FakeClient]):
    """A Bitfinex v2 public server for tests (see the module docstring).

    Start it with ``await nursery.start(fake.run)``; it serves until cancelled.
    ``url`` is the base URL (the adapter appends ``/ws/2``).
    """

    path = "/ws/2"

    def __init__(
        self,
        *,
        unknown_symbols: Iterable[str] = (),
        max_channels: int = 25,
        hb_interval: float | None = 15.0,
        client_idle_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.unknown_symbols = set(unknown_symbols)
        self.max_channels = max_channels
        self.hb_interval = hb_interval
        self.client_idle_timeout = client_idle_timeout
        self.books: dict[str, list[BookLevel]] = {}
        self.trade_snapshots: dict[str, list[TradeRow]] = {}
        self.idle_drops = 0
        self._next_chan_id = 17

    # ----------------------------------------------------------------- waiting

    async def wait_subscribed(self, keys: Iterable[tuple[str, str]]) -> None:
        """Until open connections have subscribed every (channel, symbol) of ``keys``."""
        wanted = set(keys)
        await self._wait_for(
            lambda: wanted <= {key for c in self.clients for key in c.channels.values()}
        )

    async def wait_client_messages(
        self, predicate: Callable[[dict[str, Any]], bool], n: int = 1
    ) -> None:
        """Until clients have sent ``n`` JSON objects for which ``predicate`` is true."""
        await self._wait_for(lambda: self._count_json_messages(predicate) >= n)

    # ----------------------------------------------------------------- controls

    async def send_channel(self, channel: str, symbol: str, *parts: Any) -> int:
        """Send ``[chanId, *parts(, SEQ)(, MTS)]`` to each client subscribed to the channel."""
        sent = 0
        for client in list(self.clients):
            chan_id = client.chan_id(channel, symbol)
            if chan_id is not None:
                sent += await self._send_frame(client, chan_id, list(parts))
        return sent

    def skip_sequence(self, n: int = 1) -> None:
        """Make every client's next channel frame skip ``n`` sequence numbers (a gap)."""
        for client in self.clients:
            client.seq += n

    async def send_info(self, code: int, msg: str) -> int:
        return await self.broadcast(_encode({"event": "info", "code": code, "msg": msg}).decode())

    async def _send_frame(self, client: FakeClient, chan_id: int, parts: list[Any]) -> int:
        frame: list[Any] = [chan_id, *parts]
        if client.flags & FLAG_SEQ_ALL:
            client.seq += 1
            frame.append(client.seq)
        if client.flags & FLAG_TIMESTAMP:
            frame.append(fake_mts())
        return await send_quietly(client.conn, _encode(frame).decode())

    # ----------------------------------------------------------------- serving

    def _new_client(self, conn: WebSocketConnection, request: WebSocketRequest) -> FakeClient:
        return FakeClient(conn)

    async def _on_open(self, client: FakeClient) -> None:
        info = {
            "event": "info",
            "version": 2,
            "serverId": "083bd8d4-aca7-4690-a573-eabfc8103de8",
            "platform": {"status": 1},
        }
        await send_quietly(client.conn, _encode(info).decode())

    def _watchers(self, client: FakeClient) -> list[Watcher[FakeClient]]:
        watchers: list[Watcher[FakeClient]] = []
        if self.hb_interval is not None:
            watchers.append(partial(self._heartbeat_loop, interval=self.hb_interval))
        if self.client_idle_timeout is not None:
            watchers.append(partial(self._idle_watch, idle_secs=self.client_idle_timeout))
        return watchers

    async def _receive_loop(self, client: FakeClient) -> None:
        while (text := await self._receive_text(client)) is not None:
            client.last_message_at = trio.current_time()
            try:
                await self._reply(client, text)
            except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            self._notify()

    async def _reply(self, client: FakeClient, text: str) -> None:
        conn = client.conn
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            await conn.send_message(
                _encode({"event": "error", "msg": "invalid", "code": 10000}).decode()
            )
            return
        event = request.get("event") if isinstance(request, dict) else None
        if event == "conf":
            client.flags = int(request.get("flags", 0))
            reply = {"event": "conf", "status": "OK", "flags": client.flags}
            await conn.send_message(_encode(reply).decode())
        elif event == "ping":
            client.pings += 1
            reply = {"event": "pong", "ts": fake_mts(), "cid": request.get("cid")}
            await conn.send_message(_encode(reply).decode())
        elif event == "subscribe":
            await self._subscribe(client, request)
        elif event == "unsubscribe":
            chan_id = request.get("chanId")
            if chan_id in client.channels:
                del client.channels[chan_id]
                reply = {"event": "unsubscribed", "status": "OK", "chanId": chan_id}
            else:
                reply = {
                    "event": "error",
                    "msg": "unsubscribe: invalid",
                    "code": 10400,
                    "chanId": chan_id,
                }
            await conn.send_message(_encode(reply).decode())
        else:
            reply = {"event": "error", "msg": "event: invalid", "code": 10001}
            await conn.send_message(_encode(reply).decode())

    async def _subscribe_status(self, client: FakeClient, request: dict[str, Any]) -> None:
        key = request.get("key")
        echo = {"channel": "status", "key": key}
        valid = isinstance(key, str) and (
            key == LIQUIDATION_KEY
            or (
                key.startswith("deriv:")
                and PERPETUAL_RE.fullmatch(key[6:]) is not None
                and key[6:] not in self.unknown_symbols
            )
        )
        if not valid or not isinstance(key, str):
            reply = {**echo, "event": "error", "msg": "key: invalid", "code": 10300}
        elif client.chan_id("status", key) is not None:
            reply = {**echo, "event": "error", "msg": "subscribe: dup", "code": 10301}
        elif len(client.channels) >= self.max_channels:
            reply = {**echo, "event": "error", "msg": "subscribe: limit", "code": 10305}
        else:
            chan_id = self._next_chan_id
            self._next_chan_id += 1
            client.channels[chan_id] = ("status", key)
            reply = {"event": "subscribed", "channel": "status", "chanId": chan_id, "key": key}
        await client.conn.send_message(_encode(reply).decode())

    async def _subscribe(self, client: FakeClient, request: dict[str, Any]) -> None:
        channel = request.get("channel")
        if channel == "status":
            await self._subscribe_status(client, request)
            return
        symbol = request.get("symbol")
        echo = {"channel": channel, "symbol": symbol}

        async def error(code: int, msg: str) -> None:
            reply = {**echo, "event": "error", "msg": msg, "code": code, "pair": str(symbol)[1:]}
            await client.conn.send_message(_encode(reply).decode())

        if channel not in ("book", "trades", "ticker"):
            await error(10300, "channel: unknown")
            return
        if (
            not isinstance(symbol, str)
            or not SYMBOL_RE.fullmatch(symbol)
            or symbol in self.unknown_symbols
        ):
            await error(10300, "symbol: invalid")
            return
        if client.chan_id(channel, symbol) is not None:
            await error(10301, "subscribe: dup")
            return
        if len(client.channels) >= self.max_channels:
            await error(10305, "subscribe: limit")
            return
        chan_id = self._next_chan_id
        self._next_chan_id += 1
        client.channels[chan_id] = (channel, symbol)
        reply: dict[str, Any] = {
            "event": "subscribed",
            "channel": channel,
            "chanId": chan_id,
            "symbol": symbol,
        }
        if channel == "book":
            reply.update(
                prec=request.get("prec", "P0"),
                freq=request.get("freq", "F0"),
                len=request.get("len", "25"),
            )
        reply["pair"] = symbol[1:]
        await client.conn.send_message(_encode(reply).decode())
        if channel == "book":
            await self._send_frame(
                client, chan_id, [[list(level) for level in self.books.get(symbol, [])]]
            )
        elif channel == "trades":
            rows = self.trade_snapshots.get(symbol, [])
            await self._send_frame(client, chan_id, [[list(row) for row in rows]])

    async def _heartbeat_loop(self, client: FakeClient, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            for chan_id in list(client.channels):
                if not await self._send_frame(client, chan_id, ["hb"]):
                    return

    async def _idle_watch(self, client: FakeClient, idle_secs: float) -> None:
        await wait_idle(lambda: client.last_message_at, idle_secs)
        self.idle_drops += 1
        await abort(client.conn)


def book_levels(
    bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]]
) -> list[BookLevel]:
    """Snapshot levels in the venue's shape: count 1, asks with negative amounts."""
    return [(p, 1, a) for p, a in bids] + [(p, 1, -a) for p, a in asks]
