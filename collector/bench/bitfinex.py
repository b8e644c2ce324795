"""Bitfinex WebSocket v2 frames and protocol for the load generator (trading pairs).

Shapes follow :mod:`collector.exchanges.bitfinex` and its fake venue
(``tests/fakes/bitfinex.py``): events are JSON objects, channel frames arrays
``[chanId, ..., SEQ, MTS]`` (the collector asks for the TIMESTAMP and SEQ_ALL flags), JSON
numbers at five significant digits, millisecond times. ``SEQ`` numbers every channel frame
of a connection across channels (:data:`~collector.bench.frames.CONN_SEQ`). A channel's id
is known before the venue answers (:func:`chan_id`), so templates carry it.

After ``subscribed`` the venue sends a snapshot: the book's 25 levels a side (recorded),
the last trades (not recorded by the collector, so sent with the answer, as a control
frame). Live trades come as ``te`` frames; the ``tu`` that repeats each is left out (the
benchmark counts a row per frame).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from collector.bench.frames import CONN_SEQ, SEQ_MARK, TIME_MS, IdSlot, Piece, book_side

EXCHANGE: Final = "bitfinex"
WS_PATH: Final = "/ws/2"
BOOK_LEN: Final = 25


def chan_id(channel: str, symbol: str) -> int:
    """The channel id the venue gives ``channel`` of ``symbol`` (fixed here)."""
    return 1000 + zlib.crc32(f"{channel}:{symbol}".encode()) % 400_000


def _price(value: float) -> bytes:
    """Five significant digits, as the venue quotes (``61234``, ``2650.1``)."""
    return b"%s" % format(float(f"{value:.5g}"), "g").encode()


def _amount(value: float) -> bytes:
    return b"%.8f" % value


@dataclass(frozen=True)
class TradeStream:
    """``trades``: ``[chanId,"te",[ID,MTS,AMOUNT,PRICE],SEQ,MTS]``, ids +1; AMOUNT < 0 is a
    taker sell."""

    symbol: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"trades:{self.symbol}"

    @property
    def data_type(self) -> str:
        return "trades"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        price = self.mid + self.tick * round(rng.gauss(0, 4))
        amount = round(rng.lognormvariate(-4.0, 1.5), 8) or 1e-8
        if rng.random() < 0.5:
            amount = -amount
        pieces: list[Piece] = [
            b'[%d,"te",[' % chan_id("trades", self.symbol),
            IdSlot(first_offset),
            b",",
            TIME_MS,
            b",%s,%s]," % (_amount(amount), _price(price)),
            CONN_SEQ,
            b",",
            TIME_MS,
            b"]",
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None  # the trade snapshot goes with the subscribe answer (no rows)


@dataclass(frozen=True)
class BookStream:
    """``book`` (P0, F0, len 25): a snapshot, then one ``[PRICE,COUNT,AMOUNT]`` per frame;
    AMOUNT > 0 a bid, < 0 an ask; COUNT 0 removes the level."""

    symbol: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"book:{self.symbol}"

    @property
    def data_type(self) -> str:
        return "orderbook"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        bid = rng.random() < 0.5
        ((price, size),) = book_side(rng, self.mid, self.tick, 1, bids=bid)
        price = price + (-1 if bid else 1) * self.tick * rng.randint(0, 20)
        count = 0 if rng.random() < 0.3 else rng.randint(1, 12)
        amount = 1.0 if count == 0 else (size or 0.001)
        pieces: list[Piece] = [
            b"[%d,[%s,%d,%s],"
            % (
                chan_id("book", self.symbol),
                _price(price),
                count,
                _amount(amount if bid else -amount),
            ),
            CONN_SEQ,
            b",",
            TIME_MS,
            b"]",
        ]
        return pieces, 0

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        bids = book_side(rng, self.mid, self.tick, BOOK_LEN, bids=True)
        asks = book_side(rng, self.mid, self.tick, BOOK_LEN, bids=False)
        levels = [
            b"[%s,%d,%s]" % (_price(p), rng.randint(1, 12), _amount(sign * (s or 0.001)))
            for side, sign in ((bids, 1), (asks, -1))
            for p, s in side
        ]
        return b"[%d,[%s],%s,%d]" % (
            chan_id("book", self.symbol),
            b",".join(levels),
            SEQ_MARK,
            time_us // 1000,
        )


@dataclass(frozen=True)
class TickerStream:
    """``ticker``: ``[BID,BID_SIZE,ASK,ASK_SIZE,DAILY_CHANGE,DAILY_CHANGE_RELATIVE,
    LAST_PRICE,VOLUME,HIGH,LOW]``."""

    symbol: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"ticker:{self.symbol}"

    @property
    def data_type(self) -> str:
        return "ticker"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        bid = self.mid + self.tick * round(rng.gauss(0, 4))
        ask = bid + self.tick
        values = b",".join(
            (
                _price(bid),
                _amount(round(rng.lognormvariate(0.0, 1.5), 8)),
                _price(ask),
                _amount(round(rng.lognormvariate(0.0, 1.5), 8)),
                _price(self.mid * 0.012),
                b"%.4f" % 0.012,
                _price(bid if rng.random() < 0.5 else ask),
                _amount(round(2e7 / self.mid * rng.uniform(0.5, 2.0), 8)),
                _price(self.mid * 1.03),
                _price(self.mid * 0.97),
            )
        )
        pieces: list[Piece] = [
            b"[%d,[%s]," % (chan_id("ticker", self.symbol), values),
            CONN_SEQ,
            b",",
            TIME_MS,
            b"]",
        ]
        return pieces, 0

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


# --------------------------------------------------------------------------- protocol

_ENCODE: Final = msgspec.json.Encoder().encode


class BitfinexProtocol:
    """The venue's answers: ``conf``, ``subscribed`` (with the trade snapshot for trades),
    ``unsubscribed``, ``pong``; errors for anything else."""

    exchange: Final = EXCHANGE
    ws_path: Final = WS_PATH
    needs_rest: Final = False
    first_seq: Final = 1

    def base_url(self, root: str) -> str:
        """The market's ``base_url``: the adapter appends its path to any URL."""
        return root

    def on_client_text(self, payload: bytes) -> tuple[list[bytes], list[str]]:
        try:
            request: Any = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return [_ENCODE({"event": "error", "msg": "invalid", "code": 10000})], []
        if not isinstance(request, dict):
            return [_ENCODE({"event": "error", "msg": "invalid", "code": 10000})], []
        event = request.get("event")
        if event == "conf":
            return [_ENCODE({"event": "conf", "status": "OK", "flags": request.get("flags")})], []
        if event == "ping":
            return [_ENCODE({"event": "pong", "ts": 1760000000000, "cid": request.get("cid")})], []
        if event == "unsubscribe":
            answer = {"event": "unsubscribed", "status": "OK", "chanId": request.get("chanId")}
            return [_ENCODE(answer)], []
        if event != "subscribe":
            return [_ENCODE({"event": "error", "msg": "unknown event", "code": 10001})], []
        channel, symbol = str(request.get("channel")), str(request.get("symbol"))
        answer = {k: v for k, v in request.items() if k != "event"}
        answer = {"event": "subscribed", **answer, "chanId": chan_id(channel, symbol)}
        answer["pair"] = symbol.removeprefix("t")
        replies = [_ENCODE(answer)]
        if channel == "trades":  # the last trades, before any live one
            trades = [
                [900_000_000 + i, 1759999990000 + i * 700, 0.01 * (-1) ** i, 61234.0]
                for i in range(30)
            ]
            snapshot = _ENCODE([chan_id(channel, symbol), trades])
            replies.append(snapshot[:-1] + b",%s,1759999999000]" % SEQ_MARK)
        return replies, [f"{channel}:{symbol}"]

    def subscribe_texts(self, streams: list[str]) -> list[bytes]:
        texts = [_ENCODE({"event": "conf", "flags": 98304})]
        for name in streams:
            channel, _, symbol = name.partition(":")
            texts.append(_ENCODE({"event": "subscribe", "channel": channel, "symbol": symbol}))
        return texts

    def snapshot_body(self, path: str, query: dict[str, str], last_update_id: int) -> bytes:
        """Bitfinex books come over the WebSocket: no REST snapshot."""
        return b'["error",10020,"invalid request"]'
