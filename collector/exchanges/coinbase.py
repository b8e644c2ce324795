"""Coinbase Advanced Trade (sans-IO): one subscribe per channel, per-connection sequence.

Endpoint ``wss://advanced-trade-ws.coinbase.com``. Every server message is an envelope
``{"channel", "timestamp" (RFC 3339, ns), "sequence_num", "events": [...]}``; errors are
``{"type": "error", "message": ..., "reason": ...}``.

Feeds and channels (one subscribe frame per channel, listing every product of the
connection; the venue wants the first within 5 s of connecting):

- ``trades`` -> ``market_trades`` (a snapshot of recent trades first, then updates);
- ``orderbook`` -> ``level2`` (messages come as channel ``l2_data``: a ``snapshot`` event
  with the whole book, then ``update`` events; sides ``bid``/``offer``; ``new_quantity`` is
  the absolute size, ``0`` deletes). A snapshot of a liquid product is several MB (5 MB for
  BTC-USD in the 2026 recording), within the default ``max_message_size_mb`` of 16;
- ``ticker`` -> ``ticker`` (last price, best bid/ask with sizes, 24 h volume);
- always ``heartbeats`` (one message a second): it keeps quiet subscriptions alive (the
  venue closes channels idle for 60-90 s) and feeds the stale-connection watchdog, so no
  application keepalive frame is needed;
- ``instruments`` -> no channel: the public REST product of each symbol
  (:meth:`CoinbaseAdapter.parse_instruments`).

Timestamps: trades use the trade's ``time``; book updates the ``event_time`` of their
levels (the envelope ``timestamp`` when absent or the 1970 placeholder seen on snapshots);
snapshots and tickers the envelope ``timestamp``. All rounded down to microseconds.

Trade side: the venue's ``side`` is the **maker** (resting) order's side, so the recorded
``side`` is its opposite, the aggressor, as on every other venue (``SELL`` -> ``buy``). The
Advanced Trade docs do not say which side ``market_trades`` gives; Coinbase Exchange's docs
say its trades carry the maker order's side (a ``sell`` is an up-tick), and the 2026
recording agrees: every trade printed at the best ask carries ``SELL`` and every one at the
best bid ``BUY`` (71 of 71; 7 more print inside the spread), which is how nautilus_trader
and bbgo read it too (exchanges.md 2A).

Sequence rule: ``sequence_num`` is one counter per connection across all channels (the
recording counts 0..1029 without a hole). A message whose number is not the previous one
+ 1 is a ``gap`` status row (expected, received, count; count is null for a duplicate or
an out-of-order message) for every symbol of the connection (``data_type`` null: any
channel may have lost data). The book cannot be trusted after that, so level2 is
re-requested through :attr:`Actions.send` (``unsubscribe`` then ``subscribe``
``level2`` for the connection's book products); when the fresh snapshot arrives, a
``resync`` row precedes it. The first message of a connection sets the baseline.

Books are also checked for a crossing after each snapshot and update
(:class:`~collector.exchanges.book_check.CrossCheck`): a crossed book is a ``gap`` row
(:meth:`Session.book_invalid`) and ``level2`` of that product alone is resubscribed; the
``resync`` row of its new snapshot says ``after a crossed book``.

Trade ids: ``market_trades`` starts with a snapshot of the latest trades on every
(re)connect, so the same trades come again after a reconnect. Trades are de-duplicated by
``trade_id`` per product against a bounded set of recent ids (:class:`RecentIds`) that
lives on the adapter object (created once per exchange; a reconnect gets a new session but
the same adapter), so they survive reconnects. Dropped duplicates are counted
(:meth:`Session.count_discard`, reason ``duplicate``). ``Trade.sequence`` is the numeric
trade id.

Acknowledgements: the venue answers every subscribe with a ``subscriptions`` message
listing everything subscribed on the connection (cumulative). Such a message answers the
oldest open subscribe request whose channel it lists; a product of that request missing
from it gets a ``subscribe_error`` row. (Unsubscribes are not expected to be answered.) An
``error`` message answers the oldest open subscribe request: a request of several products is split
in halves and sent again until the bad product stands alone, which gets a
``subscribe_error`` row (detail = the venue's message); the other products keep flowing.

Authentication (optional): an adapter given credentials (a :class:`FrameSigner`)
puts a fresh JWT from them into every (un)subscribe frame, signed at the frame's time.
Reading the key (``COINBASE_API_KEY``, ``COINBASE_API_SECRET_FILE``) and signing are done
outside this module, by :mod:`collector.credentials` at service start, so that this module
stays free of I/O.
"""

