"""Bybit v5 public frames and protocol for the load generator (linear perpetuals).

Shapes follow :mod:`collector.exchanges.bybit` and its fake venue (``tests/fakes/bybit.py``):
``{"topic", "type", "ts", "data"}`` pushes with millisecond integer times. The
``orderbook.50`` topic starts with a 50-level snapshot right after the subscribe answer,
then deltas whose ``u`` is the previous ``u`` + 1; ``tickers`` starts with a full snapshot,
then deltas of the changed fields; trades are one per frame (``i`` a UUID, as on linear).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from collector.bench.frames import TIME_MS, IdSlot, Piece, book_side, decimal, levels

EXCHANGE: Final = "bybit"
CATEGORY: Final = "linear"
BOOK_DEPTH: Final = 50


def _uuid_head(rng: random.Random) -> bytes:
    """The first 26 characters of a UUID; the last 10 digits are the stream's id."""
    digits = b"%032x" % rng.getrandbits(128)
    return b"%s-%s-%s-%s-00" % (digits[:8], digits[8:12], digits[12:16], digits[16:20])


@dataclass(frozen=True)
class TradeStream:
    """``publicTrade.{symbol}``: one trade per frame (``seq`` +1, ``i`` a UUID)."""

    symbol: str
    mid: float

    @property
    def stream(self) -> str:
        return f"publicTrade.{self.symbol}"

    @property
    def data_type(self) -> str:
        return "trades"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        price = round(self.mid * (1 + rng.gauss(0, 0.0004)), 8)
        size = round(rng.lognormvariate(-3.0, 1.5), 4) or 0.001
        side = b"Buy" if rng.random() < 0.5 else b"Sell"
        tick = b"PlusTick" if rng.random() < 0.5 else b"MinusTick"
        pieces: list[Piece] = [
            b'{"topic":"publicTrade.%s","type":"snapshot","ts":' % self.symbol.encode(),
            TIME_MS,
            b',"data":[{"T":',
            TIME_MS,
            b',"s":"%s","S":"%s","v":%s,"p":%s,"L":"%s","i":"%s'
            % (
                self.symbol.encode(),
                side,
                decimal(size),
                decimal(price),
                tick,
                _uuid_head(rng),
            ),
            IdSlot(first_offset),
            b'","BT":false,"RPI":false,"seq":',
            IdSlot(first_offset),
            b"}]}",
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


def _book_frame(symbol: str, kind: bytes, bids: bytes, asks: bytes) -> tuple[bytes, bytes]:
    """The frame around its ``ts``, ``u``/``seq`` and ``cts`` (pieces between the slots)."""
    return (
        b'{"topic":"orderbook.%d.%s","type":"%s","ts":' % (BOOK_DEPTH, symbol.encode(), kind),
        b',"data":{"s":"%s","b":%s,"a":%s,"u":' % (symbol.encode(), bids, asks),
    )


@dataclass(frozen=True)
class BookStream:
    """``orderbook.50.{symbol}``: a snapshot first, then deltas with ``u`` +1 each."""

    symbol: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"orderbook.{BOOK_DEPTH}.{self.symbol}"

    @property
    def data_type(self) -> str:
        return "orderbook"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        n_bids = min(BOOK_DEPTH, int(rng.lognormvariate(1.0, 0.8)))
        n_asks = min(BOOK_DEPTH, int(rng.lognormvariate(1.0, 0.8)))
        bids = book_side(rng, self.mid, self.tick, n_bids, bids=True, deletes=0.3)
        asks = book_side(rng, self.mid, self.tick, n_asks, bids=False, deletes=0.3)
        head, body = _book_frame(self.symbol, b"delta", levels(bids), levels(asks))
        pieces: list[Piece] = [
            head,
            TIME_MS,
            body,
            IdSlot(first_offset),
            b',"seq":',
            IdSlot(first_offset),
            b'},"cts":',
            TIME_MS,
            b"}",
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        bids = book_side(rng, self.mid, self.tick, BOOK_DEPTH, bids=True)
        asks = book_side(rng, self.mid, self.tick, BOOK_DEPTH, bids=False)
        head, body = _book_frame(self.symbol, b"snapshot", levels(bids), levels(asks))
        ms = time_us // 1000
        u = next_id - 1
        return head + b"%d" % ms + body + b'%d,"seq":%d},"cts":%d}' % (u, u, ms - 2)


@dataclass(frozen=True)
class TickerStream:
    """``tickers.{symbol}`` (linear): a full snapshot first, then deltas of changed fields."""

    symbol: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"tickers.{self.symbol}"

    @property
    def data_type(self) -> str:
        return "ticker"

    def _quote(self, rng: random.Random) -> bytes:
        bid = round(self.mid * (1 + rng.gauss(0, 0.0003)), 8)
        ask = round(bid + self.tick * rng.randint(1, 3), 8)
        return b'"bid1Price":%s,"bid1Size":%s,"ask1Price":%s,"ask1Size":%s' % (
            decimal(bid),
            decimal(round(rng.lognormvariate(1.0, 1.5), 3)),
            decimal(ask),
            decimal(round(rng.lognormvariate(1.0, 1.5), 3)),
        )

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        extra = b""
        if rng.random() < 0.3:  # a trade moved the last price and the 24 h figures
            extra = b',"tickDirection":"ZeroPlusTick","lastPrice":%s,"volume24h":%s' % (
                decimal(round(self.mid * (1 + rng.gauss(0, 0.0003)), 8)),
                decimal(round(1e6 / self.mid * rng.uniform(0.5, 2.0), 3)),
            )
        pieces: list[Piece] = [
            b'{"topic":"tickers.%s","type":"delta","data":{"symbol":"%s",%s%s},"cs":'
            % (self.symbol.encode(), self.symbol.encode(), self._quote(rng), extra),
            IdSlot(first_offset),
            b',"ts":',
            TIME_MS,
            b"}",
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        last = decimal(round(self.mid, 8))
        return (
            b'{"topic":"tickers.%s","type":"snapshot","data":{"symbol":"%s",'
            b'"tickDirection":"PlusTick","price24hPcnt":"0.017103","lastPrice":%s,'
            b'"prevPrice24h":%s,"highPrice24h":%s,"lowPrice24h":%s,"prevPrice1h":%s,'
            b'"markPrice":%s,"indexPrice":%s,"openInterest":"373504.107",'
            b'"openInterestValue":"6374231.00","turnover24h":"2352.12","volume24h":%s,'
            b'"nextFundingTime":"1673280000000","fundingRate":"0.0001",%s},'
            b'"cs":%d,"ts":%d}'
        ) % (
            self.symbol.encode(),
            self.symbol.encode(),
            last,
            last,
            last,
            last,
            last,
            last,
            last,
            decimal(round(1e6 / self.mid, 3)),
            self._quote(rng),
            next_id - 1,
            time_us // 1000,
        )


# --------------------------------------------------------------------------- protocol


class _Request(msgspec.Struct):
    op: str
    args: list[str] = []
    req_id: str | None = None


_REQUEST: Final = msgspec.json.Decoder(_Request)
_ENCODE: Final = msgspec.json.Encoder().encode
_CONN_ID: Final = "cfcb4ocsvfriu23r3er0-1b"


class BybitProtocol:
    """The venue's answers (linear): one answer per request; ``op: ping`` gets a pong."""

    exchange: Final = EXCHANGE
    category: Final = CATEGORY
    ws_path: Final = f"/v5/public/{CATEGORY}"
    needs_rest: Final = False

    def base_url(self, root: str) -> str:
        """The market's ``base_url``: the adapter uses a URL with a path as it is."""
        return root + self.ws_path

    def _answer(self, op: str, req_id: str | None, ok: bool, msg: str) -> bytes:
        body: dict[str, Any] = {"success": ok, "ret_msg": msg, "conn_id": _CONN_ID}
        body["req_id"] = req_id if req_id is not None else ""
        body["op"] = op
        return _ENCODE(body)

    def on_client_text(self, payload: bytes) -> tuple[list[bytes], list[str]]:
        try:
            request = _REQUEST.decode(payload)
        except msgspec.DecodeError:
            error = {
                "success": False,
                "ret_msg": "Failed to decode incoming data:readObjectStart",
                "conn_id": _CONN_ID,
            }
            return [_ENCODE(error)], []
        if request.op == "ping":
            return [self._answer("ping", request.req_id, True, "pong")], []
        if request.op == "subscribe":
            return [self._answer("subscribe", request.req_id, True, "")], list(request.args)
        if request.op == "unsubscribe":
            return [self._answer("unsubscribe", request.req_id, True, "")], []
        return [self._answer(request.op, request.req_id, False, "error:invalid op")], []

    def subscribe_texts(self, streams: list[str]) -> list[bytes]:
        return [_ENCODE({"req_id": "1", "op": "subscribe", "args": streams})]

    def snapshot_body(self, path: str, query: dict[str, str], last_update_id: int) -> bytes:
        """Bybit books sync over WebSocket: no REST snapshot."""
        return b'{"retCode":10001,"retMsg":"params error","result":{}}'
