"""Benchmark scenarios: which streams the generator sends and how the collector subscribes.

A scenario is one or more *groups*. A group is one ``[[markets]]`` entry of the collector's
settings (so one WebSocket connection) and the streams the generator sends on it, with the
share of frames each stream gets. Venues plug in through a :class:`VenueProtocol` (the
venue's answers to subscriptions and REST calls) and :class:`~collector.bench.frames.StreamFrames`
(its frames). Scenarios are rebuilt from their name in the generator process, so everything
here is deterministic.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from collector.bench import binance, bitfinex, bybit, coinbase, deribit, kraken, okx, upbit
from collector.bench.frames import StreamFrames
from collector.config import (
    CollectorSettings,
    MarketSettings,
    Settings,
    StorageSettings,
    WebSocketSettings,
)

SHUTDOWN_TIMEOUT_SECS: Final = 900.0


class VenueProtocol(Protocol):
    """A venue's side of the conversation, as the generator plays it."""

    @property
    def exchange(self) -> str: ...

    @property
    def ws_path(self) -> str:
        """The path the venue's adapter connects to below its ``base_url`` root."""

    @property
    def needs_rest(self) -> bool:
        """Whether the market takes a ``rest_url`` (REST book snapshots)."""

    def base_url(self, root: str) -> str:
        """The market's ``base_url`` for a connection rooted at ``root`` (``ws://h:p/g0``)."""

    def on_client_text(self, payload: bytes) -> tuple[list[bytes], list[str]]:
        """Replies to one client text message, and the streams it subscribed."""

    def snapshot_body(self, path: str, query: dict[str, str], last_update_id: int) -> bytes:
        """A REST book snapshot at ``last_update_id`` (venues whose book sync needs one)."""

    def subscribe_texts(self, streams: list[str]) -> list[bytes]:
        """A client's subscription to ``streams``, one message or several (the discarding
        sink uses it)."""


