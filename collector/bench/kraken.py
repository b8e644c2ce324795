"""Kraken spot WebSocket v2 frames and protocol for the load generator.

Shapes follow :mod:`collector.exchanges.kraken` and its fake venue
(``tests/fakes/kraken.py``): ``{"channel", "type", "data": [...]}`` frames, prices and sizes
as JSON numbers at the pair's precision, RFC 3339 times to the microsecond. The
``book`` channel (depth 10) starts with a snapshot, then updates of changed levels, each
with the CRC32 ``checksum`` of the top 10 levels that the collector verifies.

A book update depends on the book it changes, and a chunk template is sent again and
again; so :class:`BookStream` keeps its own copy of the book while templates are built,
starts every template from the same base book (the one its snapshot sends) and ends every
template with an update that restores it (:class:`~collector.bench.frames.ClosingStream`).
The checksum here is computed from Kraken's description on its own, not with the
collector's code, so the collector's check is a real one.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from collector.bench.frames import TIME_ISO, IdSlot, Piece

EXCHANGE: Final = "kraken"
WS_PATH: Final = "/v2"
DEPTH: Final = 10  # the collector's default book_depth
CHECKSUM_LEVELS: Final = 10
QTY_DECIMALS: Final = 8

Side = dict[int, int]  # price in ticks -> qty in units of 10**-8


@dataclass(frozen=True)
class TradeStream:
    """``trade``: one taker order's fill per frame, ``trade_id`` +1."""

    symbol: str
    mid: float
    tick: float

    @property
    def stream(self) -> str:
        return f"trade:{self.symbol}"

    @property
    def data_type(self) -> str:
        return "trades"

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        decimals = _decimals(self.tick)
        price = self.mid + self.tick * round(rng.gauss(0, 4))
        pieces: list[Piece] = [
            b'{"channel":"trade","type":"update","data":[{"symbol":"%s","side":"%s",'
            b'"price":%.*f,"qty":%.8f,"ord_type":"%s","trade_id":'
            % (
                self.symbol.encode(),
                b"buy" if rng.random() < 0.5 else b"sell",
                decimals,
                price,
                round(rng.lognormvariate(-4.0, 1.5), 8) or 1e-8,
                b"market" if rng.random() < 0.8 else b"limit",
            ),
            IdSlot(first_offset),
            b',"timestamp":"',
            TIME_ISO,
            b'Z"}]}',
        ]
        return pieces, 1

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None  # the collector subscribes with snapshot: false


@dataclass(frozen=True)
class TickerStream:
    """``ticker`` (``event_trigger: bbo``): best bid/ask with sizes, last, 24 h figures."""

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
        d = _decimals(self.tick)
        bid = self.mid + self.tick * round(rng.gauss(0, 4))
        ask = bid + self.tick * rng.randint(1, 3)
        pieces: list[Piece] = [
            b'{"channel":"ticker","type":"update","data":[{"symbol":"%s","bid":%.*f,'
            b'"bid_qty":%.8f,"ask":%.*f,"ask_qty":%.8f,"last":%.*f,"volume":%.8f,'
            b'"vwap":%.*f,"low":%.*f,"high":%.*f,"change":%.*f,"change_pct":%.2f,"timestamp":"'
            % (
                self.symbol.encode(),
                d,
                bid,
                round(rng.lognormvariate(-1.0, 1.5), 8),
                d,
                ask,
                round(rng.lognormvariate(-1.0, 1.5), 8),
                d,
                bid if rng.random() < 0.5 else ask,
                round(2e8 / self.mid * rng.uniform(0.5, 2.0), 8),
                d,
                self.mid * 0.999,
                d,
                self.mid * 0.97,
                d,
                self.mid * 1.03,
                d,
                self.mid * 0.01,
                1.02,
            ),
            TIME_ISO,
            b'Z"}]}',
        ]
        return pieces, 0

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        return None


