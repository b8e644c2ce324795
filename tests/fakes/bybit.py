"""A fake Bybit v5 public WebSocket server on 127.0.0.1, and builders of realistic frames.

:class:`FakeBybit` speaks the part of the v5 public protocol the collector uses:

- it accepts ``/v5/public/spot``, ``/v5/public/linear``, ``/v5/public/inverse`` and
  ``/v5/public/option`` (the category of the client) and refuses other paths with HTTP
  404; ``allLiquidation.*`` is refused on spot and option (``handler not found``), as the
  venue has no liquidations there, and so is a book depth the category lacks (options
  have 25 and 100 only, the others 1, 50, 200 and 1000); option trades are subscribed by
  base coin (``publicTrade.BTC``), so ``publicTrade.<an option>`` is refused;
- ``{"req_id":"N","op":"subscribe","args":[...]}`` -> one answer per request: success
  (spot ``ret_msg`` ``"subscribe"``, linear ``""``, like the recordings), or
  ``"success": false`` with ``error:handler not found,topic:X`` for the first unknown topic
  (or a symbol in ``reject``; then nothing of the request is subscribed),
  ``error:already subscribed,topic:X``, or ``args size >10`` on spot. After subscribing a
  topic it sends the frame in :attr:`FakeBybit.book_snapshots` for it (an ``orderbook.*``
  or ``tickers.*`` snapshot, as the venue does);
- ``{"req_id":"..","op":"ping"}`` -> the category's pong;
- the venue's keepalive rule: a client that has not sent ``op: ping`` for
  ``ping_timeout`` seconds (data does not count) is disconnected.

Test controls: :meth:`~FakeBybit.send` (to the clients subscribed to the frame's topic),
:meth:`~FakeBybit.broadcast`, :meth:`~FakeBybit.drop`, and the waits. Every client
message is recorded in :attr:`FakeBybit.client_messages`. A request is answered (and its
snapshots sent) under the client's :meth:`~FakeBybit.replying` lock, which ``send`` takes
too: a push never reaches a client between its subscription and the snapshot, as on the
venue. All scheduling uses Trio's clock; callers own timeouts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from tests.fakes.base import FakeServer, Watcher, abort, wait_idle

PATHS: Final = {
    "/v5/public/spot": "spot",
    "/v5/public/linear": "linear",
    "/v5/public/inverse": "inverse",
    "/v5/public/option": "option",
}
TOPIC_RE: Final = re.compile(
    r"(?P<kind>publicTrade|tickers|allLiquidation|orderbook\.(?P<depth>1|25|50|100|200|1000))"
    r"\.(?P<symbol>[A-Z0-9]{2,30}(-[\w.]+)*)"
)
OPTION_DEPTHS: Final = ("25", "100")
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


def option_trade_frame(
    coin: str,
    trades: Sequence[tuple[str, str, PriceLike, PriceLike, str, int]],
    ts_ms: int,
) -> str:
    """A ``publicTrade.{coin}`` push of the option endpoint: ``trades`` are (symbol, trade
    id, price, size, taker side, time ms), with the option-only fields (mark price, index
    price, mark IV, IV) as the venue's docs list them; option pushes carry a message ``id``."""
    data = [
        {"T": t, "s": symbol, "S": side, "v": _num(size), "p": _num(price), "i": trade_id,
         "BT": False, "mP": "412.0", "iP": "23479.75", "mIv": "0.8283", "iv": "0.79"}
        for symbol, trade_id, price, size, side, t in trades
    ]  # fmt: skip
    return _frame(
        {"id": f"publicTrade.{coin}-{ts_ms}", "topic": f"publicTrade.{coin}",
         "type": "snapshot", "ts": ts_ms, "data": data}
    )  # fmt: skip


def option_ticker_frame(symbol: str, fields: dict[str, str], ts_ms: int) -> str:
    """An option ``tickers`` push, shaped as the venue's docs example: a message ``id``, no
    ``cs``, a snapshot (the venue documents option tickers as snapshots only)."""
    return _frame(
        {"id": f"tickers.{symbol}-{ts_ms}", "topic": f"tickers.{symbol}", "ts": ts_ms,
         "data": {"symbol": symbol, **fields}, "type": "snapshot"}
    )  # fmt: skip


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


