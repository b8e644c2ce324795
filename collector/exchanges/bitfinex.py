"""Bitfinex WebSocket v2 (sans-IO): conf flags, per-channel subscribes, chanId routing.

One connection (``{base_url}/ws/2``, public host ``api-pub.bitfinex.com``) carries at most
:data:`MAX_CHANNELS_PER_CONNECTION` channels (the docs say 25 per connection, a copy says
30: we use 25). The session first sends ``{"event":"conf","flags":229376}`` (TIMESTAMP 32768
+ SEQ_ALL 65536 + OB_CHECKSUM 131072), then one ``subscribe`` per (symbol, channel). The venue acknowledges each
with ``{"event":"subscribed","chanId":N,...}``; every later data frame is an array
``[chanId, ...]``, mapped back to its symbol through the acknowledged chanIds. Numbers are
JSON numbers; timestamps are milliseconds.

Feeds and channels (trading pairs only, ``tBTCUSD``; funding ``f...`` symbols are refused):

- ``trades`` -> ``trades``: the subscribe snapshot (the last trades before subscribing) is
  not recorded (it repeats trades of earlier sessions; tardis does the same); live trades
  come as ``te`` (executed) and then ``tu`` (update, same trade): each trade id is recorded
  once, from whichever of the two arrives first. ``AMOUNT > 0`` is a taker buy, ``< 0`` a
  taker sell (``side`` = aggressor), ``size = |AMOUNT|``, ``trade_id`` the global id;
- ``orderbook`` -> ``book`` (``prec P0``, ``freq F0``, ``len`` = ``book_depth`` in 1, 25, 100,
  250; default 25): a snapshot, then one level per update ``[PRICE, COUNT, AMOUNT]``.
  ``AMOUNT > 0`` is a bid, ``< 0`` an ask; ``COUNT == 0`` removes the level (size 0 in our
  delta), otherwise the level's size becomes ``|AMOUNT|``;
- ``ticker`` -> ``ticker``: best bid/ask with sizes, last price, 24 h volume;
- ``derivatives`` (perpetuals ``tBTCF0:USTF0`` only) -> ``status`` channel, key
  ``deriv:{symbol}``: every push is the whole status array, read by position (the venue
  appends fields without notice, so only the length read is required): one
  ``derivative_ticker`` row per push (``source`` ``status``) with ``last_price`` =
  DERIV_PRICE [2] (the derivative's book *mid*, not a last trade), ``index_price`` =
  SPOT_PRICE [3] (the mid of the underlying spot pair), ``funding_timestamp`` = [7] (the
  next funding event), ``predicted_funding_rate`` = NEXT_FUNDING_ACCRUED [8] (funding
  accrued so far for the coming 8 h period), ``funding_rate`` = CURRENT_FUNDING [11] (the
  rate of the current 8 h period), ``funding_interval_h`` 8, ``mark_price`` [14],
  ``open_interest`` [17] (``base``: Bitfinex sizes derivative positions in the base coin;
  the docs say "contracts", of 1 coin each: UNCONFIRMED); ``timestamp_exchange`` is the
  array's TIME_MS [0];
- ``liquidations`` (perpetuals only) -> ``status`` channel, key ``liq:global``: one channel
  per connection carries every liquidation of the venue (spot margin pairs too); rows are
  written for the connection's symbols with this feed, the others skipped (not counted:
  they are not data of any configured stream). Each item ``["pos", POS_ID, TIME_MS, null,
  SYMBOL, AMOUNT, BASE_PRICE, null, IS_MATCH, IS_MARKET_SOLD, null, PRICE]`` is one row:
  ``liquidation_id`` POS_ID, ``position_side`` long for ``AMOUNT > 0`` (short below; the
  liquidation order's ``side`` is the opposite), ``size`` ``|AMOUNT|`` (base coin),
  ``entry_price`` BASE_PRICE (the position's entry price), ``price`` the last field with
  ``price_kind`` ``acquired`` (the docs name it "price at which the position has been
  acquired", an older copy "price at which the liquidation was triggered"; when it is null:
  BASE_PRICE with ``price_kind`` ``entry``), ``status`` ``trigger`` (IS_MATCH 0: the
  liquidation was triggered) or ``execution`` (IS_MATCH 1: the position was matched in the
  market). Both kinds are kept: whether the venue sends both for one position is
  UNCONFIRMED, so count liquidations on one ``status``. IS_MARKET_SOLD is not stored (its
  two documented meanings contradict each other). TIME_MS is a float here; it is read to
  the microsecond;
- ``raw`` -> no channel: the connection keeps every frame (``ConnectionPlan.raw``).

Sequence rule (SEQ_ALL, per connection): every channel frame, heartbeats included, carries
a sequence number one above the previous one (the recorded sample runs 1..1670 without a
hole). A jump is a ``gap`` status row for every symbol of the connection (``data_type``
null: any channel may have lost the frame; expected/received/count set), and every order
book of the connection is resubscribed (``unsubscribe``, then ``subscribe`` once the venue
confirms; book frames in between are dropped and counted, reason ``while_resyncing``, see
:meth:`Session.count_discard`); the new snapshot is written after a ``resync`` row. A
sequence number at or below the last one is a duplicate: the frame is dropped and counted
(reason ``duplicate``) under its channel's symbol and feed (a repeated heartbeat carries no
data and is not counted). The second trade message of a trade (``tu`` after ``te``) is the
venue's protocol, not a discard, and is not counted. The appended fields are
read as ``SEQ`` then ``MTS`` (tardis-node reads the timestamp at index 3 of a book frame);
the ``sequence`` column holds SEQ, ``timestamp_exchange`` the MTS (trades: the trade's
own MTS). If the venue refuses the conf frame, sequence checks are off for the session.
The book checksum flag (131072) is enabled too: each book channel then gets
``[chanId, "cs", CHECKSUM, SEQ, MTS]`` frames, the CRC32 of its top 25 levels. The session
keeps each book with the wire text of its numbers (:mod:`collector.exchanges.interleaved_book`),
compares every ``cs`` frame, and checks after every update that the book is not crossed;
a book that fails gets a ``gap`` row (:meth:`Session.book_invalid`) and that channel alone
is resubscribed (its frames until the new snapshot are dropped and counted, as after a
gap; the new snapshot's ``resync`` row names the reason).

Keepalive: the venue sends ``[chanId, "hb", SEQ, MTS]`` after 15 s without channel
activity, which feeds the connection's stale watchdog; the connection also sends
``{"event":"ping","cid":N}`` (:meth:`BitfinexAdapter.keepalive_frame`) every
:data:`PING_INTERVAL_SECS` (answered with ``pong``), so a connection whose every
subscription was refused still sees traffic. N counts the connection's pings from 1; no
other frame of the client carries a ``cid``.

Info codes: 20051 (server restarting) sets :attr:`Actions.reconnect`. 20060
(maintenance start) only marks :attr:`BitfinexSession.maintenance`: the connection stays,
and if the venue falls silent the stale watchdog replaces it (with backoff). 20061
(maintenance end; the venue asks clients to resubscribe everything) sets
``reconnect`` too: a fresh connection resubscribes every channel and gets new snapshots,
and the ``disconnected``/``connected`` rows mark the hole.

Subscribe errors ``{"event":"error","code":C,"msg":M,"channel":..,"symbol":..}`` are matched
to the request by channel and symbol (``status`` channels: by ``key``; else to the oldest
unanswered one) -> a ``subscribe_error`` row; the subscription counts as resolved in
``pending_subscriptions``. The one ``liq:global`` request of a connection stands for every
``liquidations`` subscription on it: its answer resolves them all. The planner counts each
of those as a channel of the 25, so a connection may open fewer channels than it could.

Instruments (feed ``instruments``): the REST conf listings ``pub:info:pair`` (spot pairs)
and ``pub:info:pair:futures`` (perpetuals), see :func:`parse_instruments`.

Limits: 20 connections per minute on ``api-pub`` (:data:`CONNECTIONS_PER_MINUTE`): the
supervisor paces connection attempts to ``connections_per_second``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs
import msgspec

from collector.config import Feed, MarketSettings
from collector.events import (
    BookUpdate,
    DerivativeTicker,
    Event,
    Instrument,
    Liquidation,
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
    ParseError,
    Session,
    Subscription,
)
from collector.exchanges.common import choices, normalize_asset, optional_float
from collector.exchanges.interleaved_book import InterleavedBook

EXCHANGE: Final = "bitfinex"
DEFAULT_URL: Final = "wss://api-pub.bitfinex.com"
WS_PATH: Final = "/ws/2"
DEFAULT_REST_URL: Final = "https://api-pub.bitfinex.com"
# The conf listings of trading pairs: names, and the details of each (min/max order size,
# margin), of the exchange (spot) pairs and of the perpetuals.
PAIRS_PATH: Final = "/v2/conf/pub:list:pair:exchange"
FUTURES_PAIRS_PATH: Final = "/v2/conf/pub:list:pair:futures"
INFO_PATH: Final = "/v2/conf/pub:info:pair"
FUTURES_INFO_PATH: Final = "/v2/conf/pub:info:pair:futures"
# The pair lists ``symbols --category`` reads: exchange (spot) pairs, the default, and
# perpetuals (``BTCF0:USTF0``, named ``tBTCF0:USTF0`` like the markets' symbols).
SYMBOL_LISTS: Final = {"exchange": PAIRS_PATH, "futures": FUTURES_PAIRS_PATH}
# Bitfinex's codes of assets with a common name elsewhere (USDt, USDC).
_ASSETS: Final = {"UST": "USDT", "UDC": "USDC"}
FLAG_TIMESTAMP: Final = 32768
FLAG_SEQ_ALL: Final = 65536
FLAG_CHECKSUM: Final = 131072
CONF_FLAGS: Final = FLAG_TIMESTAMP | FLAG_SEQ_ALL | FLAG_CHECKSUM
MAX_CHANNELS_PER_CONNECTION: Final = 25
CONNECTIONS_PER_MINUTE: Final = 20
BOOK_LENGTHS: Final = frozenset({1, 25, 100, 250})
DEFAULT_BOOK_LENGTH: Final = 25
PING_INTERVAL_SECS: Final = 15.0
INFO_RECONNECT: Final = 20051
INFO_MAINTENANCE_START: Final = 20060
INFO_MAINTENANCE_END: Final = 20061
CHANNEL_OF_FEED: Final = {
    "trades": "trades",
    "orderbook": "book",
    "ticker": "ticker",
    "derivatives": "status",
    "liquidations": "status",
}
FEED_OF_CHANNEL: Final = {"trades": "trades", "book": "orderbook", "ticker": "ticker"}
DERIVATIVE_FEEDS: Final[tuple[Feed, ...]] = ("derivatives", "liquidations")
LIQUIDATION_KEY: Final = "liq:global"
DERIV_KEY_PREFIX: Final = "deriv:"
# IS_MATCH of a liq:global item: 0 the liquidation was triggered, 1 it was matched.
_MATCH_STATUS: Final = {0: "trigger", 1: "execution"}
# Bitfinex funding periods are 8 hours ("funding applied in the current 8h period").
FUNDING_INTERVAL_H: Final = 8.0
# Trade ids remembered per channel to record a trade once from te/tu.
_RECENT_TRADES: Final = 1024

_PAIR_RE: Final = re.compile(r"[A-Z0-9]{6}|[A-Z0-9]{2,15}:[A-Z0-9]{2,15}")
# Perpetual pairs: both codes end in F0 (tBTCF0:USTF0, tTESTBTCF0:TESTUSDTF0).
_PERPETUAL_RE: Final = re.compile(r"t[A-Z0-9]{1,13}F0:[A-Z0-9]{1,13}F0")


def is_perpetual(symbol: str) -> bool:
    """Whether ``symbol`` (canonical, ``tBTCF0:USTF0``) is a perpetual: derivative data."""
    return _PERPETUAL_RE.fullmatch(symbol) is not None


# --------------------------------------------------------------------------- wire structs


class _Platform(msgspec.Struct, gc=False):
    status: int | None = None


class _Event(msgspec.Struct, gc=False):
    event: str
    channel: str | None = None
    chan_id: int | None = msgspec.field(default=None, name="chanId")
    symbol: str | None = None
    code: int | None = None
    msg: str | None = None
    status: str | None = None
    platform: _Platform | None = None
    key: str | None = None


_EVENT: Final = msgspec.json.Decoder(_Event)
_FRAME: Final = msgspec.json.Decoder(list[msgspec.Raw])
_INT: Final = msgspec.json.Decoder(int)
# Book levels as the wire's number text (the checksum needs it): [PRICE, COUNT, AMOUNT].
_BOOK_SNAPSHOT: Final = msgspec.json.Decoder(list[tuple[msgspec.Raw, msgspec.Raw, msgspec.Raw]])
_BOOK_LEVEL: Final = msgspec.json.Decoder(tuple[msgspec.Raw, msgspec.Raw, msgspec.Raw])
_TRADE: Final = msgspec.json.Decoder(tuple[int, int, float, float])
_TICKER: Final = msgspec.json.Decoder(list[float | None])
_PAIRS: Final = msgspec.json.Decoder(list[list[str]])
_OPT_FLOAT: Final = msgspec.json.Decoder(float | None)
_LIQUIDATIONS: Final = msgspec.json.Decoder(list[list[str | int | float | None]])
_ENCODER: Final = msgspec.json.Encoder()

_PARSE_ERRORS: Final = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError)


# --------------------------------------------------------------------------- adapter


@attrs.frozen
class BitfinexPlan(ConnectionPlan):
    """A connection plan with the book length of its ``book`` subscriptions."""

    book_len: int = DEFAULT_BOOK_LENGTH


def channel_key(symbol: str, feed: str) -> tuple[str, str]:
    """(channel, symbol or status key) of one (symbol, feed): what the venue's answers echo."""
    try:
        channel = CHANNEL_OF_FEED[feed]
    except KeyError:
        raise ValueError(f"bitfinex has no channel for feed {feed!r}") from None
    if feed == "derivatives":
        return channel, f"{DERIV_KEY_PREFIX}{symbol}"
    if feed == "liquidations":
        return channel, LIQUIDATION_KEY
    return channel, symbol