@dataclass(frozen=True)
class Group:
    """One collector connection: its market settings and the streams sent on it."""

    name: str  # the first URL path segment of the connection, e.g. "g0"
    protocol: VenueProtocol
    symbols: tuple[str, ...]
    feeds: tuple[str, ...]
    book_mode: str | None
    streams: tuple[StreamFrames, ...]
    weights: tuple[float, ...]
    category: str | None = None  # Bybit: "spot" or "linear"; Binance: "usdm" for futures

    def market(self, ws_port: int, rest_port: int) -> MarketSettings:
        return MarketSettings(
            exchange=self.protocol.exchange,
            symbols=self.symbols,
            feeds=self.feeds,  # type: ignore[arg-type]
            base_url=self.protocol.base_url(f"ws://127.0.0.1:{ws_port}/{self.name}"),
            rest_url=f"http://127.0.0.1:{rest_port}" if self.protocol.needs_rest else None,
            category=self.category,
            book_mode=self.book_mode,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    groups: tuple[Group, ...]
    default_count: int
    note: str = ""
    # Where each stream's ids start, per group (None: :func:`first_id`'s fixed spacing,
    # which fits a few hundred streams). A scenario of thousands of streams lays its ids
    # out by each stream's share of the ids sent (:func:`weighted_first_ids`).
    id_layout: tuple[tuple[int, ...], ...] | None = None
    # Frames per group in one period of the send order (None: a few random templates).
    # With thousands of streams of skewed rates, random templates would leave the rare
    # streams out; a period holds every stream at least once, the others by their weight.
    period_frames: int | None = None

    @property
    def stream_count(self) -> int:
        return sum(len(g.streams) for g in self.groups)

    def first_id(self, group_index: int, stream_index: int) -> int:
        """Where the ids of one stream start (see ``id_layout``)."""
        if self.id_layout is None:
            return first_id(group_index, stream_index)
        return self.id_layout[group_index][stream_index]

    def settings(self, ws_port: int, rest_port: int, data_dir: Path) -> Settings:
        """The service's settings: production defaults, pointed at the generator."""
        return Settings(
            collector=CollectorSettings(
                log_level="warning",
                metrics_host="127.0.0.1",
                metrics_port=0,
                # Every file is finished before the rows are counted: a whole market's
                # 6,000 files take longer than the production grace of 30 s to finalize.
                shutdown_timeout_secs=SHUTDOWN_TIMEOUT_SECS,
            ),
            storage=StorageSettings(data_dir=str(data_dir)),
            websocket=WebSocketSettings(),
            markets=tuple(g.market(ws_port, rest_port) for g in self.groups),
        )

    def share(self, group: Group) -> float:
        """The share of all frames sent on ``group``'s connection."""
        total = sum(sum(g.weights) for g in self.groups)
        return sum(group.weights) / total


def first_id(group_index: int, stream_index: int) -> int:
    """Where a stream's sequence ids start (distinct per stream, far below 10**10; the id
    before the first has 10 digits too, for a futures diff's ``pu``)."""
    return 1_000_000_001 + (group_index * 211 + stream_index) * 7_919_333


ID_SPACE: Final = 8_900_000_000
"""Ids a weighted layout spreads over the streams (from 1,000,000,001; below 10**10)."""


def weighted_first_ids(
    groups: Sequence[Group], ids_per_frame: Sequence[Sequence[float]]
) -> tuple[tuple[int, ...], ...]:
    """First ids that give each stream a range in proportion to the ids it uses (its weight
    times its ids per frame), so the busiest streams of a long run stay below 10**10."""
    uses = [
        [w * k for w, k in zip(g.weights, per, strict=True)]
        for g, per in zip(groups, ids_per_frame, strict=True)
    ]
    total = sum(sum(u) for u in uses)
    layout: list[tuple[int, ...]] = []
    at = 1_000_000_001
    for group_uses in uses:
        firsts = []
        for use in group_uses:
            firsts.append(at)
            at += max(1000, int(ID_SPACE * use / total) - 1000)
        layout.append(tuple(firsts))
    return tuple(layout)


# --------------------------------------------------------------------------- symbols

_BASES: Final = [
    "BTC",
    "ETH",
    "SOL",
    "BNB",
    "XRP",
    "DOGE",
    "ADA",
    "TRX",
    "AVAX",
    "LINK",
    "DOT",
    "POL",
    "LTC",
    "BCH",
    "NEAR",
    "UNI",
    "APT",
    "ICP",
    "FIL",
    "ATOM",
    "ARB",
    "OP",
    "INJ",
    "SUI",
    "SEI",
    "TIA",
    "RUNE",
    "AAVE",
    "MKR",
    "LDO",
    "STX",
    "IMX",
    "HBAR",
    "VET",
    "ALGO",
    "GRT",
    "SAND",
    "MANA",
    "AXS",
    "EGLD",
]


@dataclass(frozen=True)
class _Market:
    symbol: str
    mid: float
    tick: float


def _markets(count: int, seed: int = 7) -> list[_Market]:
    rng = random.Random(seed)
    out = [_Market("BTCUSDT", 61234.56, 0.01), _Market("ETHUSDT", 2650.12, 0.01)]
    for base in _BASES[2:count]:
        mid = 10 ** rng.uniform(-1.5, 2.8)
        tick = 10 ** (math.floor(math.log10(mid)) - 4)
        out.append(_Market(f"{base}USDT", round(mid, 6), tick))
    return out[:count]


def _many_markets(count: int, seed: int = 7) -> list[_Market]:
    """``count`` USDT markets: the named coins first, then made-up ones (``C0040USDT``...)."""
    out = _markets(min(count, len(_BASES)), seed)
    rng = random.Random(seed + 1)
    for i in range(len(out), count):
        mid = 10 ** rng.uniform(-4.0, 2.0)
        tick = 10 ** (math.floor(math.log10(mid)) - 4)
        out.append(_Market(f"C{i:04d}USDT", round(mid, 8), tick))
    return out


def _zipf(count: int) -> list[float]:
    return [1.0 / (i + 1) for i in range(count)]


# --------------------------------------------------------------------------- scenarios


def _single(
    name: str,
    title: str,
    default_count: int,
    make: Callable[[_Market], StreamFrames],
    feed: str,
    book_mode: str | None,
) -> Scenario:
    markets = _markets(10)
    group = Group(
        name="g0",
        protocol=binance.BinanceProtocol({m.symbol: (m.mid, m.tick) for m in markets}),
        symbols=tuple(m.symbol for m in markets),
        feeds=(feed,),
        book_mode=book_mode,
        streams=tuple(make(m) for m in markets),
        weights=tuple(_zipf(len(markets))),
    )
    return Scenario(name, title, (group,), default_count)


def _mixed() -> Scenario:
    markets = _markets(36)
    # Shares of frames by kind, as in recorded Binance traffic of liquid symbols; OKX and
    # Bybit carry a smaller share of the flow than Binance.
    ticker_share, trade_share, diff_share, depth20_share = 0.45, 0.35, 0.12, 0.08
    okx_share, bybit_share = 0.5, 0.5
    a, b, c, d = markets[:12], markets[12:20], markets[20:28], markets[28:36]
    zipf = _zipf(12)
    streams_a: list[StreamFrames] = []
    weights_a: list[float] = []
    for m, w in zip(a, zipf, strict=True):
        streams_a += [
            binance.TradeStream(m.symbol, m.mid),
            binance.DiffDepthStream(m.symbol, m.mid, m.tick),
            binance.BookTickerStream(m.symbol, m.mid, m.tick),
        ]
        weights_a += [trade_share * w, diff_share * w, ticker_share * w]
    streams_b: list[StreamFrames] = []
    weights_b: list[float] = []
    for m, w in zip(b, zipf[: len(b)], strict=True):
        streams_b += [
            binance.TradeStream(m.symbol, m.mid),
            binance.PartialDepthStream(m.symbol, m.mid, m.tick),
        ]
        weights_b += [trade_share * w * 0.5, depth20_share * w * 2]
    streams_c: list[StreamFrames] = []
    weights_c: list[float] = []
    for m, w in zip(c, zipf[: len(c)], strict=True):
        inst = okx.inst_id(m.symbol)
        streams_c += [
            okx.TradeStream(inst, m.mid),
            okx.BookStream(inst, m.mid, m.tick),
            okx.TickerStream(inst, m.mid, m.tick),
        ]
        w *= okx_share
        weights_c += [trade_share * w, diff_share * w * 2, ticker_share * w * 0.5]
    streams_d: list[StreamFrames] = []
    weights_d: list[float] = []
    for m, w in zip(d, zipf[: len(d)], strict=True):
        streams_d += [
            bybit.TradeStream(m.symbol, m.mid),
            bybit.BookStream(m.symbol, m.mid, m.tick),
            bybit.TickerStream(m.symbol, m.mid, m.tick),
        ]
        w *= bybit_share
        weights_d += [trade_share * w, diff_share * w * 2, ticker_share * w * 0.5]
    proto = binance.BinanceProtocol({m.symbol: (m.mid, m.tick) for m in markets})
    feeds = ("trades", "orderbook", "ticker")
    groups = (
        Group(
            "g0",
            proto,
            tuple(m.symbol for m in a),
            feeds,
            "diff",
            tuple(streams_a),
            tuple(weights_a),
        ),
        Group(
            "g1",
            proto,
            tuple(m.symbol for m in b),
            ("trades", "orderbook"),
            None,
            tuple(streams_b),
            tuple(weights_b),
        ),
        Group(
            "g2",
            okx.OkxProtocol(),
            tuple(okx.inst_id(m.symbol) for m in c),
            feeds,
            None,  # the books channel: a snapshot, then updates
            tuple(streams_c),
            tuple(weights_c),
        ),
        Group(
            "g3",
            bybit.BybitProtocol(),
            tuple(m.symbol for m in d),
            feeds,
            None,  # orderbook.50: a snapshot, then deltas
            tuple(streams_d),
            tuple(weights_d),
            category=bybit.CATEGORY,
        ),
    )
    return Scenario(
        "mixed",
        "mixed: 100 streams on binance, okx and bybit, 4 connections",
        groups,
        1_000_000,
    )


def _futures_depth() -> Scenario:
    """USD-M diff depth at ``@depth@0ms``-like rates: BTCUSDT and ETHUSDT perpetual books."""
    books = {"BTCUSDT": (61234.5, 0.1), "ETHUSDT": (2650.12, 0.01)}
    proto = binance.BinanceUsdmProtocol("/public", books)
    group = Group(
        "g0",
        proto,
        ("BTCUSDT", "ETHUSDT"),
        ("orderbook",),
        "diff",
        (*(binance.FuturesDiffDepthStream(s, mid, tick) for s, (mid, tick) in books.items()),),
        (0.65, 0.35),
        category=proto.category,
    )
    return Scenario(
        "futures-depth",
        "binance USD-M diff depth, small frames at @depth@0ms-like rates (2 perpetuals)",
        (group,),
        600_000,
        note="every update kept: rows == frames (+ one REST snapshot row per book)",
    )


def _mixed_futures() -> Scenario:
    """Spot and USD-M futures of the same coins at once: three connections (spot; USD-M
    ``/public`` books and tickers; USD-M ``/market`` trades), shares as in the recorded
    spot and USD-M BTCUSDT traffic (hftbacktest's captures: futures ~2.3x spot's frames)."""
    markets = _markets(6)
    zipf = _zipf(len(markets))
    spot_streams: list[StreamFrames] = []
    spot_weights: list[float] = []
    public_streams: list[StreamFrames] = []
    public_weights: list[float] = []
    market_streams: list[StreamFrames] = []
    market_weights: list[float] = []
    for m, w in zip(markets, zipf, strict=True):
        spot_streams += [
            binance.TradeStream(m.symbol, m.mid),
            binance.DiffDepthStream(m.symbol, m.mid, m.tick),
            binance.BookTickerStream(m.symbol, m.mid, m.tick),
        ]
        spot_weights += [0.24 * w, 0.08 * w, 0.68 * w]
        public_streams += [
            binance.FuturesDiffDepthStream(m.symbol, m.mid, m.tick),
            binance.FuturesBookTickerStream(m.symbol, m.mid, m.tick),
        ]
        # Futures: depth@0ms ~7 %, bookTicker ~70 %, trades ~23 % of ~2.3x spot's frames.
        public_weights += [2.3 * 0.07 * w, 2.3 * 0.70 * w]
        market_streams.append(binance.FuturesAggTradeStream(m.symbol, m.mid))
        market_weights.append(2.3 * 0.23 * w)
    symbols = tuple(m.symbol for m in markets)
    # The REST snapshots are built around each stream's mid, so the books stay uncrossed.
    books = {m.symbol: (m.mid, m.tick) for m in markets}
    public = binance.BinanceUsdmProtocol("/public", books)
    market = binance.BinanceUsdmProtocol("/market")
    groups = (
        Group(
            "g0",
            binance.BinanceProtocol(books),
            symbols,
            ("trades", "orderbook", "ticker"),
            "diff",
            tuple(spot_streams),
            tuple(spot_weights),
        ),
        Group(
            "g1",
            public,
            symbols,
            ("orderbook", "ticker"),
            "diff",
            tuple(public_streams),
            tuple(public_weights),
            category=public.category,
        ),
        Group(
            "g2",
            market,
            symbols,
            ("trades",),
            None,
            tuple(market_streams),
            tuple(market_weights),
            category=market.category,
        ),
    )
    return Scenario(
        "mixed-futures",
        "binance spot + USD-M futures: 6 coins on both, 3 connections",
        groups,
        1_000_000,
    )


MARKET_SYMBOLS: Final = 1500
MARKET_CONNECTIONS: Final = 5
MARKET_RATE: Final = 15_000.0  # frames/s the per-symbol diff-depth cap is worked out for
# Shares of a symbol's frames by stream, as in recorded Binance spot traffic: bookTicker
# the most, then trades, then diff depth, which Binance sends at most every 100 ms.
MARKET_SHARES: Final = {"ticker": 0.55, "trades": 0.30, "orderbook": 0.15}
DIFF_MAX_PER_SECOND: Final = 10.0
DIFF_IDS_PER_FRAME: Final = 30.5  # DiffDepthStream: 1-60 updates per frame


def _market_scenario(count: int) -> Scenario:
    """A whole spot market: ``count`` symbols x (trades, bookTicker, diff depth), pooled over
    :data:`MARKET_CONNECTIONS` connections (one ``[[markets]]`` entry each; Binance takes
    1,024 streams per connection, so 1,500 symbols need 5 however they are split).

    Per-symbol rates follow Zipf's law by rank (the busiest symbol ~13 % of all frames at
    1,500 symbols), with each symbol's diff depth capped at 10 frames/s at
    :data:`MARKET_RATE`, as ``@depth@100ms`` is. Ranks are dealt to the connections in turn
    (rank r on connection r mod 5), so every connection carries hot and cold symbols, as a
    list in alphabetical order does."""
    markets = _many_markets(count)
    zipf = _zipf(count)
    shares = MARKET_SHARES
    capped = DIFF_MAX_PER_SECOND

    def total(scale: float) -> float:
        """Frames/s of all streams when a symbol of Zipf weight z sends z * scale."""
        rest = 1 - shares["orderbook"]
        return sum(rest * z * scale + min(shares["orderbook"] * z * scale, capped) for z in zipf)

    # The scale that makes MARKET_RATE frames/s in all with the diffs capped (bisection).
    low, high = 0.0, MARKET_RATE / sum(zipf) / (1 - shares["orderbook"])
    for _ in range(60):
        middle = (low + high) / 2
        if total(middle) < MARKET_RATE:
            low = middle
        else:
            high = middle
    scale = (low + high) / 2
    connections = min(MARKET_CONNECTIONS, count)
    per_group: list[tuple[list[_Market], list[StreamFrames], list[float]]] = [
        ([], [], []) for _ in range(connections)
    ]
    for rank, (m, z) in enumerate(zip(markets, zipf, strict=True)):
        symbols, streams, weights = per_group[rank % connections]
        symbols.append(m)
        streams += [
            binance.TradeStream(m.symbol, m.mid),
            binance.BookTickerStream(m.symbol, m.mid, m.tick),
            binance.DiffDepthStream(m.symbol, m.mid, m.tick),
        ]
        # Weights are frames/s at MARKET_RATE (the generator scales them to --rate).
        weights += [
            shares["trades"] * z * scale,
            shares["ticker"] * z * scale,
            min(shares["orderbook"] * z * scale, capped),
        ]
    proto = binance.BinanceProtocol({m.symbol: (m.mid, m.tick) for m in markets})
    groups = tuple(
        Group(
            f"g{i}",
            proto,
            tuple(m.symbol for m in symbols),
            ("trades", "ticker", "orderbook"),
            "diff",
            tuple(streams),
            tuple(weights),
        )
        for i, (symbols, streams, weights) in enumerate(per_group)
    )
    ids_per_frame = [[1.0, 1.0, DIFF_IDS_PER_FRAME] * len(g.symbols) for g in groups]
    name = "market" if count == MARKET_SYMBOLS else f"market-{count}"
    return Scenario(
        name,
        f"binance spot market: {count:,} symbols x (trades, bookTicker, diff depth) = "
        f"{3 * count:,} streams, {connections} connections, Zipf rates",
        groups,
        1_000_000,
        note="every update kept: rows == frames (+ one REST snapshot row per book synced)",
        id_layout=weighted_first_ids(groups, ids_per_frame),
        # Every stream at least once a period; at 1,500 symbols the rarest stream's share
        # is about 1 in 16,000 of its connection's frames.
        period_frames=max(2_000, min(20_000, 15 * 3 * count // connections)),
    )


_MARKET_NAME: Final = re.compile(r"market(?:-(\d+))?")


def is_scenario(name: str) -> bool:
    """Whether ``name`` names a scenario (the fixed ones, or ``market-N`` for N >= 1)."""
    match = _MARKET_NAME.fullmatch(name)
    if match is not None:
        return match.group(1) is None or int(match.group(1)) >= 1
    return name in SCENARIOS or name in VENUE_SCENARIOS


# Each venue's markets in its own spelling: (symbol, mid, tick).
_VENUE_MARKETS: Final[dict[str, tuple[tuple[str, float, float], ...]]] = {
    "binance": (("BTCUSDT", 61234.56, 0.01), ("ETHUSDT", 2650.12, 0.01)),
    "okx": (("BTC-USDT", 61234.5, 0.1), ("ETH-USDT", 2650.12, 0.01)),
    "bybit": (("BTCUSDT", 61234.5, 0.1), ("ETHUSDT", 2650.12, 0.01)),
    "kraken": (("BTC/USD", 61234.5, 0.1), ("ETH/USD", 2650.12, 0.01)),
    "deribit": (("BTC-PERPETUAL", 61234.5, 0.5), ("ETH-PERPETUAL", 2650.1, 0.05)),
    "upbit": (("KRW-BTC", 95123000.0, 1000.0), ("KRW-ETH", 4012000.0, 1000.0)),
    "bitfinex": (("tBTCUSD", 61234.0, 1.0), ("tETHUSD", 2650.1, 0.1)),
    "coinbase": (("BTC-USD", 61234.56, 0.01), ("ETH-USD", 2650.12, 0.01)),
}
# Shares of frames by kind (trades, book, ticker) on a venue's connection.
_VENUE_WEIGHTS: Final = (0.35, 0.2, 0.45)


def _venue_streams(exchange: str, symbol: str, mid: float, tick: float) -> list[StreamFrames]:
    """Trades, book and ticker frames of one market, in ``_VENUE_WEIGHTS`` order."""
    if exchange == "binance":
        return [
            binance.TradeStream(symbol, mid),
            binance.DiffDepthStream(symbol, mid, tick),
            binance.BookTickerStream(symbol, mid, tick),
        ]
    if exchange == "okx":
        return [okx.TradeStream(symbol, mid), okx.BookStream(symbol, mid, tick),
                okx.TickerStream(symbol, mid, tick)]  # fmt: skip
    if exchange == "bybit":
        return [bybit.TradeStream(symbol, mid), bybit.BookStream(symbol, mid, tick),
                bybit.TickerStream(symbol, mid, tick)]  # fmt: skip
    if exchange == "kraken":
        return [kraken.TradeStream(symbol, mid, tick), kraken.BookStream(symbol, mid, tick),
                kraken.TickerStream(symbol, mid, tick)]  # fmt: skip
    if exchange == "deribit":
        lot = 10.0 if symbol.startswith("BTC") else 1.0  # USD 10 contracts; ETH: USD 1
        return [deribit.TradeStream(symbol, mid, tick, lot),
                deribit.BookStream(symbol, mid, tick, lot),
                deribit.TickerStream(symbol, mid, tick, lot)]  # fmt: skip
    if exchange == "bitfinex":
        return [bitfinex.TradeStream(symbol, mid, tick), bitfinex.BookStream(symbol, mid, tick),
                bitfinex.TickerStream(symbol, mid, tick)]  # fmt: skip
    if exchange == "coinbase":
        return [coinbase.TradeStream(symbol, mid, tick), coinbase.BookStream(symbol, mid, tick),
                coinbase.TickerStream(symbol, mid, tick)]  # fmt: skip
    if exchange == "upbit":
        return [upbit.TradeStream(symbol, mid, tick), upbit.OrderbookStream(symbol, mid, tick),
                upbit.TickerStream(symbol, mid, tick)]  # fmt: skip
    raise KeyError(exchange)


_PROTOCOLS: Final[dict[str, Callable[[], VenueProtocol]]] = {
    "binance": binance.BinanceProtocol,
    "okx": okx.OkxProtocol,
    "bybit": bybit.BybitProtocol,
    "kraken": kraken.KrakenProtocol,
    "deribit": deribit.DeribitProtocol,
    "upbit": upbit.UpbitProtocol,
    "bitfinex": bitfinex.BitfinexProtocol,
    "coinbase": coinbase.CoinbaseProtocol,
}


def _venue(exchange: str) -> Scenario:
    """One connection to ``exchange``: trades, book and ticker of two markets."""
    streams: list[StreamFrames] = []
    weights: list[float] = []
    for (symbol, mid, tick), share in zip(_VENUE_MARKETS[exchange], (0.6, 0.4), strict=True):
        streams += _venue_streams(exchange, symbol, mid, tick)
        weights += [w * share for w in _VENUE_WEIGHTS]
    group = Group(
        "g0",
        binance.BinanceProtocol({m[0]: (m[1], m[2]) for m in _VENUE_MARKETS[exchange]})
        if exchange == "binance"
        else _PROTOCOLS[exchange](),
        tuple(m[0] for m in _VENUE_MARKETS[exchange]),
        ("trades", "orderbook", "ticker"),
        "diff" if exchange == "binance" else None,
        tuple(streams),
        tuple(weights),
        category=bybit.CATEGORY if exchange == "bybit" else None,
    )
    return Scenario(
        exchange,
        f"{exchange}: trades, book and ticker of 2 markets, 1 connection",
        (group,),
        200_000,
    )


def _build(name: str) -> Scenario:
    market = _MARKET_NAME.fullmatch(name)
    if market is not None:
        count = int(market.group(1)) if market.group(1) else MARKET_SYMBOLS
        if count < 1:
            raise KeyError(name)
        return _market_scenario(count)
    if name in _VENUE_MARKETS:
        return _venue(name)
    if name == "trades":
        return _single(
            "trades",
            "binance trades (10 symbols)",
            2_000_000,
            lambda m: binance.TradeStream(m.symbol, m.mid),
            "trades",
            None,
        )
    if name == "depth":
        return _single(
            "depth",
            "binance diff depth @depth@100ms (10 symbols)",
            600_000,
            lambda m: binance.DiffDepthStream(m.symbol, m.mid, m.tick),
            "orderbook",
            "diff",
        )
    if name == "depth20":
        return _single(
            "depth20",
            "binance @depth20@100ms snapshots (10 symbols)",
            400_000,
            lambda m: binance.PartialDepthStream(m.symbol, m.mid, m.tick),
            "orderbook",
            None,
        )
    if name == "mixed":
        return _mixed()
    if name == "futures-depth":
        return _futures_depth()
    if name == "mixed-futures":
        return _mixed_futures()
    raise KeyError(name)


SCENARIOS: Final[tuple[str, ...]] = (
    "trades",
    "depth",
    "depth20",
    "mixed",
    "futures-depth",
    "mixed-futures",
)
"""The throughput scenarios (``--scenario all``)."""
VENUE_SCENARIOS: Final[tuple[str, ...]] = tuple(_VENUE_MARKETS)
"""One scenario per venue the generator speaks, named after it (``--scenario venues``):
every venue's frames through the whole service, rows checked against frames."""


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; KeyError if there is none."""
    return _build(name)


def stream_index(scenario: Scenario) -> dict[str, tuple[int, int]]:
    """Stream name -> (group index, stream index)."""
    return {
        s.stream: (gi, si)
        for gi, group in enumerate(scenario.groups)
        for si, s in enumerate(group.streams)
    }


def pick_order(weights: Sequence[float], count: int, rng: random.Random) -> list[int]:
    """``count`` stream indexes drawn by weight."""
    return rng.choices(range(len(weights)), weights=weights, k=count)
