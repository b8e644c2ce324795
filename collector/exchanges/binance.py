"""Binance spot, USD-M futures and COIN-M futures (sans-IO): combined streams, SUBSCRIBE
frames, parsing and sequence checks.

A market's ``category`` picks the product: ``spot`` (the default), ``usdm`` (USD-M futures,
``fstream``) or ``coinm`` (COIN-M futures, ``dstream``). The same symbol (``BTCUSDT``) names
a spot pair and a USD-M perpetual, so each category has its own ``exchange`` in rows, files
and metrics: ``binance``, ``binance-usdm``, ``binance-coinm`` (:data:`PROFILES`). COIN-M
symbols carry their contract: ``BTCUSD_PERP``, ``BTCUSD_250926``.

Connections use combined streams (``/stream``), up to 1024 streams each, added with
``SUBSCRIBE`` frames after the handshake. Every data frame is an envelope
``{"stream": "<sym>@<type>", "data": {...}}`` and the stream name decides how ``data`` is
read (spot partial depth carries no symbol of its own). Endpoints per category:

- spot: ``wss://stream.binance.com:9443/stream?timeUnit=MICROSECOND`` (microsecond times);
- usdm: ``wss://fstream.binance.com/public/stream`` for book streams (``@depth...``,
  ``@bookTicker``) and ``.../market/stream`` for everything else (``@aggTrade``,
  ``@markPrice@1s``, ``@forceOrder``): USD-M
  routes streams by URL path, and a stream opened on the wrong path delivers nothing,
  without an error. So a USD-M symbol with trades and a book is on two connections;
- coinm: ``wss://dstream.binance.com/stream`` (no routing).

Futures times are milliseconds (microsecond ``timeUnit`` is not documented there); every
time is stored in microseconds either way.

Feeds and streams:

- ``trades`` -> ``<sym>@trade`` (spot) or ``<sym>@aggTrade`` (futures: the documented trade
  stream; ``@trade`` is served but undocumented there). An aggregate trade is the fills of
  one taker order at one price; its id ``a`` is the row's ``trade_id`` and ``sequence``;
- ``orderbook`` -> ``<sym>@depth<N>@100ms`` (``book_mode = "snapshot"``, the default; N =
  ``book_depth`` in 5/10/20, default 20) or ``<sym>@depth@100ms`` (``book_mode = "diff"``);
  a futures partial book also carries ``U``/``u``/``pu`` (kept in the row's sequences);
- ``ticker`` -> ``<sym>@bookTicker``;
- ``derivatives`` (usdm, coinm) -> ``<sym>@markPrice@1s`` (``/market`` on USD-M), plus open
  interest from REST (``/fapi/v1/openInterest``, ``/dapi/v1/openInterest``; Binance streams
  none), polled by the connection every ``open_interest_interval_secs``
  (:meth:`BinanceAdapter.polling`). Both are merged into one state per symbol, so each
  ``derivative_ticker`` row holds the mark, index, estimated settle price, funding rate and
  time *and* the open interest as they stand after its message: a ``markPrice`` row carries
  the last polled open interest, an ``openInterest`` row the last mark price. Open interest
  polled before the symbol's first mark price writes no row of its own (that first
  ``markPrice`` row carries it). The rows' ``sequence`` is the mark price event time ``E``
  (ms) of the state: mark prices carry no id, and ``E`` grows by a second per message and is
  the same on every connection, so it orders the rows of a planned reconnect's overlap
  (``collector.ingest.handover``); an ``openInterest`` row repeats the ``E`` of the state it
  joins. COIN-M delivery contracts send ``"r":""`` and ``"T":0``: no funding (null);
- ``liquidations`` (usdm, coinm) -> ``<sym>@forceOrder`` (``/market`` on USD-M): at most the
  latest liquidation per symbol per second is pushed, so the rows are a sample, not every
  liquidation. ``S`` is the liquidation order's side (``SELL`` closes a long); ``size`` is
  the filled quantity ``z`` (base coin on USD-M, contracts on COIN-M), ``price`` the order
  price ``p``, ``avg_price`` ``ap``, ``status`` ``X``; no sequence (none is sent);
- ``raw`` -> no stream: the connection keeps every frame (``ConnectionPlan.raw``).

Sequence rules (per symbol, per session; a reconnect starts afresh):

- mark prices: a ``markPriceUpdate`` whose ``E`` is at or below the symbol's last one is a
  repeat: dropped and counted (reason ``duplicate``). Polled open interest older than the
  last one applied is dropped likewise (reason ``stale``).
- trades: ``t`` (spot) or ``a`` (futures) should grow by exactly 1. A jump is reported as a
  ``gap`` status row. This is a heuristic: Binance does not document these ids as gap-free
  (exchanges.md: UNCONFIRMED). An id at or below the last one is a duplicate: dropped and
  counted (:meth:`Session.count_discard`, reason ``duplicate``).
- diff depth: ``U`` must equal the previous ``u`` + 1 (spot), or ``pu`` the previous ``u``
  (futures, whose frames carry ``pu``: there ``U`` skips ids of other symbols); otherwise a
  ``gap`` row. A frame with ``u`` at or below the previous ``u`` is stale: dropped and
  counted likewise (reason ``stale``). The first delta of a session has no predecessor and
  so no gap.
- diff depth book sync: deltas alone cannot rebuild a book, so once a diff stream is
  acknowledged, and again after every gap, the session asks for a REST depth snapshot
  (``GET {rest_url}{depth path}?symbol=X&limit=1000``, via :attr:`Actions.fetch`; the path
  is ``/api/v3/depth``, ``/fapi/v1/depth`` or ``/dapi/v1/depth``). The snapshot is written
  as an ``orderbook`` row of kind ``snapshot`` (``sequence`` = ``lastUpdateId``) with a
  ``resync`` status row. Following the venue's procedure, the recorded deltas must join
  ``lastUpdateId``: each delta stands for the ids after its predecessor (``U - 1`` on spot,
  ``pu`` on futures) up to ``u``, and the first delta past the snapshot must start at or
  before it (spot: ``U <= lastUpdateId + 1``; futures: ``pu <= lastUpdateId``, which holds
  for the venue's ``U <= lastUpdateId <= u`` and for a delta that continues the snapshot
  exactly, ``pu == lastUpdateId``). Readers (and the writer's checkpoints) replay rows in
  the order received, so the rows are joined here, where the ids are known:

  - the deltas recorded since the book was last in sync (or since the last gap) are kept
    (at most :data:`MAX_UNSYNCED_DELTAS`); those the snapshot does not hold
    (``u > lastUpdateId``) are applied to it, and the row states the book as of the last of
    them (``sequence`` = its ``u``, ``first_sequence`` = ``lastUpdateId``);
  - a delta that arrives after the snapshot and that it holds (``u <= lastUpdateId``) is
    not written (counted, reason ``stale``): applied after it, it would rewind the book;
  - a snapshot older than the first kept delta (the ids between are in neither) is not
    written (counted ``stale``) and asked for again; a first delta past a snapshot that
    does not join it is a ``gap`` (and another snapshot).

  So a book is rebuilt from a snapshot row and the delta rows after it, in order
  (``tests/test_book_proof.py`` proves it on recorded traffic). From the snapshot row on,
  each delta written after it is applied to a
  :class:`~collector.exchanges.book_check.CrossCheck`: a crossed book (best bid >= best
  ask) is a ``gap`` row (:meth:`Session.book_invalid`) and a new snapshot of that symbol,
  whose ``resync`` row ends ``after a crossed book``.

Subscribe errors: Binance rejects a whole ``SUBSCRIBE`` request when one stream in it is
invalid. So a rejected request of several streams is split in two and both halves are sent
again (via :attr:`Actions.send`), until the bad stream stands alone; only that one gets a
``subscribe_error`` row, and the other symbols keep flowing. A finally rejected subscription
counts as resolved in ``pending_subscriptions`` (it will never be acknowledged, and readiness
must not wait for it forever); the status row and :attr:`BinanceSession.rejected` tell about it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final
from urllib.parse import quote

import attrs
import msgspec

from collector.config import Feed, MarketSettings
from collector.events import (
    BookUpdate,
    DerivativeTicker,
    Event,
    Instrument,
    Levels,
    Liquidation,
    PositionSide,
    Side,
    SizeUnit,
    Ticker,
    Trade,
    level_pairs,
    levels_from_pairs,
)
from collector.exchanges.base import (
    RESYNC_REASON_TEXT,
    BookResyncReason,
    ConnectionPlan,
    ExchangeAdapter,
    InstrumentsRequest,
    Listing,
    ParseError,
    Polling,
    Session,
    SnapshotRequest,
    Subscription,
)
from collector.exchanges.book_check import CrossCheck
from collector.exchanges.common import choices, join_ws_path, normalize_asset, optional_float

EXCHANGE: Final = "binance"
MAX_STREAMS_PER_CONNECTION: Final = 1024
# Streams per SUBSCRIBE frame: keeps every frame small (a few KiB).
MAX_STREAMS_PER_SUBSCRIBE: Final = 200
PARTIAL_DEPTHS: Final = frozenset({5, 10, 20})
DEFAULT_PARTIAL_DEPTH: Final = 20
DEFAULT_REST_URL: Final = "https://api.binance.com"
# Levels per REST snapshot: spot weight 50 of 6000/min (5000 levels would cost 250);
# futures weight 20 of 2400/min, a budget USD-M and COIN-M share.
SNAPSHOT_LIMIT: Final = 1000
# Deltas kept per symbol while its book waits for a snapshot (to join one older than them):
# at 10 a second, 1000 s of a REST outage; past it the oldest go (a snapshot older than what
# is kept is then asked for again).
MAX_UNSYNCED_DELTAS: Final = 10_000
CATEGORIES: Final = ("spot", "usdm", "coinm")
# Open interest polling: the default interval between rounds, the shortest allowed, and
# requests per second of every connection together (one pace per REST budget, weight 1
# each: 120 of the 2400/min USD-M and COIN-M share, next to the book snapshots' quarter).
DEFAULT_OPEN_INTEREST_INTERVAL_SECS: Final = 60.0
MIN_OPEN_INTEREST_INTERVAL_SECS: Final = 5.0
OPEN_INTEREST_REQUESTS_PER_SECOND: Final = 2.0
DERIVATIVES_STREAM: Final = "markPrice@1s"
LIQUIDATIONS_STREAM: Final = "forceOrder"

# A symbol: letters and digits, and on futures a contract suffix (COIN-M always has one:
# ``BTCUSD_PERP``, ``BTCUSD_250926``; a dated USD-M future is ``BTCUSDT_250926``).
_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{2,20}(_(PERP|\d{6}))?")
# Below this a timestamp is in milliseconds (ms now ~1.7e12, us ~1.7e15).
_MS_LIMIT: Final = 10**14


def _us(value: int) -> int:
    """Microseconds from a Binance timestamp in either unit."""
    return value * 1000 if value < _MS_LIMIT else value


# --------------------------------------------------------------------------- wire structs


class _SymbolInfo(msgspec.Struct, gc=False):
    symbol: str
    quoteAsset: str | None = None
    status: str | None = None  # spot and USD-M
    contractStatus: str | None = None  # COIN-M

    @property
    def trading(self) -> bool:
        return (self.status or self.contractStatus or "TRADING") == "TRADING"


class _ExchangeInfo(msgspec.Struct, gc=False):
    symbols: list[_SymbolInfo]


class _ErrorBody(msgspec.Struct, gc=False):
    code: int | None = None
    msg: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    """Every frame: a combined-stream envelope, a request response, or a bare event."""

    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent
    id: int | str | msgspec.UnsetType | None = msgspec.UNSET
    code: int | None = None
    msg: str | None = None
    error: _ErrorBody | None = None
    e: str | None = None


class _Trade(msgspec.Struct, gc=False, tag_field="e", tag="trade"):
    trade_id: int = msgspec.field(name="t")
    price: float = msgspec.field(name="p")
    size: float = msgspec.field(name="q")
    trade_time: int = msgspec.field(name="T")
    # "Is the buyer the market maker?" (Binance WebSocket Streams docs, trade streams):
    # true means the seller was the aggressor, so ``side`` = "sell" (confirmed).
    buyer_is_maker: bool = msgspec.field(name="m")


class _AggTrade(msgspec.Struct, gc=False, tag_field="e", tag="aggTrade"):
    """A futures aggregate trade, read into the same attributes as :class:`_Trade`."""

    trade_id: int = msgspec.field(name="a")
    price: float = msgspec.field(name="p")
    size: float = msgspec.field(name="q")
    trade_time: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")


class _DepthDiff(msgspec.Struct, gc=False, tag_field="e", tag="depthUpdate"):
    event_time: int = msgspec.field(name="E")
    first_id: int = msgspec.field(name="U")
    last_id: int = msgspec.field(name="u")
    bids: list[tuple[float, float]] = msgspec.field(name="b")
    asks: list[tuple[float, float]] = msgspec.field(name="a")
    prev_id: int | None = msgspec.field(default=None, name="pu")


class _MarkPrice(msgspec.Struct, gc=False, tag_field="e", tag="markPriceUpdate"):
    """A futures mark price: ``r`` is ``""`` and ``T`` 0 for COIN-M delivery contracts."""

    event_time: int = msgspec.field(name="E")
    mark_price: float = msgspec.field(name="p")
    index_price: float | None = msgspec.field(default=None, name="i")
    settle_price: float | None = msgspec.field(default=None, name="P")
    funding_rate: str = msgspec.field(default="", name="r")
    funding_time: int = msgspec.field(default=0, name="T")


class _ForceOrderBody(msgspec.Struct, gc=False):
    side: str = msgspec.field(name="S")
    price: float = msgspec.field(name="p")
    filled: float = msgspec.field(name="z")
    trade_time: int = msgspec.field(name="T")
    avg_price: float | None = msgspec.field(default=None, name="ap")
    status: str | None = msgspec.field(default=None, name="X")


class _ForceOrder(msgspec.Struct, gc=False, tag_field="e", tag="forceOrder"):
    """A futures liquidation order (the latest of its symbol in the last second)."""

    order: _ForceOrderBody = msgspec.field(name="o")


class _OpenInterest(msgspec.Struct, gc=False):
    """A polled ``openInterest`` REST body (COIN-M adds ``pair`` and ``contractType``)."""

    open_interest: float = msgspec.field(name="openInterest")
    time: int


class _TaggedEnvelope(msgspec.Struct, gc=False):
    """A combined-stream frame of a stream whose data names its kind (``"e"``): trades,
    book deltas, mark prices and liquidations are decoded in one pass, not an envelope and
    then its data."""

    stream: str | None = None
    data: _Trade | _AggTrade | _DepthDiff | _MarkPrice | _ForceOrder | None = None


class _PartialDepth(msgspec.Struct, gc=False):
    """A spot partial book, and every REST depth snapshot (futures ones carry ``E``)."""

    last_update_id: int = msgspec.field(name="lastUpdateId")
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    event_time: int | None = msgspec.field(default=None, name="E")


class _FuturesPartialDepth(msgspec.Struct, gc=False):
    """A futures partial book: the top levels, with the ids of a diff frame."""

    event_time: int = msgspec.field(name="E")
    first_id: int = msgspec.field(name="U")
    last_id: int = msgspec.field(name="u")
    prev_id: int = msgspec.field(name="pu")
    bids: list[tuple[float, float]] = msgspec.field(name="b")
    asks: list[tuple[float, float]] = msgspec.field(name="a")


class _BookTicker(msgspec.Struct, gc=False):
    update_id: int = msgspec.field(name="u")
    bid_price: float = msgspec.field(name="b")
    bid_size: float = msgspec.field(name="B")
    ask_price: float = msgspec.field(name="a")
    ask_size: float = msgspec.field(name="A")
    event_time: int | None = msgspec.field(default=None, name="E")


# Reused decoders. strict=False lets msgspec turn the venue's decimal strings into floats
# in C (no per-level Python loop).
_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_TAGGED_ENVELOPE: Final = msgspec.json.Decoder(_TaggedEnvelope, strict=False)
_NOT_TAGGED: Final = _TaggedEnvelope()
_TRADE: Final = msgspec.json.Decoder(_Trade, strict=False)
_AGG_TRADE: Final = msgspec.json.Decoder(_AggTrade, strict=False)
_FUTURES_PARTIAL_DEPTH: Final = msgspec.json.Decoder(_FuturesPartialDepth, strict=False)
_DEPTH_DIFF: Final = msgspec.json.Decoder(_DepthDiff, strict=False)
_PARTIAL_DEPTH: Final = msgspec.json.Decoder(_PartialDepth, strict=False)
_BOOK_TICKER: Final = msgspec.json.Decoder(_BookTicker, strict=False)
_MARK_PRICE: Final = msgspec.json.Decoder(_MarkPrice, strict=False)
_FORCE_ORDER: Final = msgspec.json.Decoder(_ForceOrder, strict=False)
_OPEN_INTEREST: Final = msgspec.json.Decoder(_OpenInterest, strict=False)
_ENCODER: Final = msgspec.json.Encoder()

_PARSE_ERRORS: Final = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError)


# --------------------------------------------------------------------------- adapter


@attrs.frozen
class Profile:
    """What differs between Binance's categories (one endpoint family each)."""

    category: str
    exchange: str  # the ``exchange`` of rows, files and metrics
    ws_url: str
    rest_url: str
    depth_path: str  # REST depth snapshots
    symbols_path: str  # REST symbol list
    trade_stream: str  # the stream type of the trades feed
    futures: bool
    # REST snapshots per second over all connections of the budget (they share one pacer):
    # spot 1/s x weight 50 = half of 6000/min;
    # futures 0.5/s x weight 20 = a quarter of the 2400/min USD-M and COIN-M share.
    snapshots_per_second: float
    # Routed endpoints (USD-M): the URL path of each feed's streams; empty: one endpoint.
    routes: Mapping[str, str] = attrs.field(factory=dict)
    # Futures: the REST path of open interest, and the unit of open interest and of
    # liquidation sizes (USD-M: base coin; COIN-M: contracts, UNCONFIRMED by the docs).
    open_interest_path: str = ""
    size_unit: SizeUnit = "base"


