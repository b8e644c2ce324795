"""Binance spot and USD-M futures frames and protocols for the load generator (the venue's
combined streams).

Shapes follow recorded traffic (``shared/samples``: cryptofeed ``BINANCE`` and
``BINANCE_FUTURES``, hftbacktest's USD-M ``@depth@0ms`` capture, nautilus fixtures): the
``{"stream": ..., "data": {...}}`` envelope, 8-decimal strings; spot times in microseconds
(the collector asks for ``timeUnit=MICROSECOND``), futures times in milliseconds. Sequence
ids are continuous per stream (futures diffs chain ``pu`` to the previous ``u``), so a
correct collector reports no gap and drops nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from collector.bench.frames import TIME, TIME_MS, IdSlot, Piece, book_side, decimal, levels

EXCHANGE: Final = "binance"


def _envelope(stream: str) -> bytes:
    return b'{"stream":"%s","data":' % stream.encode()


@dataclass(frozen=True)
class TradeStream:
    """``<sym>@trade``: one trade per frame, ids +1."""

    symbol: str
    mid: float

    @property
    def stream(self) -> str:
        return f"{self.symbol.lower()}@trade"

    @property
    def data_type(self) -> str:
        return "trades"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        price = round(self.mid * (1 + rng.gauss(0, 0.0004)), 2)
        qty = round(rng.lognormvariate(-4.0, 1.5), 5) or 0.00001
        maker = b"true" if rng.random() < 0.5 else b"false"
        pieces: list[Piece] = [
            _envelope(self.stream) + b'{"e":"trade","E":',
            TIME,
            b',"s":"%s","t":' % self.symbol.encode(),
            IdSlot(first_offset),
            b',"p":%s,"q":%s,"T":' % (decimal(price), decimal(qty)),
            TIME,
            b',"m":%s,"M":true}}' % maker,
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


@dataclass(frozen=True)
class DiffDepthStream:
    """``<sym>@depth@100ms``: changed levels; ``U`` = previous ``u`` + 1."""

    symbol: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"{self.symbol.lower()}@depth@100ms"

    @property
    def data_type(self) -> str:
        return "orderbook"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        updates = rng.randint(1, 60)
        n_bids = min(60, int(rng.lognormvariate(2.2, 0.7)))
        n_asks = min(60, int(rng.lognormvariate(2.2, 0.7)))
        bids = book_side(rng, self.mid, self.tick, n_bids, bids=True, deletes=0.25)
        asks = book_side(rng, self.mid, self.tick, n_asks, bids=False, deletes=0.25)
        pieces: list[Piece] = [
            _envelope(self.stream) + b'{"e":"depthUpdate","E":',
            TIME,
            b',"s":"%s","U":' % self.symbol.encode(),
            IdSlot(first_offset),
            b',"u":',
            IdSlot(first_offset + updates - 1),
            b',"b":%s,"a":%s}}' % (levels(bids), levels(asks)),
        ]
        return pieces, updates

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


@dataclass(frozen=True)
class PartialDepthStream:
    """``<sym>@depth20@100ms``: the top 20 levels each side (no event time or symbol)."""

    symbol: str
    mid: float
    tick: float
    depth: int = 20

    @property
    def stream(self) -> str:
        return f"{self.symbol.lower()}@depth{self.depth}@100ms"

    @property
    def data_type(self) -> str:
        return "orderbook"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        updates = rng.randint(5, 200)
        bids = book_side(rng, self.mid, self.tick, self.depth, bids=True)
        asks = book_side(rng, self.mid, self.tick, self.depth, bids=False)
        pieces: list[Piece] = [
            _envelope(self.stream) + b'{"lastUpdateId":',
            IdSlot(first_offset + updates - 1),
            b',"bids":%s,"asks":%s}}' % (levels(bids), levels(asks)),
        ]
        return pieces, updates

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


@dataclass(frozen=True)
class BookTickerStream:
    """``<sym>@bookTicker``: best bid and ask (spot: no event time)."""

    symbol: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"{self.symbol.lower()}@bookTicker"

    @property
    def data_type(self) -> str:
        return "ticker"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        spread = self.tick * rng.randint(1, 3)
        bid = round(self.mid * (1 + rng.gauss(0, 0.0003)), 8)
        pieces: list[Piece] = [
            _envelope(self.stream) + b'{"u":',
            IdSlot(first_offset),
            b',"s":"%s","b":%s,"B":%s,"a":%s,"A":%s}}'
            % (
                self.symbol.encode(),
                decimal(bid),
                decimal(round(rng.lognormvariate(0.0, 1.5), 5)),
                decimal(round(bid + spread, 8)),
                decimal(round(rng.lognormvariate(0.0, 1.5), 5)),
            ),
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


# --------------------------------------------------------------------------- USD-M futures


@dataclass(frozen=True)
class FuturesDiffDepthStream:
    """USD-M ``<sym>@depth@100ms`` at ``@depth@0ms``-like rates: many small diffs (a busy
    perpetual's book sends several hundred a second, each a few levels), with ``T``, ``pu``
    (the previous frame's ``u``) and millisecond times, as the futures streams send them."""

    symbol: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"{self.symbol.lower()}@depth@100ms"

    @property
    def data_type(self) -> str:
        return "orderbook"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        updates = rng.randint(1, 12)
        n_bids = min(12, int(rng.lognormvariate(0.8, 0.7)))
        n_asks = min(12, int(rng.lognormvariate(0.8, 0.7)))
        bids = book_side(rng, self.mid, self.tick, n_bids, bids=True, deletes=0.35)
        asks = book_side(rng, self.mid, self.tick, n_asks, bids=False, deletes=0.35)
        pieces: list[Piece] = [
            _envelope(self.stream) + b'{"e":"depthUpdate","E":',
            TIME_MS,
            b',"T":',
            TIME_MS,
            b',"s":"%s","U":' % self.symbol.encode(),
            IdSlot(first_offset),
            b',"u":',
            IdSlot(first_offset + updates - 1),
            b',"pu":',
            IdSlot(first_offset - 1),
            b',"b":%s,"a":%s}}' % (levels(bids), levels(asks)),
        ]
        return pieces, updates

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


@dataclass(frozen=True)
class FuturesAggTradeStream:
    """USD-M ``<sym>@aggTrade``: one aggregate trade per frame, ids ``a`` +1, ms times."""

    symbol: str
    mid: float

    @property
    def stream(self) -> str:
        return f"{self.symbol.lower()}@aggTrade"

    @property
    def data_type(self) -> str:
        return "trades"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        price = round(self.mid * (1 + rng.gauss(0, 0.0004)), 1)
        qty = round(rng.lognormvariate(-3.0, 1.5), 3) or 0.001
        maker = b"true" if rng.random() < 0.5 else b"false"
        first_trade = rng.randint(1, 10**9)
        pieces: list[Piece] = [
            _envelope(self.stream) + b'{"e":"aggTrade","E":',
            TIME_MS,
            b',"a":',
            IdSlot(first_offset),
            b',"s":"%s","p":%s,"q":%s,"f":%d,"l":%d,"T":'
            % (self.symbol.encode(), decimal(price), decimal(qty), first_trade, first_trade),
            TIME_MS,
            b',"m":%s}}' % maker,
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


@dataclass(frozen=True)
class FuturesBookTickerStream:
    """USD-M ``<sym>@bookTicker``: best bid and ask with ``e``, ``E`` and ``T`` (ms)."""

    symbol: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"{self.symbol.lower()}@bookTicker"

    @property
    def data_type(self) -> str:
        return "ticker"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        spread = self.tick * rng.randint(1, 3)
        bid = round(self.mid * (1 + rng.gauss(0, 0.0003)), 8)
        pieces: list[Piece] = [
            _envelope(self.stream) + b'{"e":"bookTicker","u":',
            IdSlot(first_offset),
            b',"s":"%s","b":%s,"B":%s,"a":%s,"A":%s,"T":'
            % (
                self.symbol.encode(),
                decimal(bid),
                decimal(round(rng.lognormvariate(0.0, 1.5), 3)),
                decimal(round(bid + spread, 8)),
                decimal(round(rng.lognormvariate(0.0, 1.5), 3)),
            ),
            TIME_MS,
            b',"E":',
            TIME_MS,
            b"}}",
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


# --------------------------------------------------------------------------- protocol


class _Request(msgspec.Struct):
    method: str
    params: list[str] = []
    id: int | str | None = None


_REQUEST: Final = msgspec.json.Decoder(_Request)
_ENCODE: Final = msgspec.json.Encoder().encode


class BinanceProtocol:
    """The venue's answers to client requests (``SUBSCRIBE`` and friends) and REST calls."""

    exchange: Final = EXCHANGE

    def __init__(self, books: Mapping[str, tuple[float, float]] | None = None) -> None:
        # Symbol -> (mid, tick) of its diff-depth stream: the REST snapshot is built around
        # the same mid, so the book it starts with its deltas stays uncrossed, as a venue's.
        self.books = dict(books or {})

    # The adapter appends ``/stream?timeUnit=MICROSECOND`` to the market's ``base_url``.
    ws_path: str = "/stream"
    needs_rest: Final = True
    # The REST path of this product's book snapshots, and its category (None: spot).
    depth_path: str = "/api/v3/depth"
    category: str | None = None

    def base_url(self, root: str) -> str:
        """The market's ``base_url`` for a generator connection rooted at ``root``."""
        return root

    def on_client_text(self, payload: bytes) -> tuple[list[bytes], list[str]]:
        """Replies to one client message, and the streams it subscribed."""
        try:
            request = _REQUEST.decode(payload)
        except msgspec.DecodeError:
            return [b'{"code":2,"msg":"Invalid JSON"}'], []
        reply = _ENCODE({"result": None, "id": request.id})
        if request.method == "SUBSCRIBE":
            return [reply], list(request.params)
        return [reply], []

    def subscribe_texts(self, streams: list[str]) -> list[bytes]:
        """The client's subscription to ``streams`` (for the generator's own sink client)."""
        return [_ENCODE({"method": "SUBSCRIBE", "params": streams, "id": 1})]

    def snapshot_body(self, path: str, query: dict[str, str], last_update_id: int) -> bytes:
        """The body of ``GET /api/v3/depth`` (futures: ``/fapi/v1/depth``, with its event and
        transaction times) for a book at ``last_update_id``."""
        limit = min(int(query.get("limit", "100")), 1000)
        rng = random.Random(last_update_id)
        mid, tick = self.books.get(query.get("symbol", ""), (100.0, 0.01))
        bids = book_side(rng, mid, tick, limit, bids=True)
        asks = book_side(rng, mid, tick, limit, bids=False)
        times = b""
        if self.category is not None:
            now_ms = time.time_ns() // 1_000_000
            times = b',"E":%d,"T":%d' % (now_ms, now_ms - 1)
        return b'{"lastUpdateId":%d%s,"bids":%s,"asks":%s}' % (
            last_update_id,
            times,
            levels(bids),
            levels(asks),
        )


class BinanceUsdmProtocol(BinanceProtocol):
    """USD-M futures: one of its routed endpoints (``/public`` for book streams, ``/market``
    for the others), ``/fapi`` book snapshots."""

    depth_path = "/fapi/v1/depth"
    category = "usdm"

    def __init__(self, route: str, books: Mapping[str, tuple[float, float]] | None = None) -> None:
        super().__init__(books)
        self.ws_path = f"{route}/stream"
