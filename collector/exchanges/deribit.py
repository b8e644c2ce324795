"""Deribit API v2 (sans-IO): JSON-RPC over WebSocket, subscriptions, parsing, book continuity.

One connection (``{base_url}/ws/api/v2``) carries many channels, added with
``public/subscribe`` requests after the handshake. Every request is a JSON-RPC call with an
integer ``id``; the venue answers ``{"id": N, "result": [...]}`` (the channels it did
subscribe) or ``{"id": N, "error": {"code": C, "message": M}}``. Data arrives as
notifications ``{"method": "subscription", "params": {"channel": C, "data": D}}`` and the
channel name decides how ``data`` is read. Numbers are JSON numbers; timestamps are
milliseconds.

Feeds and channels (the ``100ms`` interval: ``raw`` needs an authenticated connection):

- ``trades`` -> ``trades.{instrument}.100ms`` (``data`` is a list of trades);
- ``orderbook`` -> ``book.{instrument}.100ms``: a full snapshot (``type: snapshot``) after
  subscribing, then changes (``type: change``); levels are ``[action, price, amount]`` with
  action ``new``/``change``/``delete``; a ``delete`` becomes size 0 in our delta;
- ``ticker`` -> ``ticker.{instrument}.100ms`` (best bid/ask, last price, 24 h volume);
- ``derivatives`` -> the same ``ticker.{instrument}.100ms`` channel (subscribed once when
  both feeds are asked for), read into ``derivative_ticker`` rows, one per notification
  (each carries the complete ticker, so no merging is needed): mark, index and last price,
  ``current_funding`` and ``funding_8h`` of perpetuals (no funding time: funding is
  continuous), open interest, the estimated delivery price, the settlement (or, once
  closed, delivery) price, and for options the implied volatilities, greeks, underlying
  price and index. Deribit sends IVs in percent (``"mark_iv": 120.74`` in the recorded
  traffic); they are stored as fractions (1.2074), as the other venues send them. Open
  interest and trade amounts are in USD for inverse perpetuals and futures, in the base
  coin for options and linear (``_USDC``) instruments (Deribit's ticker docs);
- ``liquidations`` -> the ``trades.{instrument}.100ms`` channel (Deribit has no
  liquidation stream): a trade with a ``liquidation`` field also gives ``liquidations``
  rows. ``"T"``: the taker was liquidated, its liquidation order is the trade's direction;
  ``"M"``: the maker was, its order the opposite side; ``"MT"``: both, two rows (taker
  first). ``position_side`` follows (a liquidation ``sell`` closes a ``long``). The row's
  id and sequence are the trade's ``trade_id`` and ``trade_seq``, its price the trade
  price (``price_kind = "trade"``). The trade itself is a ``trades`` row as well when that
  feed is asked for;
- ``raw`` -> no channel: the connection keeps every frame (``ConnectionPlan.raw``).

Trade ``side`` is Deribit's ``direction``, read as the taker's (aggressor's) side as tardis,
cryptofeed and nautilus_trader read it (Deribit's docs say only "buy or sell"). ``size`` is the
venue's ``amount``: USD for inverse perpetuals and futures, base currency (or contracts) for
options and linear instruments.

Keepalive: the first frame sent is ``public/set_heartbeat`` (interval
:data:`HEARTBEAT_INTERVAL_SECS`); the venue then sends ``heartbeat`` notifications, and for a
``test_request`` the session answers ``public/test`` through :attr:`Actions.send` (the
venue closes a connection that does not answer). So traffic arrives at least every interval,
which also keeps the connection's stale watchdog fed.

Sequence rules (per instrument, per session; a reconnect starts afresh):

- book: every change has ``prev_change_id``, which must equal the previous message's
  ``change_id``. Otherwise a ``gap`` status row (expected = last ``change_id``, received =
  ``prev_change_id``; ``count`` is unknown as change ids are not contiguous), and the session
  resubscribes the book channel (``public/unsubscribe`` + ``public/subscribe`` via
  :attr:`Actions.send`). Changes that arrive until the new snapshot cannot be applied to
  anything and are dropped (counted by :meth:`Session.count_discard`, reason
  ``while_resyncing``, as is the change that revealed the gap); the new snapshot is written
  with a ``resync`` status row before it. A change with ``change_id`` at or below the last
  one is stale: dropped and counted (reason ``stale``). After each snapshot and change the
  book is checked for a crossing (:class:`~collector.exchanges.book_check.CrossCheck`): a
  crossed book is a ``gap`` row (:meth:`Session.book_invalid`) and the same
  resubscription; the ``resync`` row of its new snapshot ends ``after a crossed book``.
- trades: ``trade_seq`` (per instrument) should grow by exactly 1; a jump is a ``gap`` row and
  a repeat is dropped and counted (reason ``duplicate``). This is a heuristic: Deribit does not document
  ``trade_seq`` as gap-free (exchanges.md: UNCONFIRMED). The rows name ``trades``, or
  ``liquidations`` on a connection that takes the trades channel for liquidations only.

Subscribe answers: a channel missing from the ``result`` list was not subscribed (the venue
answers ``"result": []`` for an unknown instrument) -> ``subscribe_error`` row for it. An
error answer to a request of several channels is bisected (both halves sent again) until
the failing channel stands alone, so the other instruments keep flowing. A finally refused
subscription counts as resolved in ``pending_subscriptions``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import ClassVar, Final, Literal

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
    Side,
    SizeUnit,
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
from collector.exchanges.book_check import CrossCheck
from collector.exchanges.common import choices, normalize_asset

EXCHANGE: Final = "deribit"
DEFAULT_URL: Final = "wss://www.deribit.com"
WS_PATH: Final = "/ws/api/v2"
DEFAULT_REST_URL: Final = "https://www.deribit.com"
# The kinds get_instruments lists (``symbols deribit --category KIND``).
INSTRUMENT_KINDS: Final = ("future", "option", "spot", "future_combo", "option_combo")
INTERVAL: Final = "100ms"
# public/set_heartbeat interval (the venue's minimum is 10 s). Below the default 30 s
# message timeout, so a quiet connection still gets a frame in time.
HEARTBEAT_INTERVAL_SECS: Final = 15
# Channels per connection: the venue states no limit (exchanges.md: UNCONFIRMED); keep
# connections moderate. At most 32 connections per IP.
MAX_CHANNELS_PER_CONNECTION: Final = 300
MAX_CHANNELS_PER_SUBSCRIBE: Final = 100
_CHANNEL_PREFIX: Final = {
    "trades": "trades",
    "orderbook": "book",
    "ticker": "ticker",
    "derivatives": "ticker",
    "liquidations": "trades",
}
_FEEDS_OF_PREFIX: Final = {
    prefix: tuple(feed for feed, p in _CHANNEL_PREFIX.items() if p == prefix)
    for prefix in _CHANNEL_PREFIX.values()
}
_DERIVATIVE_FEEDS: Final = ("derivatives", "liquidations")

# BTC-PERPETUAL, BTC-27DEC24, BTC-27DEC24-100000-C, BTC_USDC, BTC_USDC-PERPETUAL,
# XRP_USDC-30AUG24-0d625-C (a decimal strike spelled with "d"), ETH-FS-27DEC24_PERP (combos).
_SYMBOL_RE: Final = re.compile(
    r"[A-Z0-9]{2,16}(_[A-Z0-9]{2,16})?(-([A-Z0-9_]{1,20}|[0-9]+d[0-9]+)){0,4}"
)
_DECIMAL_STRIKE_RE: Final = re.compile(r"[0-9]+[dD][0-9]+")


# --------------------------------------------------------------------------- wire structs


class _Error(msgspec.Struct, gc=False):
    code: int | None = None
    message: str | None = None
    data: msgspec.Raw = msgspec.Raw()


class _Params(msgspec.Struct, gc=False):
    channel: str | None = None
    data: msgspec.Raw = msgspec.Raw()
    type: str | None = None  # heartbeat notifications: "heartbeat" | "test_request"


class _Envelope(msgspec.Struct, gc=False):
    method: str | None = None
    params: _Params | None = None
    id: int | None = None
    result: msgspec.Raw = msgspec.Raw()
    error: _Error | None = None


class _Trade(msgspec.Struct, gc=False):
    trade_id: str
    trade_seq: int
    timestamp: int
    price: float
    amount: float
    direction: str
    # Present only on a trade caused by a liquidation: "M" (the maker side was being
    # liquidated), "T" (the taker side) or "MT" (both).
    liquidation: str | None = None


class _Book(msgspec.Struct, gc=False):
    timestamp: int
    change_id: int
    bids: list[tuple[str, float, float]]
    asks: list[tuple[str, float, float]]
    type: str | None = None
    prev_change_id: int | None = None


class _Stats(msgspec.Struct, gc=False):
    volume: float | None = None


class _Ticker(msgspec.Struct, gc=False):
    timestamp: int
    best_bid_price: float | None = None
    best_bid_amount: float | None = None
    best_ask_price: float | None = None
    best_ask_amount: float | None = None
    last_price: float | None = None
    stats: _Stats | None = None


class _Greeks(msgspec.Struct, gc=False):
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    rho: float | None = None


class _DerivativeTicker(_Ticker, gc=False):
    """The whole ticker object (the ``ticker`` feed alone decodes the smaller parent)."""

    mark_price: float | None = None
    index_price: float | None = None
    current_funding: float | None = None
    funding_8h: float | None = None
    open_interest: float | None = None
    estimated_delivery_price: float | None = None
    settlement_price: float | None = None
    delivery_price: float | None = None
    mark_iv: float | None = None
    bid_iv: float | None = None
    ask_iv: float | None = None
    greeks: _Greeks | None = None
    underlying_price: float | None = None
    underlying_index: str | None = None


class _Instrument(msgspec.Struct, gc=False):
    instrument_name: str
    is_active: bool = True


class _Instruments(msgspec.Struct, gc=False):
    result: list[_Instrument]


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_TRADES: Final = msgspec.json.Decoder(list[_Trade])
_BOOK: Final = msgspec.json.Decoder(_Book)
_TICKER: Final = msgspec.json.Decoder(_Ticker)
_DERIVATIVE_TICKER: Final = msgspec.json.Decoder(_DerivativeTicker)
_RESULT_CHANNELS: Final = msgspec.json.Decoder(list[str])
_INSTRUMENTS: Final = msgspec.json.Decoder(_Instruments)
_ENCODER: Final = msgspec.json.Encoder()

_PARSE_ERRORS: Final = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError)


def channel_name(symbol: str, feed: str) -> str:
    """The channel of one (instrument, feed)."""
    try:
        prefix = _CHANNEL_PREFIX[feed]
    except KeyError:
        raise ValueError(f"deribit has no channel for feed {feed!r}") from None
    return f"{prefix}.{symbol}.{INTERVAL}"


def _unit(instrument: str) -> SizeUnit:
    """The unit of an instrument's open interest and trade amounts: USD for inverse
    perpetuals and futures, the base coin for options and linear (``BTC_USDC-...``) ones."""
    currency, _, rest = instrument.partition("-")
    if "_" in currency or rest.endswith(("-C", "-P")):
        return "base"
    return "usd"


def _fraction(percent: float | None) -> float | None:
    return None if percent is None else percent / 100


def _is_spot(instrument: str) -> bool:
    """A spot pair (``BTC_USDC``) has no dash; every derivative's name has one."""
    return "-" not in instrument