def subscribe_request(
    symbol: str, feed: str, book_len: int = DEFAULT_BOOK_LENGTH
) -> dict[str, str]:
    """The ``subscribe`` frame (as a dict) of one (symbol, feed)."""
    channel, name = channel_key(symbol, feed)
    if channel == "status":
        return {"event": "subscribe", "channel": channel, "key": name}
    request = {"event": "subscribe", "channel": channel, "symbol": symbol}
    if channel == "book":
        request.update(prec="P0", freq="F0", len=str(book_len))
    return request


class BitfinexAdapter(ExchangeAdapter):
    """Bitfinex trading pairs over the public WebSocket v2."""

    name: ClassVar[str] = EXCHANGE
    default_url: ClassVar[str] = DEFAULT_URL
    ws_path: ClassVar[str] = WS_PATH
    default_rest_url: ClassVar[str | None] = DEFAULT_REST_URL
    symbols_path: ClassVar[str | None] = PAIRS_PATH
    book_depths: ClassVar[tuple[int, ...]] = tuple(sorted(BOOK_LENGTHS))
    stream_feeds: ClassVar[tuple[Feed, ...]] = (
        "trades",
        "orderbook",
        "ticker",
        "derivatives",
        "liquidations",
    )
    # The REST base of the instruments listings.
    takes_rest_url: ClassVar[bool] = True
    lists_instruments: ClassVar[bool] = True
    # At most two requests per market a round; Bitfinex's REST limits are per endpoint,
    # from 10 to 90 requests a minute (its rate-limit docs): stay under the lowest.
    instrument_requests_per_second: ClassVar[float] = 0.15
    option_notes: ClassVar[Mapping[str, str]] = {
        "book_mode": ": the book is a snapshot then updates "
        "(set book_depth to 1, 25, 100 or 250 levels)",
    }
    plan_class: ClassVar[type[ConnectionPlan]] = BitfinexPlan
    max_subscriptions_per_connection: ClassVar[int | None] = MAX_CHANNELS_PER_CONNECTION
    # The venue documents no client message rate (UNCONFIRMED): keep it modest.
    client_messages_per_second: ClassVar[float] = 5.0
    keepalive_interval_secs: ClassVar[float | None] = PING_INTERVAL_SECS
    # The venue allows 20 new connections per minute (per IP).
    connections_per_second: ClassVar[float] = CONNECTIONS_PER_MINUTE / 60

    @classmethod
    def symbols_url(cls, rest_url: str | None = None, category: str | None = None) -> str:
        """The conf list of ``category``: ``exchange`` (none: the spot pairs) or
        ``futures`` (the perpetuals, ``pub:list:pair:futures``). ValueError for another."""
        path = SYMBOL_LISTS.get(category or "exchange")
        if path is None:
            raise ValueError(
                f"bitfinex category must be {choices(tuple(SYMBOL_LISTS), quoted=True)} "
                f"(got {category!r}): exchange lists the spot pairs, futures the perpetuals"
            )
        return f"{(rest_url or DEFAULT_REST_URL).rstrip('/')}{path}"

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        """The pairs of a conf list, each as the markets name it (``t`` + pair:
        ``tBTCUSD``, ``tBTCF0:USTF0``)."""
        try:
            lists = _PAIRS.decode(body)
        except msgspec.DecodeError as exc:
            raise ParseError(f"bitfinex pair list: {exc}") from exc
        if not lists:
            raise ParseError("bitfinex pair list: empty answer")
        return [f"t{pair}" for pair in lists[0]]

    def instruments_requests(self, market: MarketSettings) -> list[InstrumentsRequest]:
        """``pub:info:pair`` for the market's spot pairs and ``pub:info:pair:futures``
        for its perpetuals (each listing whole: a few hundred pairs; conf keys take no
        filter), read for the market's symbols."""
        symbols = tuple(dict.fromkeys(self.normalize_symbol(s) for s in market.symbols))
        base = self.rest_url(market)
        requests = []
        for path, wanted in (
            (INFO_PATH, tuple(s for s in symbols if not is_perpetual(s))),
            (FUTURES_INFO_PATH, tuple(s for s in symbols if is_perpetual(s))),
        ):
            if wanted:
                requests.append(InstrumentsRequest(self.name, f"{base}{path}", wanted))
        return requests

    @classmethod
    def parse_instruments(
        cls, request: InstrumentsRequest, body: bytes, received_us: int
    ) -> list[Instrument]:
        return parse_instruments(request, body, received_us)

    @staticmethod
    def normalize_symbol(symbol: str) -> str:
        text = symbol.strip()
        if text[:1] == "f":
            raise ValueError(
                f"bitfinex symbol {symbol!r} is a funding currency: only trading pairs "
                "('tBTCUSD') are supported"
            )
        candidates = [text.upper()]
        if text[:1] == "t":
            candidates.insert(0, text[1:].upper())
        for pair in candidates:
            if _PAIR_RE.fullmatch(pair):
                return f"t{pair}"
        raise ValueError(
            f"invalid bitfinex symbol {symbol!r}: expected a trading pair such as 'tBTCUSD' "
            "(or 'BTCUSD'), or with a colon for long codes, e.g. 'tTESTBTC:TESTUSD'"
        )

    @classmethod
    def check_feeds(cls, market: MarketSettings) -> None:
        """The standard checks, and the ``derivatives`` and ``liquidations`` feeds only for
        perpetuals (``tBTCF0:USTF0``): a spot pair has no derivative status, and the
        venue's liquidation feed names the perpetuals' positions."""
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
            if not is_perpetual(canonical):
                spot.append(canonical)
        if spot:
            raise ValueError(
                f"bitfinex {' and '.join(wanted)} feeds are for perpetuals such as "
                f"'tBTCF0:USTF0', not {', '.join(spot)} (put spot pairs in a market "
                "without them)"
            )

    def plan_fields(self, market: MarketSettings) -> dict[str, Any]:
        """The book length is set per subscribe, one for the whole connection."""
        return {"book_len": market.book_depth or DEFAULT_BOOK_LENGTH}

    def keepalive_frame(self, number: int) -> str:
        """Ping ``number`` of a connection: ``{"event":"ping","cid":<number>}``.

        Only pings carry a ``cid`` (subscribe and unsubscribe frames have none), so the
        connection's ping count is the id; the session skips the ``pong`` (which echoes
        it) by its event.
        """
        return _ENCODER.encode({"event": "ping", "cid": number}).decode()

    def open_session(self, plan: ConnectionPlan) -> BitfinexSession:
        return BitfinexSession(plan)


