"""OKX v5 public WebSocket (sans-IO): subscribe frames, parsing and book sequence checks.

One connection to ``/ws/v5/public`` carries many channel args; they are added with
``{"id": "N", "op": "subscribe", "args": [...]}`` frames after the handshake (at most
:data:`MAX_ARGS_PER_SUBSCRIBE` args per frame, far below the venue's 64 KB). Most args name
an instrument (``{"channel", "instId"}``); ``liquidation-orders`` names an instrument type
(``instType``) and ``opt-summary`` an instrument family (``instFamily``). The venue
acknowledges every arg on its own (``{"event":"subscribe","arg":{...}}``) and refuses a bad
one with ``{"event":"error","code":"60018","msg":"Wrong URL or channel:books,instId:X
doesn't exist..."}`` while the socket stays open.

Symbols are instrument ids, and the id says the instrument type (no ``category`` option:
the ids of the types cannot collide, so every type is stored under the exchange ``okx``):
``BTC-USDT`` spot, ``BTC-USDT-SWAP`` perpetual swap, ``BTC-USD-250627`` future,
``BTC-USD-250627-100000-C`` option (:func:`instrument_type`). Feeds and channels:

- ``trades`` -> ``trades`` (aggregated per taker order and price: ``tradeId`` is the *last*
  fill id, ``count`` the number of fills; ``side`` is the taker side = the aggressor);
- ``orderbook`` -> ``books`` (400 levels: a snapshot, then incremental updates every 100 ms;
  the default, ``book_mode = "diff"``) or ``books5`` (``book_mode = "snapshot"`` /
  ``book_depth = 5``: a full 5-level snapshot per message);
- ``ticker`` -> ``tickers`` (best bid/ask, last price, ``vol24h``: base currency on spot,
  contracts on derivatives);
- ``derivatives`` (swaps, futures, options; refused on spot) -> several channels merged into
  one state per instrument, a ``derivative_ticker`` row (the merged state) per message:
  ``mark-price`` (``markPx``), ``index-tickers`` of the instrument's index (``idxPx``; the
  index is the id's first two parts, ``BTC-USDT`` for ``BTC-USDT-SWAP``, one arg shared by
  every instrument of the index: each gets a row), ``open-interest`` (``oi`` in contracts,
  ``oiUsd`` as the value), ``tickers`` (``last``; shared with the ``ticker`` feed, and a
  derivative row only when ``last`` changed), on swaps ``funding-rate`` (``fundingRate``
  applied at ``fundingTime``, ``nextFundingTime``, the interval between the two, and
  ``nextFundingRate`` as the predicted rate when the venue fills it in: it sends ``""``
  since it dropped that rate), and on options ``opt-summary`` of the family (``BTC-USD``;
  one push lists every option of the family, filtered to the configured ones): implied
  volatilities ``markVol``/``bidVol``/``askVol`` (fractions), the Black-Scholes greeks
  ``deltaBS``/``gammaBS``/``vegaBS``/``thetaBS`` (in USD, like Deribit's; the coin-valued
  ``delta``.. are not kept), ``fwdPx`` as the underlying price and ``uly`` as its name;
- ``liquidations`` (swaps, futures, options) -> ``liquidation-orders`` of the instrument
  type: one arg per type carries every liquidation of that type, filtered to the
  configured instruments. Each ``details`` item is a row: ``side`` is the liquidation
  order's side as OKX sends it; ``posSide`` the position (``long``/``short``; ``net``, the
  one-way mode, becomes the side the order closes: ``sell`` -> ``long``); price ``bkPx``
  (bankruptcy), size ``sz`` in contracts, loss ``bkLoss``. OKX says the channel does not
  carry every liquidation; the first push after subscribing may repeat recent ones
  (UNCONFIRMED): they are written as sent;
- ``raw`` -> no channel: the connection keeps every frame.

Timestamps: ``ts`` (milliseconds, a string) -> microseconds.

Sequence rules (per instrument, per session; a reconnect starts afresh):

- ``books``: every update's ``prevSeqId`` must equal the previous message's ``seqId``
  (snapshot ``prevSeqId`` is -1). That includes the venue's no-change keepalive (empty
  update with ``seqId == prevSeqId``: consumed, no row written) and its maintenance reset
  (``seqId < prevSeqId``: accepted, the chain continues from the new ``seqId``). A message
  repeating the last ``seqId`` with another ``prevSeqId`` is a duplicate: dropped and
  counted (:meth:`Session.count_discard`, ``duplicate``). Anything else is a ``gap`` row
  (expected = last ``seqId``, received = ``prevSeqId``) and the channel is resubscribed
  (``unsubscribe`` + ``subscribe`` via :attr:`Actions.send`) to get a fresh snapshot,
  which is written with a ``resync`` row. Updates are still written while waiting (readers
  rebuild from the resync snapshot). Frames without ``seqId`` (older API versions) are
  written without sequence checks.
- ``books`` checks (:meth:`Session.book_invalid`, then the same resubscription; the
  ``resync`` row names the reason): where the snapshot's ``checksum`` is not 0, the
  session keeps the book with its wire strings (:mod:`collector.exchanges.interleaved_book`)
  and compares every non-zero ``checksum`` (CRC32 of the top 25 levels; OKX has sent 0
  since 2026-06-23, exchanges.md 4.4, so today only old recordings and replays have one);
  every book is also checked for a crossed book after each update
  (:class:`~collector.exchanges.book_check.CrossCheck`, or the local book where there is one).
- ``trades``: fill ids are consecutive per instrument in the recordings, so a message whose
  first fill id (``tradeId - count + 1``) is above the last ``tradeId`` + 1 gets a ``gap``
  row. This is a heuristic (UNCONFIRMED by the venue, and the ELP per-source aggregation
  may reorder ids), so trades are never dropped for it.
- ``tickers`` and ``books5`` carry no sequence to check.

Keepalive: the venue closes a connection that has had no traffic for 30 s; the connection
sends the text ``ping`` (:meth:`OkxAdapter.keepalive_frame`) every
:attr:`OkxAdapter.keepalive_interval_secs` (the venue answers text ``pong``, which the
session skips), and the session answers a text ``ping`` from the venue with ``pong``.

Subscriptions and args: a subscription (symbol, feed) needs one arg, or several for
``derivatives`` (:func:`subscription_args`); args shared by subscriptions (an index, an
instrument type, ``tickers`` for both ``ticker`` and ``derivatives``) are subscribed once.
A subscription is resolved in ``pending_subscriptions`` once every arg it needs is
answered, and gets its ``subscribed`` row once all of them are acknowledged. A refused arg
gets a ``subscribe_error`` row per subscription that needs it (detail = the arg and the
venue's message); the other args keep flowing, so a ``derivatives`` subscription whose
index was refused still writes rows without the index price. When the message does not
name the arg, every still unacknowledged arg of that request gets the row (a later
acknowledgement of one of them still writes ``subscribed``).

Limits: 480 subscribe/unsubscribe requests per connection per hour (the session asks for a
reconnect instead of resubscribing once :data:`MAX_REQUESTS_PER_SESSION` is spent), fewer
than 30 deep-book channels per connection (:data:`MAX_BOOKS_PER_CONNECTION`), 3 connection
attempts per second per IP (the planner keeps connections few).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Literal

import attrs
import msgspec

from collector.config import Feed, MarketSettings
from collector.events import (
    BookUpdate,
    DerivativeTicker,
    Event,
    Instrument,
    InstrumentKind,
    Levels,
    Liquidation,
    OptionKind,
    PositionSide,
    Side,
    Ticker,
    Trade,
    feed_data_type,
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
    PlannedSubscription,
    Session,
    Subscription,
)
from collector.exchanges.book_check import CrossCheck
from collector.exchanges.common import PathRule, choices, chunked, normalize_asset, optional_float
from collector.exchanges.interleaved_book import InterleavedBook, TextLevel

EXCHANGE: Final = "okx"
DEFAULT_URL: Final = "wss://ws.okx.com:8443"
PUBLIC_PATH: Final = "/ws/v5/public"
DEFAULT_REST_URL: Final = "https://www.okx.com"
INSTRUMENTS_PATH: Final = "/api/v5/public/instruments"
MAX_ARGS_PER_SUBSCRIBE: Final = 100  # ~4.5 KB per frame (venue limit: 64 KB)
MAX_ARGS_PER_CONNECTION: Final = 300
# The venue advises fewer than 30 channels of 50/400-level books per connection.
MAX_BOOKS_PER_CONNECTION: Final = 25
# The venue allows 480 subscribe/unsubscribe requests per connection per hour.
MAX_REQUESTS_PER_SESSION: Final = 450
NOTICE_RECONNECT_CODE: Final = "64008"

InstType = Literal["SPOT", "SWAP", "FUTURES", "OPTION"]
INST_TYPES: Final[tuple[InstType, ...]] = ("SPOT", "SWAP", "FUTURES", "OPTION")
# Feeds only derivatives have (a spot pair is refused them).
DERIVATIVE_FEEDS: Final[tuple[Feed, ...]] = ("derivatives", "liquidations")

_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}(-SWAP|-\d{6}(-\d+(\.\d+)?-[CP])?)?")
_FAMILY_RE: Final = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}")
# "Wrong URL or channel:books,instId:NOPE-USDT doesn't exist. ..."
_ERROR_ARG_RE: Final = re.compile(
    r"channel:([\w-]+),\s*(?:instId|instType|instFamily):(\S+?) doesn't exist", re.I
)

# One subscribe arg: (channel, its instId, or instType for liquidation-orders, or
# instFamily for opt-summary).
Key = tuple[str, str]
_ARG_FIELD: Final[Mapping[str, str]] = {
    "liquidation-orders": "instType",
    "opt-summary": "instFamily",
}


def instrument_type(symbol: str) -> InstType:
    """The OKX instrument type an id names: ``BTC-USDT`` SPOT, ``BTC-USDT-SWAP`` SWAP,
    ``BTC-USD-250627`` FUTURES, ``BTC-USD-250627-100000-C`` OPTION (ids as normalized)."""
    parts = symbol.split("-")
    if len(parts) <= 2:
        return "SPOT"
    if parts[2] == "SWAP":
        return "SWAP"
    return "OPTION" if len(parts) >= 5 else "FUTURES"


def underlying(symbol: str) -> str:
    """The id's first two parts: the index of a derivative (``index-tickers`` takes it as
    ``instId``) and the family of an option (``opt-summary``): ``BTC-USD``."""
    return "-".join(symbol.split("-")[:2])


def subscription_args(symbol: str, feed: str, channel: str) -> tuple[Key, ...]:
    """The args one subscription needs; ``channel`` is its planned channel (the book's
    ``books`` or ``books5``)."""
    if feed == "derivatives":
        kind = instrument_type(symbol)
        args: list[Key] = [("mark-price", symbol)]
        if kind == "SWAP":
            args.append(("funding-rate", symbol))
        args += [
            ("index-tickers", underlying(symbol)),
            ("open-interest", symbol),
            ("tickers", symbol),
        ]
        if kind == "OPTION":
            args.append(("opt-summary", underlying(symbol)))
        return tuple(args)
    if feed == "liquidations":
        return (("liquidation-orders", instrument_type(symbol)),)
    return ((channel, symbol),)


def wire_arg(key: Key) -> dict[str, str]:
    """A key as the venue spells the arg: ``{"channel": .., "instId": ..}`` (``instType``
    for ``liquidation-orders``, ``instFamily`` for ``opt-summary``)."""
    channel, value = key
    return {"channel": channel, _ARG_FIELD.get(channel, "instId"): value}


# --------------------------------------------------------------------------- wire structs


class _Arg(msgspec.Struct, gc=False):
    channel: str
    instId: str = ""
    instType: str = ""
    instFamily: str = ""

    @property
    def key_value(self) -> str:
        """The value that names this arg (see :data:`Key`)."""
        field = _ARG_FIELD.get(self.channel)
        if field == "instType":
            return self.instType
        if field == "instFamily":
            return self.instFamily
        return self.instId


class _Envelope(msgspec.Struct, gc=False):
    """Every JSON frame: a push (``arg`` + ``data``) or an event (ack, error, notice)."""

    arg: _Arg | None = None
    action: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent
    event: str | None = None
    id: str | None = None
    code: str | None = None
    msg: str | None = None


class _Trade(msgspec.Struct, gc=False):
    trade_id: str = msgspec.field(name="tradeId")
    price: float = msgspec.field(name="px")
    size: float = msgspec.field(name="sz")
    side: str
    ts: int
    count: int | None = None


class _Level(msgspec.Struct, array_like=True, gc=False):
    """``[price, size, "0" (deprecated), orders]``: trailing items are ignored."""

    price: float
    size: float


class _Book(msgspec.Struct, gc=False):
    asks: list[_Level]
    bids: list[_Level]
    ts: int
    seq_id: int | None = msgspec.field(default=None, name="seqId")
    prev_seq_id: int | None = msgspec.field(default=None, name="prevSeqId")
    checksum: int = 0


class _TextBook(msgspec.Struct, gc=False):
    """A ``books`` item's levels as the venue's text, for the checksum."""

    asks: list[list[str]]
    bids: list[list[str]]


class _Ticker(msgspec.Struct, gc=False):
    last: str = ""
    ask_px: str = msgspec.field(default="", name="askPx")
    ask_sz: str = msgspec.field(default="", name="askSz")
    bid_px: str = msgspec.field(default="", name="bidPx")
    bid_sz: str = msgspec.field(default="", name="bidSz")
    vol24h: str = ""
    ts: int | None = None


class _FundingRate(msgspec.Struct, gc=False):
    funding_rate: str = msgspec.field(default="", name="fundingRate")
    funding_time: str = msgspec.field(default="", name="fundingTime")
    next_funding_time: str = msgspec.field(default="", name="nextFundingTime")
    next_funding_rate: str = msgspec.field(default="", name="nextFundingRate")
    ts: int | None = None


class _MarkPrice(msgspec.Struct, gc=False):
    mark_px: str = msgspec.field(default="", name="markPx")
    ts: int | None = None


class _IndexTicker(msgspec.Struct, gc=False):
    idx_px: str = msgspec.field(default="", name="idxPx")
    ts: int | None = None


class _OpenInterest(msgspec.Struct, gc=False):
    oi: str = ""
    oi_usd: str = msgspec.field(default="", name="oiUsd")
    ts: int | None = None


class _OptSummary(msgspec.Struct, gc=False):
    inst_id: str = msgspec.field(name="instId")
    uly: str = ""
    mark_vol: str = msgspec.field(default="", name="markVol")
    bid_vol: str = msgspec.field(default="", name="bidVol")
    ask_vol: str = msgspec.field(default="", name="askVol")
    delta: str = msgspec.field(default="", name="deltaBS")
    gamma: str = msgspec.field(default="", name="gammaBS")
    vega: str = msgspec.field(default="", name="vegaBS")
    theta: str = msgspec.field(default="", name="thetaBS")
    fwd_px: str = msgspec.field(default="", name="fwdPx")
    ts: int | None = None


class _LiquidationDetail(msgspec.Struct, gc=False):
    side: str
    bk_px: float = msgspec.field(name="bkPx")
    sz: float
    ts: int
    pos_side: str = msgspec.field(default="", name="posSide")
    bk_loss: str = msgspec.field(default="", name="bkLoss")


class _Liquidations(msgspec.Struct, gc=False):
    inst_id: str = msgspec.field(name="instId")
    details: list[_LiquidationDetail] = []


class _Instrument(msgspec.Struct, gc=False):
    instId: str
    state: str = "live"
    quoteCcy: str = ""  # spot (and margin) only: "" for derivatives


class _Instruments(msgspec.Struct, gc=False):
    code: str
    data: list[_Instrument] = []
    msg: str = ""


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_TRADES: Final = msgspec.json.Decoder(list[_Trade], strict=False)
_BOOKS: Final = msgspec.json.Decoder(list[_Book], strict=False)
_TEXT_BOOKS: Final = msgspec.json.Decoder(list[_TextBook])
_TICKERS: Final = msgspec.json.Decoder(list[_Ticker], strict=False)
_FUNDING: Final = msgspec.json.Decoder(list[_FundingRate], strict=False)
_MARK: Final = msgspec.json.Decoder(list[_MarkPrice], strict=False)
_INDEX: Final = msgspec.json.Decoder(list[_IndexTicker], strict=False)
_OPEN_INTEREST: Final = msgspec.json.Decoder(list[_OpenInterest], strict=False)
_OPT_SUMMARY: Final = msgspec.json.Decoder(list[_OptSummary], strict=False)
_LIQUIDATIONS: Final = msgspec.json.Decoder(list[_Liquidations], strict=False)
_INSTRUMENTS: Final = msgspec.json.Decoder(_Instruments)
_ENCODER: Final = msgspec.json.Encoder()

_PARSE_ERRORS: Final = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError)

_SIDES: Final[Mapping[str, Side]] = {"buy": "buy", "sell": "sell"}
# The position a liquidation order closes, where OKX says ``net`` (one-way mode).
_CLOSES: Final[Mapping[str, PositionSide]] = {"sell": "long", "buy": "short"}
_POSITIONS: Final[Mapping[str, PositionSide]] = {"long": "long", "short": "short"}


def _levels(levels: list[_Level]) -> Levels:
    values: list[float] = []
    append = values.append
    for level in levels:
        append(level.price)
        append(level.size)
    return levels_from_values(values)


def _text_levels(levels: list[list[str]]) -> list[TextLevel]:
    return [(float(px), float(sz), px.encode(), sz.encode()) for px, sz, *_ in levels]


def _opt_float(value: str) -> float | None:
    return float(value) if value else None


def _opt_us(value: str) -> int | None:
    """A millisecond time sent as a string (``""`` for none) in microseconds."""
    return int(value) * 1000 if value else None


def _ms_to_us(ts: int | None) -> int | None:
    return None if ts is None else ts * 1000


# --------------------------------------------------------------------------- adapter


@attrs.frozen
class OkxPlan(ConnectionPlan):
    """A connection plan that also names the main channel of each subscription (same
    order; :func:`subscription_args` gives every arg it needs)."""

    channels: tuple[str, ...] = ()


def channel_name(feed: str, market: MarketSettings | None = None) -> str:
    """The OKX channel of a feed (for ``derivatives``, the first of its channels);
    ``market`` supplies the order book options."""
    if feed == "trades":
        return "trades"
    if feed == "ticker":
        return "tickers"
    if feed == "orderbook":
        if market is not None and (market.book_mode == "snapshot" or market.book_depth == 5):
            return "books5"
        return "books"
    if feed == "derivatives":
        return "mark-price"
    if feed == "liquidations":
        return "liquidation-orders"
    raise ValueError(f"okx has no channel for feed {feed!r}")


class OkxAdapter(ExchangeAdapter):
    """OKX v5 public market data (spot, swaps, futures, options)."""

    name: ClassVar[str] = EXCHANGE
    default_url: ClassVar[str] = DEFAULT_URL
    ws_path: ClassVar[str] = PUBLIC_PATH
    ws_path_rule: ClassVar[PathRule] = "host_only"
    default_rest_url: ClassVar[str | None] = DEFAULT_REST_URL
    symbols_path: ClassVar[str | None] = f"{INSTRUMENTS_PATH}?instType=SPOT"
    stream_feeds: ClassVar[tuple[Feed, ...]] = (
        "trades",
        "orderbook",
        "ticker",
        "derivatives",
        "liquidations",
    )
    book_modes: ClassVar[tuple[str, ...]] = ("snapshot", "diff")
    book_depths: ClassVar[tuple[int, ...]] = (5, 400)
    option_notes: ClassVar[Mapping[str, str]] = {
        "category": " (the instrument id says it: BTC-USDT, BTC-USDT-SWAP)",
    }
    # The REST base of the instruments listing (the book is synced over WebSocket).
    takes_rest_url: ClassVar[bool] = True
    plan_class: ClassVar[type[ConnectionPlan]] = OkxPlan
    wire_names_field: ClassVar[str | None] = "channels"
    max_subscriptions_per_connection: ClassVar[int | None] = MAX_ARGS_PER_CONNECTION
    # No per-second client message limit is documented for public channels (only 480
    # subscribe requests per hour); 3/s keeps resubscribe bursts gentle.
    client_messages_per_second: ClassVar[float] = 3.0
    # The venue closes a connection after 30 s without traffic: text "ping" well within.
    keepalive_interval_secs: ClassVar[float | None] = 20.0
    listing_quotes: ClassVar[bool] = True

    @classmethod
    def symbols_url(cls, rest_url: str | None = None, category: str | None = None) -> str:
        """The instruments URL of one instrument type: ``SPOT`` (none: spot), ``SWAP``,
        ``FUTURES`` or ``OPTION:<family>`` (OKX lists options per instrument family, e.g.
        ``OPTION:BTC-USD``); case-insensitive. ValueError for anything else."""
        kind, _, family = (category or "SPOT").upper().partition(":")
        if kind not in INST_TYPES:
            raise ValueError(
                f"okx category must be an instrument type, {choices(INST_TYPES, quoted=True)} "
                f"(got {category!r})"
            )
        query = f"instType={kind}"
        if kind == "OPTION":
            if not _FAMILY_RE.fullmatch(family):
                raise ValueError(
                    "okx lists options per instrument family: category 'OPTION:BTC-USD' "
                    f"(or 'OPTION:ETH-USD', ...; got {category!r})"
                )
            query += f"&instFamily={family}"
        elif family:
            raise ValueError(f"okx takes an instrument family only with OPTION (got {category!r})")
        return f"{(rest_url or DEFAULT_REST_URL).rstrip('/')}{INSTRUMENTS_PATH}?{query}"

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        try:
            answer = _INSTRUMENTS.decode(body)
        except msgspec.DecodeError as exc:
            raise ParseError(f"okx instruments: {exc}") from exc
        if answer.code != "0":
            raise ParseError(f"okx instruments: code {answer.code}: {answer.msg}")
        return sorted(i.instId for i in answer.data if i.state == "live")

    @classmethod
    def parse_listing(cls, body: bytes) -> list[Listing]:
        """Every instrument with its ``quoteCcy`` (spot only; None for derivatives) and
        ``state`` (``live`` trades; ``suspend``, ``preopen``, ``test`` do not), sorted."""
        try:
            answer = _INSTRUMENTS.decode(body)
        except msgspec.DecodeError as exc:
            raise ParseError(f"okx instruments: {exc}") from exc
        if answer.code != "0":
            raise ParseError(f"okx instruments: code {answer.code}: {answer.msg}")
        listed = (
            Listing(i.instId, i.quoteCcy or None, i.state, i.state == "live") for i in answer.data
        )
        return sorted(listed, key=lambda item: item.symbol)

    @staticmethod
    def normalize_symbol(symbol: str) -> str:
        canonical = symbol.upper()
        if not _SYMBOL_RE.fullmatch(canonical):
            raise ValueError(
                f"invalid okx symbol {symbol!r}: expected an OKX instrument id such as "
                "'BTC-USDT' (spot), 'BTC-USDT-SWAP' (perpetual), 'BTC-USD-250627' (future) "
                "or 'BTC-USD-250627-100000-C' (option)"
            )
        return canonical

    @classmethod
    def check_feeds(cls, market: MarketSettings) -> None:
        """The standard checks, and no ``derivatives`` or ``liquidations`` feed for a spot
        pair (the instrument id says the type): it has no such data."""
        super().check_feeds(market)
        wanted = [feed for feed in DERIVATIVE_FEEDS if feed in market.feeds]
        if not wanted:
            return
        spot = []
        for symbol in market.symbols:
            try:
                canonical = cls.normalize_symbol(symbol)
            except ValueError:
                continue  # reported with the symbols, with the expected forms
            if instrument_type(canonical) == "SPOT":
                spot.append(canonical)
        if spot:
            raise ValueError(
                f"okx spot pairs have no {' or '.join(wanted)} feed: {', '.join(spot)} "
                "(put them in a market without it; swaps, futures and options have it, "
                f"e.g. {spot[0]}-SWAP)"
            )

    @classmethod
    def check_book_options(cls, market: MarketSettings) -> None:
        """Mode and depth name the same choice of channel: books (diff, 400) or books5
        (snapshot, 5); they must not contradict each other."""
        mode, depth = market.book_mode, market.book_depth
        if depth is not None and depth not in cls.book_depths:
            raise ValueError(
                f"okx book_depth must be 400 (channel books, the default) or 5 (books5); "
                f"got {depth}"
            )
        if (mode == "snapshot" and depth == 400) or (mode == "diff" and depth == 5):
            raise ValueError(
                "okx book_mode 'diff' is the 400-level books channel and 'snapshot' the "
                f"5-level books5 channel; book_depth {depth} contradicts book_mode {mode!r}"
            )
        super().check_book_options(market)

    def wire_name(self, symbol: str, feed: str, market: MarketSettings) -> str:
        return channel_name(feed, market)

    def pack(self, by_symbol: list[list[PlannedSubscription]]) -> list[list[PlannedSubscription]]:
        """At most 300 args and 25 deep-book channels (``books``) per connection; all
        channels of one instrument together. Args shared by instruments (an index, an
        instrument type) are counted once per connection."""
        chunks: list[list[PlannedSubscription]] = []
        current: list[PlannedSubscription] = []
        args: set[Key] = set()
        books = 0
        for items in by_symbol:
            item_args = {
                key
                for sub, channel in items
                for key in subscription_args(sub.symbol, sub.feed, channel)
            }
            item_books = sum(1 for _, channel in items if channel == "books")
            if current and (
                len(args | item_args) > MAX_ARGS_PER_CONNECTION
                or books + item_books > MAX_BOOKS_PER_CONNECTION
            ):
                chunks.append(current)
                current, args, books = [], set(), 0
            current.extend(items)
            args |= item_args
            books += item_books
        if current:
            chunks.append(current)
        return chunks

    def keepalive_frame(self, number: int) -> str:
        """The text ``ping`` (no id: the venue answers the text ``pong``)."""
        return "ping"

    lists_instruments: ClassVar[bool] = True
    # public/instruments allows 20 requests per 2 s per IP (and instType).
    instrument_requests_per_second: ClassVar[float] = 5.0

    def instruments_requests(self, market: MarketSettings) -> list[InstrumentsRequest]:
        """One ``public/instruments?instType=T&instId=I`` per symbol, ``T`` read from the
        id (options also name their ``instFamily``, which the venue requires)."""
        base = f"{self.rest_url(market)}/api/v5/public/instruments"
        requests = []
        for symbol in dict.fromkeys(self.normalize_symbol(s) for s in market.symbols):
            inst_type = instrument_type(symbol)
            url = f"{base}?instType={inst_type}&instId={symbol}"
            if inst_type == "OPTION":
                url += "&instFamily=" + "-".join(symbol.split("-")[:2])
            requests.append(InstrumentsRequest(EXCHANGE, url, (symbol,), inst_type))
        return requests

    @classmethod
    def parse_instruments(
        cls, request: InstrumentsRequest, body: bytes, received_us: int
    ) -> list[Instrument]:
        return parse_instruments(request, body, received_us)

    def open_session(self, plan: ConnectionPlan) -> OkxSession:
        return OkxSession(plan)


# --------------------------------------------------------------------------- session

_Handler = Callable[[str, msgspec.Raw, str | None, int], list[Event]]


class OkxSession(Session):
    """Protocol state of one OKX connection attempt (see the module docstring)."""

    def __init__(self, plan: ConnectionPlan) -> None:
        super().__init__(plan)
        if isinstance(plan, OkxPlan) and len(plan.channels) == len(plan.subscriptions):
            channels = plan.channels
        else:
            channels = tuple(channel_name(s.feed) for s in plan.subscriptions)
        # Each subscription's args, and each arg's subscriptions (in plan order).
        self._needs: dict[Subscription, tuple[Key, ...]] = {}
        self._args: dict[Key, list[Subscription]] = {}
        for sub, channel in zip(plan.subscriptions, channels, strict=True):
            keys = subscription_args(sub.symbol, sub.feed, channel)
            self._needs[sub] = keys
            for key in keys:
                self._args.setdefault(key, []).append(sub)
        self._unacked: set[Key] = set(self._args)
        # Args refused (or given up on) and, of those, the ones given up on after an error
        # that did not name them (an ack still counts for those).
        self._refused: set[Key] = set()
        self._doubtful: set[Key] = set()
        # Subscriptions counted as resolved, and those whose subscribed row is written.
        self._resolved: set[Subscription] = set()
        self._announced: set[Subscription] = set()
        self._next_id = 1
        self.requests_sent = 0
        # Subscribe request id -> its args, until every arg is answered.
        self._requests: dict[str, list[Key]] = {}
        self._handlers: dict[str, _Handler] = {
            "trades": self._trades,
            "books": self._books,
            "books5": self._books5,
            "tickers": self._tickers,
            "mark-price": self._mark_price,
            "funding-rate": self._funding_rate,
            "index-tickers": self._index_tickers,
            "open-interest": self._open_interest,
            "opt-summary": self._opt_summary,
            "liquidation-orders": self._liquidations,
        }
        by_feed: dict[str, set[str]] = {}
        for sub in plan.subscriptions:
            by_feed.setdefault(sub.feed, set()).add(sub.symbol)
        self._ticker_symbols = by_feed.get("ticker", set())
        self._liquidation_symbols = by_feed.get("liquidations", set())
        derivatives = sorted(by_feed.get("derivatives", set()))
        # Index -> the instruments whose index it is (each gets a row per index push).
        self._index_users: dict[str, list[str]] = {}
        for symbol in derivatives:
            self._index_users.setdefault(underlying(symbol), []).append(symbol)
        # Merged derivative state per instrument: DerivativeTicker fields -> values.
        self._derivatives: dict[str, dict[str, Any]] = {s: {} for s in derivatives}
        self._last_seq: dict[str, int] = {}
        self._last_trade_id: dict[str, int] = {}
        # Instruments whose book was resubscribed after a gap, until the new snapshot.
        self._resyncing: set[str] = set()
        # Why each of those is resyncing, where it was not a sequence gap (for its resync row).
        self._resync_reasons: dict[str, BookResyncReason] = {}
        # Each book's checks (while it is not resyncing): the local book with wire text
        # where the snapshot carried a checksum, else the crossed-book check alone.
        self._checked_books: dict[str, InterleavedBook] = {}
        self._cross_checks: dict[str, CrossCheck] = {}
        self.rejected: list[Subscription] = []

    # ----------------------------------------------------------------- subscribing

    def subscribe_frames(self, now_us: int = 0) -> list[str]:
        return [
            self._request("subscribe", keys)
            for keys in chunked(list(self._args), MAX_ARGS_PER_SUBSCRIBE)
        ]

    def _request(self, op: str, keys: list[Key]) -> str:
        request_id = str(self._next_id)
        self._next_id += 1
        self.requests_sent += 1
        if op == "subscribe":
            self._requests[request_id] = list(keys)
        args = [wire_arg(key) for key in keys]
        return _ENCODER.encode({"id": request_id, "op": op, "args": args}).decode()

    def _resubscribe(self, key: Key) -> None:
        """Unsubscribe and subscribe again: the venue then sends a fresh snapshot."""
        if self.requests_sent + 2 > MAX_REQUESTS_PER_SESSION:
            self._reconnect_reason = (
                f"okx: {self.requests_sent} subscribe requests sent on this connection "
                "(the venue allows 480 per hour); reconnecting for fresh snapshots"
            )
            return
        self._outgoing.append(self._request("unsubscribe", [key]))
        self._outgoing.append(self._request("subscribe", [key]))

    def _forget_request_arg(self, key: Key, request_id: str | None) -> None:
        """Strike an answered arg from the request(s) still waiting for it."""
        if request_id is not None and request_id in self._requests:
            waiting = self._requests[request_id]
            if key in waiting:
                waiting.remove(key)
        else:
            for waiting in self._requests.values():
                if key in waiting:
                    waiting.remove(key)
        for done in [r for r, waiting in self._requests.items() if not waiting]:
            del self._requests[done]

    def _on_event(self, env: _Envelope, received_us: int) -> list[Event]:
        event = env.event
        if event == "subscribe" and env.arg is not None:
            key = (env.arg.channel, env.arg.key_value)
            self._forget_request_arg(key, env.id)
            if key in self._unacked:
                self._unacked.discard(key)
            elif key in self._doubtful:
                self._doubtful.discard(key)
                self._refused.discard(key)
            else:
                return []  # a resubscription (its snapshot writes the resync row), or unknown
            events: list[Event] = []
            for sub in self._args.get(key, ()):
                self._settle(sub, received_us, events)
            return events
        if event == "error":
            return self._on_error(env, received_us)
        if event == "notice" and env.code == NOTICE_RECONNECT_CODE:
            self._reconnect_reason = f"okx notice {env.code}: {env.msg}"
        return []  # unsubscribe acks, channel-conn-count and other notices

    def _settle(self, sub: Subscription, received_us: int, events: list[Event]) -> None:
        """Once every arg of ``sub`` is answered: count it resolved; once every arg is
        acknowledged: its ``subscribed`` row (each at most once)."""
        keys = self._needs[sub]
        if any(key in self._unacked for key in keys):
            return
        if sub not in self._resolved:
            self._resolved.add(sub)
            self._pending_subscriptions -= 1
        if sub in self._announced or any(key in self._refused for key in keys):
            return
        self._announced.add(sub)
        events.append(
            self.status("subscribed", sub.symbol, received_us, data_type=feed_data_type(sub.feed))
        )

    def _on_error(self, env: _Envelope, received_us: int) -> list[Event]:
        detail = f"{env.msg} (code {env.code})"
        match = _ERROR_ARG_RE.search(env.msg or "")
        keys: list[Key]
        if match is not None and (match.group(1), match.group(2)) in self._args:
            keys = [(match.group(1), match.group(2))]
        else:
            match = None
            request_id = env.id
            if request_id is None or request_id not in self._requests:
                # No id: the oldest request still waiting for answers.
                request_id = next(iter(self._requests), None)
            if request_id is None:
                return []
            keys = [k for k in self._requests[request_id] if k in self._unacked]
        events: list[Event] = []
        for key in keys:
            self._forget_request_arg(key, None)
            if key in self._unacked:
                self._unacked.discard(key)
                if match is None:
                    self._doubtful.add(key)
            self._refused.add(key)
            for sub in self._args[key]:
                if sub not in self.rejected:
                    self.rejected.append(sub)
                if sub.feed == "orderbook":
                    self._resyncing.discard(sub.symbol)
                events.append(
                    self.status(
                        "subscribe_error",
                        sub.symbol,
                        received_us,
                        data_type=feed_data_type(sub.feed),
                        detail=f"{key[0]}:{key[1]}: {detail}",
                    )
                )
                self._settle(sub, received_us, events)
        return events

    # ----------------------------------------------------------------- parsing

    def parse(self, payload: bytes, received_us: int) -> list[Event]:
        if payload == b"pong":
            return []
        if payload == b"ping":
            self._outgoing.append("pong")
            return []
        try:
            env = _ENVELOPE.decode(payload)
            if env.event is not None:
                return self._on_event(env, received_us)
            arg = env.arg
            if arg is None or not env.data:
                raise ParseError("okx: frame with neither event nor arg+data")
            handler = self._handlers.get(arg.channel)
            if handler is None:
                return []
            return handler(arg.key_value, env.data, env.action, received_us)
        except _PARSE_ERRORS as exc:
            raise ParseError(f"okx: {type(exc).__name__}: {exc}") from exc

    def _trades(
        self, symbol: str, data: msgspec.Raw, action: str | None, received_us: int
    ) -> list[Event]:
        events: list[Event] = []
        for msg in _TRADES.decode(data):
            trade_id: int | None = int(msg.trade_id) if msg.trade_id.isdigit() else None
            if trade_id is not None:
                first = trade_id - (msg.count or 1) + 1
                prev = self._last_trade_id.get(symbol)
                if prev is not None and first > prev + 1:
                    events.append(self.gap(symbol, received_us, "trades", prev + 1, first))
                if prev is None or trade_id > prev:
                    self._last_trade_id[symbol] = trade_id
            side = msg.side  # "trade side of taker" (OKX v5 docs, trades channel; confirmed)
            events.append(
                Trade(
                    EXCHANGE,
                    symbol,
                    msg.ts * 1000,
                    received_us,
                    trade_id,
                    msg.trade_id,
                    msg.price,
                    msg.size,
                    "buy" if side == "buy" else "sell" if side == "sell" else None,
                )
            )
        return events

    def _books(
        self, symbol: str, data: msgspec.Raw, action: str | None, received_us: int
    ) -> list[Event]:
        events: list[Event] = []
        for index, msg in enumerate(_BOOKS.decode(data)):
            seq, prev_seq = msg.seq_id, msg.prev_seq_id
            if action == "snapshot":
                if symbol in self._resyncing:
                    self._resyncing.discard(symbol)
                    reason = self._resync_reasons.pop(symbol, None)
                    after = "" if reason is None else f" after a {RESYNC_REASON_TEXT[reason]}"
                    events.append(
                        self.status(
                            "resync",
                            symbol,
                            received_us,
                            data_type="orderbook",
                            received=seq,
                            detail=f"fresh books snapshot seqId={seq}{after}",
                        )
                    )
                if seq is not None:
                    self._last_seq[symbol] = seq
                snapshot = BookUpdate(
                    EXCHANGE,
                    symbol,
                    msg.ts * 1000,
                    received_us,
                    seq,
                    "snapshot",
                    seq,
                    None,
                    _levels(msg.bids),
                    _levels(msg.asks),
                )
                events.append(snapshot)
                self._start_checks(symbol, msg, data, index, snapshot, received_us, events)
                continue
            if seq is not None and prev_seq is not None:
                last = self._last_seq.get(symbol)
                if symbol in self._resyncing:
                    pass  # the gap is reported; the fresh snapshot restarts the chain
                elif last is not None and prev_seq == last:
                    if seq == prev_seq and not msg.bids and not msg.asks:
                        continue  # the venue's no-change keepalive
                elif last is not None and seq == last:
                    self.count_discard(symbol, "orderbook", "duplicate")
                    continue
                else:
                    events.append(
                        self.status(
                            "gap",
                            symbol,
                            received_us,
                            data_type="orderbook",
                            expected=last,
                            received=prev_seq,
                            detail=(
                                "update before any snapshot"
                                if last is None
                                else "prevSeqId is not the previous seqId"
                            ),
                        )
                    )
                    self._resync_book(symbol)
                self._last_seq[symbol] = seq
            update = BookUpdate(
                EXCHANGE,
                symbol,
                msg.ts * 1000,
                received_us,
                seq,
                "delta",
                seq,
                prev_seq,
                _levels(msg.bids),
                _levels(msg.asks),
            )
            events.append(update)
            if symbol in self._resyncing:
                continue
            checked = self._checked_books.get(symbol)
            if checked is not None:
                text = _TEXT_BOOKS.decode(data)[index]
                checked.apply(_text_levels(text.bids), _text_levels(text.asks))
                if msg.checksum != 0 and checked.checksum() != msg.checksum:
                    detail = (
                        f"book checksum mismatch: venue {msg.checksum}, "
                        f"computed {checked.checksum()}; resubscribing for a new snapshot"
                    )
                    events.append(self._book_failed(symbol, "checksum", detail, received_us))
                elif checked.crossed():
                    bid, ask = checked.best()
                    detail = (
                        f"crossed book: best bid {bid!r} >= best ask {ask!r}; "
                        "resubscribing for a new snapshot"
                    )
                    events.append(self._book_failed(symbol, "crossed", detail, received_us))
                continue
            check = self._cross_checks.get(symbol)
            if check is not None and check.apply(update.bids, update.asks):
                detail = f"{check.describe()}; resubscribing for a new snapshot"
                events.append(self._book_failed(symbol, "crossed", detail, received_us))
        return events

    def _start_checks(
        self,
        symbol: str,
        msg: _Book,
        data: msgspec.Raw,
        index: int,
        snapshot: BookUpdate,
        received_us: int,
        events: list[Event],
    ) -> None:
        """Start checking a book at its snapshot: its checksum, where it carries one (OKX
        sends 0 since 2026-06-23), and whether it is crossed after each update."""
        self._checked_books.pop(symbol, None)
        self._cross_checks.pop(symbol, None)
        if msg.checksum != 0:
            text = _TEXT_BOOKS.decode(data)[index]
            book = self._checked_books[symbol] = InterleavedBook()
            book.apply(_text_levels(text.bids), _text_levels(text.asks))
            if book.checksum() != msg.checksum:
                detail = (
                    f"book checksum mismatch on the snapshot: venue {msg.checksum}, "
                    f"computed {book.checksum()}; resubscribing for a new snapshot"
                )
                events.append(self._book_failed(symbol, "checksum", detail, received_us))
            return
        check = self._cross_checks[symbol] = CrossCheck()
        if check.snapshot(snapshot.bids, snapshot.asks):
            detail = f"{check.describe()} in the snapshot; resubscribing for a new snapshot"
            events.append(self._book_failed(symbol, "crossed", detail, received_us))

    def _resync_book(self, symbol: str) -> None:
        """Resubscribe ``symbol``'s book (a fresh snapshot comes); no checks until then."""
        self._resyncing.add(symbol)
        self._checked_books.pop(symbol, None)
        self._cross_checks.pop(symbol, None)
        self._resubscribe(("books", symbol))

    def _book_failed(
        self, symbol: str, reason: BookResyncReason, detail: str, received_us: int
    ) -> Event:
        """The book failed a check: its gap row, and a resubscription of that book alone."""
        self._resync_book(symbol)
        self._resync_reasons[symbol] = reason
        return self.book_invalid(symbol, received_us, reason, detail)

    def _books5(
        self, symbol: str, data: msgspec.Raw, action: str | None, received_us: int
    ) -> list[Event]:
        return [
            BookUpdate(
                EXCHANGE,
                symbol,
                msg.ts * 1000,
                received_us,
                msg.seq_id,
                "snapshot",
                msg.seq_id,
                None,
                _levels(msg.bids),
                _levels(msg.asks),
            )
            for msg in _BOOKS.decode(data)
        ]

    def _tickers(
        self, symbol: str, data: msgspec.Raw, action: str | None, received_us: int
    ) -> list[Event]:
        events: list[Event] = []
        state = self._derivatives.get(symbol)
        for msg in _TICKERS.decode(data):
            ts = _ms_to_us(msg.ts)
            last = _opt_float(msg.last)
            if symbol in self._ticker_symbols:
                events.append(
                    Ticker(
                        EXCHANGE,
                        symbol,
                        ts,
                        received_us,
                        None,
                        _opt_float(msg.bid_px),
                        _opt_float(msg.bid_sz),
                        _opt_float(msg.ask_px),
                        _opt_float(msg.ask_sz),
                        last,
                        _opt_float(msg.vol24h),
                    )
                )
            if state is not None and last is not None and state.get("last_price") != last:
                state["last_price"] = last
                events.append(self._derivative_row(symbol, "tickers", ts, received_us))
        return events

    # ----------------------------------------------------------------- derivatives

    def _derivative_row(
        self, symbol: str, source: str, ts: int | None, received_us: int
    ) -> DerivativeTicker:
        """The instrument's merged state after a message of channel ``source``."""
        return DerivativeTicker(
            EXCHANGE, symbol, ts, received_us, None, source, **self._derivatives[symbol]
        )

    def _mark_price(
        self, symbol: str, data: msgspec.Raw, action: str | None, received_us: int
    ) -> list[Event]:
        state = self._derivatives.get(symbol)
        if state is None:
            return []
        events: list[Event] = []
        for msg in _MARK.decode(data):
            state["mark_price"] = _opt_float(msg.mark_px)
            events.append(
                self._derivative_row(symbol, "mark-price", _ms_to_us(msg.ts), received_us)
            )
        return events

    def _funding_rate(
        self, symbol: str, data: msgspec.Raw, action: str | None, received_us: int
    ) -> list[Event]:
        state = self._derivatives.get(symbol)
        if state is None:
            return []
        events: list[Event] = []
        for msg in _FUNDING.decode(data):
            funding_us = _opt_us(msg.funding_time)
            next_us = _opt_us(msg.next_funding_time)
            state["funding_rate"] = _opt_float(msg.funding_rate)
            state["funding_timestamp"] = funding_us
            state["next_funding_timestamp"] = next_us
            # OKX may set a coin's interval to 8, 6, 4, 2 or 1 h: the gap between the two.
            state["funding_interval_h"] = (
                None
                if funding_us is None or next_us is None or next_us <= funding_us
                else (next_us - funding_us) / 3_600_000_000
            )
            state["predicted_funding_rate"] = _opt_float(msg.next_funding_rate)
            events.append(
                self._derivative_row(symbol, "funding-rate", _ms_to_us(msg.ts), received_us)
            )
        return events

    def _index_tickers(
        self, index: str, data: msgspec.Raw, action: str | None, received_us: int
    ) -> list[Event]:
        users = self._index_users.get(index, ())
        events: list[Event] = []
        for msg in _INDEX.decode(data):
            price, ts = _opt_float(msg.idx_px), _ms_to_us(msg.ts)
            for symbol in users:
                self._derivatives[symbol]["index_price"] = price
                events.append(self._derivative_row(symbol, "index-tickers", ts, received_us))
        return events

    def _open_interest(
        self, symbol: str, data: msgspec.Raw, action: str | None, received_us: int
    ) -> list[Event]:
        state = self._derivatives.get(symbol)
        if state is None:
            return []
        events: list[Event] = []
        for msg in _OPEN_INTEREST.decode(data):
            open_interest = _opt_float(msg.oi)
            state["open_interest"] = open_interest
            state["open_interest_unit"] = None if open_interest is None else "contracts"
            state["open_interest_value"] = _opt_float(msg.oi_usd)
            events.append(
                self._derivative_row(symbol, "open-interest", _ms_to_us(msg.ts), received_us)
            )
        return events

    def _opt_summary(
        self, family: str, data: msgspec.Raw, action: str | None, received_us: int
    ) -> list[Event]:
        """One push lists every option of the family: rows for the configured ones."""
        events: list[Event] = []
        for msg in _OPT_SUMMARY.decode(data):
            state = self._derivatives.get(msg.inst_id)
            if state is None:
                continue
            state["mark_iv"] = _opt_float(msg.mark_vol)
            state["bid_iv"] = _opt_float(msg.bid_vol)
            state["ask_iv"] = _opt_float(msg.ask_vol)
            state["delta"] = _opt_float(msg.delta)
            state["gamma"] = _opt_float(msg.gamma)
            state["vega"] = _opt_float(msg.vega)
            state["theta"] = _opt_float(msg.theta)
            state["underlying_price"] = _opt_float(msg.fwd_px)
            state["underlying_index"] = msg.uly or None
            events.append(
                self._derivative_row(msg.inst_id, "opt-summary", _ms_to_us(msg.ts), received_us)
            )
        return events

    def _liquidations(
        self, inst_type: str, data: msgspec.Raw, action: str | None, received_us: int
    ) -> list[Event]:
        """Every liquidation of one instrument type: rows for the configured instruments."""
        wanted = self._liquidation_symbols
        events: list[Event] = []
        for item in _LIQUIDATIONS.decode(data):
            symbol = item.inst_id
            if symbol not in wanted:
                continue
            for detail in item.details:
                side = _SIDES.get(detail.side)
                position = _POSITIONS.get(detail.pos_side)
                if position is None and side is not None:
                    position = _CLOSES[side]  # "net": the position the order closes
                events.append(
                    Liquidation(
                        EXCHANGE,
                        symbol,
                        detail.ts * 1000,
                        received_us,
                        None,
                        None,
                        side,
                        position,
                        detail.bk_px,
                        "bankruptcy",
                        detail.sz,
                        "contracts",
                        loss=_opt_float(detail.bk_loss),
                    )
                )
        return events


