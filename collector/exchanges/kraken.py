"""Kraken spot WebSocket v2 (sans-IO): subscribe frames, parsing, book checksum and resync.

One connection to ``wss://ws.kraken.com/v2`` carries many symbols; every subscribe frame
names one channel and a list of symbols, and the venue acknowledges **each symbol**
separately (``{"method":"subscribe","result":{"channel":..,"symbol":..},"success":true,
"req_id":N}``); a refused symbol gets ``{"error":"..","success":false,"symbol":..}``.
Frames are JSON objects ``{"channel": .., "type": "snapshot"|"update", "data": [..]}``;
prices and sizes are JSON *numbers* on v2, timestamps RFC 3339 with microseconds.

Feeds and channels:

- ``trades`` -> ``trade`` (``snapshot: false``: the last-50-trades snapshot would repeat trades
  already recorded before a reconnect); ``side`` is the taker's side (the aggressor);
- ``orderbook`` -> ``book`` with ``depth`` = ``book_depth`` (10, 25, 100, 500 or 1000;
  default 10): a snapshot, then updates of changed levels (``qty`` 0 deletes);
- ``ticker`` -> ``ticker`` with ``event_trigger: "bbo"`` (a row on every change of the best
  bid/offer, not only on trades): best bid/ask with sizes, last price, 24 h volume;
- ``raw`` -> no channel: the connection keeps every frame (``ConnectionPlan.raw``).
- ``instruments`` -> no channel: the REST ``AssetPairs`` listing (:func:`parse_instruments`).

The ``heartbeat`` channel (about 1/s once subscribed), ``status`` and ``pong`` frames produce
no events. The keepalive is the application ping ``{"method":"ping","req_id":N}`` (answered
by ``pong``), sent every ``keepalive_interval_secs``; ping ids start at
:data:`PING_REQ_ID_BASE` + 1, apart from the session's request ids (see
:meth:`KrakenAdapter.keepalive_frame`).

Sequence rules (per symbol, per session; a reconnect starts afresh):

- trades: ``trade_id`` is documented as sequential per symbol. A jump is a ``gap`` status
  row (expected/received ids, count); an id at or below the last one is a duplicate,
  dropped and counted (:meth:`Session.count_discard`, reason ``duplicate``).
- book: v2 books carry no sequence number; integrity is the CRC32 ``checksum`` of the top 10
  levels sent with the snapshot and with every update. The session keeps each book at the
  subscribed depth (levels applied in message order, ``qty`` 0 deletes, truncated to the
  depth after each message, as Kraken's guide says), verifies every checksum and then
  checks that the book is not crossed (best bid >= best ask). On a mismatch or a crossed
  book it writes a ``gap`` row (:meth:`Session.book_invalid`; detail: both checksums, or
  the crossing), drops its copy of the book and resubscribes the symbol (``unsubscribe`` +
  ``subscribe`` via :attr:`Actions.send`); the new snapshot is written after a ``resync``
  row naming the reason. Deltas received in between are still written (they are the
  venue's data) but not checked. After :data:`MAX_CHECKSUM_FAILURES` failures in a row
  without a verified snapshot in between, the session stops checking that symbol (said in
  the last ``gap`` row's detail) instead of resubscribing forever.

The local book and the checksum live in :mod:`collector.exchanges.kraken_book`; they need the
venue's exact decimal text, so the session decodes book numbers as ``msgspec.Raw`` and
hands the book the bytes along with the floats.

Events carry floats (converted once from the same bytes); ``sequence`` is the trade id for
trades and ``None`` for books and tickers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import InvalidOperation
from typing import Any, ClassVar, Final

import attrs
import msgspec

from collector.config import MarketSettings
from collector.events import (
    BookUpdate,
    Event,
    Instrument,
    Levels,
    Side,
    Ticker,
    Trade,
    levels_from_values,
)
from collector.exchanges.base import (
    RESYNC_REASON_TEXT,
    BookResyncReason,
    ConnectionPlan,
    ExchangeAdapter,
    InstrumentsRequest,
    Listing,
    ParseError,
    Session,
    Subscription,
)
from collector.exchanges.common import PathRule, normalize_asset, optional_float
from collector.exchanges.kraken_book import BookSide, OrderBook

EXCHANGE: Final = "kraken"
DEFAULT_URL: Final = "wss://ws.kraken.com"
WS_PATH: Final = "/v2"
DEFAULT_REST_URL: Final = "https://api.kraken.com"
ASSET_PAIRS_PATH: Final = "/0/public/AssetPairs"
BOOK_DEPTHS: Final = frozenset({10, 25, 100, 500, 1000})
DEFAULT_BOOK_DEPTH: Final = 10
# The venue documents no per-connection limit (exchanges.md: UNCONFIRMED); these keep each
# connection and each subscribe frame moderate.
MAX_SUBSCRIPTIONS_PER_CONNECTION: Final = 300
MAX_SYMBOLS_PER_SUBSCRIBE: Final = 50
MAX_CHECKSUM_FAILURES: Final = 3
# Publish a ticker on every change of the best bid/offer (the venue's default: on trades).
TICKER_TRIGGER: Final = "bbo"
# Ping N carries req_id PING_REQ_ID_BASE + N: far above the session's request ids (which
# count from 1), and within a signed 32-bit integer for over a billion pings.
PING_REQ_ID_BASE: Final = 1_000_000_000

# feed -> channel, and back.
CHANNELS: Final = {"trades": "trade", "orderbook": "book", "ticker": "ticker"}
FEEDS: Final = {channel: feed for feed, channel in CHANNELS.items()}

_SYMBOL_RE: Final = re.compile(r"([A-Z0-9.]{1,16})/([A-Z0-9.]{1,16})")
# v1 asset codes that v2 spells otherwise (v2 uses BTC/USD where v1 used XBT/USD).
_V1_ASSETS: Final = {"XBT": "BTC", "XDG": "DOGE"}

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)


def _us(ts: datetime | None) -> int | None:
    """Microseconds since the epoch of an RFC 3339 time (exact integer arithmetic)."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _ONE_US