# --------------------------------------------------------------------------- instruments

# ``pub:info:pair[:futures]``: one list (of the one key asked for) of [PAIR, DETAILS];
# DETAILS is read by position: [3] MIN_ORDER_SIZE, [4] MAX_ORDER_SIZE, [8] INITIAL_MARGIN,
# [9] MIN_MARGIN (Bitfinex's conf docs; the others are reserved, null).
_INFO: Final = msgspec.json.Decoder(list[list[tuple[str, list[Any]]]])
_MIN_ORDER_SIZE: Final = 3


def _asset(code: str) -> str:
    """A Bitfinex asset code's common name: a perpetual's ``F0`` dropped (``BTCF0`` is BTC,
    ``USTF0`` its margin currency, USDt), ``UST`` -> USDT, ``UDC`` -> USDC."""
    if code.endswith("F0"):
        code = code[:-2]
    return normalize_asset(_ASSETS.get(code, code))


def pair_assets(symbol: str) -> tuple[str, str]:
    """The (base, quote) asset of a canonical trading pair: ``tBTCUSD`` -> (BTC, USD),
    ``tTESTBTC:TESTUSD`` -> (TESTBTC, TESTUSD), ``tBTCF0:USTF0`` -> (BTC, USDT)."""
    pair = symbol[1:]
    base, colon, quote = pair.partition(":")
    if not colon:
        base, quote = pair[:3], pair[3:]
    return _asset(base), _asset(quote)


