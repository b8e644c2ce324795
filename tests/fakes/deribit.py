"""A fake Deribit API v2 (JSON-RPC) WebSocket server on 127.0.0.1, and frame builders.

:class:`FakeDeribit` speaks the part of the protocol the collector uses:

- it accepts the path ``/ws/api/v2`` and refuses others with HTTP 404;
- ``public/subscribe`` -> ``{"id":N,"result":[channels subscribed]}``: channels of an
  instrument in ``unknown_instruments`` (or malformed names) are silently left out of the
  result, as the venue does (``"result": []`` for an unknown instrument); a request naming
  an instrument in ``error_instruments`` gets a JSON-RPC error for the whole request;
  ``public/unsubscribe`` works likewise; after a book subscribe it sends the snapshot
  configured in :attr:`FakeDeribit.books` (if any);
- ``public/set_heartbeat`` (interval >= 10, else error -32602) -> ``"ok"``; from then on it
  sends ``{"method":"heartbeat","params":{"type":"test_request"}}`` every interval and
  DROPS the client (TCP close, like the venue's immediate close) if no ``public/test``
  arrives within ``test_request_timeout``;
- ``public/test`` -> ``{"result":{"version":...}}``; other methods -> error -32601;
- it records every text message a client sends (:attr:`FakeDeribit.client_messages`).

Test controls: :meth:`~FakeDeribit.send` (to the clients subscribed to the frame's channel),
:meth:`~FakeDeribit.broadcast`, :meth:`~FakeDeribit.drop`, and waits
:meth:`~FakeDeribit.wait_connected`, :meth:`~FakeDeribit.wait_subscribed`,
:meth:`~FakeDeribit.wait_client_message`. A request is answered (and its book snapshots
sent) under the client's :meth:`~FakeDeribit.replying` lock, which ``send`` takes too: a
change never reaches a client between its subscription and the snapshot, as on the venue.
Callers own timeouts (``trio.fail_after``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Final

import msgspec
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from tests.fakes.base import FakeServer, Watcher, abort

CHANNEL_RE: Final = re.compile(r"(book|trades|ticker)\.([A-Za-z0-9_-]+)\.(100ms|agg2|raw)")
_encode: Final = msgspec.json.Encoder().encode

Levels = Sequence[tuple[float, float]]
Changes = Sequence[tuple[str, float, float]]


def notification(channel: str, data: Any) -> str:
    """A ``subscription`` notification of ``channel``."""
    frame = {
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {"channel": channel, "data": data},
    }
    return _encode(frame).decode()


# --------------------------------------------------------------------------- frame builders


def trades_frame(
    instrument: str,
    trades: Sequence[tuple[int, float, float, str, int]],
    *,
    interval: str = "100ms",
    liquidations: Mapping[int, str] | None = None,
) -> str:
    """``trades.{instrument}.{interval}``: ``trades`` = (trade_seq, price, amount, direction, ms).

    ``trade_id`` is ``str(trade_seq + 400_000_000)`` (the venue's ids are strings);
    ``liquidations`` maps a trade_seq to the trade's ``liquidation`` flag (``M``, ``T``,
    ``MT``), which only liquidation trades carry.
    """
    data: list[dict[str, Any]] = [
        {
            "timestamp": ms,
            "price": price,
            "amount": amount,
            "direction": direction,
            "index_price": price - 17.75,
            "instrument_name": instrument,
            "trade_seq": seq,
            "mark_price": price - 7.39,
            "tick_direction": 2,
            "contracts": amount / 10,
            "trade_id": str(seq + 400_000_000),
        }
        for seq, price, amount, direction, ms in trades
    ]
    flags = liquidations or {}
    for trade in data:
        if trade["trade_seq"] in flags:
            trade["liquidation"] = flags[trade["trade_seq"]]
    return notification(f"trades.{instrument}.{interval}", data)


def book_snapshot_frame(
    instrument: str, change_id: int, bids: Levels, asks: Levels, ms: int, *, interval: str = "100ms"
) -> str:
    """The first ``book.{instrument}.{interval}`` message: every level as ``new``."""
    data = {
        "type": "snapshot",
        "timestamp": ms,
        "instrument_name": instrument,
        "change_id": change_id,
        "bids": [["new", p, a] for p, a in bids],
        "asks": [["new", p, a] for p, a in asks],
    }
    return notification(f"book.{instrument}.{interval}", data)


def book_change_frame(
    instrument: str,
    prev_change_id: int,
    change_id: int,
    bids: Changes,
    asks: Changes,
    ms: int,
    *,
    interval: str = "100ms",
) -> str:
    """A ``book`` change: levels are (action, price, amount), action new/change/delete."""
    data = {
        "type": "change",
        "timestamp": ms,
        "prev_change_id": prev_change_id,
        "instrument_name": instrument,
        "change_id": change_id,
        "bids": [list(level) for level in bids],
        "asks": [list(level) for level in asks],
    }
    return notification(f"book.{instrument}.{interval}", data)


def ticker_frame(
    instrument: str,
    ms: int,
    bid: float,
    bid_amount: float,
    ask: float,
    ask_amount: float,
    last: float,
    volume: float,
    *,
    interval: str = "100ms",
) -> str:
    """``ticker.{instrument}.{interval}`` with the fields of a current perpetual ticker."""
    data = {
        "timestamp": ms,
        "state": "open",
        "stats": {"high": last * 1.01, "low": last * 0.97, "price_change": 2.3, "volume": volume},
        "index_price": last - 20.0,
        "instrument_name": instrument,
        "last_price": last,
        "settlement_price": last * 1.002,
        "min_price": last * 0.985,
        "max_price": last * 1.015,
        "open_interest": 1132329370.0,
        "mark_price": last - 1.7,
        "best_ask_price": ask,
        "best_bid_price": bid,
        "estimated_delivery_price": last - 20.0,
        "best_ask_amount": ask_amount,
        "best_bid_amount": bid_amount,
        "current_funding": 0.0,
        "funding_8h": 0.00001742,
    }
    return notification(f"ticker.{instrument}.{interval}", data)


def option_ticker_frame(instrument: str, ms: int, mark_iv: float, delta: float) -> str:
    """``ticker.{instrument}.100ms`` of an option: IVs in percent, greeks, underlying."""
    data = {
        "underlying_price": 2003.61,
        "underlying_index": "ETH-30JUL21",
        "timestamp": ms,
        "stats": {"volume": 869.0, "price_change": 0.0, "low": 0.0015, "high": 0.0025},
        "state": "open",
        "settlement_price": 0.002,
        "open_interest": 12685.0,
        "min_price": 0.0001,
        "max_price": 0.025,
        "mark_price": 0.001972,
        "mark_iv": mark_iv,
        "last_price": 0.002,
        "interest_rate": 0.0,
        "instrument_name": instrument,
        "index_price": 2006.72,
        "greeks": {"vega": 0.20072, "theta": -1.64029, "rho": 0.01188, "gamma": 0.0002,
                   "delta": delta},
        "estimated_delivery_price": 2006.72,
        "bid_iv": mark_iv - 5,
        "best_bid_price": 0.0015,
        "best_bid_amount": 4714.0,
        "best_ask_price": 0.0025,
        "best_ask_amount": 873.0,
        "ask_iv": mark_iv + 5,
    }  # fmt: skip
    return notification(f"ticker.{instrument}.100ms", data)


def heartbeat_frame(kind: str = "test_request") -> str:
    """A heartbeat notification: ``heartbeat`` or ``test_request``."""
    return _encode({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": kind}}).decode()


def _response(request_id: Any, result: Any) -> str:
    return _encode(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": result,
            "usIn": 1699999999000000,
            "usOut": 1699999999001000,
            "usDiff": 1000,
            "testnet": False,
        }
    ).decode()


def _error(request_id: Any, code: int, message: str, data: Any = None) -> str:
    return _encode(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {"code": code, "message": message, "data": data},
            "testnet": False,
        }
    ).decode()


def _channel_of(frame: str) -> str | None:
    try:
        decoded = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return None
    if isinstance(decoded, dict) and decoded.get("method") == "subscription":
        channel = decoded.get("params", {}).get("channel")
        return channel if isinstance(channel, str) else None
    return None


# --------------------------------------------------------------------------- server


class FakeClient:
    """One accepted connection, as the fake sees it."""

    def __init__(self, conn: WebSocketConnection) -> None:
        self.conn = conn
        self.channels: set[str] = set()
        self.heartbeat_interval: float | None = None
        self.tests_received = 0
        self.test_requests_sent = 0
        self.heartbeat_set = trio.Event()


class FakeDeribit(FakeServer[FakeClient]):
    """A Deribit JSON-RPC server for tests (see the module docstring).

    Start it with ``await nursery.start(fake.run)``; it serves until cancelled.
    ``url`` is the base URL (the adapter appends ``/ws/api/v2``).
    """

    path = "/ws/api/v2"

    def __init__(
        self,
        *,
        unknown_instruments: Iterable[str] = (),
        error_instruments: Iterable[str] = (),
        test_request_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.unknown_instruments = set(unknown_instruments)
        self.error_instruments = set(error_instruments)
        self.test_request_timeout = test_request_timeout
        # instrument -> (change_id, bids, asks, ms): sent as a snapshot after each book subscribe.
        self.books: dict[str, tuple[int, Levels, Levels, int]] = {}
        self.heartbeat_timeouts = 0  # clients dropped for not answering a test_request

    # ----------------------------------------------------------------- waiting

    async def wait_subscribed(self, channels: Iterable[str]) -> None:
        """Until the open connections have subscribed every one of ``channels``."""
        wanted = set(channels)
        await self._wait_for(lambda: wanted <= {c for cl in self.clients for c in cl.channels})

    async def wait_client_message(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Until a client has sent a JSON message for which ``predicate`` is true."""
        await self._wait_for(lambda: self._count_json_messages(predicate) >= 1)

    # ----------------------------------------------------------------- controls

    async def send(self, frame: str) -> int:
        """Send a notification to the clients subscribed to its channel (others: to all)."""
        channel = _channel_of(frame)
        if channel is None:
            return await self.broadcast(frame)
        sent = 0
        for client in list(self.clients):
            async with self.replying(client):  # never between a subscription and its snapshot
                if channel in client.channels:
                    sent += await self._send_to(client, frame)
        return sent

    # ----------------------------------------------------------------- serving

    def _new_client(self, conn: WebSocketConnection, request: WebSocketRequest) -> FakeClient:
        return FakeClient(conn)

    def _watchers(self, client: FakeClient) -> list[Watcher[FakeClient]]:
        return [self._heartbeat_loop]

    async def _receive_loop(self, client: FakeClient) -> None:
        while (text := await self._receive_text(client)) is not None:
            async with self.replying(client):  # the answer and the snapshots, no push between
                for reply in self._reply(client, text):
                    if not await self._send_to(client, reply):
                        return
            self._notify()

    def _reply(self, client: FakeClient, text: str) -> list[str]:
        try:
            request = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return [_error(None, -32700, "Parse error")]
        if not isinstance(request, dict):
            return [_error(None, -32600, "Invalid Request")]
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params") or {}
        if method == "public/test":
            client.tests_received += 1
            return [_response(request_id, {"version": "1.2.26"})]
        if method == "public/set_heartbeat":
            interval = params.get("interval")
            if not isinstance(interval, int | float) or interval < 10:
                return [
                    _error(
                        request_id,
                        -32602,
                        "Invalid params",
                        {"param": "interval", "reason": "must be >= 10"},
                    )
                ]
            client.heartbeat_interval = float(interval)
            client.heartbeat_set.set()
            return [_response(request_id, "ok")]
        if method in ("public/subscribe", "public/unsubscribe"):
            channels = params.get("channels")
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                return [
                    _error(
                        request_id,
                        -32602,
                        "Invalid params",
                        {"param": "channels", "reason": "value must be a list"},
                    )
                ]
            valid = [m for m in map(CHANNEL_RE.fullmatch, channels) if m is not None]
            if any(m.group(2) in self.error_instruments for m in valid):
                return [_error(request_id, 10028, "too_many_requests")]
            accepted = [m.group(0) for m in valid if m.group(2) not in self.unknown_instruments]
            if method == "public/unsubscribe":
                client.channels.difference_update(accepted)
                return [_response(request_id, accepted)]
            client.channels.update(accepted)
            replies = [_response(request_id, accepted)]
            for match in valid:
                if match.group(0) in accepted and match.group(1) == "book":
                    book = self.books.get(match.group(2))
                    if book is not None:
                        change_id, bids, asks, ms = book
                        replies.append(
                            book_snapshot_frame(
                                match.group(2), change_id, bids, asks, ms, interval=match.group(3)
                            )
                        )
            return replies
        return [_error(request_id, -32601, "Method not found")]

    async def _heartbeat_loop(self, client: FakeClient) -> None:
        await client.heartbeat_set.wait()
        while True:
            assert client.heartbeat_interval is not None
            await trio.sleep(client.heartbeat_interval)
            answered = client.tests_received
            client.test_requests_sent += 1
            if not await self._send_to(client, heartbeat_frame("test_request")):
                return
            with trio.move_on_after(self.test_request_timeout):
                await self._wait_for(partial(_answered_since, client, answered))
                continue
            self.heartbeat_timeouts += 1
            await abort(client.conn)
            return


def _answered_since(client: FakeClient, answered: int) -> bool:
    return client.tests_received > answered