# --------------------------------------------------------------------------- wire structs


def _text(raw: msgspec.Raw) -> bytes:
    """A number's exact wire text (a JSON number, or a JSON string holding one)."""
    text = bytes(raw)
    if text[:1] == b'"':
        text = text[1:-1]
    return text


class _Result(msgspec.Struct, gc=False):
    channel: str | None = None
    symbol: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    """Every frame: channel data, or a method response (ack, error, pong)."""

    channel: str | None = None
    type: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent
    method: str | None = None
    success: bool | None = None
    error: str | None = None
    symbol: str | None = None
    result: _Result | None = None
    req_id: int | None = None


class _Trade(msgspec.Struct, gc=False):
    symbol: str
    side: str
    price: float
    qty: float
    trade_id: int
    timestamp: datetime


class _RawLevel(msgspec.Struct, gc=False):
    price: msgspec.Raw
    qty: msgspec.Raw


class _Book(msgspec.Struct, gc=False):
    symbol: str
    bids: list[_RawLevel] = []
    asks: list[_RawLevel] = []
    checksum: int | None = None
    timestamp: datetime | None = None


class _Ticker(msgspec.Struct, gc=False):
    symbol: str
    bid: float | None = None
    bid_qty: float | None = None
    ask: float | None = None
    ask_qty: float | None = None
    last: float | None = None
    volume: float | None = None
    timestamp: datetime | None = None


class _AssetPair(msgspec.Struct, gc=False):
    wsname: str | None = None
    status: str | None = None
    # What the instruments feed reads (the AssetPairs docs: numbers as strings, decimals as
    # integers; ``tick_size`` is the newer field, ``pair_decimals`` the older precision).
    lot_decimals: int | None = None
    pair_decimals: int | None = None
    tick_size: str | None = None
    ordermin: str | None = None


class _AssetPairs(msgspec.Struct, gc=False):
    result: dict[str, _AssetPair]
    error: list[str] = []


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_TRADES: Final = msgspec.json.Decoder(list[_Trade], strict=False)
_BOOKS: Final = msgspec.json.Decoder(list[_Book])
_TICKERS: Final = msgspec.json.Decoder(list[_Ticker], strict=False)
_ENCODER: Final = msgspec.json.Encoder()

