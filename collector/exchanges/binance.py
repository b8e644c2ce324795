"""Binance spot (sans-IO): combined streams, SUBSCRIBE frames, parsing and sequence checks.

One connection carries up to 1024 streams on ``/stream?timeUnit=MICROSECOND`` (combined
streams, microsecond timestamps); streams are added with ``SUBSCRIBE`` frames after the
handshake. Every data frame is an envelope ``{"stream": "<sym>@<type>", "data": {...}}`` and
the stream name decides how ``data`` is read (partial depth carries no symbol of its own).

Feeds and streams:

- ``trades`` -> ``<sym>@trade``;
- ``orderbook`` -> ``<sym>@depth<N>@100ms`` (``book_mode = "snapshot"``, the default; N =
  ``book_depth`` in 5/10/20, default 20) or ``<sym>@depth@100ms`` (``book_mode = "diff"``);
- ``ticker`` -> ``<sym>@bookTicker``;
- ``raw`` -> no stream: the connection keeps every frame (``ConnectionPlan.raw``).

Sequence rules (per symbol, per session; a reconnect starts afresh):

- trades: ``t`` should grow by exactly 1. A jump is reported as a ``gap`` status row. This
  is a heuristic: Binance does not document trade ids as gap-free (exchanges.md: UNCONFIRMED).
  A ``t`` at or below the last one is a duplicate: dropped and counted
  (:meth:`Session.count_discard`, reason ``duplicate``).
- diff depth: ``U`` must equal the previous ``u`` + 1 (or ``pu`` the previous ``u`` where a
  frame carries ``pu``, as on futures); otherwise a ``gap`` row. A frame with ``u`` at or
  below the previous ``u`` is stale: dropped and counted likewise (reason ``stale``). The
  first delta of a session has no predecessor and so no gap.
- diff depth book sync: deltas alone cannot rebuild a book, so once a diff stream is
  acknowledged, and again after every gap, the session asks for a REST depth snapshot
  (``GET {rest_url}/api/v3/depth?symbol=X&limit=1000``, via
  :attr:`Actions.fetch`). The snapshot is written as an ``orderbook`` row of kind
  ``snapshot`` (``sequence`` = ``lastUpdateId``) with a ``resync`` status row. Following the
  venue's procedure, the recorded deltas must cover ``lastUpdateId + 1``: a snapshot older
  than the first delta recorded since it was asked for is fetched again, and a first delta
  after the snapshot with ``U > lastUpdateId + 1`` is a ``gap`` (and another snapshot).
  Readers rebuild the book from the snapshot and the deltas with ``u > lastUpdateId``.

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

import attrs
import msgspec

from collector.config import MarketSettings
from collector.events import BookUpdate, Event, Ticker, Trade, levels_from_pairs
from collector.exchanges.base import (
    ConnectionPlan,
    ExchangeAdapter,
    ParseError,
    Session,
    SnapshotRequest,
    Subscription,
)

EXCHANGE: Final = "binance"
MAX_STREAMS_PER_CONNECTION: Final = 1024
# Streams per SUBSCRIBE frame: keeps every frame small (a few KiB).
MAX_STREAMS_PER_SUBSCRIBE: Final = 200
PARTIAL_DEPTHS: Final = frozenset({5, 10, 20})
DEFAULT_PARTIAL_DEPTH: Final = 20
DEFAULT_REST_URL: Final = "https://api.binance.com"
# Levels per REST snapshot: request weight 50 (5000 levels would cost 250 of 6000/min).
SNAPSHOT_LIMIT: Final = 1000

_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{2,20}")
# Below this a timestamp is in milliseconds (ms now ~1.7e12, us ~1.7e15).
_MS_LIMIT: Final = 10**14


def _us(value: int) -> int:
    """Microseconds from a Binance timestamp in either unit."""
    return value * 1000 if value < _MS_LIMIT else value


# --------------------------------------------------------------------------- wire structs


class _SymbolInfo(msgspec.Struct, gc=False):
    symbol: str
    status: str = "TRADING"


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


class _DepthDiff(msgspec.Struct, gc=False, tag_field="e", tag="depthUpdate"):
    event_time: int = msgspec.field(name="E")
    first_id: int = msgspec.field(name="U")
    last_id: int = msgspec.field(name="u")
    bids: list[tuple[float, float]] = msgspec.field(name="b")
    asks: list[tuple[float, float]] = msgspec.field(name="a")
    prev_id: int | None = msgspec.field(default=None, name="pu")


class _TaggedEnvelope(msgspec.Struct, gc=False):
    """A combined-stream frame of a stream whose data names its kind (``"e"``): trades and
    book deltas are decoded in one pass, not an envelope and then its data."""

    stream: str | None = None
    data: _Trade | _DepthDiff | None = None


class _PartialDepth(msgspec.Struct, gc=False):
    last_update_id: int = msgspec.field(name="lastUpdateId")
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


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
_DEPTH_DIFF: Final = msgspec.json.Decoder(_DepthDiff, strict=False)
_PARTIAL_DEPTH: Final = msgspec.json.Decoder(_PartialDepth, strict=False)
_BOOK_TICKER: Final = msgspec.json.Decoder(_BookTicker, strict=False)
_ENCODER: Final = msgspec.json.Encoder()

_PARSE_ERRORS: Final = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError)


# --------------------------------------------------------------------------- adapter


@attrs.frozen
class BinancePlan(ConnectionPlan):
    """A connection plan that also names the stream of each subscription (same order)."""

    streams: tuple[str, ...] = ()
    rest_url: str = DEFAULT_REST_URL


def stream_name(symbol: str, feed: str, market: MarketSettings | None = None) -> str:
    """The stream of one (symbol, feed); ``market`` supplies the order book options."""
    sym = symbol.lower()
    if feed == "trades":
        return f"{sym}@trade"
    if feed == "ticker":
        return f"{sym}@bookTicker"
    if feed == "orderbook":
        if market is not None and market.book_mode == "diff":
            return f"{sym}@depth@100ms"
        depth = DEFAULT_PARTIAL_DEPTH
        if market is not None and market.book_depth is not None:
            depth = market.book_depth
        return f"{sym}@depth{depth}@100ms"
    raise ValueError(f"binance has no stream for feed {feed!r}")


class BinanceAdapter(ExchangeAdapter):
    """Binance spot market data over combined streams."""

    name: ClassVar[str] = EXCHANGE
    default_url: ClassVar[str] = "wss://stream.binance.com:9443"
    ws_path: ClassVar[str] = "/stream?timeUnit=MICROSECOND"
    default_rest_url: ClassVar[str | None] = DEFAULT_REST_URL
    symbols_path: ClassVar[str | None] = (
        "/api/v3/exchangeInfo?permissions=SPOT&symbolStatus=TRADING"
    )
    # Binance's "market data only" hosts (spot API docs, FAQ "Market Data Only URLs").
    geo_block_hosts: ClassVar[str | None] = (
        "its market-data-only hosts serve the same public data: set base_url = "
        '"wss://data-stream.binance.vision" and, for book_mode = "diff", rest_url = '
        '"https://data-api.binance.vision" (symbols: --rest-url); binance.us is a '
        "different exchange, not a mirror"
    )
    book_modes: ClassVar[tuple[str, ...]] = ("snapshot", "diff")
    book_depths: ClassVar[tuple[int, ...]] = tuple(sorted(PARTIAL_DEPTHS))
    takes_rest_url: ClassVar[bool] = True  # diff depth syncs its books from REST snapshots
    option_notes: ClassVar[Mapping[str, str]] = {"category": " (this adapter records spot)"}
    plan_class: ClassVar[type[ConnectionPlan]] = BinancePlan
    wire_names_field: ClassVar[str | None] = "streams"
    max_subscriptions_per_connection: ClassVar[int | None] = MAX_STREAMS_PER_CONNECTION
    # The venue allows 5 client messages/s per connection, pongs included: keep a margin.
    client_messages_per_second: ClassVar[float] = 4.0
    # The venue pings with control frames (every 20 s); the WebSocket library answers them.
    keepalive_interval_secs: ClassVar[float | None] = None
    # REST weight budget 6000/min per IP; a 1000-level snapshot weighs 50 (at most 120/min).
    snapshot_requests_per_second: ClassVar[float] = 1.0
    # The venue documents that a connection is valid for 24 h and is closed at that mark
    # (WebSocket Streams docs; exchanges.md section 1.1).
    max_connection_lifetime_secs: ClassVar[float | None] = 24 * 3600.0

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        try:
            info = msgspec.json.decode(body, type=_ExchangeInfo)
        except msgspec.DecodeError as exc:
            raise ParseError(f"binance exchangeInfo: {exc}") from exc
        return sorted(s.symbol for s in info.symbols if s.status == "TRADING")

    @staticmethod
    def normalize_symbol(symbol: str) -> str:
        canonical = symbol.upper()
        if not _SYMBOL_RE.fullmatch(canonical):
            raise ValueError(
                f"invalid binance symbol {symbol!r}: expected 2-20 letters and digits "
                "without separator, e.g. 'BTCUSDT' or 'btcusdt'"
            )
        return canonical

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

    def plan_fields(self, market: MarketSettings) -> dict[str, Any]:
        """Diff-depth snapshots come from the market's REST base: one per connection."""
        return {"rest_url": self.rest_url(market)}

    def wire_name(self, symbol: str, feed: str, market: MarketSettings) -> str:
        return stream_name(symbol, feed, market)

    def open_session(self, plan: ConnectionPlan) -> BinanceSession:
        return BinanceSession(plan)