def parse_instruments(
    request: InstrumentsRequest, body: bytes, received_us: int
) -> list[Instrument]:
    """The rows of ``request.symbols`` in a ``pub:info:pair`` or ``pub:info:pair:futures``
    answer.

    Spot pairs and perpetuals alike count sizes in the base coin (Bitfinex sizes
    derivative positions in the base coin too). A perpetual (``tBTCF0:USTF0``) is linear,
    settled in its margin currency (USDt: ``settle_asset`` USDT). ``min_size`` is
    MIN_ORDER_SIZE; the conf names no tick or lot size (Bitfinex prices have five
    significant digits, not a fixed step), so those are null; no status (the listing has
    the active pairs) and no server time.
    """
    try:
        lists = _INFO.decode(body)
    except msgspec.DecodeError as exc:
        raise ParseError(f"bitfinex pair info: {exc}") from exc
    if not lists:
        raise ParseError("bitfinex pair info: empty answer")
    wanted = set(request.symbols)
    rows = []
    for pair, details in lists[0]:
        symbol = f"t{pair}"
        if symbol not in wanted:
            continue
        wanted.discard(symbol)
        base, quote = pair_assets(symbol)
        perpetual = is_perpetual(symbol)
        minimum = details[_MIN_ORDER_SIZE] if len(details) > _MIN_ORDER_SIZE else None
        try:
            min_size = optional_float(minimum)
        except (TypeError, ValueError) as exc:
            raise ParseError(f"bitfinex pair info {pair}: {exc}") from exc
        rows.append(
            Instrument(
                request.exchange,
                symbol,
                None,
                received_us,
                None,
                kind="perpetual" if perpetual else "spot",
                base_asset=base,
                quote_asset=quote,
                settle_asset=quote if perpetual else None,
                inverse=False if perpetual else None,
                size_unit="base",
                min_size=min_size,
            )
        )
    return rows