def liquidation_frame(symbol: str, items: Sequence[tuple[int, str, str, str]]) -> str:
    """An ``allLiquidation`` push: ``items`` are (T ms, S = the liquidated position's side
    ``Buy``/``Sell``, v, p) in the wire's field order."""
    data = [
        {"T": t, "s": symbol, "S": side, "v": size, "p": price} for t, side, size, price in items
    ]
    ts = max((t for t, *_ in items), default=0) + 250
    return _frame({"topic": f"allLiquidation.{symbol}", "type": "snapshot", "ts": ts, "data": data})


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


class FakeBybit(FakeServer[FakeBybitClient]):
    """A Bybit v5 public server for tests (see the module docstring).

    Start it with ``await nursery.start(fake.run)``; it serves until cancelled.
    """

    def __init__(self, *, reject: Iterable[str] = (), ping_timeout: float = 30.0) -> None:
        super().__init__()
        self.reject = set(reject)
        self.ping_timeout = ping_timeout
        self.book_snapshots: dict[str, str] = {}
        self.paths: list[str] = []
        self.pings = 0
        self.ping_drops = 0

    # ----------------------------------------------------------------- waiting

    async def wait_subscribed(self, topics: Iterable[str], category: str | None = None) -> None:
        """Until open connections (on ``category``'s endpoint, if given) hold every topic
        of ``topics``."""
        wanted = set(topics)
        await self._wait_for(
            lambda: (
                wanted
                <= {
                    t
                    for c in self.clients
                    if category is None or c.category == category
                    for t in c.topics
                }
            )
        )

    # ----------------------------------------------------------------- controls

    async def send(self, frame: str, category: str | None = None) -> int:
        """Send a push to every client subscribed to its topic (others: to every client),
        only on ``category``'s endpoint if given."""
        topic = _topic_of(frame)
        sent = 0
        for client in list(self.clients):
            if category is not None and client.category != category:
                continue
            async with self.replying(client):  # never between a subscription and its snapshot
                if topic is None or topic in client.topics:
                    sent += await self._send_to(client, frame)
        return sent

    # ----------------------------------------------------------------- serving

    def _accepts(self, path: str) -> bool:
        return urlsplit(path).path in PATHS

    def _new_client(self, conn: WebSocketConnection, request: WebSocketRequest) -> FakeBybitClient:
        self.paths.append(request.path)
        category = PATHS[urlsplit(request.path).path]
        return FakeBybitClient(conn, category, f"d9avt8shteepr00gfc1g-{self.connections}")

    def _watchers(self, client: FakeBybitClient) -> list[Watcher[FakeBybitClient]]:
        return [self._ping_watch]

    async def _ping_watch(self, client: FakeBybitClient) -> None:
        await wait_idle(lambda: client.last_ping, self.ping_timeout)
        self.ping_drops += 1
        self._notify()
        await abort(client.conn)

    async def _receive_loop(self, client: FakeBybitClient) -> None:
        while (text := await self._receive_text(client)) is not None:
            async with self.replying(client):  # the answer and the snapshots, no push between
                for reply in self._replies(client, text):
                    if not await self._send_to(client, reply):
                        return
            self._notify()

    @staticmethod
    def _serves(category: str, match: re.Match[str]) -> bool:
        """Whether the category's endpoint has the topic (liquidations, book depths, option
        trades by base coin)."""
        kind, depth, symbol = match.group("kind"), match.group("depth"), match.group("symbol")
        if kind == "allLiquidation":
            return category in ("linear", "inverse")
        if depth is not None:
            return (depth in OPTION_DEPTHS) == (category == "option")
        if kind == "publicTrade" and category == "option":
            return "-" not in symbol
        return True

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
            if (
                match is None
                or match.group("symbol") in self.reject
                or not self._serves(client.category, match)
            ):
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