@dataclass(frozen=True)
class BookStream:
    """``book`` at depth 10: a snapshot of the base book, then updates with checksums."""

    symbol: str
    mid: float
    tick: float
    # The book as the frames built so far leave it ("bids"/"asks"), and the base book.
    _books: dict[str, Side] = field(default_factory=dict, compare=False, repr=False)

    @property
    def stream(self) -> str:
        return f"book:{self.symbol}"

    @property
    def data_type(self) -> str:
        return "orderbook"

    # -------------------------------------------------------------- the book

    def _base(self) -> tuple[Side, Side]:
        if "base_bids" not in self._books:
            rng = random.Random(self.symbol)
            mid = round(self.mid / self.tick)
            for name, sign in (("base_bids", -1), ("base_asks", 1)):
                side: Side = {}
                price = mid + sign * rng.randint(1, 2)
                for _ in range(DEPTH):
                    side[price] = _qty(rng)
                    price += sign * rng.randint(1, 3)
                self._books[name] = side
            self._books["bids"] = dict(self._books["base_bids"])
            self._books["asks"] = dict(self._books["base_asks"])
        return self._books["base_bids"], self._books["base_asks"]

    def _level(self, price: int, qty: int) -> bytes:
        decimals = _decimals(self.tick)
        return b'{"price":%.*f,"qty":%s}' % (decimals, price * self.tick, _qty_text(qty))

    def _checksum(self, bids: Side, asks: Side) -> int:
        """Kraken's CRC32: the 10 best asks (low to high), then the 10 best bids (high to
        low), each as price then qty text with the point removed and leading zeros cut."""
        decimals = _decimals(self.tick)
        text = b""
        for side, reverse in ((asks, False), (bids, True)):
            for price in sorted(side, reverse=reverse)[:CHECKSUM_LEVELS]:
                price_text = b"%.*f" % (decimals, price * self.tick)
                for number in (price_text, _qty_text(side[price])):
                    text += number.replace(b".", b"").lstrip(b"0")
        return zlib.crc32(text)

    def _frame(self, kind: bytes, bids: list[bytes], asks: list[bytes]) -> list[Piece]:
        state_bids, state_asks = self._books["bids"], self._books["asks"]
        head = b'{"channel":"book","type":"%s","data":[{"symbol":"%s","bids":[%s],"asks":[%s],' % (
            kind,
            self.symbol.encode(),
            b",".join(bids),
            b",".join(asks),
        )
        checksum = b'"checksum":%d' % self._checksum(state_bids, state_asks)
        if kind == b"snapshot":
            return [head + checksum + b"}]}"]
        return [head + checksum + b',"timestamp":"', TIME_ISO, b'Z"}]}']

    def _change(self, rng: random.Random, side: Side, sign: int) -> list[bytes]:
        """One realistic change of a side (applied to ``side``), as the levels sent."""
        prices = sorted(side, key=lambda p: sign * p)  # best first
        roll = rng.random()
        if roll < 0.7 or len(prices) < 3:  # a size changes
            price = prices[min(len(prices) - 1, int(rng.expovariate(0.5)))]
            side[price] = _qty(rng)
            return [self._level(price, side[price])]
        if roll < 0.85:  # a level goes; the next level below the top 10 comes into view
            price = prices[rng.randrange(len(prices))]
            del side[price]
            worst = max(side, key=lambda p: sign * p)
            entering = worst + sign * rng.randint(1, 3)
            side[entering] = _qty(rng)
            return [self._level(price, 0), self._level(entering, side[entering])]
        # A level appears inside the book; the worst one falls out of the top 10 unsaid.
        free = [p for p in range(prices[0], prices[-1], sign) if p not in side]
        if not free:
            price = prices[0]
            side[price] = _qty(rng)
            return [self._level(price, side[price])]
        price = rng.choice(free)
        side[price] = _qty(rng)
        for gone in sorted(side, key=lambda p: sign * p)[DEPTH:]:
            del side[gone]
        return [self._level(price, side[price])]

    # -------------------------------------------------------------- StreamFrames

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        self._base()
        # One change per side at most: the collector truncates once per message, and so
        # does this copy, after the one change.
        roll = rng.random()
        bids = self._change(rng, self._books["bids"], -1) if roll < 0.65 else []
        asks = self._change(rng, self._books["asks"], 1) if roll >= 0.35 else []
        return self._frame(b"update", bids, asks), 0

    def closing_frame(self, rng: random.Random) -> list[Piece] | None:
        base_bids, base_asks = self._base()
        levels: list[list[bytes]] = []
        for name, base in (("bids", base_bids), ("asks", base_asks)):
            side = self._books[name]
            sent = [self._level(p, 0) for p in sorted(side) if p not in base]
            sent += [self._level(p, q) for p, q in sorted(base.items()) if side.get(p) != q]
            self._books[name] = dict(base)
            levels.append(sent)
        if not levels[0] and not levels[1]:
            return None
        return self._frame(b"update", levels[0], levels[1])

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        base_bids, base_asks = self._base()
        bids = [self._level(p, base_bids[p]) for p in sorted(base_bids, reverse=True)]
        asks = [self._level(p, base_asks[p]) for p in sorted(base_asks)]
        saved = self._books["bids"], self._books["asks"]
        self._books["bids"], self._books["asks"] = base_bids, base_asks
        (frame,) = self._frame(b"snapshot", bids, asks)
        self._books["bids"], self._books["asks"] = saved
        assert isinstance(frame, bytes)
        return frame


