"""Bybit v5 public WebSocket, spot, linear, inverse and option (sans-IO): subscribe, parse,
sequence checks.

The product category is part of the market settings: ``category = "spot"``, ``"linear"``
(USDT/USDC perpetuals and futures), ``"inverse"`` (coin-margined perpetuals and futures,
e.g. ``BTCUSD``) or ``"option"`` (``BTC-27DEC24-100000-C``, and the USDT-settled
``BTC-25DEC26-60000-C-USDT``) is **required**, because the same symbol (``BTCUSDT``) names
different instruments in spot and linear and the endpoint differs
(``/v5/public/{category}``). One connection serves one category; the rows of linear,
inverse and option markets are stored under the exchange ``bybit-linear`` /
``bybit-inverse`` / ``bybit-option``.

Topics are added with ``{"req_id": "N", "op": "subscribe", "args": [...]}`` frames of at
most 10 args (the spot limit, used for linear too). The venue answers each request once:
``{"success": true, "op": "subscribe", ...}``, or ``"success": false`` with ``ret_msg``
such as ``"error:handler not found,topic:publicTrade.NOPE"``.

Feeds and topics (symbols are upper case without separator: ``BTCUSDT``):

- ``trades`` -> ``publicTrade.{symbol}`` (``S`` = taker side = the aggressor; ``i`` trade
  id, a UUID on linear; ``seq`` the cross sequence, shared by simultaneous trades);
- ``orderbook`` -> ``orderbook.{book_depth}.{symbol}``, depth 1, 50 (default), 200 or 1000:
  a snapshot, then deltas (depth 1 sends snapshots only);
- ``ticker`` -> ``tickers.{symbol}``: linear and inverse send a snapshot then deltas
  carrying only the changed fields; the session keeps the last full ticker per symbol and
  writes complete rows. Spot tickers are snapshots without best bid/ask (those fields stay
  null).
- ``derivatives`` (linear, inverse) -> the same ``tickers.{symbol}`` topic (subscribed once
  when both feeds are asked for), read into ``derivative_ticker`` rows: mark, index and
  last price, funding rate and its time (``nextFundingTime``), ``fundingIntervalHour``,
  open interest and its value, and the predicted delivery price of dated futures. A row is
  written for every message that carries one of these fields (a delta of bid/ask only
  writes a ``ticker`` row but no ``derivative_ticker`` row); it holds the merged state.
  Open interest is in base coin on linear and in USD (contracts of 1 USD) on inverse
  (Bybit's open-interest docs; the value is in quote currency, resp. base coin).
- ``liquidations`` (linear, inverse) -> ``allLiquidation.{symbol}``: every liquidation,
  pushed in batches every 500 ms. ``S`` is the side of the liquidated *position*
  (``Buy`` = a long was liquidated), inverted into the liquidation order's side; the price
  is the bankruptcy price; size ``v`` in base coin (linear) or USD (inverse; UNCONFIRMED).
- ``raw`` -> no topic: the connection keeps every frame.

Options (category ``option``, endpoint ``/v5/public/option``) differ:

- ``trades`` -> ``publicTrade.{baseCoin}`` (``publicTrade.BTC``): the venue has no trade
  topic per option, only one per base coin carrying every option of that coin, each trade
  naming its option in ``s``. The topic is subscribed once per connection whatever the
  number of options of the coin, and only the trades of the market's own symbols are
  written (the others are not what was asked for, so they are neither rows nor discards).
  The option-only trade fields (``mP``, ``iP``, ``mIv``, ``iv``) are kept by ``raw`` only.
- ``orderbook`` -> ``orderbook.{25|100}.{symbol}`` (the only depths options have; 25 by
  default), with the same snapshot/delta and ``u`` rules as the other categories.
- ``ticker`` and ``derivatives`` -> ``tickers.{symbol}``; the option ticker names its
  best quote ``bidPrice``/``bidSize``/``askPrice``/``askSize`` (not ``bid1Price``...) and
  carries ``markPriceIv``, ``bidIv``, ``askIv`` (fractions, 0.55 = 55 %), ``delta``,
  ``gamma``, ``vega``, ``theta`` (no rho), ``underlyingPrice``, ``indexPrice``,
  ``markPrice`` and ``openInterest`` (base coin): all into ``derivative_ticker``. The
  venue documents option tickers as snapshots only; they go through the same merge as
  the other categories, so a delta would still be merged correctly. A
  ``predictedDeliveryPrice`` of ``"0"`` (the venue's value outside the delivery window)
  is stored as null. No sequence (option tickers carry no ``cs``).
- no ``liquidations`` (the venue has no option liquidation topic).

Timestamps: trades ``T``; books ``cts`` (matching engine) when present, else ``ts``;
tickers ``ts``; all milliseconds -> microseconds. Book ``sequence`` is ``u``; ticker
``sequence`` is ``cs``; trade ``sequence`` is ``seq``.

Sequence rules (per symbol, per session; a reconnect starts afresh):

- order book: every delta's ``u`` must be the previous ``u`` + 1 (holds for all 2142 deltas
  of the recordings; the venue documents it for ``orderbook.full``). ``u`` at or below the
  previous one is stale: dropped and counted (:meth:`Session.count_discard`, ``stale``).
  ``u`` above it (or a delta before any snapshot, or ``u == 1`` which means the venue
  restarted) is a ``gap`` row and the topic is resubscribed (``unsubscribe`` +
  ``subscribe``) for a fresh snapshot. A new snapshot always replaces the book: it gets a
  ``resync`` row when it follows a gap or arrives unasked mid-stream (``u == 1`` = venue
  restart), not on depth 1, which sends only snapshots. After each snapshot and delta the
  book is checked for a crossing (:class:`~collector.exchanges.book_check.CrossCheck`): a
  crossed book is a ``gap`` row (:meth:`Session.book_invalid`) and the same
  resubscription; the ``resync`` row of its new snapshot ends ``after a crossed book``.
- tickers: the state of a symbol is replaced by every ``snapshot`` (sent after each
  subscribe) and deltas are merged into it. A delta with no snapshot before it cannot be
  merged (the fields it lacks are unknown, not null): it gets a ``gap`` row per data type
  of the topic, the topic is resubscribed for a fresh snapshot, and deltas until then are
  dropped and counted (``while_resyncing``). A reconnect is a new session: nothing merged
  before the hole survives it.
- trades, tickers and liquidations: no sequence checks (``seq``/``cs`` are cross
  sequences, not contiguous).

Keepalive: ``{"req_id": "ping-N", "op": "ping"}`` every 20 s, as the venue requires (N
counts the connection's pings from 1; request ids are bare numbers, so the two never
meet); the ``pong`` answers are consumed.

Subscribe errors: a refused topic gets a ``subscribe_error`` row (detail = ``ret_msg``) and
counts as resolved in ``pending_subscriptions``. When the answer names a topic of the
request, the request's other topics are sent again in a new request (their state is
unknown); when it names none, a request of several topics is split in two until the bad
one stands alone. ``error:already subscribed`` counts as success.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import msgspec

from collector.config import Feed, MarketSettings
from collector.events import (
    BookUpdate,
    DerivativeTicker,
    Event,
    Instrument,
    Liquidation,
    SizeUnit,
    Ticker,
    Trade,
    feed_data_type,
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
    Session,
    Subscription,
)
from collector.exchanges.book_check import CrossCheck
from collector.exchanges.common import (
    PathRule,
    choices,
    chunked,
    join_ws_path,
    normalize_asset,
    optional_float,
)

EXCHANGE: Final = "bybit"
DEFAULT_URL: Final = "wss://stream.bybit.com"
DEFAULT_REST_URL: Final = "https://api.bybit.com"
CATEGORIES: Final = ("spot", "linear", "inverse", "option")
# The categories ``symbols`` lists.
SYMBOL_CATEGORIES: Final = CATEGORIES
INSTRUMENTS_PATH: Final = "/v5/market/instruments-info"
BOOK_DEPTHS: Final = (1, 50, 200, 1000)
DEFAULT_BOOK_DEPTH: Final = 50
# Options have two depths only (Bybit v5 orderbook docs: level 25 at 20 ms, 100 at 100 ms).
OPTION_BOOK_DEPTHS: Final = (25, 100)
DEFAULT_OPTION_BOOK_DEPTH: Final = 25
MAX_ARGS_PER_SUBSCRIBE: Final = 10  # the venue's spot limit, used for linear as well
# The venue caps the args of one connection at 21,000 characters (~700 topics).
MAX_TOPICS_PER_CONNECTION: Final = 200

# A spot pair or perpetual (BTCUSDT), a dated future (BTC-26DEC25), an option
# (BTC-27DEC24-100000-C; USDT-settled: BTC-25DEC26-60000-C-USDT).
_SYMBOL_RE: Final = re.compile(
    r"[A-Z0-9]{2,30}(-\d{1,2}[A-Z]{3}\d{2}(-\d+(\.\d+)?-[CP](-[A-Z]{3,5})?)?)?"
)
_OPTION_RE: Final = re.compile(
    r"[A-Z0-9]{2,30}-\d{1,2}[A-Z]{3}\d{2}-\d+(\.\d+)?-[CP](-[A-Z]{3,5})?"
)
_TOPIC_IN_MSG_RE: Final = re.compile(r"topic:([\w.\-]+)")

Category = Literal["spot", "linear", "inverse", "option"]


# --------------------------------------------------------------------------- wire structs


class _Envelope(msgspec.Struct, gc=False):
    """Every frame: a push (``topic``) or a command answer (``op``)."""

    topic: str | None = None
    type: str | None = None
    ts: int | None = None
    cts: int | None = None
    cs: int | None = None
    data: msgspec.Raw = msgspec.Raw()
    op: str | None = None
    success: bool | None = None
    ret_msg: str | None = None
    req_id: str | None = None


class _Trade(msgspec.Struct, gc=False):
    time: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    side: str = msgspec.field(name="S")
    size: float = msgspec.field(name="v")
    price: float = msgspec.field(name="p")
    trade_id: str = msgspec.field(name="i")
    seq: int | None = None


class _Book(msgspec.Struct, gc=False):
    symbol: str = msgspec.field(name="s")
    bids: list[tuple[float, float]] = msgspec.field(name="b")
    asks: list[tuple[float, float]] = msgspec.field(name="a")
    update_id: int = msgspec.field(name="u")
    seq: int | None = None


_UNSET = msgspec.UNSET


class _Ticker(msgspec.Struct, gc=False):
    """The ticker fields kept (a delta carries only the changed ones: the rest are UNSET)."""

    symbol: str
    bid1Price: str | msgspec.UnsetType = _UNSET
    bid1Size: str | msgspec.UnsetType = _UNSET
    ask1Price: str | msgspec.UnsetType = _UNSET
    ask1Size: str | msgspec.UnsetType = _UNSET
    lastPrice: str | msgspec.UnsetType = _UNSET
    volume24h: str | msgspec.UnsetType = _UNSET
    markPrice: str | msgspec.UnsetType = _UNSET
    indexPrice: str | msgspec.UnsetType = _UNSET
    fundingRate: str | msgspec.UnsetType = _UNSET
    nextFundingTime: str | msgspec.UnsetType = _UNSET
    fundingIntervalHour: str | msgspec.UnsetType = _UNSET
    openInterest: str | msgspec.UnsetType = _UNSET
    openInterestValue: str | msgspec.UnsetType = _UNSET
    predictedDeliveryPrice: str | msgspec.UnsetType = _UNSET


class _OptionTicker(_Ticker, gc=False):
    """An option's ticker: its best quote without the "1", and the volatility and greeks
    (a struct of its own, so that linear tickers decode no more fields than before)."""

    bidPrice: str | msgspec.UnsetType = _UNSET
    bidSize: str | msgspec.UnsetType = _UNSET
    askPrice: str | msgspec.UnsetType = _UNSET
    askSize: str | msgspec.UnsetType = _UNSET
    bidIv: str | msgspec.UnsetType = _UNSET
    askIv: str | msgspec.UnsetType = _UNSET
    markPriceIv: str | msgspec.UnsetType = _UNSET
    underlyingPrice: str | msgspec.UnsetType = _UNSET
    delta: str | msgspec.UnsetType = _UNSET
    gamma: str | msgspec.UnsetType = _UNSET
    vega: str | msgspec.UnsetType = _UNSET
    theta: str | msgspec.UnsetType = _UNSET


_TICKER_FIELDS: Final = ("bid1Price", "bid1Size", "ask1Price", "ask1Size", "lastPrice", "volume24h")
# The fields of a derivative_ticker row: a message carrying none of them writes no such row.
_DERIVATIVE_FIELDS: Final = (
    "lastPrice",
    "markPrice",
    "indexPrice",
    "fundingRate",
    "nextFundingTime",
    "fundingIntervalHour",
    "openInterest",
    "openInterestValue",
    "predictedDeliveryPrice",
)
_ALL_TICKER_FIELDS: Final = tuple(dict.fromkeys(_TICKER_FIELDS + _DERIVATIVE_FIELDS))
# The same for options: their ticker's own names of the best quote, and the option values.
_OPTION_TICKER_FIELDS: Final = (
    "bidPrice",
    "bidSize",
    "askPrice",
    "askSize",
    "lastPrice",
    "volume24h",
)
_OPTION_DERIVATIVE_FIELDS: Final = (
    "lastPrice",
    "markPrice",
    "indexPrice",
    "openInterest",
    "predictedDeliveryPrice",
    "bidIv",
    "askIv",
    "markPriceIv",
    "underlyingPrice",
    "delta",
    "gamma",
    "vega",
    "theta",
)
_ALL_OPTION_TICKER_FIELDS: Final = tuple(
    dict.fromkeys(_OPTION_TICKER_FIELDS + _OPTION_DERIVATIVE_FIELDS)
)


class _Liquidation(msgspec.Struct, gc=False):
    time: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    side: str = msgspec.field(name="S")
    size: float = msgspec.field(name="v")
    price: float = msgspec.field(name="p")


class _Instrument(msgspec.Struct, gc=False):
    symbol: str
    status: str = "Trading"
    quoteCoin: str | None = None


class _InstrumentList(msgspec.Struct, gc=False):
    items: list[_Instrument] = msgspec.field(default_factory=list, name="list")
    next_page_cursor: str = msgspec.field(default="", name="nextPageCursor")


class _Instruments(msgspec.Struct, gc=False):
    retCode: int
    retMsg: str = ""
    result: _InstrumentList | None = None


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_TRADES: Final = msgspec.json.Decoder(list[_Trade], strict=False)
_BOOK: Final = msgspec.json.Decoder(_Book, strict=False)
_TICKER: Final = msgspec.json.Decoder(_Ticker)
_OPTION_TICKER: Final = msgspec.json.Decoder(_OptionTicker)
_LIQUIDATIONS: Final = msgspec.json.Decoder(list[_Liquidation], strict=False)
_INSTRUMENTS: Final = msgspec.json.Decoder(_Instruments)
_ENCODER: Final = msgspec.json.Encoder()

_PARSE_ERRORS: Final = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError)
# ``S`` is the "side of taker" (Bybit v5 docs, public trade topic; confirmed): the aggressor.
_SIDES: Final[dict[str, Literal["buy", "sell"]]] = {"Buy": "buy", "Sell": "sell"}


# ``S`` of allLiquidation is the liquidated position's side ("When you receive a Buy update,
# this means that a long position has been liquidated", Bybit v5 docs): the liquidation
# order is the opposite side.
_LIQUIDATED: Final[dict[str, tuple[Literal["buy", "sell"], Literal["long", "short"]]]] = {
    "Buy": ("sell", "long"),
    "Sell": ("buy", "short"),
}


def _opt_float(value: str | None) -> float | None:
    return float(value) if value else None


def _opt_us(value: str | None) -> int | None:
    """A millisecond time sent as a string ("" for none) in microseconds."""
    return int(value) * 1000 if value else None


def _opt_price(value: str | None) -> float | None:
    """A price where ``"0"`` means none (an option's predicted delivery price outside the
    delivery window: no underlying settles at 0)."""
    number = float(value) if value else None
    return number or None


def _unit(category: str) -> SizeUnit:
    """The unit of open interest and liquidation sizes: base coin on linear, USD on
    inverse (contracts worth 1 USD)."""
    return "usd" if category == "inverse" else "base"


# --------------------------------------------------------------------------- adapter


@attrs.frozen
class BybitPlan(ConnectionPlan):
    """A connection plan that also names the topic of each subscription (same order)."""

    topics: tuple[str, ...] = ()
    category: str = "spot"


def topic_name(symbol: str, feed: str, market: MarketSettings | None = None) -> str:
    """The topic of one (symbol, feed); ``market`` supplies the book depth and category
    (an option's trades are on its base coin's topic, ``publicTrade.BTC``)."""
    option = market is not None and market.category == "option"
    if feed == "trades":
        return f"publicTrade.{symbol.partition('-')[0] if option else symbol}"
    if feed == "ticker" or feed == "derivatives":
        return f"tickers.{symbol}"
    if feed == "liquidations":
        return f"allLiquidation.{symbol}"
    if feed == "orderbook":
        depth = DEFAULT_OPTION_BOOK_DEPTH if option else DEFAULT_BOOK_DEPTH
        if market is not None and market.book_depth is not None:
            depth = market.book_depth
        return f"orderbook.{depth}.{symbol}"
    raise ValueError(f"bybit has no topic for feed {feed!r}")


def _data_exchange(category: str) -> str:
    """``bybit`` for spot, ``bybit-linear`` / ``bybit-inverse`` / ``bybit-option`` for the
    others: ``BTCUSDT`` names both a spot pair and a perpetual, and each must have its own
    files."""
    return EXCHANGE if category == "spot" else f"{EXCHANGE}-{category}"


class BybitAdapter(ExchangeAdapter):
    """Bybit v5 public market data, spot, linear, inverse and option categories."""

    name: ClassVar[str] = EXCHANGE
    default_url: ClassVar[str] = DEFAULT_URL
    ws_path_rule: ClassVar[PathRule] = "host_only"  # the path is per category: connection_url
    default_rest_url: ClassVar[str | None] = DEFAULT_REST_URL
    # Spot symbols (the hook has no category; linear: ``category=linear``).
    symbols_path: ClassVar[str | None] = f"{INSTRUMENTS_PATH}?category=spot"
    geo_block_hosts: ClassVar[str | None] = (
        "Bybit runs regional hosts for regional accounts (e.g. wss://stream.bybit.tr): if "
        "yours is one, set base_url to your region's host"
    )
    categories: ClassVar[tuple[str, ...]] = CATEGORIES
    stream_feeds: ClassVar[tuple[Feed, ...]] = (
        "trades",
        "orderbook",
        "ticker",
        "derivatives",
        "liquidations",
    )
    category_lacks: ClassVar[Mapping[str, tuple[Feed, ...]]] = {
        "spot": ("derivatives", "liquidations"),
        "option": ("liquidations",),
    }
    book_depths: ClassVar[tuple[int, ...]] = BOOK_DEPTHS
    option_notes: ClassVar[Mapping[str, str]] = {
        "category": ": the same symbol names a spot pair and a perpetual "
        "(inverse: coin-margined contracts such as BTCUSD; option: BTC-27DEC24-100000-C)",
        "book_mode": " (the book is a snapshot then deltas; choose its depth with book_depth)",
    }
    # The REST base of the instruments listing (the book is synced over WebSocket).
    takes_rest_url: ClassVar[bool] = True
    plan_class: ClassVar[type[ConnectionPlan]] = BybitPlan
    wire_names_field: ClassVar[str | None] = "topics"
    max_subscriptions_per_connection: ClassVar[int | None] = MAX_TOPICS_PER_CONNECTION
    # No client message limit is documented for public streams; stay gentle.
    client_messages_per_second: ClassVar[float] = 5.0
    # "op": "subscribe" / "unsubscribe" work on a live connection.
    live_subscriptions: ClassVar[bool] = True
    listing_quotes: ClassVar[bool] = True
    # The venue recommends an op ping every 20 s and drops idle clients.
    keepalive_interval_secs: ClassVar[float | None] = 20.0

    @classmethod
    def symbols_url(cls, rest_url: str | None = None, category: str | None = None) -> str:
        """The instruments-info URL of ``category`` (none: spot): ``spot``, ``linear``,
        ``inverse`` or ``option`` (every base coin: ``baseCoin=All``; the venue lists only
        BTC options without it). The derivative categories are paged, 1000 a page (see
        :meth:`symbols_next_url`). ValueError for another category."""
        category = category or "spot"
        if category not in SYMBOL_CATEGORIES:
            raise ValueError(
                f"bybit category must be {choices(SYMBOL_CATEGORIES, quoted=True)} "
                f"(got {category!r})"
            )
        query = f"category={category}"
        if category != "spot":
            query += "&limit=1000"
        if category == "option":
            query += "&baseCoin=All"
        return f"{(rest_url or DEFAULT_REST_URL).rstrip('/')}{INSTRUMENTS_PATH}?{query}"

    @classmethod
    def check_book_options(cls, market: MarketSettings) -> None:
        """As every venue, but options have their own depths (25, 100)."""
        if market.category != "option" or market.book_depth is None:
            super().check_book_options(market)
            return
        super().check_book_options(msgspec.structs.replace(market, book_depth=None))
        if market.book_depth not in OPTION_BOOK_DEPTHS:
            raise ValueError(
                f"bybit category 'option' book_depth must be {choices(OPTION_BOOK_DEPTHS)} "
                f"(got {market.book_depth})"
            )

    @classmethod
    def symbols_next_url(cls, url: str, body: bytes) -> str | None:
        """The same URL with the answer's ``nextPageCursor`` (None: it has none)."""
        try:
            answer = _INSTRUMENTS.decode(body)
        except msgspec.DecodeError as exc:
            raise ParseError(f"bybit instruments-info: {exc}") from exc
        cursor = "" if answer.result is None else answer.result.next_page_cursor
        if not cursor:
            return None
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "cursor"]
        return urlunsplit(parts._replace(query=urlencode([*query, ("cursor", cursor)])))

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        try:
            answer = _INSTRUMENTS.decode(body)
        except msgspec.DecodeError as exc:
            raise ParseError(f"bybit instruments-info: {exc}") from exc
        if answer.retCode != 0 or answer.result is None:
            raise ParseError(f"bybit instruments-info: retCode {answer.retCode}: {answer.retMsg}")
        return sorted(i.symbol for i in answer.result.items if i.status == "Trading")

    @classmethod
    def parse_listing(cls, body: bytes) -> list[Listing]:
        """Every instrument of one page with its ``quoteCoin`` and ``status`` (``Trading``
        trades; ``PreLaunch``, ``Delivering``, ``Closed`` do not), sorted."""
        try:
            answer = _INSTRUMENTS.decode(body)
        except msgspec.DecodeError as exc:
            raise ParseError(f"bybit instruments-info: {exc}") from exc
        if answer.retCode != 0 or answer.result is None:
            raise ParseError(f"bybit instruments-info: retCode {answer.retCode}: {answer.retMsg}")
        listed = (
            Listing(i.symbol, i.quoteCoin or None, i.status, i.status == "Trading")
            for i in answer.result.items
        )
        return sorted(listed, key=lambda item: item.symbol)

    @staticmethod
    def normalize_symbol(symbol: str) -> str:
        canonical = symbol.upper()
        if not _SYMBOL_RE.fullmatch(canonical):
            raise ValueError(
                f"invalid bybit symbol {symbol!r}: expected letters and digits without "
                "separator, e.g. 'BTCUSDT' (spot or linear), 'BTCUSD' (inverse), a "
                "dated linear future such as 'BTC-26DEC25', or an option such as "
                "'BTC-27DEC24-100000-C'"
            )
        return canonical

    @classmethod
    def data_exchange(cls, market: MarketSettings) -> str:
        return _data_exchange(market.category or "spot")

    def connection_url(self, market: MarketSettings) -> str:
        """``{base}/v5/public/{category}``; a ``base_url`` with a path is used as is."""
        path = f"/v5/public/{market.category or 'spot'}"
        return join_ws_path(market.base_url or self.default_url, path, self.ws_path_rule)

    def plan_fields(self, market: MarketSettings) -> dict[str, Any]:
        """One category per connection (its endpoint is per category)."""
        return {"category": market.category or "spot"}

    def wire_name(self, symbol: str, feed: str, market: MarketSettings) -> str:
        return topic_name(symbol, feed, market)

    def connection_name(self, index: int, fields: Mapping[str, Any]) -> str:
        """``bybit-{category}-{index}``: the category shows in logs and metrics."""
        return f"{self.name}-{fields['category']}-{index}"

    def keepalive_frame(self, number: int) -> str:
        """Ping ``number`` of a connection: ``{"req_id":"ping-<number>","op":"ping"}``.

        The session's request ids are decimal strings ("1", "2", ...), so a ``ping-`` id can
        never equal one; and the session skips pongs by their ``op`` (``ping``/``pong``)
        before it looks at any ``req_id``, which linear pongs echo.
        """
        return _ENCODER.encode({"req_id": f"ping-{number}", "op": "ping"}).decode()

    lists_instruments: ClassVar[bool] = True
    # instruments-info is in the public REST limit of 600 requests per 5 s per IP.
    instrument_requests_per_second: ClassVar[float] = 5.0

    def instruments_requests(self, market: MarketSettings) -> list[InstrumentsRequest]:
        """One ``instruments-info?category=C&symbol=S`` per symbol (a category's whole
        listing is paged; one symbol's never is). An option's also names its base coin
        (``baseCoin``: without it the venue answers for BTC options only)."""
        category = market.category or "spot"
        exchange = self.data_exchange(market)
        base = f"{self.rest_url(market)}/v5/market/instruments-info?category={category}"
        requests = []
        for symbol in dict.fromkeys(self.normalize_symbol(s) for s in market.symbols):
            url = f"{base}&symbol={symbol}"
            if category == "option":
                url += f"&baseCoin={symbol.partition('-')[0]}"
            requests.append(InstrumentsRequest(exchange, url, (symbol,), category))
        return requests

    @classmethod
    def parse_instruments(
        cls, request: InstrumentsRequest, body: bytes, received_us: int
    ) -> list[Instrument]:
        return parse_instruments(request, body, received_us)

    def open_session(self, plan: ConnectionPlan) -> BybitSession:
        return BybitSession(plan)