from __future__ import annotations

import calendar
import re
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final, Protocol

import attrs
import msgspec

from collector.config import MarketSettings
from collector.events import (
    BookKind,
    BookUpdate,
    Event,
    Instrument,
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
from collector.exchanges.book_check import CrossCheck
from collector.exchanges.common import RecentIds as RecentIds  # re-exported
from collector.exchanges.common import normalize_asset, optional_float

EXCHANGE: Final = "coinbase"
DEFAULT_URL: Final = "wss://advanced-trade-ws.coinbase.com"
DEFAULT_REST_URL: Final = "https://api.coinbase.com"
# The public (unauthenticated) product listing, and one product below it.
PRODUCTS_PATH: Final = "/api/v3/brokerage/market/products"
# Products per connection: our choice (the venue documents no limit). Level2 snapshots of
# liquid products are MBs each, and one lost message resyncs every book of its connection.
MAX_PRODUCTS_PER_CONNECTION: Final = 10
# Recent trade ids remembered per product for de-duplication across reconnects (the
# market_trades snapshot holds the last 100 trades).
RECENT_TRADE_IDS: Final = 1000

CHANNELS: Final = {"trades": "market_trades", "orderbook": "level2", "ticker": "ticker"}
FEEDS_BY_CHANNEL: Final = {channel: feed for feed, channel in CHANNELS.items()}
HEARTBEATS: Final = "heartbeats"

_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}")
# The venue's side is the maker's; the aggressor is the other side (module docstring).
# Source: Coinbase Exchange docs (trade side = maker order side) and the 2026 recording;
# the Advanced Trade docs do not state it.
_SIDES: Final[dict[str, Side]] = {"BUY": "sell", "SELL": "buy", "buy": "sell", "sell": "buy"}


# --------------------------------------------------------------------------- timestamps

_MINUTES: dict[str, int] = {}


def rfc3339_us(text: str) -> int:
    """Microseconds since the epoch from ``2026-08-09T21:05:48.228568804Z`` (ns truncated).

    Accepts a ``Z`` or ``+00:00`` suffix and any number of fraction digits; the epoch
    value of each minute is cached, so a call costs a few string slices.
    """
    if len(text) < 20 or text[4] != "-" or text[10] not in "T " or text[16] != ":":
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}")
    minute = text[:16]
    base = _MINUTES.get(minute)
    if base is None:
        base = (
            calendar.timegm(
                (
                    int(text[:4]),
                    int(text[5:7]),
                    int(text[8:10]),
                    int(text[11:13]),
                    int(text[14:16]),
                    0,
                )
            )
            * 1_000_000
        )
        if len(_MINUTES) > 4096:
            _MINUTES.clear()
        _MINUTES[minute] = base
    seconds = int(text[17:19])
    rest = text[19:]
    micros = 0
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        digits = rest[1:end]
        if not digits:
            raise ValueError(f"empty fraction in {text!r}")
        micros = int(digits[:6].ljust(6, "0"))
        rest = rest[end:]
    if rest not in ("Z", "+00:00", "z"):
        raise ValueError(f"not a UTC time: {text!r}")
    return base + seconds * 1_000_000 + micros


# Book levels of snapshots have been seen with event_time 1970-01-01T00:00:00Z.
_PLACEHOLDER_LIMIT: Final = 86_400_000_000