# --------------------------------------------------------------------------- instruments


class _InstrumentInfo(msgspec.Struct, gc=False):
    instId: str
    instType: str
    baseCcy: str = ""  # spot
    quoteCcy: str = ""  # spot
    settleCcy: str = ""  # derivatives
    instFamily: str = ""  # derivatives: BTC-USDT, BTC-USD
    uly: str = ""
    ctVal: str = ""
    ctMult: str = ""
    ctValCcy: str = ""
    ctType: str = ""  # linear, inverse ("" for options)
    optType: str = ""  # C, P
    stk: str = ""
    expTime: str = ""  # ms
    tickSz: str = ""
    lotSz: str = ""
    minSz: str = ""
    state: str | None = None


class _InstrumentsInfo(msgspec.Struct, gc=False):
    code: str
    msg: str = ""
    data: list[_InstrumentInfo] = []


_INSTRUMENTS_INFO: Final = msgspec.json.Decoder(_InstrumentsInfo)
_KINDS: Final[dict[str, InstrumentKind]] = {
    "SPOT": "spot",
    "SWAP": "perpetual",
    "FUTURES": "future",
    "OPTION": "option",
}
_OPTION_KINDS: Final[dict[str, OptionKind]] = {"C": "call", "P": "put"}


def parse_instruments(
    request: InstrumentsRequest, body: bytes, received_us: int
) -> list[Instrument]:
    """The rows of ``request.symbols`` in a ``public/instruments`` answer.

    Spot sizes are base currency; swap, future and option sizes are contracts of
    ``ctVal`` x ``ctMult`` units of ``ctValCcy`` each (the base coin, or USD for an
    ``inverse`` contract). Derivatives take their base and quote from ``instFamily``
    (``BTC-USDT``), except an option's quote: its prices are in the settlement coin.
    """
    try:
        answer = _INSTRUMENTS_INFO.decode(body)
    except msgspec.DecodeError as exc:
        raise ParseError(f"okx instruments: {exc}") from exc
    if answer.code != "0":
        raise ParseError(f"okx instruments: code {answer.code}: {answer.msg}")
    wanted = set(request.symbols)
    rows = []
    for item in answer.data:
        if item.instId not in wanted or item.instType not in _KINDS:
            continue
        try:
            rows.append(_instrument(item, received_us))
        except (ValueError, IndexError) as exc:
            raise ParseError(f"okx instruments {item.instId}: {exc}") from exc
    return rows