# --------------------------------------------------------------------------- session

_Handler = Callable[[str, _Envelope, int], list[Event]]


@attrs.define
class _Request:
    op: str
    topics: list[str]


class BybitSession(Session):
    """Protocol state of one Bybit connection attempt (see the module docstring)."""

    def __init__(self, plan: ConnectionPlan) -> None:
        super().__init__(plan)
        if isinstance(plan, BybitPlan) and len(plan.topics) == len(plan.subscriptions):
            topics = plan.topics
        else:
            topics = tuple(topic_name(s.symbol, s.feed) for s in plan.subscriptions)
        self._category = plan.category if isinstance(plan, BybitPlan) else "spot"
        option = self._category == "option"
        self._ticker_fields = _ALL_OPTION_TICKER_FIELDS if option else _ALL_TICKER_FIELDS
        self._derivative_fields = _OPTION_DERIVATIVE_FIELDS if option else _DERIVATIVE_FIELDS
        self._bid_ask = _OPTION_TICKER_FIELDS[:4] if option else _TICKER_FIELDS[:4]
        self._ticker_decoder: msgspec.json.Decoder[_Ticker] | msgspec.json.Decoder[_OptionTicker]
        self._ticker_decoder = _OPTION_TICKER if option else _TICKER
        # topic -> its subscriptions (``ticker`` and ``derivatives`` share ``tickers.X``).
        self._subs: dict[str, tuple[Subscription, ...]] = {}
        for topic, sub in zip(topics, plan.subscriptions, strict=True):
            self._subs[topic] = (*self._subs.get(topic, ()), sub)
        self._unacked: set[str] = set(self._subs)
        self._next_id = 1
        # req_id -> request, until answered (the venue answers in order).
        self._requests: dict[str, _Request] = {}
        self._routes: dict[str, tuple[_Handler, str]] = {}
        self._last_u: dict[str, int] = {}
        self._resyncing: set[str] = set()
        # Each book's crossed-book check (from its snapshot until a resync), and why a book
        # is resyncing where it was not a sequence gap (for its resync row).
        self._cross_checks: dict[str, CrossCheck] = {}
        self._resync_reasons: dict[str, BookResyncReason] = {}
        # Last full ticker per symbol (field name -> wire string), since its last snapshot.
        self._tickers: dict[str, dict[str, str]] = {}
        # Symbols whose tickers topic is resubscribed for a snapshot (a delta came first).
        self._ticker_resyncing: set[str] = set()
        self.rejected: list[Subscription] = []

    # ----------------------------------------------------------------- subscribing

    def subscribe_frames(self, now_us: int = 0) -> list[str]:
        return [
            self._request("subscribe", topics)
            for topics in chunked(list(self._subs), MAX_ARGS_PER_SUBSCRIBE)
        ]

    def _request(self, op: str, topics: list[str]) -> str:
        req_id = str(self._next_id)
        self._next_id += 1
        self._requests[req_id] = _Request(op, list(topics))
        return _ENCODER.encode({"req_id": req_id, "op": op, "args": topics}).decode()

    def _resubscribe(self, topic: str) -> None:
        self._outgoing.append(self._request("unsubscribe", [topic]))
        self._outgoing.append(self._request("subscribe", [topic]))

    def change_frames(
        self,
        plan: ConnectionPlan,
        added: tuple[Subscription, ...],
        removed: tuple[Subscription, ...],
    ) -> list[str]:
        """``unsubscribe`` the topics of the removed subscriptions (a topic shared by
        ``ticker`` and ``derivatives`` only once none of its subscriptions is left), then
        ``subscribe`` the added ones' topics (named as ``plan`` names them), at most
        ``MAX_ARGS_PER_SUBSCRIBE`` a request."""
        frames: list[str] = []
        if removed:
            gone = set(removed)
            dropped = []
            for topic, subs in list(self._subs.items()):
                kept = tuple(sub for sub in subs if sub not in gone)
                if len(kept) == len(subs):
                    continue
                if kept:
                    self._subs[topic] = kept
                    continue
                del self._subs[topic]
                self._unacked.discard(topic)
                dropped.append(topic)
            for symbol in {sub.symbol for sub in removed}:
                self._tickers.pop(symbol, None)
                self._ticker_resyncing.discard(symbol)
                self._last_u.pop(symbol, None)
                self._resyncing.discard(symbol)
            frames += [
                self._request("unsubscribe", topics)
                for topics in chunked(dropped, MAX_ARGS_PER_SUBSCRIBE)
            ]
        if added:
            if isinstance(plan, BybitPlan) and len(plan.topics) == len(plan.subscriptions):
                names = dict(zip(plan.subscriptions, plan.topics, strict=True))
            else:
                names = {s: topic_name(s.symbol, s.feed) for s in plan.subscriptions}
            new_topics: list[str] = []
            for sub in added:
                topic = names[sub]
                if topic not in self._subs:
                    new_topics.append(topic)
                    self._unacked.add(topic)
                elif topic not in self._unacked:
                    # The topic is subscribed already (ticker and derivatives share it):
                    # the new subscription is acknowledged with it.
                    self._pending_subscriptions -= 1
                self._subs[topic] = (*self._subs.get(topic, ()), sub)
            frames += [
                self._request("subscribe", topics)
                for topics in chunked(new_topics, MAX_ARGS_PER_SUBSCRIBE)
            ]
        return frames

    def _on_answer(self, env: _Envelope, received_us: int) -> list[Event]:
        op = env.op
        if op not in ("subscribe", "unsubscribe"):
            return []  # pong ("op":"ping" or "pong") and other command answers
        req_id = env.req_id
        if not req_id or req_id not in self._requests:
            # No req_id echoed: the venue answers in order, so the oldest of that op.
            req_id = next((r for r, q in self._requests.items() if q.op == op), None)
            if req_id is None:
                return []
        request = self._requests.pop(req_id)
        if op == "unsubscribe":
            return []
        message = env.ret_msg or ""
        if env.success or "already subscribed" in message:
            return self._subscribed(request.topics, received_us)
        named = [t for t in _TOPIC_IN_MSG_RE.findall(message) if t in request.topics]
        if named:
            rest = [t for t in request.topics if t not in named]
            if rest:
                self._outgoing.append(self._request("subscribe", rest))
            return self._refused(named, message, received_us)
        if len(request.topics) > 1:
            half = len(request.topics) // 2
            self._outgoing.append(self._request("subscribe", request.topics[:half]))
            self._outgoing.append(self._request("subscribe", request.topics[half:]))
            return []
        return self._refused(request.topics, message, received_us)

    def _subscribed(self, topics: list[str], received_us: int) -> list[Event]:
        events: list[Event] = []
        for topic in topics:
            if topic in self._unacked:
                self._unacked.discard(topic)
                for sub in self._subs[topic]:
                    self._pending_subscriptions -= 1
                    events.append(
                        self.status(
                            "subscribed",
                            sub.symbol,
                            received_us,
                            data_type=feed_data_type(sub.feed),
                        )
                    )
        return events

    def _refused(self, topics: list[str], message: str, received_us: int) -> list[Event]:
        events: list[Event] = []
        for topic in topics:
            subs = self._subs.get(topic, ())
            unacked = topic in self._unacked
            self._unacked.discard(topic)
            for sub in subs:
                if unacked:
                    self._pending_subscriptions -= 1
                self.rejected.append(sub)
                if sub.feed == "orderbook":
                    self._resyncing.discard(sub.symbol)
                else:
                    self._ticker_resyncing.discard(sub.symbol)
                events.append(
                    self.status(
                        "subscribe_error",
                        sub.symbol,
                        received_us,
                        data_type=feed_data_type(sub.feed),
                        detail=f"{topic}: {message}",
                    )
                )
        return events

    # ----------------------------------------------------------------- parsing

    def parse(self, payload: bytes, received_us: int) -> list[Event]:
        try:
            env = _ENVELOPE.decode(payload)
            topic = env.topic
            if topic is not None:
                route = self._routes.get(topic)
                if route is None:
                    route = self._routes[topic] = self._route(topic)
                handler, symbol = route
                if not env.data:
                    raise ParseError(f"bybit: frame of topic {topic!r} has no data")
                return handler(symbol, env, received_us)
            if env.op is not None:
                return self._on_answer(env, received_us)
            raise ParseError("bybit: frame with neither topic nor op")
        except _PARSE_ERRORS as exc:
            raise ParseError(f"bybit: {type(exc).__name__}: {exc}") from exc

    def _route(self, topic: str) -> tuple[_Handler, str]:
        kind, _, rest = topic.partition(".")
        handler: _Handler
        if kind == "publicTrade":
            if self._category == "option":
                return self._option_trades, rest
            return self._trades, rest
        if kind == "tickers":
            feeds = {sub.feed for sub in self._subs.get(topic, ())}
            if "derivatives" not in feeds:
                return self._ticker, rest
            if "ticker" not in feeds:
                return self._derivative_ticker, rest
            return self._both_tickers, rest
        if kind == "allLiquidation":
            return self._liquidations, rest
        if kind == "orderbook":
            depth, _, symbol = rest.partition(".")
            handler = self._book_l1 if depth == "1" else self._book
            return handler, symbol
        return _ignore, rest

    def _trades(self, symbol: str, env: _Envelope, received_us: int) -> list[Event]:
        return [
            Trade(
                self.exchange,
                symbol,
                msg.time * 1000,
                received_us,
                msg.seq,
                msg.trade_id,
                msg.price,
                msg.size,
                _SIDES.get(msg.side),
            )
            for msg in _TRADES.decode(env.data)
        ]

    def _option_trades(self, coin: str, env: _Envelope, received_us: int) -> list[Event]:
        """One base coin's option trades (``publicTrade.BTC``): those of the subscribed
        options, each under its own symbol (``s``)."""
        topic = env.topic or f"publicTrade.{coin}"
        wanted = {sub.symbol for sub in self._subs.get(topic, ())}
        return [
            Trade(
                self.exchange,
                msg.symbol,
                msg.time * 1000,
                received_us,
                msg.seq,
                msg.trade_id,
                msg.price,
                msg.size,
                _SIDES.get(msg.side),
            )
            for msg in _TRADES.decode(env.data)
            if msg.symbol in wanted
        ]

    def _book_update(
        self,
        symbol: str,
        env: _Envelope,
        msg: _Book,
        received_us: int,
        kind: Literal["snapshot", "delta"],
    ) -> BookUpdate:
        exchange_ms = env.cts if env.cts is not None else env.ts
        u = msg.update_id
        return BookUpdate(
            self.exchange,
            symbol,
            None if exchange_ms is None else exchange_ms * 1000,
            received_us,
            u,
            kind,
            u,
            None,
            levels_from_pairs(msg.bids),
            levels_from_pairs(msg.asks),
        )

    def _book_l1(self, symbol: str, env: _Envelope, received_us: int) -> list[Event]:
        msg = _BOOK.decode(env.data)
        return [self._book_update(symbol, env, msg, received_us, "snapshot")]

    def _book(self, symbol: str, env: _Envelope, received_us: int) -> list[Event]:
        msg = _BOOK.decode(env.data)
        u = msg.update_id
        events: list[Event] = []
        last = self._last_u.get(symbol)
        if env.type == "snapshot":
            if symbol in self._resyncing or last is not None:
                self._resyncing.discard(symbol)
                if u == 1:
                    detail = "snapshot with u=1: the venue restarted"
                elif last is None:
                    detail = f"fresh snapshot after resubscribing, u={u}"
                else:
                    detail = f"the venue sent a new snapshot, u={u} (previous u={last})"
                reason = self._resync_reasons.pop(symbol, None)
                if reason is not None:
                    detail += f" after a {RESYNC_REASON_TEXT[reason]}"
                events.append(
                    self.status(
                        "resync",
                        symbol,
                        received_us,
                        data_type="orderbook",
                        expected=last,
                        received=u,
                        detail=detail,
                    )
                )
            self._last_u[symbol] = u
            snapshot = self._book_update(symbol, env, msg, received_us, "snapshot")
            events.append(snapshot)
            started = self._cross_checks[symbol] = CrossCheck()
            if started.snapshot(snapshot.bids, snapshot.asks):
                events.append(
                    self._book_crossed(symbol, env, started, received_us, " in the snapshot")
                )
            return events
        if symbol not in self._resyncing:
            if last is not None and u == last + 1:
                pass
            elif last is not None and 1 < u <= last:
                self.count_discard(symbol, "orderbook", "stale")
                return events
            else:
                if last is None:
                    detail = "delta before any snapshot"
                elif u == 1:
                    detail = "delta with u=1: the venue restarted"
                else:
                    detail = "u is not the previous u + 1"
                events.append(
                    self.status(
                        "gap",
                        symbol,
                        received_us,
                        data_type="orderbook",
                        expected=None if last is None else last + 1,
                        received=u,
                        count=u - last - 1 if last is not None and u > last else None,
                        detail=detail,
                    )
                )
                self._resync_book(symbol, env)
        if symbol not in self._resyncing:
            self._last_u[symbol] = u
        update = self._book_update(symbol, env, msg, received_us, "delta")
        events.append(update)
        check = self._cross_checks.get(symbol)
        if check is not None and check.apply(update.bids, update.asks):
            events.append(self._book_crossed(symbol, env, check, received_us))
        return events

    def _resync_book(self, symbol: str, env: _Envelope) -> None:
        """Resubscribe ``symbol``'s book topic (a fresh snapshot comes); unchecked until then."""
        self._resyncing.add(symbol)
        self._last_u.pop(symbol, None)
        self._cross_checks.pop(symbol, None)
        topic = env.topic
        if topic is not None:
            self._resubscribe(topic)

    def _book_crossed(
        self, symbol: str, env: _Envelope, check: CrossCheck, received_us: int, where: str = ""
    ) -> Event:
        """The book is crossed: its gap row, and a resubscription of that book alone."""
        self._resync_book(symbol, env)
        self._resync_reasons[symbol] = "crossed"
        detail = f"{check.describe()}{where}; resubscribing for a new snapshot"
        return self.book_invalid(symbol, received_us, "crossed", detail)

    def _merge_ticker(
        self, symbol: str, env: _Envelope, received_us: int, events: list[Event]
    ) -> tuple[dict[str, str], _Ticker] | None:
        """Merge one tickers message into the symbol's state: the state and the message, or
        None when it cannot be merged (a delta with no snapshot before it: ``gap`` rows go
        to ``events`` and the topic is resubscribed for a snapshot)."""
        msg = self._ticker_decoder.decode(env.data)
        if env.type == "snapshot":
            self._ticker_resyncing.discard(symbol)
            state = self._tickers[symbol] = {}
        else:
            found = self._tickers.get(symbol)
            if found is None:
                self._ticker_delta_without_snapshot(symbol, env, received_us, events)
                return None
            state = found
        for field in self._ticker_fields:
            value = getattr(msg, field)
            if value is not _UNSET:
                state[field] = value
        return state, msg

    def _ticker_delta_without_snapshot(
        self, symbol: str, env: _Envelope, received_us: int, events: list[Event]
    ) -> None:
        topic = env.topic or f"tickers.{symbol}"
        data_types = [feed_data_type(sub.feed) for sub in self._subs.get(topic, ())]
        if symbol in self._ticker_resyncing:
            for data_type in data_types:
                self.count_discard(symbol, data_type, "while_resyncing")
            return
        self._ticker_resyncing.add(symbol)
        for data_type in data_types or ["ticker"]:
            events.append(
                self.status(
                    "gap",
                    symbol,
                    received_us,
                    data_type=data_type,
                    detail="tickers delta before any snapshot: resubscribing for one",
                    timestamp_exchange=None if env.ts is None else env.ts * 1000,
                )
            )
        self._resubscribe(topic)

    def _ticker_row(
        self, symbol: str, env: _Envelope, state: dict[str, str], received_us: int
    ) -> Ticker:
        ts = env.ts
        bid_price, bid_size, ask_price, ask_size = self._bid_ask
        return Ticker(
            self.exchange,
            symbol,
            None if ts is None else ts * 1000,
            received_us,
            env.cs,
            _opt_float(state.get(bid_price)),
            _opt_float(state.get(bid_size)),
            _opt_float(state.get(ask_price)),
            _opt_float(state.get(ask_size)),
            _opt_float(state.get("lastPrice")),
            _opt_float(state.get("volume24h")),
        )

    def _derivative_row(
        self, symbol: str, env: _Envelope, state: dict[str, str], received_us: int
    ) -> DerivativeTicker:
        ts = env.ts
        open_interest = _opt_float(state.get("openInterest"))
        if self._category == "option":
            return self._option_row(symbol, env, state, received_us, open_interest)
        return DerivativeTicker(
            self.exchange,
            symbol,
            None if ts is None else ts * 1000,
            received_us,
            env.cs,
            "tickers",
            last_price=_opt_float(state.get("lastPrice")),
            mark_price=_opt_float(state.get("markPrice")),
            index_price=_opt_float(state.get("indexPrice")),
            funding_rate=_opt_float(state.get("fundingRate")),
            funding_timestamp=_opt_us(state.get("nextFundingTime")),
            funding_interval_h=_opt_float(state.get("fundingIntervalHour")),
            open_interest=open_interest,
            open_interest_unit=None if open_interest is None else _unit(self._category),
            open_interest_value=_opt_float(state.get("openInterestValue")),
            estimated_settlement_price=_opt_float(state.get("predictedDeliveryPrice")),
        )

    def _option_row(
        self,
        symbol: str,
        env: _Envelope,
        state: dict[str, str],
        received_us: int,
        open_interest: float | None,
    ) -> DerivativeTicker:
        """An option's row: prices, open interest (base coin), volatilities (fractions, as
        the venue sends them) and greeks; options have no funding."""
        ts = env.ts
        return DerivativeTicker(
            self.exchange,
            symbol,
            None if ts is None else ts * 1000,
            received_us,
            env.cs,
            "tickers",
            last_price=_opt_float(state.get("lastPrice")),
            mark_price=_opt_float(state.get("markPrice")),
            index_price=_opt_float(state.get("indexPrice")),
            open_interest=open_interest,
            open_interest_unit=None if open_interest is None else "base",
            estimated_settlement_price=_opt_price(state.get("predictedDeliveryPrice")),
            mark_iv=_opt_float(state.get("markPriceIv")),
            bid_iv=_opt_float(state.get("bidIv")),
            ask_iv=_opt_float(state.get("askIv")),
            delta=_opt_float(state.get("delta")),
            gamma=_opt_float(state.get("gamma")),
            vega=_opt_float(state.get("vega")),
            theta=_opt_float(state.get("theta")),
            underlying_price=_opt_float(state.get("underlyingPrice")),
        )

    def _ticker(self, symbol: str, env: _Envelope, received_us: int) -> list[Event]:
        events: list[Event] = []
        merged = self._merge_ticker(symbol, env, received_us, events)
        if merged is not None:
            events.append(self._ticker_row(symbol, env, merged[0], received_us))
        return events

    def _derivative_ticker(self, symbol: str, env: _Envelope, received_us: int) -> list[Event]:
        events: list[Event] = []
        merged = self._merge_ticker(symbol, env, received_us, events)
        if merged is not None and self._carries_derivative_fields(merged[1]):
            events.append(self._derivative_row(symbol, env, merged[0], received_us))
        return events

    def _both_tickers(self, symbol: str, env: _Envelope, received_us: int) -> list[Event]:
        events: list[Event] = []
        merged = self._merge_ticker(symbol, env, received_us, events)
        if merged is not None:
            state, msg = merged
            events.append(self._ticker_row(symbol, env, state, received_us))
            if self._carries_derivative_fields(msg):
                events.append(self._derivative_row(symbol, env, state, received_us))
        return events

    def _carries_derivative_fields(self, msg: _Ticker) -> bool:
        """Whether a tickers message sets a field of the derivative_ticker table (a snapshot
        always does; a delta of bid/ask only does not)."""
        return any(getattr(msg, field) is not _UNSET for field in self._derivative_fields)

    def _liquidations(self, symbol: str, env: _Envelope, received_us: int) -> list[Event]:
        unit = _unit(self._category)
        events: list[Event] = []
        for msg in _LIQUIDATIONS.decode(env.data):
            side, position = _LIQUIDATED.get(msg.side, (None, None))
            events.append(
                Liquidation(
                    self.exchange,
                    symbol,
                    msg.time * 1000,
                    received_us,
                    None,
                    None,
                    side,
                    position,
                    msg.price,
                    "bankruptcy",
                    msg.size,
                    unit,
                )
            )
        return events