PROFILES: Final[Mapping[str, Profile]] = {
    "spot": Profile(
        "spot",
        EXCHANGE,
        "wss://stream.binance.com:9443",
        DEFAULT_REST_URL,
        "/api/v3/depth",
        "/api/v3/exchangeInfo?permissions=SPOT&symbolStatus=TRADING",
        "trade",
        futures=False,
        snapshots_per_second=1.0,
    ),
    "usdm": Profile(
        "usdm",
        f"{EXCHANGE}-usdm",
        "wss://fstream.binance.com",
        "https://fapi.binance.com",
        "/fapi/v1/depth",
        "/fapi/v1/exchangeInfo",
        "aggTrade",
        futures=True,
        snapshots_per_second=0.5,
        # Book streams are "public" (high frequency), the others "market" (Binance USD-M
        # WebSocket change notice, 2026-03: unrouted URLs carry /public streams only).
        routes={
            "orderbook": "/public",
            "ticker": "/public",
            "trades": "/market",
            "derivatives": "/market",
            "liquidations": "/market",
        },
        open_interest_path="/fapi/v1/openInterest",
    ),
    "coinm": Profile(
        "coinm",
        f"{EXCHANGE}-coinm",
        "wss://dstream.binance.com",
        "https://dapi.binance.com",
        "/dapi/v1/depth",
        "/dapi/v1/exchangeInfo",
        "aggTrade",
        futures=True,
        snapshots_per_second=0.5,
        open_interest_path="/dapi/v1/openInterest",
        size_unit="contracts",
    ),
}