_PARSE_ERRORS: Final = (
    msgspec.DecodeError,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    InvalidOperation,
)


# --------------------------------------------------------------------------- instruments


def _v2_name(wsname: str) -> str:
    """A pair's WebSocket v2 name from its AssetPairs ``wsname`` (v1 spelling)."""
    base, _, quote = wsname.partition("/")
    return f"{_V1_ASSETS.get(base, base)}/{_V1_ASSETS.get(quote, quote)}"


def parse_instruments(
    request: InstrumentsRequest, body: bytes, received_us: int
) -> list[Instrument]:
    """The rows of ``request.symbols`` (v2 names) in an ``AssetPairs`` answer.

    Spot pairs: sizes in the base asset. ``tick_size`` is the pair's ``tick_size`` (older
    answers: 10^-``pair_decimals``), ``lot_size`` 10^-``lot_decimals`` (the volume's
    decimal places: AssetPairs names no other size step), ``min_size`` ``ordermin``.
    Dark-pool entries (``.d``) are skipped. The answer has no server time.
    """
    try:
        pairs = msgspec.json.decode(body, type=_AssetPairs)
    except msgspec.DecodeError as exc:
        raise ParseError(f"kraken AssetPairs: {exc}") from exc
    if pairs.error:
        raise ParseError(f"kraken AssetPairs: {'; '.join(pairs.error)}")
    wanted = set(request.symbols)
    rows = []
    for key, pair in pairs.result.items():
        if key.endswith(".d") or pair.wsname is None:
            continue
        symbol = _v2_name(pair.wsname)
        if symbol not in wanted:
            continue
        wanted.discard(symbol)
        base, _, quote = symbol.partition("/")
        tick = optional_float(pair.tick_size)
        if tick is None and pair.pair_decimals is not None:
            tick = 10.0**-pair.pair_decimals
        rows.append(
            Instrument(
                request.exchange,
                symbol,
                None,
                received_us,
                None,
                kind="spot",
                base_asset=normalize_asset(base),
                quote_asset=normalize_asset(quote),
                settle_asset=None,
                inverse=None,
                size_unit="base",
                tick_size=tick,
                lot_size=None if pair.lot_decimals is None else 10.0**-pair.lot_decimals,
                min_size=optional_float(pair.ordermin),
                status=pair.status,
            )
        )
    return rows


# --------------------------------------------------------------------------- adapter


@attrs.frozen
class KrakenPlan(ConnectionPlan):
    """A connection plan with the book depth of its ``book`` subscriptions."""

    book_depth: int = DEFAULT_BOOK_DEPTH


