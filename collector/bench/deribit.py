"""Deribit API v2 frames and protocol for the load generator (inverse perpetuals).

Shapes follow :mod:`collector.exchanges.deribit` and its fake venue
(``tests/fakes/deribit.py``): JSON-RPC answers with the request's ``id``, data as
``{"jsonrpc":"2.0","method":"subscription","params":{"channel","data"}}`` notifications,
JSON numbers, millisecond times. ``book.{instrument}.100ms`` starts with a snapshot right
after the subscribe answer, then changes whose ``prev_change_id`` is the previous
``change_id`` (ids grow by a few per message, as the venue's do); trades come in lists
with ``trade_seq`` +1 per trade.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from collector.bench.frames import TIME_MS, IdSlot, Piece, book_side

EXCHANGE: Final = "deribit"
WS_PATH: Final = "/ws/api/v2"
INTERVAL: Final = "100ms"
SNAPSHOT_DEPTH: Final = 200


def _notification(channel: str) -> bytes:
    return b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"%s","data":' % (
        channel.encode()
    )


def _amount(rng: random.Random, lot: float) -> float:
    """An order size: a whole number of lots (USD 10 on BTC-PERPETUAL)."""
    return lot * max(1, round(rng.lognormvariate(2.0, 1.5)))


def _levels(levels: Sequence[tuple[float, float]], action: bytes | None) -> bytes:
    """``[["new"|"change"|"delete", price, amount], ...]``."""
    out = []
    for price, amount in levels:
        kind = action or (b"delete" if amount == 0 else b"change")
        out.append(b'["%s",%r,%r]' % (kind, price, float(amount)))
    return b"[" + b",".join(out) + b"]"


@dataclass(frozen=True)
class TradeStream:
    """``trades.{instrument}.100ms``: one trade per message (the benchmark counts a row per
    frame), ``trade_seq`` +1."""

    instrument: str
    mid: float
    tick: float
    lot: float

    @property
    def stream(self) -> str:
        return f"trades.{self.instrument}.{INTERVAL}"

    @property
    def data_type(self) -> str:
        return "trades"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        count = 1
        price = round(self.mid + self.tick * round(rng.gauss(0, 4)), 2)
        direction = b"buy" if rng.random() < 0.5 else b"sell"
        pieces: list[Piece] = [_notification(self.stream) + b"["]
        for i in range(count):
            pieces += [
                b'%s{"trade_seq":' % (b"," if i else b""),
                IdSlot(first_offset + i),
                b',"trade_id":"',
                IdSlot(first_offset + i),
                b'","timestamp":',
                TIME_MS,
                (
                    b',"tick_direction":%d,"price":%r,"mark_price":%r,"instrument_name":"%s",'
                    b'"index_price":%r,"direction":"%s","amount":%r}'
                )
                % (
                    rng.randint(0, 3),
                    price,
                    round(price + self.tick * rng.gauss(0, 1), 2),
                    self.instrument.encode(),
                    round(price * 0.9998, 2),
                    direction,
                    _amount(rng, self.lot),
                ),
            ]
        pieces.append(b"]}}")
        return pieces, count

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


@dataclass(frozen=True)
class BookStream:
    """``book.{instrument}.100ms``: a snapshot first, then changes chained by change id."""

    instrument: str
    mid: float
    tick: float
    lot: float

    @property
    def stream(self) -> str:
        return f"book.{self.instrument}.{INTERVAL}"

    @property
    def data_type(self) -> str:
        return "orderbook"

    def _side(self, rng: random.Random, count: int, *, bids: bool, deletes: float) -> bytes:
        levels = book_side(rng, self.mid, self.tick, count, bids=bids, deletes=deletes)
        sized = [(p, 0.0 if s == 0 else _amount(rng, self.lot)) for p, s in levels]
        return _levels(sized, None if deletes else b"new")

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        step = rng.randint(1, 5)
        bids = self._side(rng, rng.randint(0, 6), bids=True, deletes=0.3)
        asks = self._side(rng, rng.randint(0, 6), bids=False, deletes=0.3)
        pieces: list[Piece] = [
            _notification(self.stream) + b'{"type":"change","timestamp":',
            TIME_MS,
            b',"prev_change_id":',
            IdSlot(first_offset - 1),
            b',"instrument_name":"%s","change_id":' % self.instrument.encode(),
            IdSlot(first_offset + step - 1),
            b',"bids":%s,"asks":%s}}}' % (bids, asks),
        ]
        return pieces, step

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        bids = self._side(rng, SNAPSHOT_DEPTH, bids=True, deletes=0.0)
        asks = self._side(rng, SNAPSHOT_DEPTH, bids=False, deletes=0.0)
        return _notification(self.stream) + (
            b'{"type":"snapshot","timestamp":%d,"instrument_name":"%s","change_id":%d,'
            b'"bids":%s,"asks":%s}}}'
            % (time_us // 1000, self.instrument.encode(), next_id - 1, bids, asks)
        )


@dataclass(frozen=True)
class TickerStream:
    """``ticker.{instrument}.100ms``: best bid/ask, last, mark and 24 h stats."""

    instrument: str
    mid: float
    tick: float
    lot: float

    @property
    def stream(self) -> str:
        return f"ticker.{self.instrument}.{INTERVAL}"

    @property
    def data_type(self) -> str:
        return "ticker"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        bid = round(self.mid + self.tick * round(rng.gauss(0, 4)), 2)
        ask = round(bid + self.tick, 2)
        mark = round((bid + ask) / 2, 4)
        pieces: list[Piece] = [
            _notification(self.stream) + b'{"timestamp":',
            TIME_MS,
            (
                b',"stats":{"volume_usd":%r,"volume":%r,"price_change":%r,"low":%r,"high":%r},'
                b'"state":"open","settlement_price":%r,"open_interest":%r,"min_price":%r,'
                b'"max_price":%r,"mark_price":%r,"last_price":%r,"instrument_name":"%s",'
                b'"index_price":%r,"funding_8h":0.0000112,"current_funding":0.0,'
                b'"best_bid_price":%r,"best_bid_amount":%r,"best_ask_price":%r,'
                b'"best_ask_amount":%r}}}'
            )
            % (
                round(rng.uniform(5e8, 2e9), 1),
                round(rng.uniform(5e3, 2e4), 4),
                round(rng.gauss(0, 1.5), 4),
                round(self.mid * 0.97, 2),
                round(self.mid * 1.03, 2),
                round(self.mid * 0.995, 2),
                round(rng.uniform(1e9, 2e9), 1),
                round(self.mid * 0.98, 2),
                round(self.mid * 1.02, 2),
                mark,
                bid if rng.random() < 0.5 else ask,
                self.instrument.encode(),
                round(mark * 0.9998, 2),
                bid,
                _amount(rng, self.lot),
                ask,
                _amount(rng, self.lot),
            ),
        ]
        return pieces, 0

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


# --------------------------------------------------------------------------- protocol


class _Request(msgspec.Struct):
    method: str = ""
    id: int | None = None
    params: dict[str, Any] = {}
    jsonrpc: str = "2.0"


_REQUEST: Final = msgspec.json.Decoder(_Request)
_ENCODE: Final = msgspec.json.Encoder().encode


def _answer(request_id: int | None, body: dict[str, Any]) -> bytes:
    return _ENCODE(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            **body,
            "usIn": 1760000000000000,
            "usOut": 1760000000000150,
            "usDiff": 150,
            "testnet": False,
        }
    )


class DeribitProtocol:
    """The venue's JSON-RPC answers: subscribe/unsubscribe list the channels, set_heartbeat
    and test answer ``ok``/the version, anything else is ``Method not found``."""

    exchange: Final = EXCHANGE
    ws_path: Final = WS_PATH
    needs_rest: Final = False

    def base_url(self, root: str) -> str:
        """The market's ``base_url``: the adapter appends its path to any URL."""
        return root

    def on_client_text(self, payload: bytes) -> tuple[list[bytes], list[str]]:
        try:
            request = _REQUEST.decode(payload)
        except msgspec.DecodeError:
            error = {"code": -32700, "message": "Parse error"}
            return [_answer(None, {"error": error})], []
        if request.method in ("public/subscribe", "public/unsubscribe"):
            channels = [str(c) for c in request.params.get("channels", [])]
            subscribed = channels if request.method == "public/subscribe" else []
            return [_answer(request.id, {"result": channels})], subscribed
        if request.method == "public/set_heartbeat":
            return [_answer(request.id, {"result": "ok"})], []
        if request.method == "public/test":
            return [_answer(request.id, {"result": {"version": "1.2.26"}})], []
        error = {"code": -32601, "message": "Method not found"}
        return [_answer(request.id, {"error": error})], []

    def subscribe_texts(self, streams: list[str]) -> list[bytes]:
        params = {"channels": streams}
        return [
            _ENCODE({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": params})
        ]

    def snapshot_body(self, path: str, query: dict[str, str], last_update_id: int) -> bytes:
        """Deribit books come over the WebSocket: no REST snapshot."""
        return b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"}}'