def profile_of(market: MarketSettings) -> Profile:
    """The profile of a checked market's category (none: spot)."""
    return PROFILES[market.category or "spot"]


@attrs.frozen
class BinancePlan(ConnectionPlan):
    """A connection plan that also names the stream of each subscription (same order), the
    REST base of its book snapshots and its category."""

    streams: tuple[str, ...] = ()
    rest_url: str = DEFAULT_REST_URL
    category: str = "spot"
    # Seconds between open interest polling rounds (futures markets with ``derivatives``).
    open_interest_interval_secs: float = DEFAULT_OPEN_INTEREST_INTERVAL_SECS


def stream_name(symbol: str, feed: str, market: MarketSettings | None = None) -> str:
    """The stream of one (symbol, feed); ``market`` supplies the category and the order book
    options (none: spot defaults)."""
    sym = symbol.lower()
    if feed == "trades":
        trade = "trade" if market is None else profile_of(market).trade_stream
        return f"{sym}@{trade}"
    if feed == "ticker":
        return f"{sym}@bookTicker"
    if feed == "derivatives":
        return f"{sym}@{DERIVATIVES_STREAM}"
    if feed == "liquidations":
        return f"{sym}@{LIQUIDATIONS_STREAM}"
    if feed == "orderbook":
        if market is not None and market.book_mode == "diff":
            return f"{sym}@depth@100ms"
        depth = DEFAULT_PARTIAL_DEPTH
        if market is not None and market.book_depth is not None:
            depth = market.book_depth
        return f"{sym}@depth{depth}@100ms"
    raise ValueError(f"binance has no stream for feed {feed!r}")