class KrakenAdapter(ExchangeAdapter):
    """Kraken spot market data over WebSocket v2."""

    name: ClassVar[str] = EXCHANGE
    default_url: ClassVar[str] = DEFAULT_URL
    ws_path: ClassVar[str] = WS_PATH
    ws_path_rule: ClassVar[PathRule] = "unless_present"
    default_rest_url: ClassVar[str | None] = DEFAULT_REST_URL
    symbols_path: ClassVar[str | None] = ASSET_PAIRS_PATH
    book_depths: ClassVar[tuple[int, ...]] = tuple(sorted(BOOK_DEPTHS))
    option_notes: ClassVar[Mapping[str, str]] = {
        "book_mode": " (the book channel always sends a snapshot, then updates); remove book_mode",
        "category": " (spot only)",
    }
    # The REST base of the instruments listing (the books come over the WebSocket).
    takes_rest_url: ClassVar[bool] = True
    lists_instruments: ClassVar[bool] = True
    # One request per market a round; Kraken says public endpoints called at most once a
    # second per IP stay within its limits (its API rate limits article): half that.
    instrument_requests_per_second: ClassVar[float] = 0.5
    plan_class: ClassVar[type[ConnectionPlan]] = KrakenPlan
    max_subscriptions_per_connection: ClassVar[int | None] = MAX_SUBSCRIPTIONS_PER_CONNECTION
    # Kraken's message limit is dynamic (exchanges.md 8.1); subscribes, resyncs and pings
    # are rare, so a low pace costs nothing.
    client_messages_per_second: ClassVar[float] = 4.0
    # Application-level ping; the idle timeout is undocumented, the venue's heartbeat
    # channel (about 1/s) keeps data flowing towards us.
    keepalive_interval_secs: ClassVar[float | None] = 30.0
    listing_quotes: ClassVar[bool] = True

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        """v2 names from AssetPairs ``wsname`` (v1 spelling: XBT -> BTC, XDG -> DOGE).

        Dark-pool pairs (``.d``) and pairs whose ``status`` is not ``online`` are left out.
        """
        try:
            pairs = msgspec.json.decode(body, type=_AssetPairs)
        except msgspec.DecodeError as exc:
            raise ParseError(f"kraken AssetPairs: {exc}") from exc
        if pairs.error:
            raise ParseError(f"kraken AssetPairs: {'; '.join(pairs.error)}")
        return sorted({item.symbol for item in _listing(pairs) if item.trading})

    @classmethod
    def parse_listing(cls, body: bytes) -> list[Listing]:
        """Every pair with a v2 name, its quote that name's (``USD`` of ``BTC/USD``) and
        its AssetPairs ``status`` (``online`` trades; ``cancel_only``, ``post_only``,
        ``limit_only``, ``reduce_only`` do not), sorted. Dark-pool pairs are left out."""
        try:
            pairs = msgspec.json.decode(body, type=_AssetPairs)
        except msgspec.DecodeError as exc:
            raise ParseError(f"kraken AssetPairs: {exc}") from exc
        if pairs.error:
            raise ParseError(f"kraken AssetPairs: {'; '.join(pairs.error)}")
        return sorted(_listing(pairs), key=lambda item: item.symbol)

    def instruments_requests(self, market: MarketSettings) -> list[InstrumentsRequest]:
        """The whole ``AssetPairs`` listing, once per market (about a thousand pairs): its
        ``pair`` filter takes the REST names (``XBTUSD``), which the settings do not
        use, so the listing is read for the market's WebSocket names instead."""
        symbols = tuple(dict.fromkeys(self.normalize_symbol(s) for s in market.symbols))
        url = f"{self.rest_url(market)}{ASSET_PAIRS_PATH}"
        return [InstrumentsRequest(self.name, url, symbols)]

    @classmethod
    def parse_instruments(
        cls, request: InstrumentsRequest, body: bytes, received_us: int
    ) -> list[Instrument]:
        return parse_instruments(request, body, received_us)

    @staticmethod
    def normalize_symbol(symbol: str) -> str:
        canonical = symbol.strip().upper()
        match = _SYMBOL_RE.fullmatch(canonical)
        if match is None:
            raise ValueError(
                f"invalid kraken symbol {symbol!r}: expected the v2 spelling BASE/QUOTE "
                "with a slash, e.g. 'BTC/USD' or 'ETH/EUR'"
            )
        for asset in match.groups():
            if asset in _V1_ASSETS:
                raise ValueError(
                    f"invalid kraken symbol {symbol!r}: {asset} is the v1 name; "
                    f"WebSocket v2 spells it {_V1_ASSETS[asset]} (e.g. 'BTC/USD')"
                )
        return canonical

    @classmethod
    def check_book_options(cls, market: MarketSettings) -> None:
        """The standard checks; this venue's message lists the depths as "one of"."""
        depth = market.book_depth
        if market.book_mode is None and depth is not None and depth not in BOOK_DEPTHS:
            raise ValueError(
                f"kraken book_depth must be one of 10, 25, 100, 500, 1000 (got {depth})"
            )
        super().check_book_options(market)

    def plan_fields(self, market: MarketSettings) -> dict[str, Any]:
        """The book depth is set per subscribe, one for the whole connection."""
        return {"book_depth": market.book_depth or DEFAULT_BOOK_DEPTH}

    def keepalive_frame(self, number: int) -> str:
        """Ping ``number`` of a connection: ``{"method":"ping","req_id":N}``, where N is
        :data:`PING_REQ_ID_BASE` + ``number``.

        ``req_id`` must be an integer, and the venue echoes it in the ``pong``. The session
        skips a pong by its method and matches ids only on ``subscribe`` answers; the
        separate range still keeps a ping's id from ever equalling a request's (for a
        reader of the raw feed, and for any matching by id) without the session's id
        counter, which the keepalive task must not touch.
        """
        return _ENCODER.encode({"method": "ping", "req_id": PING_REQ_ID_BASE + number}).decode()

    def open_session(self, plan: ConnectionPlan) -> KrakenSession:
        return KrakenSession(plan)