def _ignore(symbol: str, env: _Envelope, received_us: int) -> list[Event]:
    return []


# --------------------------------------------------------------------------- instruments


class _PriceFilter(msgspec.Struct, gc=False):
    tickSize: str | None = None


class _LotSizeFilter(msgspec.Struct, gc=False):
    qtyStep: str | None = None  # linear, inverse, option
    basePrecision: str | None = None  # spot: the base quantity's step
    minOrderQty: str | None = None


class _InstrumentInfo(msgspec.Struct, gc=False):
    symbol: str
    baseCoin: str
    quoteCoin: str
    settleCoin: str | None = None  # not on spot
    status: str | None = None
    contractType: str | None = None  # LinearPerpetual, LinearFutures, InversePerpetual, ...
    optionsType: str | None = None  # Call, Put
    deliveryTime: str | None = None  # ms; "0" for perpetuals
    priceFilter: _PriceFilter | None = None
    lotSizeFilter: _LotSizeFilter | None = None


class _InstrumentInfoList(msgspec.Struct, gc=False):
    items: list[_InstrumentInfo] = msgspec.field(default_factory=list, name="list")


class _InstrumentsInfo(msgspec.Struct, gc=False):
    retCode: int
    retMsg: str = ""
    result: _InstrumentInfoList | None = None
    time: int | None = None  # ms