class BinanceAdapter(ExchangeAdapter):
    """Binance spot, USD-M and COIN-M market data over combined streams."""

    name: ClassVar[str] = EXCHANGE
    default_url: ClassVar[str] = PROFILES["spot"].ws_url
    ws_path: ClassVar[str] = "/stream?timeUnit=MICROSECOND"
    default_rest_url: ClassVar[str | None] = DEFAULT_REST_URL
    symbols_path: ClassVar[str | None] = PROFILES["spot"].symbols_path
    categories: ClassVar[tuple[str, ...]] = CATEGORIES
    default_category: ClassVar[str | None] = "spot"
    # Binance's "market data only" hosts (spot API docs, FAQ "Market Data Only URLs").
    geo_block_hosts: ClassVar[str | None] = (
        "its market-data-only hosts serve the same public data: set base_url = "
        '"wss://data-stream.binance.vision" and, for book_mode = "diff", rest_url = '
        '"https://data-api.binance.vision" (symbols: --rest-url); binance.us is a '
        "different exchange, not a mirror"
    )
    book_modes: ClassVar[tuple[str, ...]] = ("snapshot", "diff")
    stream_feeds: ClassVar[tuple[Feed, ...]] = (
        "trades",
        "orderbook",
        "ticker",
        "derivatives",
        "liquidations",
    )
    category_lacks: ClassVar[Mapping[str, tuple[Feed, ...]]] = {
        "spot": ("derivatives", "liquidations")
    }
    takes_open_interest_interval: ClassVar[bool] = True

    book_depths: ClassVar[tuple[int, ...]] = tuple(sorted(PARTIAL_DEPTHS))
    takes_rest_url: ClassVar[bool] = True  # diff depth syncs its books from REST snapshots
    option_notes: ClassVar[Mapping[str, str]] = {
        "category": " (spot, the default; usdm: USD-M futures; coinm: COIN-M futures)"
    }
    plan_class: ClassVar[type[ConnectionPlan]] = BinancePlan
    wire_names_field: ClassVar[str | None] = "streams"
    max_subscriptions_per_connection: ClassVar[int | None] = MAX_STREAMS_PER_CONNECTION
    # Spot allows 5 client messages/s per connection, pongs included (futures 10): keep a
    # margin under the lower one.
    client_messages_per_second: ClassVar[float] = 4.0
    # "300 connections per attempt every 5 minutes per IP" (spot WebSocket limits): one
    # connection attempt a second over all of the venue's connections is that rate. No
    # limit of open connections per IP is documented (docs/venues.md).
    connections_per_second: ClassVar[float] = 1.0
    # The venue pings with control frames (spot every 20 s, futures every 3 min); the
    # WebSocket library answers them.
    keepalive_interval_secs: ClassVar[float | None] = None
    # Spot REST weight budget 6000/min per IP; a 1000-level snapshot weighs 50 (at most
    # 120/min). Futures connections take their category's rate (snapshot_rate).
    snapshot_requests_per_second: ClassVar[float] = PROFILES["spot"].snapshots_per_second
    # The venue documents that a connection is valid for 24 h and is closed at that mark
    # (spot and futures WebSocket Streams docs; exchanges.md section 1.1, D1.2).
    max_connection_lifetime_secs: ClassVar[float | None] = 24 * 3600.0
    listing_quotes: ClassVar[bool] = True
    # SUBSCRIBE and UNSUBSCRIBE work on a live connection (the same request, answered by id).
    live_subscriptions: ClassVar[bool] = True

    @classmethod
    def symbols_url(cls, rest_url: str | None = None, category: str | None = None) -> str:
        """The exchangeInfo URL of ``category`` (none: spot) below ``rest_url`` (none: the
        category's REST base). ValueError for a category Binance does not have."""
        if category is not None and category not in PROFILES:
            raise ValueError(
                f"binance category must be {choices(CATEGORIES, quoted=True)} (got {category!r})"
            )
        profile = PROFILES[category or "spot"]
        return f"{(rest_url or profile.rest_url).rstrip('/')}{profile.symbols_path}"

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        """Trading symbols of any category's exchangeInfo (COIN-M names the status
        ``contractStatus``)."""
        try:
            info = msgspec.json.decode(body, type=_ExchangeInfo)
        except msgspec.DecodeError as exc:
            raise ParseError(f"binance exchangeInfo: {exc}") from exc
        return sorted(s.symbol for s in info.symbols if s.trading)

    @classmethod
    def parse_listing(cls, body: bytes) -> list[Listing]:
        """Every symbol of any category's exchangeInfo with its ``quoteAsset`` and status
        (``status``; COIN-M: ``contractStatus``), sorted."""
        try:
            info = msgspec.json.decode(body, type=_ExchangeInfo)
        except msgspec.DecodeError as exc:
            raise ParseError(f"binance exchangeInfo: {exc}") from exc
        return sorted(
            (
                Listing(
                    s.symbol,
                    s.quoteAsset,
                    s.status or s.contractStatus or "TRADING",
                    s.trading,
                )
                for s in info.symbols
            ),
            key=lambda listing: listing.symbol,
        )

    @staticmethod
    def normalize_symbol(symbol: str) -> str:
        canonical = symbol.upper()
        if not _SYMBOL_RE.fullmatch(canonical):
            raise ValueError(
                f"invalid binance symbol {symbol!r}: expected 2-20 letters and digits "
                "without separator, e.g. 'BTCUSDT' or 'btcusdt' (COIN-M: with the contract, "
                "e.g. 'BTCUSD_PERP')"
            )
        return canonical

    @classmethod
    def geo_block_hosts_for(cls, exchange: str) -> str | None:
        """The market-data-only hosts serve spot only: Binance documents none for futures."""
        return cls.geo_block_hosts if exchange == EXCHANGE else None

    @classmethod
    def data_exchange(cls, market: MarketSettings) -> str:
        """``binance``, ``binance-usdm`` or ``binance-coinm``: ``BTCUSDT`` is a spot pair
        and a USD-M perpetual, and each must have its own files."""
        return profile_of(market).exchange

    @classmethod
    def check_market(cls, market: MarketSettings) -> None:
        """The standard checks (spot has no derivative feeds: ``category_lacks``), then the
        category's: symbols that fit it (COIN-M symbols name their contract,
        ``BTCUSD_PERP``; spot symbols never do), and ``open_interest_interval_secs`` only
        where open interest is polled (a futures market with ``derivatives``), at least
        :data:`MIN_OPEN_INTEREST_INTERVAL_SECS`."""
        super().check_market(market)
        category = market.category or "spot"
        interval = market.open_interest_interval_secs
        if interval is not None:
            if "derivatives" not in market.feeds:
                raise ValueError(
                    "binance open_interest_interval_secs applies only to a market with the "
                    "derivatives feed (category 'usdm' or 'coinm'): open interest is polled "
                    "for its derivative_ticker rows"
                )
            if interval < MIN_OPEN_INTEREST_INTERVAL_SECS:
                raise ValueError(
                    f"binance open_interest_interval_secs must be at least "
                    f"{MIN_OPEN_INTEREST_INTERVAL_SECS:g} (got {interval:g}): each poll costs "
                    "REST weight from the 2400/min USD-M and COIN-M share"
                )
        for symbol in market.symbols:
            try:
                suffixed = "_" in cls.normalize_symbol(symbol)
            except ValueError:
                continue  # reported with the symbols (settings_check.canonical_pair)
            if category == "spot" and suffixed:
                raise ValueError(
                    f"binance spot symbol {symbol!r} names a futures contract: "
                    "set category 'usdm' or 'coinm'"
                )
            if category == "coinm" and not suffixed:
                raise ValueError(
                    f"binance coinm symbol {symbol!r} must name its contract, "
                    "e.g. 'BTCUSD_PERP' or 'BTCUSD_250926'"
                )

    @classmethod
    def check_book_options(cls, market: MarketSettings) -> None:
        """``book_depth`` picks a partial-depth stream, so it applies to snapshots only."""
        if market.book_mode == "diff" and market.book_depth is not None:
            raise ValueError(
                "binance book_depth applies only to book_mode 'snapshot' "
                "(book_mode 'diff' streams every change, <sym>@depth@100ms)"
            )
        if market.book_depth is not None and market.book_depth not in PARTIAL_DEPTHS:
            raise ValueError(
                f"binance book_depth must be 5, 10 or 20 for book_mode 'snapshot' "
                f"(got {market.book_depth})"
            )
        super().check_book_options(market)

    def connection_url(self, market: MarketSettings) -> str:
        """The category's endpoint on ``base_url`` (a host; default: the category's); on
        USD-M, the endpoint of the market's first feed (see :meth:`feed_url`)."""
        profile = profile_of(market)
        if profile.routes:
            feed = next((f for f in market.feeds if f in profile.routes), "orderbook")
            return self.feed_url(market, feed)
        base = market.base_url or profile.ws_url
        path = self.ws_path if profile.category == "spot" else "/stream"
        return join_ws_path(base, path, self.ws_path_rule)

    def feed_url(self, market: MarketSettings, feed: str) -> str:
        """USD-M: ``{base}/public/stream`` for book feeds, ``{base}/market/stream`` for
        trades. Other categories serve every feed on :meth:`connection_url`."""
        profile = profile_of(market)
        if not profile.routes:
            return self.connection_url(market)
        base = market.base_url or profile.ws_url
        return join_ws_path(base, f"{profile.routes[feed]}/stream", self.ws_path_rule)

    def rest_url(self, market: MarketSettings) -> str:
        """The market's ``rest_url``, or its category's REST base (no final slash)."""
        return (market.rest_url or profile_of(market).rest_url).rstrip("/")

    def plan_fields(self, market: MarketSettings) -> dict[str, Any]:
        """Diff-depth snapshots and open interest come from the market's REST base: one per
        connection; one category and one open interest polling interval per connection
        (markets that set none share the default)."""
        interval = market.open_interest_interval_secs
        return {
            "rest_url": self.rest_url(market),
            "category": profile_of(market).category,
            "open_interest_interval_secs": (
                DEFAULT_OPEN_INTEREST_INTERVAL_SECS if interval is None else interval
            ),
        }

    def wire_name(self, symbol: str, feed: str, market: MarketSettings) -> str:
        return stream_name(symbol, feed, market)

    def connection_name(self, index: int, fields: Mapping[str, Any]) -> str:
        """``binance-{index}`` for spot, ``binance-{category}-{index}`` for futures."""
        category = fields.get("category", "spot")
        return f"{self.name}-{index}" if category == "spot" else f"{self.name}-{category}-{index}"

    def snapshot_rate(self, plan: ConnectionPlan) -> float:
        category = plan.category if isinstance(plan, BinancePlan) else "spot"
        return PROFILES[category].snapshots_per_second

    def snapshot_budget(self, plan: ConnectionPlan) -> str:
        """Spot has its own weight budget; USD-M and COIN-M share one (2,400 a minute per IP
        across ``fapi`` and ``dapi``, exchanges-derivatives.md)."""
        category = plan.category if isinstance(plan, BinancePlan) else "spot"
        return f"{self.name}-spot" if category == "spot" else f"{self.name}-futures"

    lists_instruments: ClassVar[bool] = True
    # exchangeInfo weighs 20 (spot, with symbols) or 1 (futures) of 6000 or 2400 a minute.
    instrument_requests_per_second: ClassVar[float] = 1.0

    def instruments_requests(self, market: MarketSettings) -> list[InstrumentsRequest]:
        """Spot: ``exchangeInfo?symbols=[...]`` (the market's symbols only, in requests of
        at most :data:`INSTRUMENTS_PER_REQUEST`); futures: the category's whole
        ``exchangeInfo`` (it takes no symbol list), read for the market's symbols."""
        return instruments_requests(self.rest_url(market), market)

    @classmethod
    def parse_instruments(
        cls, request: InstrumentsRequest, body: bytes, received_us: int
    ) -> list[Instrument]:
        return parse_instruments(request, body, received_us)

    def polling(self, plan: ConnectionPlan) -> Polling | None:
        """Open interest of every ``derivatives`` subscription of a futures plan, one GET
        per symbol a round (``{rest_url}{openInterest path}?symbol=X``), a round every
        ``open_interest_interval_secs``, at most :data:`OPEN_INTEREST_REQUESTS_PER_SECOND`
        requests a second over every connection of the futures budget (so a round of more symbols than that rate fills takes longer)."""
        if not isinstance(plan, BinancePlan):
            return None
        profile = PROFILES[plan.category]
        symbols = [s.symbol for s in plan.subscriptions if s.feed == "derivatives"]
        if not profile.open_interest_path or not symbols:
            return None
        base = f"{plan.rest_url}{profile.open_interest_path}"
        return Polling(
            tuple(SnapshotRequest(symbol, f"{base}?symbol={symbol}") for symbol in symbols),
            plan.open_interest_interval_secs,
            OPEN_INTEREST_REQUESTS_PER_SECOND,
            DerivativeTicker.DATA_TYPE,
        )

    def open_session(self, plan: ConnectionPlan) -> BinanceSession:
        return BinanceSession(plan)