# --------------------------------------------------------------------------- session


@attrs.define
class _Request:
    """A subscribe request in flight: the symbols the venue has not answered yet."""

    channel: str
    pending: list[str]
    resync: bool = False  # a book resubscription after a checksum mismatch


class KrakenSession(Session):
    """Protocol state of one Kraken v2 connection attempt (see the module docstring)."""

    def __init__(self, plan: ConnectionPlan) -> None:
        super().__init__(plan)
        self.book_depth = plan.book_depth if isinstance(plan, KrakenPlan) else DEFAULT_BOOK_DEPTH
        self._next_id = 1
        self._requests: dict[int, _Request] = {}
        self._last_trade_id: dict[str, int] = {}
        self._books: dict[str, OrderBook] = {}
        # Symbols resubscribed after a mismatch, until their new snapshot arrives.
        self._resyncing: set[str] = set()
        # Mismatches in a row per symbol (reset by a verified snapshot).
        self._failures: dict[str, int] = {}
        # Symbols whose books are no longer checked (too many failures in a row).
        self.unverified: set[str] = set()
        # Why each resyncing book is resyncing (for its resync row).
        self._resync_reasons: dict[str, BookResyncReason] = {}
        self.checksum_failures = 0
        self.rejected: list[Subscription] = []

    # ----------------------------------------------------------------- sending

    def _take_id(self) -> int:
        req_id = self._next_id
        self._next_id += 1
        return req_id

    def _subscribe(self, channel: str, symbols: list[str], *, resync: bool = False) -> str:
        req_id = self._take_id()
        params: dict[str, Any] = {"channel": channel, "symbol": symbols}
        if channel == "book":
            params["depth"] = self.book_depth
            params["snapshot"] = True
        elif channel == "trade":
            params["snapshot"] = False
        else:
            params["event_trigger"] = TICKER_TRIGGER
        self._requests[req_id] = _Request(channel, list(symbols), resync)
        frame = {"method": "subscribe", "params": params, "req_id": req_id}
        return _ENCODER.encode(frame).decode()

    def subscribe_frames(self, now_us: int = 0) -> list[str]:
        by_channel: dict[str, list[str]] = {}
        for sub in self.plan.subscriptions:
            channel = CHANNELS.get(sub.feed)
            if channel is not None:
                by_channel.setdefault(channel, []).append(sub.symbol)
        return [
            self._subscribe(channel, symbols[i : i + MAX_SYMBOLS_PER_SUBSCRIBE])
            for channel, symbols in by_channel.items()
            for i in range(0, len(symbols), MAX_SYMBOLS_PER_SUBSCRIBE)
        ]

    def _resubscribe_book(self, symbol: str) -> None:
        unsubscribe = {
            "method": "unsubscribe",
            "params": {"channel": "book", "symbol": [symbol], "depth": self.book_depth},
            "req_id": self._take_id(),
        }
        self._outgoing.append(_ENCODER.encode(unsubscribe).decode())
        self._outgoing.append(self._subscribe("book", [symbol], resync=True))
        self._resyncing.add(symbol)

    # ----------------------------------------------------------------- parsing

    def parse(self, payload: bytes, received_us: int) -> list[Event]:
        try:
            env = _ENVELOPE.decode(payload)
            channel = env.channel
            if channel is not None:
                if channel == "book":
                    return self._book(env, received_us)
                if channel == "trade":
                    return self._trades(env.data, received_us)
                if channel == "ticker":
                    return self._tickers(env.data, received_us)
                return []  # heartbeat, status, instrument...
            if env.method == "subscribe":
                return self._on_subscribe_response(env, received_us)
            if env.method is None and env.error is None:
                raise ParseError(f"kraken: neither channel data nor a response: {payload[:200]!r}")
            return []  # pong, unsubscribe acks, other responses
        except _PARSE_ERRORS as exc:
            raise ParseError(f"kraken: {type(exc).__name__}: {exc}") from exc

    def _on_subscribe_response(self, env: _Envelope, received_us: int) -> list[Event]:
        symbol = env.result.symbol if env.result is not None else None
        if symbol is None:
            symbol = env.symbol  # errors name the symbol at the top level
        req_id, request = self._find_request(env, symbol)
        if request is None:
            return []
        feed = FEEDS[request.channel]
        if env.success:
            if symbol not in request.pending:
                return []
            request.pending.remove(symbol)
            self._drop_if_answered(req_id, request)
            if request.resync:
                return []  # its snapshot brings the resync row
            self._pending_subscriptions -= 1
            return [self.status("subscribed", symbol, received_us, data_type=feed)]
        # Refused: one symbol when the venue names it, else every unanswered one.
        if symbol is not None and symbol in request.pending:
            refused = [symbol]
        else:
            refused = list(request.pending)
        events: list[Event] = []
        for sym in refused:
            request.pending.remove(sym)
            detail = f"{request.channel} {sym}: {env.error or 'subscribe refused'}"
            if request.resync:
                self._resyncing.discard(sym)
                self._reconnect_reason = f"kraken book resubscription refused: {detail}"
            else:
                self._pending_subscriptions -= 1
                self.rejected.append(Subscription(sym, feed))
            events.append(
                self.status("subscribe_error", sym, received_us, data_type=feed, detail=detail)
            )
        self._drop_if_answered(req_id, request)
        return events

    def _find_request(self, env: _Envelope, symbol: str | None) -> tuple[int, _Request | None]:
        if env.req_id is not None:
            return env.req_id, self._requests.get(env.req_id)
        # No req_id echoed: the oldest request still waiting for this symbol (and channel).
        channel = env.result.channel if env.result is not None else None
        for req_id, request in self._requests.items():
            if (channel is None or request.channel == channel) and (
                symbol is None or symbol in request.pending
            ):
                return req_id, request
        return 0, None

    def _drop_if_answered(self, req_id: int, request: _Request) -> None:
        if not request.pending:
            self._requests.pop(req_id, None)

    # ----------------------------------------------------------------- trades

    def _trades(self, data: msgspec.Raw, received_us: int) -> list[Event]:
        events: list[Event] = []
        last = self._last_trade_id
        for msg in _TRADES.decode(data):
            symbol = msg.symbol
            trade_id = msg.trade_id
            prev = last.get(symbol)
            if prev is not None and trade_id != prev + 1:
                if trade_id <= prev:
                    self.count_discard(symbol, "trades", "duplicate")
                    continue
                events.append(self.gap(symbol, received_us, "trades", prev + 1, trade_id))
            last[symbol] = trade_id
            # ``side`` is the taker order's side (Kraken v2 docs, trade channel; confirmed).
            side: Side | None = (
                "buy" if msg.side == "buy" else "sell" if msg.side == "sell" else None
            )
            events.append(
                Trade(
                    EXCHANGE,
                    symbol,
                    _us(msg.timestamp),
                    received_us,
                    trade_id,
                    str(trade_id),
                    msg.price,
                    msg.qty,
                    side,
                )
            )
        return events

    # ----------------------------------------------------------------- ticker

    def _tickers(self, data: msgspec.Raw, received_us: int) -> list[Event]:
        return [
            Ticker(
                EXCHANGE,
                msg.symbol,
                _us(msg.timestamp),
                received_us,
                None,
                msg.bid,
                msg.bid_qty,
                msg.ask,
                msg.ask_qty,
                msg.last,
                msg.volume,
            )
            for msg in _TICKERS.decode(data)
        ]

    # ----------------------------------------------------------------- book

    def _book(self, env: _Envelope, received_us: int) -> list[Event]:
        if env.type == "snapshot":
            snapshot = True
        elif env.type == "update":
            snapshot = False
        else:
            raise ParseError(f"kraken book: unknown type {env.type!r}")
        events: list[Event] = []
        for item in _BOOKS.decode(env.data):
            symbol = item.symbol
            book: OrderBook | None
            if snapshot:
                book = self._books[symbol] = OrderBook(self.book_depth)
                if symbol in self._resyncing:
                    self._resyncing.discard(symbol)
                    reason = self._resync_reasons.pop(symbol, "checksum")
                    events.append(
                        self.status(
                            "resync",
                            symbol,
                            received_us,
                            data_type="orderbook",
                            detail=f"new book snapshot after a {RESYNC_REASON_TEXT[reason]}",
                        )
                    )
            else:
                book = self._books.get(symbol)
            bids = _apply(item.bids, book.bids if book is not None else None)
            asks = _apply(item.asks, book.asks if book is not None else None)
            if book is not None:
                book.truncate()
            events.append(
                BookUpdate(
                    EXCHANGE,
                    symbol,
                    _us(item.timestamp),
                    received_us,
                    None,
                    "snapshot" if snapshot else "delta",
                    None,
                    None,
                    bids,
                    asks,
                )
            )
            if book is None or symbol in self.unverified:
                continue
            if item.checksum is not None:
                computed = book.checksum()
                if computed != item.checksum:
                    detail = f"book checksum mismatch: venue {item.checksum}, computed {computed}"
                    events.append(self._book_failed(symbol, "checksum", detail, received_us))
                    continue
            if book.bids.keys and book.asks.keys and -book.bids.keys[0] >= book.asks.keys[0]:
                detail = f"crossed book: best bid {-book.bids.keys[0]!r} >= best ask {book.asks.keys[0]!r}"
                events.append(self._book_failed(symbol, "crossed", detail, received_us))
            elif snapshot and item.checksum is not None:
                self._failures.pop(symbol, None)
        return events

    def _book_failed(
        self, symbol: str, reason: BookResyncReason, detail: str, received_us: int
    ) -> Event:
        """A book failed its checksum or is crossed: its gap row, and a resubscription of
        that book alone; after :data:`MAX_CHECKSUM_FAILURES` in a row, no more checks."""
        if reason == "checksum":
            self.checksum_failures += 1
        del self._books[symbol]
        failures = self._failures[symbol] = self._failures.get(symbol, 0) + 1
        if failures >= MAX_CHECKSUM_FAILURES:
            self.unverified.add(symbol)
            self._resyncing.discard(symbol)
            detail += (
                f"; {failures} in a row: the book of {symbol} is no longer checked "
                "on this connection"
            )
        else:
            detail += "; resubscribing for a new snapshot"
            self._resync_reasons[symbol] = reason
            self._resubscribe_book(symbol)
        return self.book_invalid(symbol, received_us, reason, detail)


