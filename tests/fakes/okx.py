"""A fake OKX v5 public WebSocket server on 127.0.0.1, and builders of realistic frames.

:class:`FakeOkx` speaks the part of the v5 public protocol the collector uses:

- it accepts ``/ws/v5/public`` and refuses other paths with HTTP 404;
- ``{"id":"N","op":"subscribe","args":[{"channel":..,"instId":..}, ...]}`` -> one ack per
  arg ``{"id":"N","event":"subscribe","arg":{...},"connId":".."}`` (``liquidation-orders``
  args name an ``instType``, ``opt-summary`` args an ``instFamily``, as on the venue), or for
  an unknown channel / malformed instId / an instId in ``reject``, the venue's per-arg error
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
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from tests.fakes.base import FakeServer, Watcher, abort, send_quietly, wait_idle

PATH: Final = "/ws/v5/public"
CHANNELS: Final = frozenset(
    {
        "trades",
        "books",
        "books5",
        "tickers",
        "bbo-tbt",
        "mark-price",
        "funding-rate",
        "index-tickers",
        "open-interest",
        "liquidation-orders",
        "opt-summary",
    }
)
INST_RE: Final = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}(-SWAP|-\d{6}(-\d+(\.\d+)?-[CP])?)?")
INST_TYPES: Final = frozenset({"SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"})
FAMILY_RE: Final = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}")
# The field that names an arg, by channel (the others: instId).
ARG_FIELD: Final = {"liquidation-orders": "instType", "opt-summary": "instFamily"}

PriceLike = float | str
Levels = Sequence[tuple[PriceLike, PriceLike]]

_encode: Final = msgspec.json.Encoder().encode


def _num(value: PriceLike) -> str:
    """The venue's decimal-string spelling (no trailing zeros): ``"42219.9"``."""
    return value if isinstance(value, str) else f"{value:.8f}".rstrip("0").rstrip(".")


def _book_levels(levels: Levels) -> list[list[str]]:
    return [[_num(p), _num(s), "0", "0" if _num(s) == "0" else "1"] for p, s in levels]


def _frame(obj: Any) -> str:
    return _encode(obj).decode()