_OTHER_SIDE: Final[dict[str, Side]] = {"buy": "sell", "sell": "buy"}
_CLOSES: Final[dict[str, Literal["long", "short"]]] = {"sell": "long", "buy": "short"}


def _levels(levels: list[tuple[str, float, float]]) -> Levels:
    """``[action, price, amount]`` as flat levels; a ``delete`` is size 0."""
    values: list[float] = []
    append = values.append
    for action, price, amount in levels:
        append(price)
        append(0.0 if action == "delete" else amount)
    return levels_from_values(values)


# --------------------------------------------------------------------------- adapter


class DeribitAdapter(ExchangeAdapter):
    """Deribit (futures, perpetuals, options, spot) market data over JSON-RPC WebSocket."""

    name: ClassVar[str] = EXCHANGE
    default_url: ClassVar[str] = DEFAULT_URL
    ws_path: ClassVar[str] = WS_PATH
    default_rest_url: ClassVar[str | None] = DEFAULT_REST_URL
    symbols_path: ClassVar[str | None] = "/api/v2/public/get_instruments?currency=any&expired=false"
    # Accepted and checked since the first version, though no request of a market uses it.
    takes_rest_url: ClassVar[bool] = True
    stream_feeds: ClassVar[tuple[Feed, ...]] = (
        "trades",
        "orderbook",
        "ticker",
        "derivatives",
        "liquidations",
    )
    option_notes: ClassVar[Mapping[str, str]] = {
        "book_mode/book_depth": ": the order book is the full "
        "book.{instrument}.100ms snapshot-plus-changes stream",
        "category": ": the instrument name says what it is "
        "(BTC-PERPETUAL, BTC-27DEC24, BTC-27DEC24-100000-C, BTC_USDC)",
    }
    max_subscriptions_per_connection: ClassVar[int | None] = MAX_CHANNELS_PER_CONNECTION
    # Public requests are credit-limited per IP (numbers UNCONFIRMED): stay modest.
    client_messages_per_second: ClassVar[float] = 5.0
    # No client-initiated keepalive: the session answers the venue's test_request.
    keepalive_interval_secs: ClassVar[float | None] = None

    @classmethod
    def check_market(cls, market: MarketSettings) -> None:
        """The standard checks, and no derivatives or liquidations feed for a spot pair
        (``BTC_USDC``): it has no such data."""
        super().check_market(market)
        wanted = [feed for feed in _DERIVATIVE_FEEDS if feed in market.feeds]
        if not wanted:
            return
        spot = []
        for symbol in market.symbols:
            try:
                canonical = cls.normalize_symbol(symbol)
            except ValueError:
                continue  # reported with the symbols
            if _is_spot(canonical):
                spot.append(canonical)
        if spot:
            raise ValueError(
                f"deribit spot pairs have no {' or '.join(wanted)} feed: {', '.join(spot)} "
                "(put them in a market without it)"
            )

    @classmethod
    def symbols_url(cls, rest_url: str | None = None, category: str | None = None) -> str:
        """``get_instruments`` of every currency, of one ``kind`` when ``category`` names
        one (``future``, ``option``, ``spot``, ``future_combo``, ``option_combo``; none:
        every kind). ValueError for another."""
        url = super().symbols_url(rest_url)
        if category is None:
            return url
        if category not in INSTRUMENT_KINDS:
            raise ValueError(
                f"deribit category must be an instrument kind, "
                f"{choices(INSTRUMENT_KINDS, quoted=True)} (got {category!r})"
            )
        return f"{url}&kind={category}"

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        try:
            instruments = _INSTRUMENTS.decode(body).result
        except msgspec.DecodeError as exc:
            raise ParseError(f"deribit get_instruments: {exc}") from exc
        return [i.instrument_name for i in instruments if i.is_active]

    @staticmethod
    def normalize_symbol(symbol: str) -> str:
        parts = symbol.strip().split("-")
        canonical = "-".join(
            part.lower() if _DECIMAL_STRIKE_RE.fullmatch(part) else part.upper() for part in parts
        )
        if not _SYMBOL_RE.fullmatch(canonical):
            raise ValueError(
                f"invalid deribit instrument {symbol!r}: expected a Deribit instrument name "
                "such as 'BTC-PERPETUAL', 'BTC-27DEC24', 'BTC-27DEC24-100000-C', 'BTC_USDC' "
                "or 'BTC_USDC-PERPETUAL'"
            )
        return canonical

    lists_instruments: ClassVar[bool] = True
    # Deribit asks for at most a sustained 1 request/s on its instrument endpoints.
    instrument_requests_per_second: ClassVar[float] = 1.0

    def instruments_requests(self, market: MarketSettings) -> list[InstrumentsRequest]:
        """One ``public/get_instrument?instrument_name=I`` per instrument (the whole
        listing is several megabytes, most of it options nobody asked for)."""
        base = f"{self.rest_url(market)}/api/v2/public/get_instrument?instrument_name="
        return [
            InstrumentsRequest(EXCHANGE, base + symbol, (symbol,))
            for symbol in dict.fromkeys(self.normalize_symbol(s) for s in market.symbols)
        ]

    @classmethod
    def parse_instruments(
        cls, request: InstrumentsRequest, body: bytes, received_us: int
    ) -> list[Instrument]:
        return parse_instruments(request, body, received_us)

    def open_session(self, plan: ConnectionPlan) -> DeribitSession:
        return DeribitSession(plan)