# --------------------------------------------------------------------------- session


class _Channel:
    """One acknowledged channel of the connection."""

    __slots__ = ("book", "feed", "recent_ids", "recent_order", "resyncing", "symbol")

    def __init__(self, symbol: str, feed: str, *, resyncing: bool = False) -> None:
        self.symbol = symbol
        self.feed = feed
        self.resyncing = resyncing
        # A book channel's local book (with wire text, for the checksum), from its snapshot
        # until a resync.
        self.book: InterleavedBook | None = None
        self.recent_ids: set[int] = set()
        self.recent_order: deque[int] = deque()

    def first_sighting(self, trade_id: int) -> bool:
        """True the first time ``trade_id`` is seen (te and tu carry the same trade)."""
        if trade_id in self.recent_ids:
            return False
        self.recent_ids.add(trade_id)
        self.recent_order.append(trade_id)
        if len(self.recent_order) > _RECENT_TRADES:
            self.recent_ids.discard(self.recent_order.popleft())
        return True


class BitfinexSession(Session):
    """Protocol state of one Bitfinex connection attempt (see the module docstring)."""

    def __init__(self, plan: ConnectionPlan) -> None:
        super().__init__(plan)
        self._book_len = plan.book_len if isinstance(plan, BitfinexPlan) else DEFAULT_BOOK_LENGTH
        # (channel, symbol or key) -> its subscriptions (``liq:global`` stands for every
        # ``liquidations`` one), for initial subscribes not yet answered.
        self._pending: dict[tuple[str, str], tuple[Subscription, ...]] = {}
        # The symbols whose liquidations this connection records.
        self._liquidation_symbols = frozenset(
            sub.symbol for sub in plan.subscriptions if sub.feed == "liquidations"
        )
        # (channel, symbol) of book resubscribes not yet answered.
        self._resubscribing: set[tuple[str, str]] = set()
        # chanIds being unsubscribed for a resync -> symbol.
        self._unsubscribing: dict[int, str] = {}
        self._channels: dict[int, _Channel] = {}
        # Why a book is resyncing where it was not a sequence gap (for its resync row).
        self._resync_reasons: dict[str, BookResyncReason] = {}
        self._last_seq: int | None = None
        self._seq_enabled = True
        self.maintenance = False
        self.rejected: list[Subscription] = []

    # ----------------------------------------------------------------- outgoing

    def _subscribe_frame(self, symbol: str, feed: str) -> str:
        return _ENCODER.encode(subscribe_request(symbol, feed, self._book_len)).decode()

    def subscribe_frames(self, now_us: int = 0) -> list[str]:
        frames = [_ENCODER.encode({"event": "conf", "flags": CONF_FLAGS}).decode()]
        for sub in self.plan.subscriptions:
            key = channel_key(sub.symbol, sub.feed)
            earlier = self._pending.get(key)
            self._pending[key] = (*(earlier or ()), sub)
            if earlier is None:
                frames.append(self._subscribe_frame(sub.symbol, sub.feed))
        return frames

    def _resync_books(self) -> None:
        for chan_id, channel in self._channels.items():
            if channel.feed == "orderbook" and not channel.resyncing:
                self._resync_book(chan_id, channel)

    def _resync_book(self, chan_id: int, channel: _Channel) -> None:
        """Unsubscribe one book channel (it is subscribed again once the venue confirms):
        its frames until the new snapshot are dropped and counted, its book unchecked."""
        channel.resyncing = True
        channel.book = None
        self._unsubscribing[chan_id] = channel.symbol
        self._outgoing.append(_ENCODER.encode({"event": "unsubscribe", "chanId": chan_id}).decode())

    def _book_failed(
        self,
        chan_id: int,
        channel: _Channel,
        reason: BookResyncReason,
        detail: str,
        received_us: int,
    ) -> Event:
        """A book failed its checksum or is crossed: its gap row, and that book alone
        resubscribed (the resync row of its new snapshot names the reason)."""
        self._resync_book(chan_id, channel)
        self._resync_reasons[channel.symbol] = reason
        return self.book_invalid(
            channel.symbol, received_us, reason, f"{detail}; resubscribing for a new snapshot"
        )

    def _checksum(self, chan_id: int, value: msgspec.Raw, received_us: int) -> list[Event]:
        """A ``cs`` frame: the venue's checksum of the book after the updates before it."""
        channel = self._channels.get(chan_id)
        if channel is None or channel.book is None:
            return []  # not a book of ours, or resyncing
        venue = _INT.decode(value)
        computed = channel.book.checksum()
        if computed == venue:
            return []
        detail = f"book checksum mismatch: venue {venue}, computed {computed}"
        return [self._book_failed(chan_id, channel, "checksum", detail, received_us)]

    # ----------------------------------------------------------------- parsing

    def parse(self, payload: bytes, received_us: int) -> list[Event]:
        try:
            if payload[:1] == b"{":
                return self._on_event(_EVENT.decode(payload), received_us)
            return self._on_frame(_FRAME.decode(payload), received_us)
        except _PARSE_ERRORS as exc:
            raise ParseError(f"bitfinex: {type(exc).__name__}: {exc}") from exc

    def _on_event(self, msg: _Event, received_us: int) -> list[Event]:
        event = msg.event
        if event == "subscribed":
            return self._on_subscribed(msg, received_us)
        if event == "error":
            return self._on_error(msg, received_us)
        if event == "unsubscribed":
            chan_id = msg.chan_id
            if chan_id is None:
                return []
            self._channels.pop(chan_id, None)
            symbol = self._unsubscribing.pop(chan_id, None)
            if symbol is not None:
                self._resubscribing.add(("book", symbol))
                self._outgoing.append(self._subscribe_frame(symbol, "orderbook"))
            return []
        if event == "info":
            if msg.code == INFO_RECONNECT:
                self._reconnect_reason = f"bitfinex info {msg.code}: {msg.msg}"
            elif msg.code == INFO_MAINTENANCE_START:
                self.maintenance = True
            elif msg.code == INFO_MAINTENANCE_END:
                self.maintenance = False
                self._reconnect_reason = (
                    f"bitfinex info {msg.code} (maintenance ended): resubscribe everything"
                )
            elif msg.platform is not None and msg.platform.status == 0:
                self.maintenance = True
            return []
        if event == "conf":
            if msg.status is not None and msg.status != "OK":
                self._seq_enabled = False
            return []
        return []  # pong and anything new

    def _on_subscribed(self, msg: _Event, received_us: int) -> list[Event]:
        name = msg.key if msg.channel == "status" else msg.symbol
        if msg.chan_id is None or msg.channel is None or name is None:
            raise ParseError(f"bitfinex: subscribed event without chanId/channel/symbol: {msg}")
        key = (msg.channel, name)
        if key in self._resubscribing:
            self._resubscribing.discard(key)
            self._channels[msg.chan_id] = _Channel(name, "orderbook", resyncing=True)
            return []
        subs = self._pending.pop(key, None)
        if subs is None:
            return []  # not ours
        first = subs[0]
        self._channels[msg.chan_id] = _Channel(first.symbol, first.feed)
        self._pending_subscriptions -= len(subs)
        return [
            self.status("subscribed", sub.symbol, received_us, data_type=feed_data_type(sub.feed))
            for sub in subs
        ]

    def _on_error(self, msg: _Event, received_us: int) -> list[Event]:
        detail = f"{msg.msg} (code {msg.code})"
        name = msg.key if msg.channel == "status" else msg.symbol
        key = (msg.channel or "", name or "")
        subs: tuple[Subscription, ...]
        if key in self._resubscribing:
            self._resubscribing.discard(key)
            subs = (Subscription(key[1], "orderbook"),)
        else:
            found = self._pending.pop(key, None)
            if found is None and (msg.channel is None or name is None) and self._pending:
                # No echo of the request: the venue answers in order, blame the oldest.
                found = self._pending.pop(next(iter(self._pending)))
            if found is None:
                return []
            subs = found
            self._pending_subscriptions -= len(subs)
        self.rejected.extend(subs)
        return [
            self.status(
                "subscribe_error",
                sub.symbol,
                received_us,
                data_type=feed_data_type(sub.feed),
                detail=f"{' '.join(channel_key(sub.symbol, sub.feed))}: {detail}",
            )
            for sub in subs
        ]

    def _on_frame(self, items: list[msgspec.Raw], received_us: int) -> list[Event]:
        if len(items) < 2:
            raise ParseError(f"bitfinex: short frame ({len(items)} items)")
        chan_id = _INT.decode(items[0])
        head = items[1]
        tag: bytes | None = None
        if memoryview(head)[:1].tobytes() == b'"':
            tag = bytes(head)
            body_index = 2 if tag in (b'"te"', b'"tu"', b'"cs"') else 1
            tail = items[body_index + 1 :]
        else:
            body_index = 1
            tail = items[2:]
        seq: int | None = None
        mts: int | None = None
        events: list[Event] = []
        if self._seq_enabled and tail:
            seq = _INT.decode(tail[0])
            if len(tail) > 1:
                mts = _INT.decode(tail[1]) * 1000
            last = self._last_seq
            if last is not None and seq != last + 1:
                if seq <= last:
                    self._count_duplicate(chan_id, tag)
                    return events
                events.extend(self._gap(last + 1, seq, received_us))
            self._last_seq = seq
        if tag == b'"cs"':
            events.extend(self._checksum(chan_id, items[body_index], received_us))
            return events
        channel = self._channels.get(chan_id)
        if channel is None or tag == b'"hb"':
            return events
        feed = channel.feed
        body = items[body_index]
        if feed == "orderbook":
            events.extend(self._book(chan_id, channel, body, seq, mts, received_us))
        elif feed == "trades":
            if tag in (b'"te"', b'"tu"'):
                events.extend(self._trade(channel, body, seq, received_us))
            # A snapshot (no tag) is not recorded: see the module docstring.
        elif tag is not None:
            pass
        elif feed == "ticker":
            events.append(self._ticker(channel, body, seq, mts, received_us))
        elif feed == "derivatives":
            events.extend(self._status(channel, body, seq, mts, received_us))
        else:
            events.extend(self._liquidations(body, seq, received_us))
        return events

    def _count_duplicate(self, chan_id: int, tag: bytes | None) -> None:
        """Count a channel frame whose SEQ was already seen (heartbeats carry no data)."""
        channel = self._channels.get(chan_id)
        if channel is not None and tag != b'"hb"' and tag != b'"cs"':
            if channel.feed == "liquidations":
                # One channel for every symbol: count under each symbol of the connection
                # with the feed (which of them the frame concerned is not read).
                for symbol in sorted(self._liquidation_symbols):
                    self.count_discard(symbol, "liquidations", "duplicate")
            else:
                self.count_discard(channel.symbol, feed_data_type(channel.feed), "duplicate")

    def _gap(self, expected: int, received: int, received_us: int) -> list[Event]:
        events: list[Event] = [
            self.gap(
                symbol,
                received_us,
                None,
                expected,
                received,
                detail="SEQ_ALL gap on the connection: any of its channels may have lost frames",
            )
            for symbol in self.plan.symbols
        ]
        self._resync_books()
        return events

    def _book(
        self,
        chan_id: int,
        channel: _Channel,
        body: msgspec.Raw,
        seq: int | None,
        mts: int | None,
        received_us: int,
    ) -> list[Event]:
        """A book snapshot or one level's update: its row, applied to the channel's local
        book (with the wire text: ask amounts stay negative, as the checksum takes them),
        which must not be crossed afterwards."""
        symbol = channel.symbol
        start = memoryview(body)[:2].tobytes()
        if start == b"[[" or start == b"[]":
            events: list[Event] = []
            bid_values: list[float] = []
            ask_values: list[float] = []
            bid, ask = bid_values.append, ask_values.append
            book = InterleavedBook()
            book_bids, book_asks = book.bids, book.asks
            for price_text, _count, amount_text in _BOOK_SNAPSHOT.decode(body):
                price = float(price_text)
                amount = float(amount_text)
                if amount > 0:
                    bid(price)
                    bid(amount)
                    book_bids.set(price, amount, bytes(price_text), bytes(amount_text))
                else:
                    ask(price)
                    ask(-amount)
                    book_asks.set(price, -amount, bytes(price_text), bytes(amount_text))
            if channel.resyncing:
                channel.resyncing = False
                reason = self._resync_reasons.pop(symbol, None)
                after = "" if reason is None else f" after a {RESYNC_REASON_TEXT[reason]}"
                events.append(
                    self.status(
                        "resync",
                        symbol,
                        received_us,
                        data_type="orderbook",
                        received=seq,
                        detail=f"new book snapshot after resubscribing{after}",
                        timestamp_exchange=mts,
                    )
                )
            bids = levels_from_values(bid_values)
            asks = levels_from_values(ask_values)
            events.append(
                BookUpdate(
                    EXCHANGE, symbol, mts, received_us, seq, "snapshot", seq, None, bids, asks
                )
            )
            channel.book = book
            if book.crossed():
                events.append(self._crossed(chan_id, channel, book, received_us))
            return events
        if channel.resyncing:
            self.count_discard(symbol, "orderbook", "while_resyncing")
            return []
        price_text, count_text, amount_text = _BOOK_LEVEL.decode(body)
        price = float(price_text)
        amount = float(amount_text)
        size = 0.0 if float(count_text) == 0 else abs(amount)
        level = levels_from_values((price, size))
        kept = channel.book
        if amount > 0:
            bids, asks = level, levels_from_values(())
            if kept is not None:
                kept.bids.set(price, size, bytes(price_text), bytes(amount_text))
        else:
            bids, asks = levels_from_values(()), level
            if kept is not None:
                kept.asks.set(price, size, bytes(price_text), bytes(amount_text))
        update = BookUpdate(EXCHANGE, symbol, mts, received_us, seq, "delta", seq, None, bids, asks)
        if kept is not None and kept.crossed():
            return [update, self._crossed(chan_id, channel, kept, received_us)]
        return [update]

    def _crossed(
        self, chan_id: int, channel: _Channel, book: InterleavedBook, received_us: int
    ) -> Event:
        bid, ask = book.best()
        detail = f"crossed book: best bid {bid!r} >= best ask {ask!r}"
        return self._book_failed(chan_id, channel, "crossed", detail, received_us)

    def _trade(
        self, channel: _Channel, body: msgspec.Raw, seq: int | None, received_us: int
    ) -> list[Event]:
        trade_id, mts, amount, price = _TRADE.decode(body)
        if not channel.first_sighting(trade_id):
            return []
        return [
            Trade(
                EXCHANGE,
                channel.symbol,
                mts * 1000,
                received_us,
                seq,
                str(trade_id),
                price,
                abs(amount),
                # "How much was bought (positive) or sold (negative)"; "the order that causes
                # the trade determines if it is a buy or a sell" (Bitfinex docs, public
                # trades; confirmed): the sign is the aggressor's side.
                "buy" if amount > 0 else "sell",
            )
        ]

    def _ticker(
        self,
        channel: _Channel,
        body: msgspec.Raw,
        seq: int | None,
        mts: int | None,
        received_us: int,
    ) -> Ticker:
        values = _TICKER.decode(body)
        if len(values) < 10:
            raise ParseError(f"bitfinex: ticker with {len(values)} fields (expected 10)")
        bid, bid_size, ask, ask_size, _chg, _rel, last, volume = values[:8]
        return Ticker(
            EXCHANGE,
            channel.symbol,
            mts,
            received_us,
            seq,
            bid,
            bid_size,
            ask,
            ask_size,
            last,
            volume,
        )

    def _status(
        self,
        channel: _Channel,
        body: msgspec.Raw,
        seq: int | None,
        mts: int | None,
        received_us: int,
    ) -> list[Event]:
        """One ``deriv:`` status array -> a ``derivative_ticker`` row (see the module
        docstring for the positions read)."""
        items = _FRAME.decode(body)
        if not items:
            return []  # an empty snapshot: nothing to record
        if len(items) < 18:
            raise ParseError(f"bitfinex: derivatives status with {len(items)} fields (need 18)")
        # Only the positions read are decoded: fields the venue appends may be of any type.
        values = [_OPT_FLOAT.decode(item) for item in items[:18]]
        time_ms = values[0]
        next_funding_ms = values[7]
        open_interest = values[17]
        return [
            DerivativeTicker(
                EXCHANGE,
                channel.symbol,
                mts if time_ms is None else round(time_ms * 1000),
                received_us,
                seq,
                "status",
                last_price=values[2],
                mark_price=values[14],
                index_price=values[3],
                funding_rate=values[11],
                funding_timestamp=None if not next_funding_ms else round(next_funding_ms * 1000),
                funding_interval_h=FUNDING_INTERVAL_H,
                predicted_funding_rate=values[8],
                open_interest=open_interest,
                open_interest_unit=None if open_interest is None else "base",
            )
        ]

    def _liquidations(self, body: msgspec.Raw, seq: int | None, received_us: int) -> list[Event]:
        """Rows of the ``liq:global`` items that name a symbol of this connection."""
        wanted = self._liquidation_symbols
        events: list[Event] = []
        for item in _LIQUIDATIONS.decode(body):
            if len(item) < 9 or item[4] not in wanted:
                continue
            symbol = item[4]
            pos_id, time_ms, amount, base_price, is_match = (
                item[1],
                item[2],
                item[5],
                item[6],
                item[8],
            )
            if not isinstance(amount, float | int) or not isinstance(symbol, str):
                raise ParseError(f"bitfinex: liquidation without amount: {item}")
            acquired = item[11] if len(item) > 11 else None
            if isinstance(acquired, float | int):
                price, kind = float(acquired), "acquired"
            elif isinstance(base_price, float | int):
                price, kind = float(base_price), "entry"
            else:
                raise ParseError(f"bitfinex: liquidation without a price: {item}")
            long = amount > 0
            events.append(
                Liquidation(
                    EXCHANGE,
                    symbol,
                    round(time_ms * 1000) if isinstance(time_ms, float | int) else None,
                    received_us,
                    seq,
                    None if pos_id is None else str(pos_id),
                    "sell" if long else "buy",
                    "long" if long else "short",
                    price,
                    kind,
                    abs(float(amount)),
                    "base",
                    entry_price=float(base_price) if isinstance(base_price, float | int) else None,
                    status=_MATCH_STATUS.get(is_match) if isinstance(is_match, int) else None,
                )
            )
        return events