def _decimals(tick: float) -> int:
    text = f"{tick:.10f}".rstrip("0")
    return len(text.partition(".")[2])


def _qty(rng: random.Random) -> int:
    """A resting size in units of 10**-8 (never 0)."""
    return max(1, round(rng.lognormvariate(-1.0, 1.6) * 10**QTY_DECIMALS))


def _qty_text(qty: int) -> bytes:
    return b"%d.%08d" % divmod(qty, 10**QTY_DECIMALS)


# --------------------------------------------------------------------------- protocol


class _Params(msgspec.Struct):
    channel: str = ""
    symbol: list[str] = []
    depth: int | None = None
    snapshot: bool | None = None
    event_trigger: str | None = None


class _Request(msgspec.Struct):
    method: str = ""
    params: _Params | None = None
    req_id: int | None = None


_REQUEST: Final = msgspec.json.Decoder(_Request)
_ENCODE: Final = msgspec.json.Encoder().encode
_TIMES: Final = {
    "time_in": "2026-08-09T21:05:48.123456Z",
    "time_out": "2026-08-09T21:05:48.123512Z",
}


class KrakenProtocol:
    """The venue's answers: one per symbol of a (un)subscribe, ``pong`` to ``ping``."""

    exchange: Final = EXCHANGE
    ws_path: Final = WS_PATH
    needs_rest: Final = False

    def base_url(self, root: str) -> str:
        return root + WS_PATH

    def on_client_text(self, payload: bytes) -> tuple[list[bytes], list[str]]:
        try:
            request = _REQUEST.decode(payload)
        except msgspec.DecodeError:
            return [_ENCODE({"error": "Malformed request", "success": False, **_TIMES})], []
        head: dict[str, Any] = {} if request.req_id is None else {"req_id": request.req_id}
        if request.method == "ping":
            return [_ENCODE({"method": "pong", **head, **_TIMES})], []
        params = request.params
        if request.method not in ("subscribe", "unsubscribe") or params is None:
            error = {"error": f"Method {request.method!r} not found", "success": False}
            return [_ENCODE({**error, "method": request.method, **head, **_TIMES})], []
        replies = []
        for symbol in params.symbol:
            result: dict[str, Any] = {"channel": params.channel, "symbol": symbol}
            if params.depth is not None:
                result["depth"] = params.depth
            if params.snapshot is not None:
                result["snapshot"] = params.snapshot
            if params.event_trigger is not None:
                result["event_trigger"] = params.event_trigger
            replies.append(
                _ENCODE(
                    {"method": request.method, "result": result, "success": True, **_TIMES, **head}
                )
            )
        streams = [f"{params.channel}:{s}" for s in params.symbol]
        return replies, streams if request.method == "subscribe" else []

    def subscribe_texts(self, streams: list[str]) -> list[bytes]:
        by_channel: dict[str, list[str]] = {}
        for name in streams:
            channel, _, symbol = name.partition(":")
            by_channel.setdefault(channel, []).append(symbol)
        return [
            _ENCODE({"method": "subscribe", "params": {"channel": c, "symbol": s}, "req_id": i + 1})
            for i, (c, s) in enumerate(by_channel.items())
        ]

    def snapshot_body(self, path: str, query: dict[str, str], last_update_id: int) -> bytes:
        """Kraken books come over the WebSocket: no REST snapshot."""
        return b'{"error":["EGeneral:Unknown method"]}'