def _instrument(item: _InstrumentInfo, received_us: int) -> Instrument:
    kind = _KINDS[item.instType]
    spot = kind == "spot"
    if spot:
        base, quote_asset = item.baseCcy, item.quoteCcy
    else:
        base, quote_asset = (item.instFamily or item.uly).split("-")[:2]
        if kind == "option":
            quote_asset = item.settleCcy
    contract_size = None
    if not spot:
        value = optional_float(item.ctVal)
        contract_size = None if value is None else value * (optional_float(item.ctMult) or 1.0)
    return Instrument(
        EXCHANGE,
        item.instId,
        None,
        received_us,
        None,
        kind=kind,
        base_asset=normalize_asset(base),
        quote_asset=normalize_asset(quote_asset),
        settle_asset=None if spot else normalize_asset(item.settleCcy),
        inverse=None if spot else item.ctType == "inverse",
        size_unit="base" if spot else "contracts",
        contract_size=contract_size,
        contract_unit=None if spot else normalize_asset(item.ctValCcy) or None,
        tick_size=optional_float(item.tickSz),
        lot_size=optional_float(item.lotSz),
        min_size=optional_float(item.minSz),
        expiry=int(item.expTime) * 1000 if item.expTime and kind != "perpetual" else None,
        strike=optional_float(item.stk) if kind == "option" else None,
        option_kind=_OPTION_KINDS.get(item.optType) if kind == "option" else None,
        status=item.state,
    )