# --------------------------------------------------------------------------- wire structs


class _Envelope(msgspec.Struct, gc=False):
    channel: str | None = None
    timestamp: str | None = None
    sequence_num: int | None = None
    events: msgspec.Raw = msgspec.Raw()
    type: str | None = None
    message: str | None = None
    reason: str | None = None


class _L2Level(msgspec.Struct, gc=False):
    side: str
    price_level: float
    new_quantity: float
    event_time: str | None = None


class _L2Event(msgspec.Struct, gc=False):
    type: str
    product_id: str
    updates: list[_L2Level]


class _Trade(msgspec.Struct, gc=False):
    product_id: str
    trade_id: str
    price: float
    size: float
    time: str
    side: str | None = None


class _TradesEvent(msgspec.Struct, gc=False):
    trades: list[_Trade] = []
    type: str | None = None


class _Tick(msgspec.Struct, gc=False):
    product_id: str
    price: float | None = None
    volume_24_h: float | None = None
    best_bid: float | None = None
    best_bid_quantity: float | None = None
    best_ask: float | None = None
    best_ask_quantity: float | None = None


class _TickerEvent(msgspec.Struct, gc=False):
    tickers: list[_Tick] = []
    type: str | None = None


class _SubscriptionsEvent(msgspec.Struct, gc=False):
    subscriptions: dict[str, list[str]] = {}


class _Product(msgspec.Struct, gc=False):
    product_id: str
    quote_currency_id: str | None = None
    status: str | None = None
    trading_disabled: bool | None = None
    is_disabled: bool | None = None


class _Products(msgspec.Struct, gc=False):
    products: list[_Product]


class _PublicProduct(msgspec.Struct, gc=False):
    """One product of ``GET /api/v3/brokerage/market/products/{product_id}`` (the fields
    the instruments feed reads; sizes and prices are strings)."""

    product_id: str
    base_currency_id: str = ""
    quote_currency_id: str = ""
    product_type: str | None = None  # SPOT
    status: str | None = None  # online
    base_increment: str | None = None
    quote_increment: str | None = None
    price_increment: str | None = None
    base_min_size: str | None = None


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_L2: Final = msgspec.json.Decoder(list[_L2Event], strict=False)
_TRADES: Final = msgspec.json.Decoder(list[_TradesEvent], strict=False)
_TICKERS: Final = msgspec.json.Decoder(list[_TickerEvent], strict=False)
_SUBSCRIPTIONS: Final = msgspec.json.Decoder(list[_SubscriptionsEvent])
_PRODUCTS: Final = msgspec.json.Decoder(_Products)
_PUBLIC_PRODUCT: Final = msgspec.json.Decoder(_PublicProduct)
_ENCODER: Final = msgspec.json.Encoder()

_PARSE_ERRORS: Final = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError)


# --------------------------------------------------------------------------- adapter


class FrameSigner(Protocol):
    """What signs (un)subscribe frames: an API key (``collector.credentials`` reads one)."""

    def token(self, now_us: int) -> str:
        """A fresh JWT valid from ``now_us`` (wall-clock microseconds)."""
        ...