# --------------------------------------------------------------------------- session


class _DerivativeState:
    """One symbol's merged derivative state: the last mark price message and the last
    polled open interest (None until each first comes)."""

    __slots__ = (
        "event_time",
        "funding_rate",
        "funding_time",
        "index_price",
        "mark_price",
        "open_interest",
        "open_interest_time",
        "settle_price",
    )

    def __init__(self) -> None:
        self.event_time: int | None = None  # E of the last mark price (ms)
        self.mark_price: float | None = None
        self.index_price: float | None = None
        self.settle_price: float | None = None
        self.funding_rate: float | None = None
        self.funding_time: int | None = None  # µs
        self.open_interest: float | None = None
        self.open_interest_time: int | None = None  # ms


_Handler = Callable[[str, msgspec.Raw, int], list[Event]]
# A stream's data already decoded by the one-pass envelope (a _Trade or a _DepthDiff).
_MessageHandler = Callable[[str, Any, int], list[Event]]


class BinanceSession(Session):
    """Protocol state of one Binance connection attempt (see the module docstring)."""

    def __init__(self, plan: ConnectionPlan) -> None:
        super().__init__(plan)
        if isinstance(plan, BinancePlan) and len(plan.streams) == len(plan.subscriptions):
            streams = plan.streams
        else:
            streams = tuple(stream_name(s.symbol, s.feed) for s in plan.subscriptions)
        profile = PROFILES[plan.category if isinstance(plan, BinancePlan) else "spot"]
        self._profile = profile
        self._trade_kind = profile.trade_stream
        self._streams: tuple[tuple[Subscription, str], ...] = tuple(
            zip(plan.subscriptions, streams, strict=True)
        )
        self._next_id = 1
        # Request id -> the subscriptions it asked for, until answered.
        self._requests: dict[int, tuple[tuple[Subscription, str], ...]] = {}
        # Ids of UNSUBSCRIBE requests not answered yet (streams removed at run time).
        self._unsubscribing: set[int] = set()
        # Stream name -> (handler, venue symbol); filled lazily from the names seen.
        self._routes: dict[str, tuple[_Handler, str]] = {}
        # Only trade and diff-depth streams (their data names its kind): frames are decoded in
        # one pass (_TAGGED_ENVELOPE), routed by stream name to a message handler.
        self._tagged = all(
            _tagged_kind(stream, self._trade_kind) is not None for _, stream in self._streams
        )
        self._message_routes: dict[str, tuple[_MessageHandler, type, str]] = {}
        self._last_trade_id: dict[str, int] = {}
        self._last_update_id: dict[str, int] = {}
        self._derivatives: dict[str, _DerivativeState] = {}
        self._rest_url = plan.rest_url if isinstance(plan, BinancePlan) else DEFAULT_REST_URL
        # Diff-depth book sync, per symbol: snapshots asked for and not yet received; the
        # deltas recorded since the book was last in sync (or since the last gap), which a
        # snapshot older than some of them must be joined to; the lastUpdateId of a
        # written snapshot no recorded delta has passed yet.
        self._snapshot_pending: set[str] = set()
        self._unsynced: dict[str, list[_Recorded]] = {}
        self._awaiting_cover: dict[str, int] = {}
        # Each diff book's crossed-book check, from its REST snapshot until a resync.
        self._cross_checks: dict[str, CrossCheck] = {}
        # Why a snapshot was asked for, where it was not a gap (for its resync row).
        self._resync_reasons: dict[str, BookResyncReason] = {}
        # Subscriptions the venue refused for good.
        self.rejected: list[Subscription] = []

    # ----------------------------------------------------------------- subscribing

    def subscribe_frames(self, now_us: int = 0) -> list[str]:
        return [
            self._request(self._streams[i : i + MAX_STREAMS_PER_SUBSCRIBE])
            for i in range(0, len(self._streams), MAX_STREAMS_PER_SUBSCRIBE)
        ]

    def _request(self, items: tuple[tuple[Subscription, str], ...]) -> str:
        request_id = self._next_id
        self._next_id += 1
        self._requests[request_id] = items
        frame = {"method": "SUBSCRIBE", "params": [s for _, s in items], "id": request_id}
        return _ENCODER.encode(frame).decode()

    def change_frames(
        self,
        plan: ConnectionPlan,
        added: tuple[Subscription, ...],
        removed: tuple[Subscription, ...],
    ) -> list[str]:
        """``UNSUBSCRIBE`` the removed streams (the symbols' book sync is forgotten), then
        ``SUBSCRIBE`` the added ones (named as ``plan`` names them), in requests of at most
        ``MAX_STREAMS_PER_SUBSCRIBE`` streams."""
        frames: list[str] = []
        if removed:
            gone = set(removed)
            streams = [stream for sub, stream in self._streams if sub in gone]
            self._streams = tuple(item for item in self._streams if item[0] not in gone)
            for symbol in {sub.symbol for sub in removed}:
                self._snapshot_pending.discard(symbol)
                self._unsynced.pop(symbol, None)
                self._awaiting_cover.pop(symbol, None)
                self._cross_checks.pop(symbol, None)
                self._resync_reasons.pop(symbol, None)
                self._last_update_id.pop(symbol, None)
            for i in range(0, len(streams), MAX_STREAMS_PER_SUBSCRIBE):
                request_id = self._next_id
                self._next_id += 1
                self._unsubscribing.add(request_id)
                params = streams[i : i + MAX_STREAMS_PER_SUBSCRIBE]
                frame = {"method": "UNSUBSCRIBE", "params": params, "id": request_id}
                frames.append(_ENCODER.encode(frame).decode())
        if added:
            if isinstance(plan, BinancePlan) and len(plan.streams) == len(plan.subscriptions):
                names = dict(zip(plan.subscriptions, plan.streams, strict=True))
            else:
                names = {s: stream_name(s.symbol, s.feed) for s in plan.subscriptions}
            items = tuple((sub, names[sub]) for sub in added)
            self._streams += items
            self._tagged = self._tagged and all(
                _tagged_kind(stream, self._trade_kind) is not None for _, stream in items
            )
            frames += [
                self._request(items[i : i + MAX_STREAMS_PER_SUBSCRIBE])
                for i in range(0, len(items), MAX_STREAMS_PER_SUBSCRIBE)
            ]
        return frames

    def _on_response(self, env: _Envelope, received_us: int) -> list[Event]:
        request_id = env.id
        if isinstance(request_id, int) and request_id in self._unsubscribing:
            self._unsubscribing.discard(request_id)
            return []  # an UNSUBSCRIBE answered: the streams were dropped already
        failed = env.code is not None or env.error is not None
        if request_id is None or request_id is msgspec.UNSET:
            # Responses come in request order: an error without an id is the oldest one's.
            if not failed or not self._requests:
                return []
            request_id = next(iter(self._requests))
        if not isinstance(request_id, int) or request_id not in self._requests:
            return []  # not a request of ours (e.g. LIST_SUBSCRIPTIONS from elsewhere)
        items = self._requests.pop(request_id)
        if not failed:
            self._pending_subscriptions -= len(items)
            for sub, stream in items:
                if _is_diff_stream(stream):
                    self._request_snapshot(sub.symbol)
            return [
                self.status("subscribed", sub.symbol, received_us, data_type=sub.feed)
                for sub, _ in items
            ]
        if len(items) > 1:
            # Binance refuses the whole request for one bad stream: bisect to find it.
            half = len(items) // 2
            self._outgoing.append(self._request(items[:half]))
            self._outgoing.append(self._request(items[half:]))
            return []
        if env.error is not None:
            code, msg = env.error.code, env.error.msg
        else:
            code, msg = env.code, env.msg
        sub, stream = items[0]
        self._pending_subscriptions -= 1
        self.rejected.append(sub)
        return [
            self.status(
                "subscribe_error",
                sub.symbol,
                received_us,
                data_type=sub.feed,
                detail=f"{stream}: {msg} (code {code})",
            )
        ]

    # ----------------------------------------------------------------- book sync

    def _request_snapshot(self, symbol: str, *, gap: bool = False) -> None:
        """Ask for a snapshot (unless one is on its way). ``gap``: the deltas recorded so
        far cannot be joined to any snapshot (ids are missing after them): forget them."""
        if gap or symbol not in self._unsynced:
            self._unsynced[symbol] = []
        self._awaiting_cover.pop(symbol, None)
        self._cross_checks.pop(symbol, None)
        if symbol in self._snapshot_pending:
            return
        self._snapshot_pending.add(symbol)
        path = self._profile.depth_path
        url = f"{self._rest_url}{path}?symbol={symbol}&limit={SNAPSHOT_LIMIT}"
        self._snapshot_requests.append(SnapshotRequest(symbol, url))

    def parse_snapshot(
        self, request: SnapshotRequest, body: bytes, received_us: int
    ) -> list[Event]:
        symbol = request.symbol
        try:
            msg = _PARTIAL_DEPTH.decode(body)
        except _PARSE_ERRORS as exc:
            self._snapshot_pending.discard(symbol)
            self._request_snapshot(symbol)
            raise ParseError(f"binance depth snapshot: {type(exc).__name__}: {exc}") from exc
        self._snapshot_pending.discard(symbol)
        snapshot_id = msg.last_update_id
        event_time = msg.event_time
        recorded = self._unsynced.get(symbol, [])
        if recorded and recorded[0].after > snapshot_id:
            # Older than every delta recorded since the book was in sync: the ids between
            # are in neither. Not written (a reader would apply it); ask again.
            self.count_discard(symbol, "orderbook", "stale")
            self._request_snapshot(symbol)
            return []
        newer = [delta for delta in recorded if delta.last > snapshot_id]
        bids, asks = levels_from_pairs(msg.bids), levels_from_pairs(msg.asks)
        book_id = snapshot_id
        if newer:
            # Deltas recorded before it that it does not hold: a reader applies rows in the
            # order received, so the row states the snapshot with them applied.
            bids = _fold(bids, [delta.bids for delta in newer], descending=True)
            asks = _fold(asks, [delta.asks for delta in newer], descending=False)
            book_id = newer[-1].last
        else:
            self._awaiting_cover[symbol] = snapshot_id  # the next deltas must pass it
        self._unsynced.pop(symbol, None)
        reason = self._resync_reasons.pop(symbol, None)
        after = "" if reason is None else f" after a {RESYNC_REASON_TEXT[reason]}"
        snapshot = BookUpdate(
            self.exchange,
            symbol,
            None if event_time is None else _us(event_time),
            received_us,
            book_id,
            "snapshot",
            snapshot_id,
            None,
            bids,
            asks,
        )
        events: list[Event] = [
            self.status(
                "resync",
                symbol,
                received_us,
                data_type="orderbook",
                received=snapshot_id,
                detail=f"REST depth snapshot lastUpdateId={snapshot_id}{after}",
            ),
            snapshot,
        ]
        check = self._cross_checks[symbol] = CrossCheck()
        if check.snapshot(snapshot.bids, snapshot.asks):
            events.append(self._book_crossed(symbol, check, received_us, " in the snapshot"))
        return events

    def _book_crossed(
        self, symbol: str, check: CrossCheck, received_us: int, where: str = ""
    ) -> Event:
        """The book is crossed: its gap row, and a fresh REST snapshot of that symbol."""
        detail = f"{check.describe()}{where}; fetching a new REST snapshot"
        self._request_snapshot(symbol)
        self._resync_reasons[symbol] = "crossed"
        return self.book_invalid(symbol, received_us, "crossed", detail)

    # ----------------------------------------------------------------- parsing

    def parse(self, payload: bytes, received_us: int) -> list[Event]:
        events: list[Event] = []
        errors = self.parse_batch((payload,), received_us, events)
        if errors:
            raise errors[0]
        return events

    def parse_batch(
        self, payloads: Sequence[bytes], received_us: int, events: list[Event]
    ) -> list[ParseError]:
        """The frames of one read. On a connection of trade (spot ``@trade``, futures
        ``@aggTrade``) and diff-depth streams only, each frame is decoded in one pass
        (:data:`_TAGGED_ENVELOPE`), and a trade with the next id of its symbol, nearly every
        frame of a trade stream, becomes its row right here: the general path's calls per
        frame cost a large share of a trade's parse (figures in docs/performance.md).
        """
        errors: list[ParseError] = []
        append = events.append
        extend = events.extend
        exchange = self.exchange
        tagged_decode = _TAGGED_ENVELOPE.decode if self._tagged else None
        routes = self._message_routes
        last_ids = self._last_trade_id
        for payload in payloads:
            try:
                if tagged_decode is not None:
                    try:
                        tagged = tagged_decode(payload)
                    except msgspec.ValidationError:
                        tagged = _NOT_TAGGED  # e.g. data of another kind: the general path
                    stream, msg = tagged.stream, tagged.data
                    if stream is not None and msg is not None:  # else: an answer, or no data
                        route = routes.get(stream)
                        if route is None:
                            route = routes[stream] = self._message_route(stream)
                        on_message, kind, symbol = route
                        if type(msg) is kind:
                            if type(msg) is _Trade or type(msg) is _AggTrade:
                                trade_id = msg.trade_id
                                if last_ids.get(symbol, trade_id - 1) == trade_id - 1:
                                    # The first or the next id: the row _on_trade
                                    # builds, built here (a call per trade would
                                    # give back much of what this loop saves).
                                    last_ids[symbol] = trade_id
                                    trade_time = msg.trade_time
                                    append(
                                        Trade(
                                            exchange,
                                            symbol,
                                            trade_time * 1000
                                            if trade_time < _MS_LIMIT
                                            else trade_time,
                                            received_us,
                                            trade_id,
                                            str(trade_id),
                                            msg.price,
                                            msg.size,
                                            "sell" if msg.buyer_is_maker else "buy",
                                        )
                                    )
                                    continue
                            extend(on_message(symbol, msg, received_us))
                            continue
                extend(self._parse_envelope(payload, received_us))
            except ParseError as exc:
                errors.append(exc)
            except _PARSE_ERRORS as exc:
                error = ParseError(f"binance: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                errors.append(error)
        return errors

    def _parse_envelope(self, payload: bytes, received_us: int) -> list[Event]:
        """The general path: the envelope first, then its data by the stream's kind."""
        env = _ENVELOPE.decode(payload)
        stream = env.stream
        if stream is not None:
            route = self._routes.get(stream)
            if route is None:
                route = self._routes[stream] = self._route(stream)
            handler, symbol = route
            if not env.data:
                raise ParseError(f"binance: frame of stream {stream!r} has no data")
            return handler(symbol, env.data, received_us)
        if env.id is not msgspec.UNSET or env.code is not None or env.error is not None:
            return self._on_response(env, received_us)
        if env.e == "serverShutdown":
            self._reconnect_reason = "binance serverShutdown notice"
        return []

    def _route(self, stream: str) -> tuple[_Handler, str]:
        sym, _, kind = stream.partition("@")
        symbol = sym.upper()
        handler: _Handler
        if kind == self._trade_kind:
            handler = self._agg_trade if kind == "aggTrade" else self._trade
        elif kind == "bookTicker":
            handler = self._book_ticker
        elif kind == "depth" or kind.startswith("depth@"):
            handler = self._depth_diff
        elif kind.startswith("depth"):
            handler = self._futures_partial_depth if self._profile.futures else self._partial_depth
        elif kind == DERIVATIVES_STREAM:
            handler = self._mark_price
        elif kind == LIQUIDATIONS_STREAM:
            handler = self._force_order
        elif stream == "!serverShutdown" or kind == "serverShutdown":
            handler = self._server_shutdown
        else:
            handler = _ignore
        return handler, symbol

    def _message_route(self, stream: str) -> tuple[_MessageHandler, type, str]:
        kind = _tagged_kind(stream, self._trade_kind)
        symbol = stream.partition("@")[0].upper()
        if kind is _Trade or kind is _AggTrade:
            return self._on_trade, kind, symbol
        if kind is _DepthDiff:
            return self._on_depth_diff, _DepthDiff, symbol
        if kind is _MarkPrice:
            return self._on_mark_price, _MarkPrice, symbol
        if kind is _ForceOrder:
            return self._on_force_order, _ForceOrder, symbol
        return _ignore, type(None), symbol  # not a stream of ours: the general path

    def _trade(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        return self._on_trade(symbol, _TRADE.decode(data), received_us)

    def _agg_trade(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        return self._on_trade(symbol, _AGG_TRADE.decode(data), received_us)

    def _on_trade(self, symbol: str, msg: _Trade | _AggTrade, received_us: int) -> list[Event]:
        trade_id = msg.trade_id
        last_ids = self._last_trade_id
        prev = last_ids.get(symbol)
        last_ids[symbol] = trade_id
        trade_time = msg.trade_time
        trade = Trade(
            self.exchange,
            symbol,
            trade_time * 1000 if trade_time < _MS_LIMIT else trade_time,
            received_us,
            trade_id,
            str(trade_id),
            msg.price,
            msg.size,
            "sell" if msg.buyer_is_maker else "buy",
        )
        if prev is None or trade_id == prev + 1:
            return [trade]  # the hot path: the next id
        if trade_id <= prev:
            last_ids[symbol] = prev
            self.count_discard(symbol, "trades", "duplicate")
            return []
        return [self.gap(symbol, received_us, "trades", prev + 1, trade_id), trade]

    def _depth_diff(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        return self._on_depth_diff(symbol, _DEPTH_DIFF.decode(data), received_us)

    def _on_depth_diff(self, symbol: str, msg: _DepthDiff, received_us: int) -> list[Event]:
        events: list[Event] = []
        prev = self._last_update_id.get(symbol)
        if prev is not None:
            if msg.last_id <= prev:
                self.count_discard(symbol, "orderbook", "stale")
                return events
            if msg.prev_id is not None:
                if msg.prev_id != prev:
                    events.append(
                        self.status(
                            "gap",
                            symbol,
                            received_us,
                            data_type="orderbook",
                            expected=prev,
                            received=msg.prev_id,
                            detail="pu is not the previous u",
                        )
                    )
                    self._request_snapshot(symbol, gap=True)
            elif msg.first_id > prev + 1:
                events.append(self.gap(symbol, received_us, "orderbook", prev + 1, msg.first_id))
                self._request_snapshot(symbol, gap=True)
        self._last_update_id[symbol] = msg.last_id
        after = _joins_after(msg)
        base = self._awaiting_cover.get(symbol)
        if base is not None:
            if msg.last_id <= base:
                # Already in the snapshot written: applied after it, it would rewind the book.
                self.count_discard(symbol, "orderbook", "stale")
                return events
            del self._awaiting_cover[symbol]
            if after > base:
                detail = "first delta after the REST snapshot does not cover it"
                if msg.prev_id is None:
                    events.append(
                        self.gap(
                            symbol, received_us, "orderbook", base + 1, msg.first_id, detail=detail
                        )
                    )
                else:  # futures: pu names the id before the delta; ids between are not ours
                    events.append(
                        self.status(
                            "gap",
                            symbol,
                            received_us,
                            data_type="orderbook",
                            expected=base,
                            received=msg.prev_id,
                            detail=detail,
                        )
                    )
                self._request_snapshot(symbol, gap=True)
        bids, asks = levels_from_pairs(msg.bids), levels_from_pairs(msg.asks)
        recorded = self._unsynced.get(symbol)
        if recorded is not None:
            if len(recorded) >= MAX_UNSYNCED_DELTAS:
                del recorded[0]
            recorded.append(_Recorded(after, msg.last_id, bids, asks))
        update = BookUpdate(
            self.exchange,
            symbol,
            _us(msg.event_time),
            received_us,
            msg.last_id,
            "delta",
            msg.first_id,
            msg.prev_id,
            bids,
            asks,
        )
        events.append(update)
        # Checked from the first delta after the snapshot (older ones are not applied).
        check = self._cross_checks.get(symbol)
        if (
            check is not None
            and symbol not in self._awaiting_cover
            and check.apply_sorted_pairs(msg.bids, msg.asks)
        ):
            events.append(self._book_crossed(symbol, check, received_us))
        return events

    def _partial_depth(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        msg = _PARTIAL_DEPTH.decode(data)
        return [
            BookUpdate(
                self.exchange,
                symbol,
                None,
                received_us,
                msg.last_update_id,
                "snapshot",
                msg.last_update_id,
                None,
                levels_from_pairs(msg.bids),
                levels_from_pairs(msg.asks),
            )
        ]

    def _futures_partial_depth(
        self, symbol: str, data: msgspec.Raw, received_us: int
    ) -> list[Event]:
        """A futures partial book: a snapshot of the top levels that keeps its ids (``U``,
        ``u``, ``pu``) for readers; not sequence-checked, like spot's."""
        msg = _FUTURES_PARTIAL_DEPTH.decode(data)
        return [
            BookUpdate(
                self.exchange,
                symbol,
                _us(msg.event_time),
                received_us,
                msg.last_id,
                "snapshot",
                msg.first_id,
                msg.prev_id,
                levels_from_pairs(msg.bids),
                levels_from_pairs(msg.asks),
            )
        ]

    def _book_ticker(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        msg = _BOOK_TICKER.decode(data)
        event_time = msg.event_time
        return [
            Ticker(
                self.exchange,
                symbol,
                None if event_time is None else _us(event_time),
                received_us,
                msg.update_id,
                msg.bid_price,
                msg.bid_size,
                msg.ask_price,
                msg.ask_size,
                None,
                None,
            )
        ]

    # ----------------------------------------------------------------- derivatives

    def _mark_price(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        return self._on_mark_price(symbol, _MARK_PRICE.decode(data), received_us)

    def _on_mark_price(self, symbol: str, msg: _MarkPrice, received_us: int) -> list[Event]:
        """Merge a mark price into the symbol's state; a row unless it repeats one."""
        state = self._derivatives.get(symbol)
        if state is None:
            state = self._derivatives[symbol] = _DerivativeState()
        event_time = msg.event_time
        if state.event_time is not None and event_time <= state.event_time:
            self.count_discard(symbol, DerivativeTicker.DATA_TYPE, "duplicate")
            return []
        rate = msg.funding_rate
        state.event_time = event_time
        state.mark_price = msg.mark_price
        state.index_price = msg.index_price
        state.settle_price = msg.settle_price
        state.funding_rate = float(rate) if rate else None  # "" on delivery contracts
        state.funding_time = _us(msg.funding_time) if msg.funding_time else None
        return [self._derivative_row(symbol, state, "markPrice", _us(event_time), received_us)]

    def parse_polled(self, request: SnapshotRequest, body: bytes, received_us: int) -> list[Event]:
        """A polled open interest: merged into the symbol's state, and a row once the state
        has a mark price (before that, the first ``markPrice`` row carries it)."""
        symbol = request.symbol
        try:
            msg = _OPEN_INTEREST.decode(body)
        except _PARSE_ERRORS as exc:
            raise ParseError(f"binance open interest: {type(exc).__name__}: {exc}") from exc
        state = self._derivatives.get(symbol)
        if state is None:
            state = self._derivatives[symbol] = _DerivativeState()
        last = state.open_interest_time
        if last is not None and msg.time < last:
            self.count_discard(symbol, DerivativeTicker.DATA_TYPE, "stale")
            return []
        state.open_interest = msg.open_interest
        state.open_interest_time = msg.time
        if state.event_time is None:
            return []
        return [self._derivative_row(symbol, state, "openInterest", _us(msg.time), received_us)]

    def _derivative_row(
        self,
        symbol: str,
        state: _DerivativeState,
        source: str,
        timestamp_exchange: int,
        received_us: int,
    ) -> DerivativeTicker:
        open_interest = state.open_interest
        return DerivativeTicker(
            self.exchange,
            symbol,
            timestamp_exchange,
            received_us,
            state.event_time,
            source,
            mark_price=state.mark_price,
            index_price=state.index_price,
            funding_rate=state.funding_rate,
            funding_timestamp=state.funding_time,
            open_interest=open_interest,
            open_interest_unit=None if open_interest is None else self._profile.size_unit,
            estimated_settlement_price=state.settle_price,
        )

    def _force_order(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        return self._on_force_order(symbol, _FORCE_ORDER.decode(data), received_us)

    def _on_force_order(self, symbol: str, msg: _ForceOrder, received_us: int) -> list[Event]:
        order = msg.order
        side: Side
        position_side: PositionSide
        if order.side == "SELL":  # the order sells: a long position was liquidated
            side, position_side = "sell", "long"
        elif order.side == "BUY":
            side, position_side = "buy", "short"
        else:
            raise ParseError(f"binance forceOrder: unknown side {order.side!r}")
        return [
            Liquidation(
                self.exchange,
                symbol,
                _us(order.trade_time),
                received_us,
                None,
                None,
                side,
                position_side,
                order.price,
                "order",
                order.filled,
                self._profile.size_unit,
                avg_price=order.avg_price,
                status=order.status,
            )
        ]

    def _server_shutdown(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        self._reconnect_reason = "binance serverShutdown notice"
        return []


def _is_diff_stream(stream: str) -> bool:
    kind = stream.partition("@")[2]
    return kind == "depth" or kind.startswith("depth@")


def _tagged_kind(stream: str, trade_kind: str) -> type | None:
    """The wire struct of a stream whose data names its kind (``"e"``), else None:
    trades, diff depth, mark prices, liquidations.

    ``trade_kind`` is the trades stream type of the connection's category (``trade`` or
    ``aggTrade``): the other one is not a stream of ours.
    """
    kind = stream.partition("@")[2]
    if kind == trade_kind:
        return _AggTrade if kind == "aggTrade" else _Trade
    if _is_diff_stream(stream):
        return _DepthDiff
    if kind == DERIVATIVES_STREAM:
        return _MarkPrice
    if kind == LIQUIDATIONS_STREAM:
        return _ForceOrder
    return None


def _joins_after(msg: _DepthDiff) -> int:
    """The last id before a delta's changes: its ``pu`` (futures), else ``U - 1`` (spot).

    A delta covers the ids after this up to its ``u``; a snapshot with ``lastUpdateId`` at or
    after it (and before ``u``) is joined by the delta.
    """
    prev_id = msg.prev_id
    return msg.first_id - 1 if prev_id is None else prev_id


@attrs.frozen
class _Recorded:
    """A delta recorded while the book was not in sync: the id before its changes
    (:func:`_joins_after`), its ``u`` and its levels."""

    after: int
    last: int
    bids: Levels
    asks: Levels


def _fold(snapshot: Levels, deltas: Sequence[Levels], *, descending: bool) -> Levels:
    """One side of a snapshot with deltas applied in order (absolute sizes, 0 removes),
    sorted best first."""
    book = dict(level_pairs(snapshot))
    for levels in deltas:
        for price, size in level_pairs(levels):
            if size == 0:
                book.pop(price, None)
            else:
                book[price] = size
    return levels_from_pairs(sorted(book.items(), reverse=descending))


def _ignore(symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
    return []


# --------------------------------------------------------------------------- instruments

# Spot symbols per ``exchangeInfo?symbols=`` request: keeps the URL short.
INSTRUMENTS_PER_REQUEST: Final = 100


class _Filter(msgspec.Struct, gc=False):
    filterType: str
    tickSize: str | None = None
    stepSize: str | None = None
    minQty: str | None = None


class _InstrumentInfo(msgspec.Struct, gc=False):
    symbol: str
    baseAsset: str
    quoteAsset: str
    status: str | None = None  # spot and USD-M
    contractStatus: str | None = None  # COIN-M
    contractType: str | None = None  # futures: PERPETUAL, CURRENT_QUARTER, ...
    deliveryDate: int | None = None  # futures, ms
    marginAsset: str | None = None  # futures: the settlement asset
    contractSize: float | None = None  # COIN-M: USD per contract
    filters: list[_Filter] = []


class _InstrumentsInfo(msgspec.Struct, gc=False):
    symbols: list[_InstrumentInfo]
    serverTime: int | None = None


_INSTRUMENTS_INFO: Final = msgspec.json.Decoder(_InstrumentsInfo)


def instruments_requests(rest_url: str, market: MarketSettings) -> list[InstrumentsRequest]:
    """The listing requests of one market (see :meth:`BinanceAdapter.instruments_requests`)."""
    profile = profile_of(market)
    symbols = tuple(dict.fromkeys(BinanceAdapter.normalize_symbol(s) for s in market.symbols))
    path = profile.symbols_path.split("?")[0]
    if profile.futures:
        return [InstrumentsRequest(profile.exchange, rest_url + path, symbols, profile.category)]
    requests = []
    for start in range(0, len(symbols), INSTRUMENTS_PER_REQUEST):
        chunk = symbols[start : start + INSTRUMENTS_PER_REQUEST]
        listed = quote(msgspec.json.encode(list(chunk)).decode(), safe="")
        url = f"{rest_url}{path}?symbols={listed}"
        requests.append(InstrumentsRequest(profile.exchange, url, chunk, profile.category))
    return requests


def parse_instruments(
    request: InstrumentsRequest, body: bytes, received_us: int
) -> list[Instrument]:
    """The rows of ``request.symbols`` in an exchangeInfo answer of any category.

    Spot and USD-M sizes are in the base asset; COIN-M sizes are contracts of
    ``contractSize`` USD each (inverse: settled in the margin asset). Tick size is the
    ``PRICE_FILTER``'s, lot and minimum size the ``LOT_SIZE``'s. A contract type with
    ``PERPETUAL`` in it is a perpetual (no expiry), any other a future expiring at
    ``deliveryDate``.
    """
    try:
        info = _INSTRUMENTS_INFO.decode(body)
    except msgspec.DecodeError as exc:
        raise ParseError(f"binance exchangeInfo: {exc}") from exc
    wanted = set(request.symbols)
    server_us = None if info.serverTime is None else info.serverTime * 1000
    coinm = request.category == "coinm"
    rows = []
    for item in info.symbols:
        if item.symbol not in wanted:
            continue
        filters = {f.filterType: f for f in item.filters}
        price, lot = filters.get("PRICE_FILTER"), filters.get("LOT_SIZE")
        futures = item.contractType is not None
        perpetual = futures and "PERPETUAL" in (item.contractType or "")
        quote_asset = normalize_asset(item.quoteAsset)
        try:
            rows.append(
                Instrument(
                    request.exchange,
                    item.symbol,
                    server_us,
                    received_us,
                    None,
                    kind=("perpetual" if perpetual else "future") if futures else "spot",
                    base_asset=normalize_asset(item.baseAsset),
                    quote_asset=quote_asset,
                    settle_asset=normalize_asset(item.marginAsset or quote_asset)
                    if futures
                    else None,
                    inverse=coinm if futures else None,
                    size_unit="contracts" if coinm else "base",
                    contract_size=item.contractSize if coinm else None,
                    contract_unit=quote_asset if coinm else None,
                    tick_size=optional_float(price.tickSize) if price else None,
                    lot_size=optional_float(lot.stepSize) if lot else None,
                    min_size=optional_float(lot.minQty) if lot else None,
                    expiry=item.deliveryDate * 1000
                    if futures and not perpetual and item.deliveryDate
                    else None,
                    status=item.status or item.contractStatus,
                )
            )
        except ValueError as exc:
            raise ParseError(f"binance exchangeInfo {item.symbol}: {exc}") from exc
    return rows