_INSTRUMENTS_INFO: Final = msgspec.json.Decoder(_InstrumentsInfo)


def parse_instruments(
    request: InstrumentsRequest, body: bytes, received_us: int
) -> list[Instrument]:
    """The rows of ``request.symbols`` in an ``instruments-info`` answer.

    Sizes are base coin on spot and linear, USD on inverse (contracts worth 1 USD each,
    settled in the base coin). A contract type ending in ``Perpetual`` is a perpetual, one
    ending in ``Futures`` a future expiring at ``deliveryTime``; an option (``optionsType``)
    takes its strike from its name (``BTC-27DEC24-100000-C``). The lot size is
    ``qtyStep`` (spot: ``basePrecision``).
    """
    try:
        answer = _INSTRUMENTS_INFO.decode(body)
    except msgspec.DecodeError as exc:
        raise ParseError(f"bybit instruments-info: {exc}") from exc
    if answer.retCode != 0 or answer.result is None:
        raise ParseError(f"bybit instruments-info: retCode {answer.retCode}: {answer.retMsg}")
    wanted = set(request.symbols)
    server_us = None if answer.time is None else answer.time * 1000
    inverse = request.category == "inverse"
    rows = []
    for item in answer.result.items:
        if item.symbol not in wanted:
            continue
        try:
            rows.append(_instrument(request, item, inverse, server_us, received_us))
        except (ValueError, IndexError) as exc:
            raise ParseError(f"bybit instruments-info {item.symbol}: {exc}") from exc
    return rows


