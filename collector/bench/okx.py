"""OKX v5 public frames and protocol for the load generator (spot instruments).

Shapes follow :mod:`collector.exchanges.okx` and its fake venue (``tests/fakes/okx.py``):
``{"arg": {"channel", "instId"}, "data": [...]}`` pushes, millisecond ``ts`` strings,
four-item book levels. The ``books`` channel starts with a 400-level snapshot sent right
after the subscribe answer (``prevSeqId`` -1), then updates whose ``prevSeqId`` is the
previous ``seqId``; trades are one aggregated trade per frame, fill ids consecutive.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from collector.bench.frames import TIME_MS, IdSlot, Piece, book_side, decimal

EXCHANGE: Final = "okx"
WS_PATH: Final = "/ws/v5/public"
SNAPSHOT_DEPTH: Final = 400


def inst_id(symbol: str) -> str:
    """``BTCUSDT`` -> ``BTC-USDT`` (the bench's symbols all end in USDT)."""
    return f"{symbol.removesuffix('USDT')}-USDT"


def _push(channel: str, inst: str, action: str | None = None) -> bytes:
    head = b'{"arg":{"channel":"%s","instId":"%s"}' % (channel.encode(), inst.encode())
    if action is not None:
        head += b',"action":"%s"' % action.encode()
    return head + b',"data":[{'


def _levels(rng: random.Random, pairs: Sequence[tuple[float, float]]) -> bytes:
    """``[["price","size","0","orders"],...]``."""
    return (
        b"["
        + b",".join(
            b'[%s,%s,"0","%d"]' % (decimal(p), decimal(s), 0 if s == 0 else rng.randint(1, 30))
            for p, s in pairs
        )
        + b"]"
    )


@dataclass(frozen=True)
class TradeStream:
    """``trades``: one aggregated trade per frame; ``tradeId`` is its last fill, ids +count."""

    inst: str
    mid: float

    @property
    def stream(self) -> str:
        return f"trades:{self.inst}"

    @property
    def data_type(self) -> str:
        return "trades"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        fills = 1 if rng.random() < 0.7 else rng.randint(2, 6)
        price = round(self.mid * (1 + rng.gauss(0, 0.0004)), 8)
        size = round(rng.lognormvariate(-4.0, 1.5), 6) or 0.000001
        side = b"buy" if rng.random() < 0.5 else b"sell"
        pieces: list[Piece] = [
            _push("trades", self.inst) + b'"instId":"%s","tradeId":"' % self.inst.encode(),
            IdSlot(first_offset + fills - 1),
            b'","px":%s,"sz":%s,"side":"%s","ts":"' % (decimal(price), decimal(size), side),
            TIME_MS,
            b'","count":"%d","source":"0"}]}' % fills,
        ]
        return pieces, fills

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


@dataclass(frozen=True)
class BookStream:
    """``books``: a 400-level snapshot first, then updates chained by ``prevSeqId``."""

    inst: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"books:{self.inst}"

    @property
    def data_type(self) -> str:
        return "orderbook"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        updates = rng.randint(1, 40)
        n_bids = min(60, int(rng.lognormvariate(1.6, 0.8)))
        n_asks = min(60, int(rng.lognormvariate(1.6, 0.8)))
        bids = book_side(rng, self.mid, self.tick, n_bids, bids=True, deletes=0.3)
        asks = book_side(rng, self.mid, self.tick, n_asks, bids=False, deletes=0.3)
        pieces: list[Piece] = [
            _push("books", self.inst, "update")
            + b'"asks":%s,"bids":%s,"ts":"' % (_levels(rng, asks), _levels(rng, bids)),
            TIME_MS,
            b'","checksum":0,"prevSeqId":',
            IdSlot(first_offset - 1),
            b',"seqId":',
            IdSlot(first_offset + updates - 1),
            b"}]}",
        ]
        return pieces, updates

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        bids = book_side(rng, self.mid, self.tick, SNAPSHOT_DEPTH, bids=True)
        asks = book_side(rng, self.mid, self.tick, SNAPSHOT_DEPTH, bids=False)
        return _push("books", self.inst, "snapshot") + (
            b'"asks":%s,"bids":%s,"ts":"%d","checksum":0,"prevSeqId":-1,"seqId":%d}]}'
            % (_levels(rng, asks), _levels(rng, bids), time_us // 1000, next_id - 1)
        )


@dataclass(frozen=True)
class TickerStream:
    """``tickers``: last trade, best bid/ask and 24 h figures (no sequence)."""

    inst: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"tickers:{self.inst}"

    @property
    def data_type(self) -> str:
        return "ticker"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        bid = round(self.mid * (1 + rng.gauss(0, 0.0003)), 8)
        ask = round(bid + self.tick * rng.randint(1, 3), 8)
        last = bid if rng.random() < 0.5 else ask
        vol = round(1e6 / self.mid * rng.uniform(0.5, 2.0), 4)
        day = (decimal(round(self.mid * (1 + rng.gauss(0, 0.02)), 8)) for _ in range(5))
        pieces: list[Piece] = [
            _push("tickers", self.inst)
            + (
                b'"instType":"SPOT","instId":"%s","last":%s,"lastSz":%s,"askPx":%s,'
                b'"askSz":%s,"bidPx":%s,"bidSz":%s,"open24h":%s,"high24h":%s,"low24h":%s,'
                b'"volCcy24h":%s,"vol24h":%s,"sodUtc0":%s,"sodUtc8":%s,"ts":"'
            )
            % (
                self.inst.encode(),
                decimal(last),
                decimal(round(rng.lognormvariate(-3.0, 1.5), 6)),
                decimal(ask),
                decimal(round(rng.lognormvariate(0.0, 1.5), 6)),
                decimal(bid),
                decimal(round(rng.lognormvariate(0.0, 1.5), 6)),
                next(day),
                next(day),
                next(day),
                decimal(round(vol * self.mid, 2)),
                decimal(vol),
                next(day),
                next(day),
            ),
            TIME_MS,
            b'"}]}',
        ]
        return pieces, 0

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


# --------------------------------------------------------------------------- protocol


class _Arg(msgspec.Struct):
    channel: str
    instId: str = ""


class _Request(msgspec.Struct):
    op: str
    args: list[_Arg] = []
    id: str | None = None


_REQUEST: Final = msgspec.json.Decoder(_Request)
_ENCODE: Final = msgspec.json.Encoder().encode
_CONN_ID: Final = "a4d3ae55"


class OkxProtocol:
    """The venue's answers: one ``subscribe`` event per arg, text ``pong`` to ``ping``."""

    exchange: Final = EXCHANGE
    ws_path: Final = WS_PATH
    needs_rest: Final = False

    def base_url(self, root: str) -> str:
        """The market's ``base_url``: the adapter uses a URL with a path as it is."""
        return root + WS_PATH

    def on_client_text(self, payload: bytes) -> tuple[list[bytes], list[str]]:
        if payload == b"ping":
            return [b"pong"], []
        try:
            request = _REQUEST.decode(payload)
        except msgspec.DecodeError:
            error = {"event": "error", "msg": "Illegal request", "code": "60012"}
            return [_ENCODE({**error, "connId": _CONN_ID})], []
        if request.op not in ("subscribe", "unsubscribe"):
            error = {"event": "error", "msg": "Illegal request", "code": "60012"}
            return [_ENCODE({**error, "connId": _CONN_ID})], []
        head: dict[str, Any] = {} if request.id is None else {"id": request.id}
        replies = [
            _ENCODE(
                {
                    **head,
                    "event": request.op,
                    "arg": {"channel": a.channel, "instId": a.instId},
                    "connId": _CONN_ID,
                }
            )
            for a in request.args
        ]
        streams = [f"{a.channel}:{a.instId}" for a in request.args]
        return replies, streams if request.op == "subscribe" else []

    def subscribe_texts(self, streams: list[str]) -> list[bytes]:
        args = [dict(zip(("channel", "instId"), s.split(":", 1), strict=True)) for s in streams]
        return [_ENCODE({"id": "1", "op": "subscribe", "args": args})]

    def snapshot_body(self, path: str, query: dict[str, str], last_update_id: int) -> bytes:
        """OKX books sync over WebSocket: no REST snapshot."""
        return b'{"code":"51000","msg":"Parameter error","data":[]}'
