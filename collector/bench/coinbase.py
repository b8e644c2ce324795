"""Coinbase Advanced Trade frames and protocol for the load generator.

Shapes follow :mod:`collector.exchanges.coinbase` and its fake venue
(``tests/fakes/coinbase.py``): every message is an envelope ``{"channel", "client_id",
"timestamp" (RFC 3339, ns), "sequence_num", "events": [...]}``, numbers are decimal
strings. ``sequence_num`` counts every message of a connection across channels, the
subscribe answers included (:data:`~collector.bench.frames.CONN_SEQ`). ``level2`` data comes
as ``l2_data``: a snapshot event first, then updates (``new_quantity`` absolute, ``0``
deletes). The recent-trades snapshot that opens ``market_trades`` is left out: the
collector records it, and the benchmark counts a row per frame.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from collector.bench.frames import (
    CONN_SEQ,
    SEQ_MARK,
    TIME_ISO,
    IdSlot,
    Piece,
    book_side,
    iso_time,
)

EXCHANGE: Final = "coinbase"
SNAPSHOT_DEPTH: Final = 500


def _head(channel: bytes) -> list[Piece]:
    """The envelope up to its events (the events follow)."""
    return [
        b'{"channel":"%s","client_id":"","timestamp":"' % channel,
        TIME_ISO,
        b'000Z","sequence_num":',
        CONN_SEQ,
        b',"events":[',
    ]


def _text(value: float, decimals: int) -> bytes:
    return b'"%.*f"' % (decimals, value)


@dataclass(frozen=True)
class TradeStream:
    """``market_trades``: one trade per update message, ids +1; ``side`` is the maker's."""

    product: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"market_trades:{self.product}"

    @property
    def data_type(self) -> str:
        return "trades"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        price = self.mid + self.tick * round(rng.gauss(0, 4))
        size = round(rng.lognormvariate(-4.0, 1.5), 8) or 1e-8
        pieces = [
            *_head(b"market_trades"),
            b'{"type":"update","trades":[{"product_id":"%s","trade_id":"' % self.product.encode(),
            IdSlot(first_offset),
            b'","price":%s,"size":%s,"time":"' % (_text(price, 2), _text(size, 8)),
            TIME_ISO,
            b'000Z","side":"%s"}]}]}' % (b"BUY" if rng.random() < 0.5 else b"SELL"),
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


def _updates(levels: list[tuple[float, float]], side: bytes, time: bytes) -> list[bytes]:
    return [
        b'{"side":"%s","event_time":"%s","price_level":%s,"new_quantity":%s}'
        % (side, time, _text(p, 2), _text(q, 8))
        for p, q in levels
    ]


@dataclass(frozen=True)
class BookStream:
    """``level2`` (as ``l2_data``): a snapshot first, then updates of a few levels."""

    product: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"level2:{self.product}"

    @property
    def data_type(self) -> str:
        return "orderbook"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        bids = book_side(rng, self.mid, self.tick, rng.randint(0, 3), bids=True, deletes=0.3)
        asks = book_side(rng, self.mid, self.tick, rng.randint(0, 3), bids=False, deletes=0.3)
        if not bids and not asks:
            asks = book_side(rng, self.mid, self.tick, 1, bids=False)
        pieces: list[Piece] = [
            *_head(b"l2_data"),
            b'{"type":"update","product_id":"%s","updates":[' % self.product.encode(),
        ]
        levels = [(p, q, b"bid") for p, q in bids] + [(p, q, b"offer") for p, q in asks]
        for i, (price, qty, side) in enumerate(levels):
            pieces += [
                b'%s{"side":"%s","event_time":"' % (b"," if i else b"", side),
                TIME_ISO,
                b'000Z","price_level":%s,"new_quantity":%s}' % (_text(price, 2), _text(qty, 8)),
            ]
        pieces.append(b"]}]}")
        return pieces, 0

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        bids = book_side(rng, self.mid, self.tick, SNAPSHOT_DEPTH, bids=True)
        asks = book_side(rng, self.mid, self.tick, SNAPSHOT_DEPTH, bids=False)
        stamp = iso_time(time_us) + b"000Z"
        # Snapshot levels carry the 1970 placeholder time, as recorded.
        epoch = b"1970-01-01T00:00:00Z"
        updates = _updates(bids, b"bid", epoch) + _updates(asks, b"offer", epoch)
        return (
            b'{"channel":"l2_data","client_id":"","timestamp":"%s","sequence_num":%s,'
            b'"events":[{"type":"snapshot","product_id":"%s","updates":[%s]}]}'
            % (stamp, SEQ_MARK, self.product.encode(), b",".join(updates))
        )


@dataclass(frozen=True)
class TickerStream:
    """``ticker``: last price, best bid/ask with sizes, 24 h and 52 w figures."""

    product: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"ticker:{self.product}"

    @property
    def data_type(self) -> str:
        return "ticker"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        bid = self.mid + self.tick * round(rng.gauss(0, 4))
        ask = bid + self.tick
        body = (
            b'{"type":"update","tickers":[{"type":"ticker","product_id":"%s","price":%s,'
            b'"volume_24_h":%s,"low_24_h":%s,"high_24_h":%s,"low_52_w":%s,"high_52_w":%s,'
            b'"price_percent_chg_24_h":"1.2034","best_bid":%s,"best_bid_quantity":%s,'
            b'"best_ask":%s,"best_ask_quantity":%s}]}]}'
        ) % (
            self.product.encode(),
            _text(bid if rng.random() < 0.5 else ask, 2),
            _text(round(2e8 / self.mid * rng.uniform(0.5, 2.0), 8), 8),
            _text(self.mid * 0.97, 2),
            _text(self.mid * 1.03, 2),
            _text(self.mid * 0.6, 2),
            _text(self.mid * 1.2, 2),
            _text(bid, 2),
            _text(round(rng.lognormvariate(-1.0, 1.5), 8), 8),
            _text(ask, 2),
            _text(round(rng.lognormvariate(-1.0, 1.5), 8), 8),
        )
        return [*_head(b"ticker"), body], 0

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


# --------------------------------------------------------------------------- protocol


class _Request(msgspec.Struct):
    type: str = ""
    product_ids: list[str] = []
    channel: str = ""


_REQUEST: Final = msgspec.json.Decoder(_Request)
_ENCODE: Final = msgspec.json.Encoder().encode
_STAMP: Final = "2026-08-09T21:05:48.228568804Z"


class CoinbaseProtocol:
    """The venue's answers: a ``subscriptions`` message (everything subscribed on the
    connection so far) to each subscribe; unsubscribes are not answered."""

    exchange: Final = EXCHANGE
    ws_path: Final = ""
    needs_rest: Final = False
    first_seq: Final = 0

    def __init__(self) -> None:
        self._subs: dict[str, set[str]] = {}

    def base_url(self, root: str) -> str:
        """The market's ``base_url``: the venue's endpoint has no path."""
        return root

    def on_client_text(self, payload: bytes) -> tuple[list[bytes], list[str]]:
        try:
            request = _REQUEST.decode(payload)
        except msgspec.DecodeError:
            return [_ENCODE({"type": "error", "message": "failure to parse JSON"})], []
        if request.type == "unsubscribe":
            self._subs.get(request.channel, set()).difference_update(request.product_ids)
            return [], []
        if request.type != "subscribe" or not request.channel:
            return [_ENCODE({"type": "error", "message": "unknown request type"})], []
        self._subs.setdefault(request.channel, set()).update(request.product_ids)
        subs = {c: sorted(p) for c, p in sorted(self._subs.items()) if p}
        answer: dict[str, Any] = {
            "channel": "subscriptions",
            "client_id": "",
            "timestamp": _STAMP,
            "sequence_num": 0,
            "events": [{"subscriptions": subs}],
        }
        text = _ENCODE(answer).replace(b'"sequence_num":0', b'"sequence_num":' + SEQ_MARK, 1)
        streams = (
            []
            if request.channel == "heartbeats"
            else [f"{request.channel}:{p}" for p in request.product_ids]
        )
        return [text], streams

    def subscribe_texts(self, streams: list[str]) -> list[bytes]:
        by_channel: dict[str, list[str]] = {}
        for name in streams:
            channel, _, product = name.partition(":")
            by_channel.setdefault(channel, []).append(product)
        return [
            _ENCODE({"type": "subscribe", "product_ids": p, "channel": c})
            for c, p in by_channel.items()
        ]

    def snapshot_body(self, path: str, query: dict[str, str], last_update_id: int) -> bytes:
        """Coinbase books come over the WebSocket: no REST snapshot."""
        return b'{"error":"NOT_FOUND","message":"not found"}'