class CoinbaseAdapter(ExchangeAdapter):
    """Coinbase Advanced Trade market data (see the module docstring)."""

    name: ClassVar[str] = EXCHANGE
    default_url: ClassVar[str] = DEFAULT_URL
    default_rest_url: ClassVar[str | None] = DEFAULT_REST_URL
    symbols_path: ClassVar[str | None] = PRODUCTS_PATH
    # The REST base of the instruments listing (the books come over the WebSocket).
    takes_rest_url: ClassVar[bool] = True
    lists_instruments: ClassVar[bool] = True
    # One request per product a round; the public REST endpoints allow 10 requests a
    # second per IP (Coinbase Advanced Trade rate limits): well under it.
    instrument_requests_per_second: ClassVar[float] = 3.0
    max_symbols_per_connection: ClassVar[int | None] = MAX_PRODUCTS_PER_CONNECTION
    # The venue allows 8 unauthenticated messages/s per IP (all connections together).
    client_messages_per_second: ClassVar[float] = 4.0
    # Keepalive is the heartbeats subscription: nothing to send.
    keepalive_interval_secs: ClassVar[float | None] = None
    listing_quotes: ClassVar[bool] = True

    def __init__(self, credentials: FrameSigner | None = None) -> None:
        """``credentials`` sign every (un)subscribe frame; None: unauthenticated."""
        self.credentials = credentials
        # Survives reconnects: sessions come and go, the adapter stays.
        self.recent_trade_ids = RecentIds(RECENT_TRADE_IDS)

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        """Product ids that trade (``status`` online and trading not disabled)."""
        try:
            products = _PRODUCTS.decode(body).products
        except _PARSE_ERRORS as exc:
            raise ParseError(f"coinbase products: {type(exc).__name__}: {exc}") from exc
        return [p.product_id for p in products if _trading(p)]

    @classmethod
    def parse_listing(cls, body: bytes) -> list[Listing]:
        """Every product with its ``quote_currency_id`` and ``status`` (``online``; a
        product whose trading is disabled does not trade, whatever its status), sorted."""
        try:
            products = _PRODUCTS.decode(body).products
        except _PARSE_ERRORS as exc:
            raise ParseError(f"coinbase products: {type(exc).__name__}: {exc}") from exc
        listed = (
            Listing(p.product_id, p.quote_currency_id, p.status or "online", _trading(p))
            for p in products
        )
        return sorted(listed, key=lambda item: item.symbol)

    def instruments_requests(self, market: MarketSettings) -> list[InstrumentsRequest]:
        """One ``GET /api/v3/brokerage/market/products/{product_id}`` per product (the
        public Get Public Product endpoint; an unknown product answers HTTP 404)."""
        base = f"{self.rest_url(market)}{PRODUCTS_PATH}"
        return [
            InstrumentsRequest(self.name, f"{base}/{symbol}", (symbol,))
            for symbol in dict.fromkeys(self.normalize_symbol(s) for s in market.symbols)
        ]

    @classmethod
    def parse_instruments(
        cls, request: InstrumentsRequest, body: bytes, received_us: int
    ) -> list[Instrument]:
        """The row of the product of a Get Public Product answer: a spot pair (the
        product ids the collector takes are ``BASE-QUOTE``), sizes in the base currency;
        ``tick_size`` is ``price_increment`` (older answers: ``quote_increment``),
        ``lot_size`` ``base_increment``, ``min_size`` ``base_min_size``; ``status`` the
        venue's (``online``). The answer has no server time."""
        try:
            product = _PUBLIC_PRODUCT.decode(body)
        except msgspec.DecodeError as exc:
            raise ParseError(f"coinbase product: {exc}") from exc
        if product.product_id not in request.symbols:
            return []
        base, _, quote = product.product_id.partition("-")
        return [
            Instrument(
                request.exchange,
                product.product_id,
                None,
                received_us,
                None,
                kind="spot",
                base_asset=normalize_asset(product.base_currency_id or base),
                quote_asset=normalize_asset(product.quote_currency_id or quote),
                settle_asset=None,
                inverse=None,
                size_unit="base",
                tick_size=optional_float(product.price_increment or product.quote_increment),
                lot_size=optional_float(product.base_increment),
                min_size=optional_float(product.base_min_size),
                status=product.status,
            )
        ]

    @staticmethod
    def normalize_symbol(symbol: str) -> str:
        canonical = symbol.strip().upper()
        if not _SYMBOL_RE.fullmatch(canonical):
            raise ValueError(
                f"invalid coinbase product id {symbol!r}: expected BASE-QUOTE with a dash, "
                "e.g. 'BTC-USD'"
            )
        return canonical

    def open_session(self, plan: ConnectionPlan) -> CoinbaseSession:
        return CoinbaseSession(plan, self.credentials, self.recent_trade_ids)