def error_msg(channel: str, inst_id: str, field: str = "instId") -> str:
    return (
        f"Wrong URL or channel:{channel},{field}:{inst_id} doesn't exist. Please use the "
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
    checksum: int = 0,
) -> str:
    """A ``books`` push (``action`` = ``snapshot`` or ``update``); checksum 0 as since
    2026-06-23 unless given."""
    data = {
        "asks": _book_levels(asks),
        "bids": _book_levels(bids),
        "ts": str(ts_ms),
        "checksum": checksum,
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


def mark_price_frame(inst_id: str, mark: PriceLike, ts_ms: int, *, inst_type: str = "SWAP") -> str:
    """A ``mark-price`` push."""
    data = {"instType": inst_type, "instId": inst_id, "markPx": _num(mark), "ts": str(ts_ms)}
    return _frame({"arg": {"channel": "mark-price", "instId": inst_id}, "data": [data]})


def funding_rate_frame(
    inst_id: str,
    rate: PriceLike,
    funding_time_ms: int,
    next_funding_time_ms: int,
    ts_ms: int,
    *,
    next_rate: str = "",
) -> str:
    """A ``funding-rate`` push (``nextFundingRate`` is ``""`` since OKX dropped it)."""
    data = {
        "formulaType": "withRate",
        "fundingRate": _num(rate),
        "fundingTime": str(funding_time_ms),
        "impactValue": "20000",
        "instId": inst_id,
        "instType": "SWAP",
        "interestRate": "0.0001",
        "maxFundingRate": "0.00375",
        "method": "current_period",
        "minFundingRate": "-0.00375",
        "nextFundingRate": next_rate,
        "nextFundingTime": str(next_funding_time_ms),
        "premium": "0.0000952",
        "settFundingRate": "0.0000811",
        "settState": "settled",
        "ts": str(ts_ms),
    }
    return _frame({"arg": {"channel": "funding-rate", "instId": inst_id}, "data": [data]})


def index_ticker_frame(index: str, price: PriceLike, ts_ms: int) -> str:
    """An ``index-tickers`` push (``instId`` is the index, e.g. ``BTC-USDT``)."""
    px = _num(price)
    data = {
        "instId": index,
        "idxPx": px,
        "open24h": px,
        "high24h": px,
        "low24h": px,
        "sodUtc0": px,
        "sodUtc8": px,
        "ts": str(ts_ms),
    }
    return _frame({"arg": {"channel": "index-tickers", "instId": index}, "data": [data]})


def open_interest_frame(
    inst_id: str,
    oi: PriceLike,
    oi_ccy: PriceLike,
    oi_usd: PriceLike,
    ts_ms: int,
    *,
    inst_type: str = "SWAP",
) -> str:
    """An ``open-interest`` push (``oi`` in contracts, ``oiCcy`` in coin, ``oiUsd``)."""
    data = {
        "instId": inst_id,
        "instType": inst_type,
        "oi": _num(oi),
        "oiCcy": _num(oi_ccy),
        "oiUsd": _num(oi_usd),
        "ts": str(ts_ms),
    }
    return _frame({"arg": {"channel": "open-interest", "instId": inst_id}, "data": [data]})


def liquidation_frame(
    inst_type: str, orders: Sequence[tuple[str, Sequence[dict[str, str]]]]
) -> str:
    """A ``liquidation-orders`` push: ``orders`` = (instId, details) per instrument; each
    detail has ``side``, ``posSide``, ``bkPx``, ``sz``, ``bkLoss``, ``ts`` (``ccy`` added)."""
    data = [
        {
            "details": [{"ccy": "", **d} for d in details],
            "instFamily": "-".join(inst_id.split("-")[:2]),
            "instId": inst_id,
            "instType": inst_type,
            "uly": "-".join(inst_id.split("-")[:2]),
        }
        for inst_id, details in orders
    ]
    return _frame({"arg": {"channel": "liquidation-orders", "instType": inst_type}, "data": data})


def opt_summary_frame(family: str, options: Sequence[dict[str, str]], ts_ms: int) -> str:
    """An ``opt-summary`` push: one item per option of the family (``options`` gives each
    item's ``instId`` and any values to set; the rest are fixed)."""
    base = {
        "askVol": "0.44",
        "bidVol": "0.43",
        "delta": "0.53",
        "deltaBS": "0.71",
        "fwdPx": "112782.12",
        "gamma": "0.089",
        "gammaBS": "0.0000106",
        "instType": "OPTION",
        "lever": "5.67",
        "markVol": "0.4336",
        "realVol": "0",
        "theta": "-0.0003",
        "thetaBS": "-42.78",
        "uly": family,
        "vega": "0.0023",
        "vegaBS": "255.23",
        "volLv": "0.434",
    }
    data = [{**base, **option, "ts": str(ts_ms)} for option in options]
    return _frame({"arg": {"channel": "opt-summary", "instFamily": family}, "data": data})


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
    channel = str(arg.get("channel"))
    return (channel, str(arg.get(ARG_FIELD.get(channel, "instId"))))


def _valid(field: str, value: str) -> bool:
    """Whether the venue knows an arg's ``instId`` / ``instType`` / ``instFamily`` form."""
    if field == "instType":
        return value in INST_TYPES
    pattern = FAMILY_RE if field == "instFamily" else INST_RE
    return pattern.fullmatch(value) is not None


# --------------------------------------------------------------------------- server


class FakeOkxClient:
    def __init__(self, conn: WebSocketConnection, conn_id: str) -> None:
        self.conn = conn
        self.conn_id = conn_id
        self.args: set[tuple[str, str]] = set()
        self.last_activity = trio.current_time()


class FakeOkx(FakeServer[FakeOkxClient]):
    """An OKX v5 public server for tests (see the module docstring).

    Start it with ``await nursery.start(fake.run)``; it serves until cancelled.
    """

    path = PATH

    def __init__(self, *, reject: Iterable[str] = (), idle_timeout: float = 30.0) -> None:
        super().__init__()
        self.reject = set(reject)
        self.idle_timeout = idle_timeout
        self.book_snapshots: dict[str, str] = {}
        self.pings = 0
        self.idle_drops = 0

    # ----------------------------------------------------------------- waiting

    async def wait_subscribed(self, args: Iterable[tuple[str, str]]) -> None:
        """Until open connections hold every ``(channel, instId)`` of ``args``."""
        wanted = set(args)
        await self._wait_for(lambda: wanted <= {a for c in self.clients for a in c.args})

    # ----------------------------------------------------------------- controls

    async def send(self, frame: str) -> int:
        """Send a push to every client subscribed to its arg (others: to every client)."""
        arg = _arg_of(frame)
        sent = 0
        for client in list(self.clients):
            if arg is None or arg in client.args:
                sent += await self._send_to(client, frame)
        return sent

    # ----------------------------------------------------------------- serving

    async def _send_to(self, client: FakeOkxClient, frame: str | bytes) -> int:
        if not await send_quietly(client.conn, frame):
            return 0
        client.last_activity = trio.current_time()
        return 1

    def _new_client(self, conn: WebSocketConnection, request: WebSocketRequest) -> FakeOkxClient:
        return FakeOkxClient(conn, f"{self.connections:08x}")

    def _watchers(self, client: FakeOkxClient) -> list[Watcher[FakeOkxClient]]:
        return [self._idle_watch]

    async def _idle_watch(self, client: FakeOkxClient) -> None:
        await wait_idle(lambda: client.last_activity, self.idle_timeout)
        self.idle_drops += 1
        self._notify()
        await abort(client.conn)

    async def _receive_loop(self, client: FakeOkxClient) -> None:
        while (text := await self._receive_text(client)) is not None:
            client.last_activity = trio.current_time()
            if text == "ping":
                self.pings += 1
                replies = ["pong"]
            else:
                replies = self._replies(client, text)
            for reply in replies:
                if not await self._send_to(client, reply):
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
            channel = str(arg.get("channel"))
            field = ARG_FIELD.get(channel, "instId")
            inst_id = str(arg.get(field))
            head: dict[str, Any] = {} if request_id is None else {"id": request_id}
            if channel not in CHANNELS or not _valid(field, inst_id) or inst_id in self.reject:
                replies.append(
                    _frame(
                        {
                            **head,
                            "event": "error",
                            "code": "60018",
                            "msg": error_msg(channel, inst_id, field),
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
                        "arg": {"channel": channel, field: inst_id},
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