# --------------------------------------------------------------------------- session

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
        self._streams: tuple[tuple[Subscription, str], ...] = tuple(
            zip(plan.subscriptions, streams, strict=True)
        )
        self._next_id = 1
        # Request id -> the subscriptions it asked for, until answered.
        self._requests: dict[int, tuple[tuple[Subscription, str], ...]] = {}
        # Stream name -> (handler, venue symbol); filled lazily from the names seen.
        self._routes: dict[str, tuple[_Handler, str]] = {}
        # Only trade and diff-depth streams (their data names its kind): frames are decoded in
        # one pass (_TAGGED_ENVELOPE), routed by stream name to a message handler.
        self._tagged = all(_tagged_kind(stream) is not None for _, stream in self._streams)
        self._message_routes: dict[str, tuple[_MessageHandler, type, str]] = {}
        self._last_trade_id: dict[str, int] = {}
        self._last_update_id: dict[str, int] = {}
        self._rest_url = plan.rest_url if isinstance(plan, BinancePlan) else DEFAULT_REST_URL
        # Diff-depth book sync, per symbol: snapshots asked for and not yet received; the
        # first delta U seen since the last request; the lastUpdateId of a received snapshot
        # no recorded delta has covered yet.
        self._snapshot_pending: set[str] = set()
        self._first_delta_since_request: dict[str, int] = {}
        self._awaiting_cover: dict[str, int] = {}
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

    def _on_response(self, env: _Envelope, received_us: int) -> list[Event]:
        request_id = env.id
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

    def _request_snapshot(self, symbol: str) -> None:
        if symbol in self._snapshot_pending:
            return
        self._snapshot_pending.add(symbol)
        self._first_delta_since_request.pop(symbol, None)
        self._awaiting_cover.pop(symbol, None)
        url = f"{self._rest_url}/api/v3/depth?symbol={symbol}&limit={SNAPSHOT_LIMIT}"
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
        first = self._first_delta_since_request.get(symbol)
        last = self._last_update_id.get(symbol)
        events: list[Event] = [
            self.status(
                "resync",
                symbol,
                received_us,
                data_type="orderbook",
                received=snapshot_id,
                detail=f"REST depth snapshot lastUpdateId={snapshot_id}",
            ),
            BookUpdate(
                EXCHANGE,
                symbol,
                None,
                received_us,
                snapshot_id,
                "snapshot",
                snapshot_id,
                None,
                levels_from_pairs(msg.bids),
                levels_from_pairs(msg.asks),
            ),
        ]
        if last is None or last <= snapshot_id:
            self._awaiting_cover[symbol] = snapshot_id  # the next deltas must cover it
        elif first is not None and first > snapshot_id + 1:
            # Older than every delta recorded since the request: it cannot be joined to them.
            self._request_snapshot(symbol)
        return events

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
        """The frames of one read. On a connection of trade and diff-depth streams only,
        each frame is decoded in one pass (:data:`_TAGGED_ENVELOPE`), and a trade with the
        next id of its symbol, nearly every frame of a trade stream, becomes its row right
        here: the general path's calls per frame cost a large share of a trade's parse
        (figures in docs/performance.md).
        """
        errors: list[ParseError] = []
        append = events.append
        extend = events.extend
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
                            if type(msg) is _Trade:
                                trade_id = msg.trade_id
                                if last_ids.get(symbol, trade_id - 1) == trade_id - 1:
                                    # The first or the next id: the row _on_trade
                                    # builds, built here (a call per trade would
                                    # give back much of what this loop saves).
                                    last_ids[symbol] = trade_id
                                    trade_time = msg.trade_time
                                    append(
                                        Trade(
                                            EXCHANGE,
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
        if kind == "trade":
            handler = self._trade
        elif kind == "bookTicker":
            handler = self._book_ticker
        elif kind == "depth" or kind.startswith("depth@"):
            handler = self._depth_diff
        elif kind.startswith("depth"):
            handler = self._partial_depth
        elif stream == "!serverShutdown" or kind == "serverShutdown":
            handler = self._server_shutdown
        else:
            handler = _ignore
        return handler, symbol

    def _message_route(self, stream: str) -> tuple[_MessageHandler, type, str]:
        kind = _tagged_kind(stream)
        symbol = stream.partition("@")[0].upper()
        if kind is _Trade:
            return self._on_trade, _Trade, symbol
        if kind is _DepthDiff:
            return self._on_depth_diff, _DepthDiff, symbol
        return _ignore, type(None), symbol  # not a stream of ours: the general path

    def _trade(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        return self._on_trade(symbol, _TRADE.decode(data), received_us)

    def _on_trade(self, symbol: str, msg: _Trade, received_us: int) -> list[Event]:
        trade_id = msg.trade_id
        last_ids = self._last_trade_id
        prev = last_ids.get(symbol)
        last_ids[symbol] = trade_id
        trade_time = msg.trade_time
        trade = Trade(
            EXCHANGE,
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
                    self._request_snapshot(symbol)
            elif msg.first_id > prev + 1:
                events.append(self.gap(symbol, received_us, "orderbook", prev + 1, msg.first_id))
                self._request_snapshot(symbol)
        self._last_update_id[symbol] = msg.last_id
        if symbol in self._snapshot_pending:
            self._first_delta_since_request.setdefault(symbol, msg.first_id)
        base = self._awaiting_cover.get(symbol)
        if base is not None and msg.last_id > base:
            del self._awaiting_cover[symbol]
            if msg.first_id > base + 1:
                events.append(
                    self.gap(
                        symbol,
                        received_us,
                        "orderbook",
                        base + 1,
                        msg.first_id,
                        detail="first delta after the REST snapshot does not cover it",
                    )
                )
                self._request_snapshot(symbol)
        events.append(
            BookUpdate(
                EXCHANGE,
                symbol,
                _us(msg.event_time),
                received_us,
                msg.last_id,
                "delta",
                msg.first_id,
                msg.prev_id,
                levels_from_pairs(msg.bids),
                levels_from_pairs(msg.asks),
            )
        )
        return events

    def _partial_depth(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        msg = _PARTIAL_DEPTH.decode(data)
        return [
            BookUpdate(
                EXCHANGE,
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

    def _book_ticker(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        msg = _BOOK_TICKER.decode(data)
        event_time = msg.event_time
        return [
            Ticker(
                EXCHANGE,
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

    def _server_shutdown(self, symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
        self._reconnect_reason = "binance serverShutdown notice"
        return []


def _is_diff_stream(stream: str) -> bool:
    kind = stream.partition("@")[2]
    return kind == "depth" or kind.startswith("depth@")


def _tagged_kind(stream: str) -> type | None:
    """The wire struct of a stream whose data names its kind (``"e"``), else None."""
    if stream.partition("@")[2] == "trade":
        return _Trade
    if _is_diff_stream(stream):
        return _DepthDiff
    return None


def _ignore(symbol: str, data: msgspec.Raw, received_us: int) -> list[Event]:
    return []