def _apply(levels: list[_RawLevel], side: BookSide | None) -> Levels:
    """The levels as flat floats for the event, applied in order to ``side`` if given."""
    values: list[float] = []
    append = values.append
    for level in levels:
        price_text = _text(level.price)
        size_text = _text(level.qty)
        price = float(price_text)
        size = float(size_text)
        append(price)
        append(size)
        if side is not None:
            side.set(price, size, price_text, size_text)
    return levels_from_values(values)


def _listing(pairs: _AssetPairs) -> list[Listing]:
    """The pairs of an AssetPairs answer with a v2 name (v1 spelling: XBT -> BTC, XDG ->
    DOGE); dark-pool pairs (``.d``, no ``wsname``) left out. A pair without ``status``
    (older answers) counts as online."""
    listed: dict[str, Listing] = {}
    for key, pair in pairs.result.items():
        if key.endswith(".d") or pair.wsname is None:
            continue
        base, sep, quote = pair.wsname.partition("/")
        if not sep:
            continue
        quote = _V1_ASSETS.get(quote, quote)
        symbol = f"{_V1_ASSETS.get(base, base)}/{quote}"
        status = pair.status or "online"
        item = Listing(symbol, quote, status, status == "online")
        if symbol not in listed or item.trading:
            listed[symbol] = item
    return list(listed.values())