# --------------------------------------------------------------------------- session


@attrs.frozen
class _Request:
    """One (un)subscribe frame waiting for its answer."""

    kind: str  # "subscribe" or "unsubscribe"
    channel: str
    products: tuple[str, ...]


_Handler = Callable[[_Envelope, int], list[Event]]


class CoinbaseSession(Session):
    """Protocol state of one Coinbase connection attempt (see the module docstring)."""

    def __init__(
        self,
        plan: ConnectionPlan,
        credentials: FrameSigner | None = None,
        recent_trade_ids: RecentIds | None = None,
    ) -> None:
        super().__init__(plan)
        self._credentials = credentials
        self._recent = (
            recent_trade_ids if recent_trade_ids is not None else RecentIds(RECENT_TRADE_IDS)
        )
        self._products: dict[str, list[str]] = {}  # channel -> products, in plan order
        for sub in plan.subscriptions:
            self._products.setdefault(CHANNELS[sub.feed], []).append(sub.symbol)
        self._pending: set[tuple[str, str]] = {
            (CHANNELS[s.feed], s.symbol) for s in plan.subscriptions
        }
        self._requests: deque[_Request] = deque()
        self._last_seq: int | None = None
        self._resyncing: set[str] = set()
        # Each book's crossed-book check (from its snapshot until a resync), and why a book
        # is resyncing where it was not a sequence gap (for its resync row).
        self._cross_checks: dict[str, CrossCheck] = {}
        self._resync_reasons: dict[str, BookResyncReason] = {}
        self._handlers: dict[str, _Handler] = {
            "l2_data": self._l2,
            "market_trades": self._trades,
            "ticker": self._ticker,
            "subscriptions": self._subscriptions,
        }
        # Subscriptions the venue refused for good.
        self.rejected: list[Subscription] = []
        # Error messages no open request explains (e.g. after every answer came).
        self.errors: list[str] = []

    # ----------------------------------------------------------------- frames

    def _frame(self, kind: str, channel: str, products: Sequence[str], now_us: int) -> str:
        if kind == "subscribe":
            self._requests.append(_Request(kind, channel, tuple(products)))
        frame: dict[str, Any] = {"type": kind, "product_ids": list(products), "channel": channel}
        if self._credentials is not None:
            frame["jwt"] = self._credentials.token(now_us)
        return _ENCODER.encode(frame).decode()

    def subscribe_frames(self, now_us: int) -> list[str]:
        frames = [
            self._frame("subscribe", channel, products, now_us)
            for channel, products in self._products.items()
        ]
        frames.append(self._frame("subscribe", HEARTBEATS, list(self.plan.symbols), now_us))
        return frames

    # ----------------------------------------------------------------- parsing

    def parse(self, payload: bytes, received_us: int) -> list[Event]:
        try:
            env = _ENVELOPE.decode(payload)
            events: list[Event] = []
            seq = env.sequence_num
            if seq is not None:
                last = self._last_seq
                if last is not None and seq != last + 1:
                    events.extend(self._on_gap(last, seq, received_us))
                if last is None or seq > last:
                    self._last_seq = seq
            channel = env.channel
            if channel is not None:
                handler = self._handlers.get(channel)
                if handler is not None:
                    events.extend(handler(env, received_us))
                return events
            if env.type == "error":
                events.extend(self._on_error(env, received_us))
                return events
            raise ParseError(
                f"coinbase: neither a channel message nor an error: {bytes(payload[:200])!r}"
            )
        except _PARSE_ERRORS as exc:
            raise ParseError(f"coinbase: {type(exc).__name__}: {exc}") from exc

    def _envelope_time(self, env: _Envelope) -> int | None:
        return None if env.timestamp is None else rfc3339_us(env.timestamp)

    # ----------------------------------------------------------------- sequence

    def _on_gap(self, last: int, seq: int, received_us: int) -> list[Event]:
        if seq > last:
            expected, count, what = last + 1, seq - last - 1, f"{seq - last - 1} message(s) missing"
        else:
            expected, count, what = last + 1, None, "duplicate or out-of-order message"
        books = [s for s in self._products.get("level2", []) if s not in self._resyncing]
        action = "; level2 resubscribed for a fresh snapshot" if books else ""
        events: list[Event] = [
            self.status(
                "gap",
                symbol,
                received_us,
                expected=expected,
                received=seq,
                count=count,
                detail=f"sequence_num: {what}{action}",
            )
            for symbol in self.plan.symbols
        ]
        if books:
            self._resyncing.update(books)
            for symbol in books:
                self._cross_checks.pop(symbol, None)
            self._outgoing.append(self._frame("unsubscribe", "level2", books, received_us))
            self._outgoing.append(self._frame("subscribe", "level2", books, received_us))
        return events

    # ----------------------------------------------------------------- acks and errors

    def _subscriptions(self, env: _Envelope, received_us: int) -> list[Event]:
        listed: set[tuple[str, str]] = set()
        for event in _SUBSCRIPTIONS.decode(env.events):
            for channel, products in event.subscriptions.items():
                listed.update((channel, p) for p in products)
        channels = {channel for channel, _ in listed}
        # The answer to the oldest open request of a channel now listed.
        request = next((r for r in self._requests if r.channel in channels), None)
        if request is not None:
            self._requests.remove(request)
        events: list[Event] = []
        for channel, symbol in sorted(self._pending & listed):
            self._pending.discard((channel, symbol))
            self._pending_subscriptions -= 1
            events.append(
                self.status("subscribed", symbol, received_us, data_type=FEEDS_BY_CHANNEL[channel])
            )
        if request is not None:
            for symbol in request.products:
                if (request.channel, symbol) in self._pending:
                    events.append(
                        self._reject(
                            request.channel,
                            symbol,
                            received_us,
                            "not in the venue's subscriptions acknowledgement",
                        )
                    )
        return events

    def _on_error(self, env: _Envelope, received_us: int) -> list[Event]:
        text = env.message or "error"
        if env.reason:
            text = f"{text}: {env.reason}"
        request = self._requests.popleft() if self._requests else None
        if request is None:
            self.errors.append(text)
            return []
        open_products = [p for p in request.products if (request.channel, p) in self._pending]
        if len(open_products) > 1:
            # Which product was refused is not said: split the request until it stands alone.
            half = len(open_products) // 2
            for part in (open_products[:half], open_products[half:]):
                self._outgoing.append(self._frame("subscribe", request.channel, part, received_us))
            return []
        if not open_products:
            self.errors.append(text)
            return []
        return [self._reject(request.channel, open_products[0], received_us, text)]

    def _reject(self, channel: str, symbol: str, received_us: int, text: str) -> Event:
        self._pending.discard((channel, symbol))
        self._pending_subscriptions -= 1
        feed = FEEDS_BY_CHANNEL[channel]
        self.rejected.append(Subscription(symbol, feed))
        return self.status(
            "subscribe_error",
            symbol,
            received_us,
            data_type=feed,
            detail=f"{channel} {symbol}: {text}",
        )

    # ----------------------------------------------------------------- channels

    def _l2(self, env: _Envelope, received_us: int) -> list[Event]:
        seq = env.sequence_num
        events: list[Event] = []
        for event in _L2.decode(env.events):
            bid_values: list[float] = []
            ask_values: list[float] = []
            bid, ask = bid_values.append, ask_values.append
            for level in event.updates:
                if level.side == "bid":
                    bid(level.price_level)
                    bid(level.new_quantity)
                elif level.side == "offer" or level.side == "ask":
                    ask(level.price_level)
                    ask(level.new_quantity)
                else:
                    raise ValueError(f"unknown book side {level.side!r}")
            symbol = event.product_id
            kind: BookKind
            if event.type == "snapshot":
                kind = "snapshot"
                ts = self._envelope_time(env)
                if symbol in self._resyncing:
                    self._resyncing.discard(symbol)
                    reason = self._resync_reasons.pop(symbol, None)
                    after = "a sequence_num gap" if reason is None else RESYNC_REASON_TEXT[reason]
                    events.append(
                        self.status(
                            "resync",
                            symbol,
                            received_us,
                            data_type="orderbook",
                            received=seq,
                            detail=f"fresh level2 snapshot after a {after}",
                            timestamp_exchange=ts,
                        )
                    )
            elif event.type == "update":
                kind = "delta"
                ts = None
                first_time = event.updates[0].event_time if event.updates else None
                if first_time is not None:
                    ts = rfc3339_us(first_time)
                    if ts < _PLACEHOLDER_LIMIT:
                        ts = None
                if ts is None:
                    ts = self._envelope_time(env)
            else:
                continue
            bids = levels_from_values(bid_values)
            asks = levels_from_values(ask_values)
            events.append(
                BookUpdate(EXCHANGE, symbol, ts, received_us, seq, kind, seq, None, bids, asks)
            )
            if kind == "snapshot":
                check = self._cross_checks[symbol] = CrossCheck()
                if check.snapshot(bids, asks):
                    events.append(self._book_crossed(symbol, check, received_us, seq, " in it"))
            elif symbol not in self._resyncing:
                found = self._cross_checks.get(symbol)
                if found is not None and found.apply(bids, asks):
                    events.append(self._book_crossed(symbol, found, received_us, seq))
        return events

    def _book_crossed(
        self, symbol: str, check: CrossCheck, received_us: int, seq: int | None, where: str = ""
    ) -> Event:
        """The book is crossed: its gap row, and ``level2`` of that product alone resubscribed
        (its updates are written until the fresh snapshot, unchecked)."""
        self._cross_checks.pop(symbol, None)
        self._resyncing.add(symbol)
        self._resync_reasons[symbol] = "crossed"
        self._outgoing.append(self._frame("unsubscribe", "level2", [symbol], received_us))
        self._outgoing.append(self._frame("subscribe", "level2", [symbol], received_us))
        detail = f"{check.describe()}{where}; level2 resubscribed for a fresh snapshot"
        return self.book_invalid(symbol, received_us, "crossed", detail)

    def _trades(self, env: _Envelope, received_us: int) -> list[Event]:
        events: list[Event] = []
        recent = self._recent
        for event in _TRADES.decode(env.events):
            for trade in event.trades:
                symbol = trade.product_id
                trade_id = trade.trade_id
                if not recent.add(symbol, trade_id):
                    self.count_discard(symbol, "trades", "duplicate")
                    continue
                events.append(
                    Trade(
                        EXCHANGE,
                        symbol,
                        rfc3339_us(trade.time),
                        received_us,
                        int(trade_id) if trade_id.isdigit() else None,
                        trade_id,
                        trade.price,
                        trade.size,
                        None if trade.side is None else _SIDES.get(trade.side),
                    )
                )
        return events

    def _ticker(self, env: _Envelope, received_us: int) -> list[Event]:
        ts = self._envelope_time(env)
        seq = env.sequence_num
        return [
            Ticker(
                EXCHANGE,
                tick.product_id,
                ts,
                received_us,
                seq,
                tick.best_bid,
                tick.best_bid_quantity,
                tick.best_ask,
                tick.best_ask_quantity,
                tick.price,
                tick.volume_24_h,
            )
            for event in _TICKERS.decode(env.events)
            for tick in event.tickers
        ]


def _trading(product: _Product) -> bool:
    """Whether a listed product trades: ``status`` online (or absent) and neither trading
    nor the product disabled."""
    return (
        product.status in (None, "online")
        and not product.trading_disabled
        and not product.is_disabled
    )
