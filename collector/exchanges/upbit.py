"""Upbit (sans-IO): one array request per connection, JSON in binary frames, text PING.

Endpoint ``wss://api.upbit.com/websocket/v1``. After the handshake the session sends one
request, a JSON array: a ticket, one type object per feed with the connection's codes, and
the format object (``DEFAULT``, long field names)::

    [{"ticket":"collector-upbit-0-..."},{"type":"trade","codes":["KRW-BTC"]},
     {"type":"orderbook","codes":["KRW-BTC"]},{"type":"ticker","codes":["KRW-BTC"]},
     {"format":"DEFAULT"}]

then ``[{"ticket":...},{"method":"LIST_SUBSCRIPTIONS"},{"format":"DEFAULT"}]``. Upbit sends
no acknowledgement of a subscription, so a subscription counts as subscribed at its first
message (each type starts with a ``SNAPSHOT`` message, then ``REALTIME`` ones) or when the
``LIST_SUBSCRIPTIONS`` answer lists its code; a code that answer leaves out gets a
``subscribe_error`` row. An error ``{"error":{"name":..,"message":..}}`` refuses the whole
request (the venue's request is all or nothing): every subscription still waiting gets a
``subscribe_error`` row with the venue's name and message.

Feeds:

- ``trades`` -> type ``trade``; ``ask_bid`` is the aggressor side (``ASK`` = a sell order
  hit the bid = ``sell``, ``BID`` = ``buy``); time = ``trade_timestamp`` (ms);
  ``Trade.sequence`` and ``trade_id`` = ``sequential_id``;
- ``orderbook`` -> type ``orderbook``: every message is the whole top-N book (no deltas, no
  sequence), written as kind ``snapshot``; ``book_depth`` 1, 5, 15 or 30 asks for that
  many levels (``KRW-BTC.15``), default 30;
- ``ticker`` -> type ``ticker``: last price (``trade_price``) and 24 h volume
  (``acc_trade_volume_24h``); Upbit's ticker has no best bid/ask (those columns are null);
- ``instruments`` -> no type: the REST market list (:meth:`UpbitAdapter.parse_instruments`).

Sequence: Upbit has none (books are full snapshots; ``sequential_id`` is unique but not
ordered), so no gap rows are possible. The trade snapshot sent on every (re)subscribe
repeats the last trade: trades are de-duplicated by ``(code, sequential_id)`` against a
bounded set of recent ids kept on the adapter, so it survives reconnects
(:meth:`Session.count_discard` counts them, reason ``duplicate``).

Keepalive: the server closes a connection idle for about 120 s. The connection sends the
text ``PING`` (:meth:`UpbitAdapter.keepalive_frame`) every 20 s
(:attr:`UpbitAdapter.keepalive_interval_secs`); the server answers ``{"status":"UP"}``,
which the session counts in :attr:`UpbitSession.pongs` and which also keeps the
stale-connection watchdog (30 s by default) fed on quiet markets.

Frames: data comes as UTF-8 JSON in binary frames; :meth:`UpbitSession.parse` gets bytes
either way. The ``SIMPLE`` format (short keys, as in the 2021 recording) is parsed too, so
recorded traffic replays; the live subscription always asks for ``DEFAULT``.

Limits: connect 5/s per IP; data requests 5/s and 100/min (per connection in current
docs): two requests at connect plus three ``PING`` a minute stay far below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import attrs
import msgspec

from collector.config import MarketSettings
from collector.events import BookUpdate, Event, Instrument, Side, Ticker, Trade, levels_from_values
from collector.exchanges.base import (
    ConnectionPlan,
    ExchangeAdapter,
    InstrumentsRequest,
    Listing,
    ParseError,
    Session,
    Subscription,
)
from collector.exchanges.common import RecentIds as RecentIds  # re-exported
from collector.exchanges.common import normalize_asset

EXCHANGE: Final = "upbit"
DEFAULT_URL: Final = "wss://api.upbit.com/websocket/v1"
DEFAULT_REST_URL: Final = "https://api.upbit.com"
MARKETS_PATH: Final = "/v1/market/all"
# The status of every market in all-symbols mode: the listing has only tradable ones.
LISTED: Final = "listed"
# Codes per connection: our choice (the venue documents no limit; Upbit lists ~250 markets).
MAX_CODES_PER_CONNECTION: Final = 100
# Recent trade ids remembered per code for de-duplication across reconnects.
RECENT_TRADE_IDS: Final = 1000
BOOK_DEPTHS: Final = frozenset({1, 5, 15, 30})
KEEPALIVE_SECS: Final = 20.0
PING: Final = "PING"

TYPES: Final = {"trades": "trade", "orderbook": "orderbook", "ticker": "ticker"}
FEEDS_BY_TYPE: Final = {t: feed for feed, t in TYPES.items()}

_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{2,10}-[A-Z0-9]{1,20}")
# ``ask_bid`` (Upbit docs, WebSocket trade: "매수/매도 구분", ASK = sell, BID = buy). The docs
# do not say whose side; the recording says the aggressor's (every trade at the best ask is
# BID, at the best bid ASK), as cryptofeed and tardis read it.
_SIDES: Final[dict[str, Side]] = {"ASK": "sell", "BID": "buy"}


# --------------------------------------------------------------------------- wire structs


class _Unit(msgspec.Struct, gc=False):
    ask_price: float
    bid_price: float
    ask_size: float
    bid_size: float


class _Error(msgspec.Struct, gc=False):
    name: str | None = None
    message: str | None = None


class _ListItem(msgspec.Struct, gc=False):
    type: str
    codes: list[str] = []


class _Message(msgspec.Struct, gc=False):
    """Every DEFAULT-format message: data (``type``), ``status``, ``error`` or a method answer."""

    type: str | None = None
    code: str | None = None
    timestamp: int | None = None
    stream_type: str | None = None
    # trade
    trade_timestamp: int | None = None
    trade_price: float | None = None
    trade_volume: float | None = None
    ask_bid: str | None = None
    sequential_id: int | None = None
    # orderbook
    orderbook_units: list[_Unit] | None = None
    # ticker
    acc_trade_volume_24h: float | None = None
    # others
    status: str | None = None
    error: _Error | None = None
    method: str | None = None
    result: list[_ListItem] | None = None


class _SimpleUnit(msgspec.Struct, gc=False):
    ask_price: float = msgspec.field(name="ap")
    bid_price: float = msgspec.field(name="bp")
    ask_size: float = msgspec.field(name="as")
    bid_size: float = msgspec.field(name="bs")


class _SimpleListItem(msgspec.Struct, gc=False):
    type: str = msgspec.field(name="ty")
    codes: list[str] = msgspec.field(default_factory=list, name="cds")


class _SimpleMessage(msgspec.Struct, gc=False):
    """The same messages in the SIMPLE format (short keys)."""

    type: str | None = msgspec.field(default=None, name="ty")
    code: str | None = msgspec.field(default=None, name="cd")
    timestamp: int | None = msgspec.field(default=None, name="tms")
    stream_type: str | None = msgspec.field(default=None, name="st")
    trade_timestamp: int | None = msgspec.field(default=None, name="ttms")
    trade_price: float | None = msgspec.field(default=None, name="tp")
    trade_volume: float | None = msgspec.field(default=None, name="tv")
    ask_bid: str | None = msgspec.field(default=None, name="ab")
    sequential_id: int | None = msgspec.field(default=None, name="sid")
    orderbook_units: list[_SimpleUnit] | None = msgspec.field(default=None, name="obu")
    acc_trade_volume_24h: float | None = msgspec.field(default=None, name="atv24h")
    method: str | None = msgspec.field(default=None, name="mthd")
    result: list[_SimpleListItem] | None = msgspec.field(default=None, name="rslt")


class _Market(msgspec.Struct, gc=False):
    market: str


_MESSAGE: Final = msgspec.json.Decoder(_Message)
_SIMPLE: Final = msgspec.json.Decoder(_SimpleMessage)
_MARKETS: Final = msgspec.json.Decoder(list[_Market])
_ENCODER: Final = msgspec.json.Encoder()

_PARSE_ERRORS: Final = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError)


# --------------------------------------------------------------------------- adapter


@attrs.frozen
class UpbitPlan(ConnectionPlan):
    """A plan that also says how many book levels to ask for (None: the venue's 30)."""

    book_depth: int | None = None


class UpbitAdapter(ExchangeAdapter):
    """Upbit quotation WebSocket (see the module docstring)."""

    name: ClassVar[str] = EXCHANGE
    default_url: ClassVar[str] = DEFAULT_URL  # the full URL: a base_url replaces it whole
    default_rest_url: ClassVar[str | None] = DEFAULT_REST_URL
    symbols_path: ClassVar[str | None] = MARKETS_PATH
    # The REST base of the instruments listing (everything else is the WebSocket's).
    takes_rest_url: ClassVar[bool] = True
    lists_instruments: ClassVar[bool] = True
    # One request per market a round; Upbit limits each API group per second (its rate
    # limit docs; the market group's figure is UNCONFIRMED here): 1/s stays far under.
    instrument_requests_per_second: ClassVar[float] = 1.0
    book_modes: ClassVar[tuple[str, ...]] = ("snapshot",)
    book_depths: ClassVar[tuple[int, ...]] = tuple(sorted(BOOK_DEPTHS))
    option_notes: ClassVar[Mapping[str, str]] = {
        "book_mode": " (every orderbook message is a full book)",
    }
    plan_class: ClassVar[type[ConnectionPlan]] = UpbitPlan
    max_symbols_per_connection: ClassVar[int | None] = MAX_CODES_PER_CONNECTION
    # The venue allows 5 data requests/s (and 100/min) per connection.
    client_messages_per_second: ClassVar[float] = 4.0
    keepalive_interval_secs: ClassVar[float | None] = KEEPALIVE_SECS
    listing_quotes: ClassVar[bool] = True

    def __init__(self) -> None:
        # Survives reconnects: sessions come and go, the adapter stays.
        self.recent_trade_ids = RecentIds(RECENT_TRADE_IDS)

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        try:
            return [m.market for m in _MARKETS.decode(body)]
        except _PARSE_ERRORS as exc:
            raise ParseError(f"upbit markets: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def parse_listing(cls, body: bytes) -> list[Listing]:
        """Every market code, its quote the code's first part (``KRW`` of ``KRW-BTC``),
        sorted. ``/v1/market/all`` lists only markets that trade and names no status:
        each is ``listed``."""
        listed = (
            Listing(code, code.partition("-")[0], LISTED, True) for code in cls.parse_symbols(body)
        )
        return sorted(listed, key=lambda item: item.symbol)

    def instruments_requests(self, market: MarketSettings) -> list[InstrumentsRequest]:
        """The whole market list (``GET /v1/market/all``, a few hundred codes), once per
        market; it takes no code filter."""
        codes = tuple(dict.fromkeys(self.normalize_symbol(s) for s in market.symbols))
        return [InstrumentsRequest(self.name, f"{self.rest_url(market)}{MARKETS_PATH}", codes)]

    @classmethod
    def parse_instruments(
        cls, request: InstrumentsRequest, body: bytes, received_us: int
    ) -> list[Instrument]:
        """The rows of ``request.symbols`` in the market list: spot pairs, sizes in the
        base currency, the code read quote first (``KRW-BTC``: base BTC, quote KRW).

        The list names no tick size, lot size or minimum order (Upbit's tick size is a
        table of price bands per quote market, in its docs, not in any answer), so those
        are null; it lists only tradable markets and has no status field (``status``
        null) and no server time."""
        try:
            markets = _MARKETS.decode(body)
        except _PARSE_ERRORS as exc:
            raise ParseError(f"upbit markets: {type(exc).__name__}: {exc}") from exc
        wanted = set(request.symbols)
        rows = []
        for item in markets:
            if item.market not in wanted:
                continue
            wanted.discard(item.market)
            quote, _, base = item.market.partition("-")
            rows.append(
                Instrument(
                    request.exchange,
                    item.market,
                    None,
                    received_us,
                    None,
                    kind="spot",
                    base_asset=normalize_asset(base),
                    quote_asset=normalize_asset(quote),
                    settle_asset=None,
                    inverse=None,
                    size_unit="base",
                )
            )
        return rows

    @staticmethod
    def normalize_symbol(symbol: str) -> str:
        canonical = symbol.strip().upper()
        if not _SYMBOL_RE.fullmatch(canonical):
            raise ValueError(
                f"invalid upbit market code {symbol!r}: expected QUOTE-BASE with a dash, "
                "quote first, e.g. 'KRW-BTC' or 'BTC-ETH'"
            )
        return canonical

    def plan_fields(self, market: MarketSettings) -> dict[str, Any]:
        """The book depth is part of every orderbook code, one for the whole connection."""
        return {"book_depth": market.book_depth}

    def keepalive_frame(self, number: int) -> str:
        """The text ``PING`` (no id: the venue answers ``{"status":"UP"}``)."""
        return PING

    def open_session(self, plan: ConnectionPlan) -> UpbitSession:
        return UpbitSession(plan, self.recent_trade_ids)


# --------------------------------------------------------------------------- session


class UpbitSession(Session):
    """Protocol state of one Upbit connection attempt (see the module docstring)."""

    def __init__(self, plan: ConnectionPlan, recent_trade_ids: RecentIds | None = None) -> None:
        super().__init__(plan)
        self._recent = (
            recent_trade_ids if recent_trade_ids is not None else RecentIds(RECENT_TRADE_IDS)
        )
        self._depth = plan.book_depth if isinstance(plan, UpbitPlan) else None
        self._codes: dict[str, list[str]] = {}  # type -> codes, in plan order
        for sub in plan.subscriptions:
            self._codes.setdefault(TYPES[sub.feed], []).append(sub.symbol)
        self._pending: set[tuple[str, str]] = {
            (TYPES[s.feed], s.symbol) for s in plan.subscriptions
        }
        self.rejected: list[Subscription] = []
        # Venue errors with nothing left to refuse, and "status" answers seen.
        self.errors: list[str] = []
        self.pongs = 0

    # ----------------------------------------------------------------- frames

    def subscribe_frames(self, now_us: int) -> list[str]:
        ticket = f"collector-{self.plan.name}-{now_us}"
        request: list[dict[str, object]] = [{"ticket": ticket}]
        for type_, codes in self._codes.items():
            if type_ == "orderbook" and self._depth is not None:
                codes = [f"{code}.{self._depth}" for code in codes]
            request.append({"type": type_, "codes": codes})
        request.append({"format": "DEFAULT"})
        listing = [{"ticket": ticket}, {"method": "LIST_SUBSCRIPTIONS"}, {"format": "DEFAULT"}]
        return [_ENCODER.encode(request).decode(), _ENCODER.encode(listing).decode()]

    # ----------------------------------------------------------------- parsing

    def parse(self, payload: bytes, received_us: int) -> list[Event]:
        try:
            full = _MESSAGE.decode(payload)
            if full.status is not None:
                self.pongs += 1  # {"status":"UP"}: the answer to PING
                return []
            if full.error is not None:
                return self._on_error(full.error, received_us)
            msg: _Message | _SimpleMessage = full
            if full.type is None and full.method is None:
                msg = _SIMPLE.decode(payload)  # a SIMPLE-format frame (short keys)
            type_ = msg.type
            if type_ is not None:
                code = msg.code
                if code is None:
                    raise ParseError(f"upbit: {type_} message without a code")
                events: list[Event] = []
                if self._pending and (type_, code) in self._pending:
                    events.append(self._subscribed(type_, code, received_us))
                if type_ == "trade":
                    events.extend(self._trade(msg, code, received_us))
                elif type_ == "orderbook":
                    events.append(self._orderbook(msg, code, received_us))
                elif type_ == "ticker":
                    events.append(self._ticker(msg, code, received_us))
                return events
            if msg.method == "LIST_SUBSCRIPTIONS":
                return self._on_list(msg.result or [], received_us)
            raise ParseError(f"upbit: unknown message {bytes(payload[:200])!r}")
        except _PARSE_ERRORS as exc:
            raise ParseError(f"upbit: {type(exc).__name__}: {exc}") from exc

    # ----------------------------------------------------------------- subscriptions

    def _subscribed(self, type_: str, code: str, received_us: int) -> Event:
        self._pending.discard((type_, code))
        self._pending_subscriptions -= 1
        return self.status("subscribed", code, received_us, data_type=FEEDS_BY_TYPE[type_])

    def _refuse(self, type_: str, code: str, received_us: int, detail: str) -> Event:
        self._pending.discard((type_, code))
        self._pending_subscriptions -= 1
        feed = FEEDS_BY_TYPE[type_]
        self.rejected.append(Subscription(code, feed))
        return self.status("subscribe_error", code, received_us, data_type=feed, detail=detail)

    def _on_list(
        self, result: Sequence[_ListItem | _SimpleListItem], received_us: int
    ) -> list[Event]:
        listed = {(item.type, code.partition(".")[0]) for item in result for code in item.codes}
        events: list[Event] = []
        for type_, code in sorted(self._pending):
            if (type_, code) in listed:
                events.append(self._subscribed(type_, code, received_us))
            else:
                events.append(
                    self._refuse(
                        type_, code, received_us, f"{type_} {code}: not in LIST_SUBSCRIPTIONS"
                    )
                )
        return events

    def _on_error(self, error: _Error, received_us: int) -> list[Event]:
        text = f"{error.name}: {error.message}"
        if not self._pending:
            self.errors.append(text)
            return []
        return [
            self._refuse(type_, code, received_us, f"{type_} {code}: {text}")
            for type_, code in sorted(self._pending)
        ]

    # ----------------------------------------------------------------- data

    def _trade(self, msg: _Message | _SimpleMessage, code: str, received_us: int) -> list[Event]:
        sequential_id = msg.sequential_id
        if sequential_id is None or msg.trade_price is None or msg.trade_volume is None:
            raise ValueError("trade without sequential_id, trade_price or trade_volume")
        trade_id = str(sequential_id)
        if not self._recent.add(code, trade_id):
            self.count_discard(code, "trades", "duplicate")
            return []
        ts = msg.trade_timestamp if msg.trade_timestamp is not None else msg.timestamp
        return [
            Trade(
                EXCHANGE,
                code,
                None if ts is None else ts * 1000,
                received_us,
                sequential_id,
                trade_id,
                msg.trade_price,
                msg.trade_volume,
                None if msg.ask_bid is None else _SIDES.get(msg.ask_bid),
            )
        ]

    def _orderbook(self, msg: _Message | _SimpleMessage, code: str, received_us: int) -> Event:
        units = msg.orderbook_units
        if units is None:
            raise ValueError("orderbook without orderbook_units")
        bid_values: list[float] = []
        ask_values: list[float] = []
        bid, ask = bid_values.append, ask_values.append
        for unit in units:  # one unit: a bid level and an ask level
            bid(unit.bid_price)
            bid(unit.bid_size)
            ask(unit.ask_price)
            ask(unit.ask_size)
        ts = msg.timestamp
        return BookUpdate(
            EXCHANGE,
            code,
            None if ts is None else ts * 1000,
            received_us,
            None,
            "snapshot",
            None,
            None,
            levels_from_values(bid_values),
            levels_from_values(ask_values),
        )

    def _ticker(self, msg: _Message | _SimpleMessage, code: str, received_us: int) -> Event:
        ts = msg.timestamp
        return Ticker(
            EXCHANGE,
            code,
            None if ts is None else ts * 1000,
            received_us,
            None,
            None,
            None,
            None,
            None,
            msg.trade_price,
            msg.acc_trade_volume_24h,
        )