# --------------------------------------------------------------------------- session

_Handler = Callable[[str, msgspec.Raw, int], list[Event]]
_Item = tuple[Subscription, str]  # (subscription, channel)
_RequestKind = Literal["subscribe", "resubscribe", "unsubscribe", "other"]


@attrs.frozen
class _Request:
    kind: _RequestKind
    items: tuple[_Item, ...] = ()


class DeribitSession(Session):
    """Protocol state of one Deribit connection attempt (see the module docstring)."""

    def __init__(self, plan: ConnectionPlan) -> None:
        super().__init__(plan)
        self._items: tuple[_Item, ...] = tuple(
            (sub, channel_name(sub.symbol, sub.feed)) for sub in plan.subscriptions
        )
        # symbol -> the feeds subscribed for it.
        self._feeds: dict[str, set[str]] = {}
        for sub in plan.subscriptions:
            self._feeds.setdefault(sub.symbol, set()).add(sub.feed)
        self._next_id = 1
        self._requests: dict[int, _Request] = {}
        self._routes: dict[str, tuple[_Handler, str]] = {}
        self._last_change_id: dict[str, int] = {}
        self._last_trade_seq: dict[str, int] = {}
        # Instruments whose book is being resubscribed after a gap (until the new snapshot).
        self._resyncing: set[str] = set()
        # Each book's crossed-book check (from its snapshot until a resync), and why a book
        # is resyncing where it was not a sequence gap (for its resync row).
        self._cross_checks: dict[str, CrossCheck] = {}
        self._resync_reasons: dict[str, BookResyncReason] = {}
        self.test_requests_answered = 0
        self.rejected: list[Subscription] = []

    # ----------------------------------------------------------------- requests

    def _call(self, method: str, params: dict[str, object], request: _Request) -> str:
        request_id = self._next_id
        self._next_id += 1
        self._requests[request_id] = request
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        return _ENCODER.encode(frame).decode()

    def _subscribe(self, items: tuple[_Item, ...], kind: _RequestKind = "subscribe") -> str:
        channels = list(dict.fromkeys(ch for _, ch in items))  # two feeds, one channel
        return self._call("public/subscribe", {"channels": channels}, _Request(kind, items))

    def subscribe_frames(self, now_us: int = 0) -> list[str]:
        heartbeat = self._call(
            "public/set_heartbeat", {"interval": HEARTBEAT_INTERVAL_SECS}, _Request("other")
        )
        return [heartbeat] + [
            self._subscribe(self._items[i : i + MAX_CHANNELS_PER_SUBSCRIBE])
            for i in range(0, len(self._items), MAX_CHANNELS_PER_SUBSCRIBE)
        ]

    def _resubscribe_book(self, symbol: str) -> None:
        self._cross_checks.pop(symbol, None)
        if symbol in self._resyncing:
            return
        self._resyncing.add(symbol)
        channel = channel_name(symbol, "orderbook")
        item = (Subscription(symbol, "orderbook"), channel)
        self._outgoing.append(
            self._call("public/unsubscribe", {"channels": [channel]}, _Request("unsubscribe"))
        )
        self._outgoing.append(self._subscribe((item,), "resubscribe"))

    def _on_response(self, env: _Envelope, received_us: int) -> list[Event]:
        request_id = env.id
        if request_id is None:
            return []
        request = self._requests.pop(request_id, None)
        if request is None or request.kind in ("other", "unsubscribe"):
            return []
        initial = request.kind == "subscribe"
        items = request.items
        if env.error is not None:
            if len(items) > 1:
                half = len(items) // 2
                self._outgoing.append(self._subscribe(items[:half], request.kind))
                self._outgoing.append(self._subscribe(items[half:], request.kind))
                return []
            error = env.error
            sub, channel = items[0]
            return self._refused(
                sub, received_us, f"{channel}: {error.message} (code {error.code})", initial
            )
        accepted = set(_RESULT_CHANNELS.decode(env.result)) if env.result else set()
        events: list[Event] = []
        for sub, channel in items:
            if channel in accepted:
                if initial:
                    self._pending_subscriptions -= 1
                    events.append(
                        self.status(
                            "subscribed",
                            sub.symbol,
                            received_us,
                            data_type=feed_data_type(sub.feed),
                        )
                    )
            else:
                detail = f"{channel}: not in the public/subscribe result (unknown instrument?)"
                events.extend(self._refused(sub, received_us, detail, initial))
        return events

    def _refused(
        self, sub: Subscription, received_us: int, detail: str, initial: bool
    ) -> list[Event]:
        if initial:
            self._pending_subscriptions -= 1
        if sub.feed == "orderbook":
            self._resyncing.discard(sub.symbol)
        self.rejected.append(sub)
        return [
            self.status(
                "subscribe_error",
                sub.symbol,
                received_us,
                data_type=feed_data_type(sub.feed),
                detail=detail,
            )
        ]

    # ----------------------------------------------------------------- parsing

    def parse(self, payload: bytes, received_us: int) -> list[Event]:
        try:
            env = _ENVELOPE.decode(payload)
            params = env.params
            if env.method == "subscription" and params is not None:
                channel = params.channel
                if channel is None or not params.data:
                    raise ParseError("deribit: subscription notification without channel/data")
                route = self._routes.get(channel)
                if route is None:
                    route = self._routes[channel] = self._route(channel)
                handler, symbol = route
                return handler(symbol, params.data, received_us)
            if env.method == "heartbeat":
                if params is not None and params.type == "test_request":
                    self.test_requests_answered += 1
                    self._outgoing.append(self._call("public/test", {}, _Request("other")))
                return []
            if env.id is not None or env.error is not None:
                return self._on_response(env, received_us)
            return []
        except _PARSE_ERRORS as exc:
            raise ParseError(f"deribit: {type(exc).__name__}: {exc}") from exc

    def _route(self, channel: str) -> tuple[_Handler, str]:
        """The handler of a channel (any interval) of a subscribed (instrument, feed)."""
        kind, _, rest = channel.partition(".")
        symbol = rest.rpartition(".")[0]
        subscribed = self._feeds.get(symbol, set())
        feeds = [feed for feed in _FEEDS_OF_PREFIX.get(kind, ()) if feed in subscribed]
        if not feeds:
            return _ignore, symbol
        handler: _Handler
        if kind == "book":
            handler = self._book
        elif kind == "trades":
            handler = (
                self._trades
                if feeds == ["trades"]
                else partial(self._trades, with_trades="trades" in feeds, with_liquidations=True)
            )
        elif feeds == ["ticker"]:
            handler = self._ticker
        elif feeds == ["derivatives"]:
            handler = self._derivative_ticker
        else:
            handler = self._both_tickers
        return handler, symbol

    def _trades(
        self,
        symbol: str,
        data: msgspec.Raw,
        received_us: int,
        *,
        with_trades: bool = True,
        with_liquidations: bool = False,
    ) -> list[Event]:
        """Trade rows (``with_trades``) and the liquidation rows of flagged trades
        (``with_liquidations``) of one trades notification."""
        events: list[Event] = []
        data_type = "trades" if with_trades else "liquidations"
        last = self._last_trade_seq.get(symbol)
        for trade in _TRADES.decode(data):
            seq = trade.trade_seq
            if last is not None and seq != last + 1:
                if seq <= last:
                    self.count_discard(symbol, data_type, "duplicate")
                    continue
                events.append(
                    self.gap(
                        symbol,
                        received_us,
                        data_type,
                        last + 1,
                        seq,
                        timestamp_exchange=trade.timestamp * 1000,
                    )
                )
            last = seq
            if with_liquidations and trade.liquidation is not None:
                events += self._liquidations(symbol, trade, received_us)
            if not with_trades:
                continue
            events.append(
                Trade(
                    EXCHANGE,
                    symbol,
                    trade.timestamp * 1000,
                    received_us,
                    seq,
                    trade.trade_id,
                    trade.price,
                    trade.amount,
                    # ``direction``: the docs say only "buy or sell"; the taker's side
                    # per tardis, cryptofeed and nautilus_trader (UNCONFIRMED by Deribit).
                    "buy"
                    if trade.direction == "buy"
                    else "sell"
                    if trade.direction == "sell"
                    else None,
                )
            )
        if last is not None:
            self._last_trade_seq[symbol] = last
        return events

    def _liquidations(self, symbol: str, trade: _Trade, received_us: int) -> list[Event]:
        """The liquidation rows of a trade flagged ``liquidation`` (see the module
        docstring for the sides)."""
        taker = trade.direction
        maker = _OTHER_SIDE.get(taker)
        if maker is None:
            return []
        flag = trade.liquidation or ""
        sides: list[Side] = []
        if "T" in flag:
            sides.append(_OTHER_SIDE[maker])  # the taker's own side, typed
        if "M" in flag:
            sides.append(maker)
        unit = _unit(symbol)
        return [
            Liquidation(
                EXCHANGE,
                symbol,
                trade.timestamp * 1000,
                received_us,
                trade.trade_seq,
                trade.trade_id,
                side,
                _CLOSES[side],
                trade.price,
                "trade",
                trade.amount,
                unit,
            )
            for side in sides
        ]

    def _book(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        msg = _BOOK.decode(data)
        change_id = msg.change_id
        events: list[Event] = []
        if msg.type == "snapshot" or (msg.type is None and msg.prev_change_id is None):
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
                        received=change_id,
                        detail=f"new book snapshot change_id={change_id}{after}",
                        timestamp_exchange=msg.timestamp * 1000,
                    )
                )
            self._last_change_id[symbol] = change_id
            snapshot = BookUpdate(
                EXCHANGE,
                symbol,
                msg.timestamp * 1000,
                received_us,
                change_id,
                "snapshot",
                change_id,
                None,
                _levels(msg.bids),
                _levels(msg.asks),
            )
            events.append(snapshot)
            started = self._cross_checks[symbol] = CrossCheck()
            if started.snapshot(snapshot.bids, snapshot.asks):
                events.append(self._book_crossed(symbol, started, received_us, " in the snapshot"))
            return events
        if symbol in self._resyncing:
            self.count_discard(symbol, "orderbook", "while_resyncing")
            return events
        last = self._last_change_id.get(symbol)
        if last is not None and change_id <= last:
            self.count_discard(symbol, "orderbook", "stale")
            return events
        if last is None or msg.prev_change_id != last:
            # A change without the snapshot it builds on, or a skipped change: resubscribe.
            events.append(
                self.status(
                    "gap",
                    symbol,
                    received_us,
                    data_type="orderbook",
                    expected=last,
                    received=msg.prev_change_id,
                    detail=(
                        "book change before any snapshot"
                        if last is None
                        else "prev_change_id is not the last change_id"
                    ),
                    timestamp_exchange=msg.timestamp * 1000,
                )
            )
            self._last_change_id.pop(symbol, None)
            self._resubscribe_book(symbol)
            self.count_discard(symbol, "orderbook", "while_resyncing")
            return events
        self._last_change_id[symbol] = change_id
        update = BookUpdate(
            EXCHANGE,
            symbol,
            msg.timestamp * 1000,
            received_us,
            change_id,
            "delta",
            change_id,
            msg.prev_change_id,
            _levels(msg.bids),
            _levels(msg.asks),
        )
        events.append(update)
        check = self._cross_checks.get(symbol)
        if check is not None and check.apply(update.bids, update.asks):
            events.append(self._book_crossed(symbol, check, received_us))
        return events

    def _book_crossed(
        self, symbol: str, check: CrossCheck, received_us: int, where: str = ""
    ) -> Event:
        """The book is crossed: its gap row, and a resubscription of that book alone (the
        changes until its fresh snapshot are dropped and counted, as after a gap)."""
        self._last_change_id.pop(symbol, None)
        self._resubscribe_book(symbol)
        self._resync_reasons[symbol] = "crossed"
        detail = f"{check.describe()}{where}; resubscribing for a new snapshot"
        return self.book_invalid(symbol, received_us, "crossed", detail)

    def _ticker(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        return [_ticker_row(symbol, _TICKER.decode(data), received_us)]

    def _derivative_ticker(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        return [_derivative_row(symbol, _DERIVATIVE_TICKER.decode(data), received_us)]

    def _both_tickers(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        msg = _DERIVATIVE_TICKER.decode(data)
        return [_ticker_row(symbol, msg, received_us), _derivative_row(symbol, msg, received_us)]


def _ticker_row(symbol: str, msg: _Ticker, received_us: int) -> Ticker:
    return Ticker(
        EXCHANGE,
        symbol,
        msg.timestamp * 1000,
        received_us,
        None,
        msg.best_bid_price,
        msg.best_bid_amount,
        msg.best_ask_price,
        msg.best_ask_amount,
        msg.last_price,
        None if msg.stats is None else msg.stats.volume,
    )


def _derivative_row(symbol: str, msg: _DerivativeTicker, received_us: int) -> DerivativeTicker:
    greeks = msg.greeks or _NO_GREEKS
    settlement = msg.settlement_price if msg.settlement_price is not None else msg.delivery_price
    return DerivativeTicker(
        EXCHANGE,
        symbol,
        msg.timestamp * 1000,
        received_us,
        None,
        "ticker",
        last_price=msg.last_price,
        mark_price=msg.mark_price,
        index_price=msg.index_price,
        funding_rate=msg.current_funding,
        funding_8h=msg.funding_8h,
        open_interest=msg.open_interest,
        open_interest_unit=None if msg.open_interest is None else _unit(symbol),
        estimated_settlement_price=msg.estimated_delivery_price,
        settlement_price=settlement,
        mark_iv=_fraction(msg.mark_iv),
        bid_iv=_fraction(msg.bid_iv),
        ask_iv=_fraction(msg.ask_iv),
        delta=greeks.delta,
        gamma=greeks.gamma,
        vega=greeks.vega,
        theta=greeks.theta,
        rho=greeks.rho,
        underlying_price=msg.underlying_price,
        underlying_index=msg.underlying_index,
    )


_NO_GREEKS: Final = _Greeks()


def _ignore(symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
    return []


# --------------------------------------------------------------------------- instruments


class _InstrumentInfo(msgspec.Struct, gc=False):
    instrument_name: str
    kind: str  # future, option, spot, future_combo, option_combo
    base_currency: str
    quote_currency: str
    settlement_currency: str | None = None
    settlement_period: str | None = None  # perpetual, day, week, month
    instrument_type: str | None = None  # reversed (inverse), linear
    future_type: str | None = None  # the same, in older answers
    contract_size: float | None = None
    tick_size: float | None = None
    min_trade_amount: float | None = None
    expiration_timestamp: int | None = None  # ms
    strike: float | None = None
    option_type: str | None = None  # call, put
    is_active: bool | None = None
    state: str | None = None


class _InstrumentAnswer(msgspec.Struct, gc=False):
    result: _InstrumentInfo | list[_InstrumentInfo] | None = None
    error: _Error | None = None
    usOut: int | None = None  # when the venue sent the answer, us


_INSTRUMENT_ANSWER: Final = msgspec.json.Decoder(_InstrumentAnswer)


def parse_instruments(
    request: InstrumentsRequest, body: bytes, received_us: int
) -> list[Instrument]:
    """The rows of ``request.symbols`` in a ``get_instrument`` (or ``get_instruments``)
    answer.

    Inverse (``reversed``) perpetuals and futures count sizes in USD (``contract_size``
    USD per contract, settled in the base coin); options, linear (``BTC_USDC-...``) and spot
    instruments in the base coin. Inverse is ``instrument_type`` (in older answers
    ``future_type``) ``reversed``; in an answer with neither, a future quoted in USD. A
    future whose ``settlement_period`` is ``perpetual`` is a perpetual (its expiry, year
    3000, is dropped). Lot and minimum size are both
    ``min_trade_amount`` (amounts are its multiples).
    """
    try:
        answer = _INSTRUMENT_ANSWER.decode(body)
    except msgspec.DecodeError as exc:
        raise ParseError(f"deribit get_instrument: {exc}") from exc
    if answer.error is not None or answer.result is None:
        error = answer.error
        detail = "no result" if error is None else f"error {error.code}: {error.message}"
        raise ParseError(f"deribit get_instrument: {detail}")
    items = answer.result if isinstance(answer.result, list) else [answer.result]
    wanted = set(request.symbols)
    return [
        _instrument(item, answer.usOut, received_us)
        for item in items
        if item.instrument_name in wanted
    ]


def _instrument(item: _InstrumentInfo, server_us: int | None, received_us: int) -> Instrument:
    kind: InstrumentKind = "spot"
    if item.kind.startswith("option"):
        kind = "option"
    elif item.kind.startswith("future"):
        kind = "perpetual" if item.settlement_period == "perpetual" else "future"
    spot = kind == "spot"
    base, quote_asset = normalize_asset(item.base_currency), normalize_asset(item.quote_currency)
    # Answers before ``instrument_type`` named it ``future_type``; the oldest name neither,
    # and their futures were all inverse, quoted in USD.
    margin = item.instrument_type or item.future_type
    if margin is None:
        margin = "reversed" if quote_asset == "USD" else "linear"
    inverse = kind in ("perpetual", "future") and margin == "reversed"
    status = item.state
    if status is None and item.is_active is not None:
        status = "active" if item.is_active else "inactive"
    option = kind == "option"
    return Instrument(
        EXCHANGE,
        item.instrument_name,
        server_us,
        received_us,
        None,
        kind=kind,
        base_asset=base,
        quote_asset=quote_asset,
        settle_asset=None
        if spot
        else normalize_asset(item.settlement_currency or item.base_currency),
        inverse=None if spot else inverse,
        size_unit="usd" if inverse else "base",
        contract_size=item.contract_size,
        contract_unit=quote_asset if inverse else base,
        tick_size=item.tick_size,
        lot_size=item.min_trade_amount,
        min_size=item.min_trade_amount,
        expiry=item.expiration_timestamp * 1000
        if item.expiration_timestamp and kind in ("future", "option")
        else None,
        strike=item.strike if option else None,
        option_kind=("put" if item.option_type == "put" else "call") if option else None,
        status=status,
    )
