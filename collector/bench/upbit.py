"""Upbit frames and protocol for the load generator (KRW markets, DEFAULT format).

Shapes follow :mod:`collector.exchanges.upbit` and its fake venue (``tests/fakes/upbit.py``):
every server message is UTF-8 JSON in a **binary** frame, numbers are JSON numbers and
times milliseconds. Upbit sends no subscription acknowledgement: data starts right after
the request, each type with a ``SNAPSHOT`` message, then ``REALTIME`` ones. Books are whole
top-15 books every time (no deltas, no sequence); trades carry a ``sequential_id``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from collector.bench.frames import TIME_MS, IdSlot, Piece, book_side

EXCHANGE: Final = "upbit"
WS_PATH: Final = "/websocket/v1"
BOOK_UNITS: Final = 15  # the venue's default when a code carries no ".N"


def _number(value: float) -> bytes:
    """A JSON number as Upbit writes it (``95123000.0``, ``0.00213``)."""
    return b"%r" % value if isinstance(value, float) else b"%d" % value


@dataclass(frozen=True)
class TradeStream:
    """``trade``: one trade per message; ``sequential_id`` unique per trade."""

    code: str
    mid: float
    tick: float
    binary: bool = True

    @property
    def stream(self) -> str:
        return f"trade:{self.code}"

    @property
    def data_type(self) -> str:
        return "trades"

    def _body(self, rng: random.Random, stream_type: bytes) -> tuple[bytes, bytes]:
        price = round(self.mid + self.tick * round(rng.gauss(0, 3)), 8)
        volume = round(rng.lognormvariate(-4.0, 1.5), 8) or 0.0001
        side = b"BID" if rng.random() < 0.5 else b"ASK"
        head = (
            b'{"type":"trade","code":"%s","trade_price":%s,"trade_volume":%s,"ask_bid":"%s",'
            b'"prev_closing_price":%s,"change":"RISE","change_price":%s,"trade_date":"2026-08-09",'
            b'"trade_time":"21:05:48","trade_timestamp":'
        ) % (
            self.code.encode(),
            _number(price),
            _number(volume),
            side,
            _number(round(self.mid * 0.99, 8)),
            _number(round(self.mid * 0.01, 8)),
        )
        tail = (
            b',"best_ask_price":%s,"best_ask_size":%s,"best_bid_price":%s,"best_bid_size":%s,'
            b'"stream_type":"%s","sequential_id":'
        ) % (
            _number(price + self.tick),
            _number(round(rng.lognormvariate(-1.0, 1.0), 8)),
            _number(price),
            _number(round(rng.lognormvariate(-1.0, 1.0), 8)),
            stream_type,
        )
        return head, tail

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        head, tail = self._body(rng, b"REALTIME")
        pieces: list[Piece] = [
            head,
            TIME_MS,
            tail,
            IdSlot(first_offset),
            b',"timestamp":',
            TIME_MS,
            b"}",
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        """The last trade before subscribing, as a ``SNAPSHOT`` (a new trade id here)."""
        head, tail = self._body(rng, b"SNAPSHOT")
        ms = time_us // 1000
        return head + b"%d" % (ms - 400) + tail + b'%d,"timestamp":%d}' % (next_id - 1, ms)


@dataclass(frozen=True)
class OrderbookStream:
    """``orderbook``: the whole top-15 book in every message, bids and asks paired."""

    code: str
    mid: float
    tick: float
    binary: bool = True

    @property
    def stream(self) -> str:
        return f"orderbook:{self.code}"

    @property
    def data_type(self) -> str:
        return "orderbook"

    def _body(self, rng: random.Random, stream_type: bytes) -> tuple[bytes, bytes]:
        mid = self.mid + self.tick * round(rng.gauss(0, 3))
        bids = book_side(rng, mid, self.tick, BOOK_UNITS, bids=True)
        asks = book_side(rng, mid, self.tick, BOOK_UNITS, bids=False)
        units = b",".join(
            b'{"ask_price":%s,"bid_price":%s,"ask_size":%s,"bid_size":%s}'
            % (_number(a[0]), _number(b[0]), _number(a[1] or 0.0001), _number(b[1] or 0.0001))
            for a, b in zip(asks, bids, strict=True)
        )
        head = b'{"type":"orderbook","code":"%s","timestamp":' % self.code.encode()
        tail = (
            b',"total_ask_size":%s,"total_bid_size":%s,"orderbook_units":[%s],'
            b'"stream_type":"%s","level":0}'
        ) % (
            _number(round(sum(a[1] for a in asks), 8)),
            _number(round(sum(b[1] for b in bids), 8)),
            units,
            stream_type,
        )
        return head, tail

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        head, tail = self._body(rng, b"REALTIME")
        return [head, TIME_MS, tail], 0

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        head, tail = self._body(rng, b"SNAPSHOT")
        return head + b"%d" % (time_us // 1000) + tail


@dataclass(frozen=True)
class TickerStream:
    """``ticker``: last price and 24 h figures (Upbit's ticker has no best bid/ask)."""

    code: str
    mid: float
    tick: float
    binary: bool = True

    @property
    def stream(self) -> str:
        return f"ticker:{self.code}"

    @property
    def data_type(self) -> str:
        return "ticker"

    def _body(self, rng: random.Random, stream_type: bytes) -> tuple[bytes, bytes]:
        price = round(self.mid + self.tick * round(rng.gauss(0, 3)), 8)
        volume = round(2e9 / self.mid * rng.uniform(0.5, 2.0), 8)
        head = (
            b'{"type":"ticker","code":"%s","opening_price":%s,"high_price":%s,"low_price":%s,'
            b'"trade_price":%s,"prev_closing_price":%s,"change":"RISE","trade_volume":%s,'
            b'"acc_trade_volume":%s,"acc_trade_volume_24h":%s,"acc_trade_price_24h":%s,'
            b'"ask_bid":"BID","market_state":"ACTIVE","trade_timestamp":'
        ) % (
            self.code.encode(),
            _number(round(self.mid * 0.99, 8)),
            _number(round(self.mid * 1.02, 8)),
            _number(round(self.mid * 0.98, 8)),
            _number(price),
            _number(round(self.mid * 0.99, 8)),
            _number(round(rng.lognormvariate(-4.0, 1.5), 8)),
            _number(round(volume / 3, 8)),
            _number(volume),
            _number(round(volume * self.mid, 1)),
        )
        return head, b',"stream_type":"%s","timestamp":' % stream_type

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        head, tail = self._body(rng, b"REALTIME")
        return [head, TIME_MS, tail, TIME_MS, b"}"], 0

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        head, tail = self._body(rng, b"SNAPSHOT")
        ms = time_us // 1000
        return head + b"%d" % (ms - 5) + tail + b"%d}" % ms


# --------------------------------------------------------------------------- protocol

_ENCODE: Final = msgspec.json.Encoder().encode
_TYPES: Final = {"trade", "orderbook", "ticker"}


def _error(name: str, message: str) -> bytes:
    return _ENCODE({"error": {"name": name, "message": message}})


class UpbitProtocol:
    """The venue's answers: none to a data request (data is the answer), the listing to
    ``LIST_SUBSCRIPTIONS``, ``{"status":"UP"}`` to the text ``PING``; all in binary frames."""

    exchange: Final = EXCHANGE
    ws_path: Final = WS_PATH
    needs_rest: Final = False
    binary: Final = True

    def __init__(self) -> None:
        self._subs: dict[str, list[str]] = {}

    def base_url(self, root: str) -> str:
        return root + WS_PATH

    def on_client_text(self, payload: bytes) -> tuple[list[bytes], list[str]]:
        if payload == b"PING":
            return [b'{"status":"UP"}'], []
        try:
            request: Any = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return [_error("WRONG_FORMAT", "request is not JSON")], []
        if not isinstance(request, list) or not all(isinstance(o, dict) for o in request):
            return [_error("WRONG_FORMAT", "request is not an array of objects")], []
        ticket = next((o["ticket"] for o in request if "ticket" in o), None)
        if not ticket:
            return [_error("NO_TICKET", "no ticket")], []
        if any(o.get("method") == "LIST_SUBSCRIPTIONS" for o in request):
            result = [{"type": t, "codes": codes} for t, codes in sorted(self._subs.items())]
            return [
                _ENCODE({"method": "LIST_SUBSCRIPTIONS", "result": result, "ticket": ticket})
            ], []
        subs: dict[str, list[str]] = {}
        for obj in request:
            if "type" in obj:
                if obj["type"] not in _TYPES or not obj.get("codes"):
                    return [_error("INVALID_PARAM", f"bad type object {obj!r}")], []
                subs[obj["type"]] = [str(c).partition(".")[0] for c in obj["codes"]]
        if not subs:
            return [_error("NO_TYPE", "no type")], []
        self._subs = subs  # a new request replaces the connection's subscriptions
        return [], [f"{t}:{code}" for t, codes in subs.items() for code in codes]

    def subscribe_texts(self, streams: list[str]) -> list[bytes]:
        by_type: dict[str, list[str]] = {}
        for name in streams:
            type_, _, code = name.partition(":")
            by_type.setdefault(type_, []).append(code)
        request: list[dict[str, Any]] = [{"ticket": "bench"}]
        request += [{"type": t, "codes": codes} for t, codes in by_type.items()]
        return [_ENCODE([*request, {"format": "DEFAULT"}])]

    def snapshot_body(self, path: str, query: dict[str, str], last_update_id: int) -> bytes:
        """Upbit books come over the WebSocket: no REST snapshot."""
        return b'{"error":{"name":"404","message":"Not Found"}}'