def _instrument(
    request: InstrumentsRequest,
    item: _InstrumentInfo,
    inverse: bool,
    server_us: int | None,
    received_us: int,
) -> Instrument:
    quote_asset = normalize_asset(item.quoteCoin)
    contract = item.contractType or ""
    option = item.optionsType is not None
    spot = not contract and not option
    delivery_ms = int(item.deliveryTime) if item.deliveryTime else 0
    lots = item.lotSizeFilter or _LotSizeFilter()
    return Instrument(
        request.exchange,
        item.symbol,
        server_us,
        received_us,
        None,
        kind="spot"
        if spot
        else "option"
        if option
        else "perpetual"
        if contract.endswith("Perpetual")
        else "future",
        base_asset=normalize_asset(item.baseCoin),
        quote_asset=quote_asset,
        settle_asset=None if spot else normalize_asset(item.settleCoin or quote_asset),
        inverse=None if spot else inverse,
        size_unit="usd" if inverse else "base",
        contract_size=1.0 if inverse else None,
        contract_unit=quote_asset if inverse else None,
        tick_size=optional_float(item.priceFilter.tickSize) if item.priceFilter else None,
        lot_size=optional_float(lots.qtyStep or lots.basePrecision),
        min_size=optional_float(lots.minOrderQty),
        expiry=delivery_ms * 1000 if delivery_ms and not contract.endswith("Perpetual") else None,
        strike=float(item.symbol.split("-")[2]) if option else None,
        option_kind=("call" if item.optionsType == "Call" else "put") if option else None,
        status=item.status,
    )
