"""OKX v5 public WebSocket (sans-IO): subscribe frames, parsing and book sequence checks.

One connection to ``/ws/v5/public`` carries many ``{"channel", "instId"}`` args; they are
added with ``{"id": "N", "op": "subscribe", "args": [...]}`` frames after the handshake
(at most :data:`MAX_ARGS_PER_SUBSCRIBE` args per frame, far below the venue's 64 KB). The
venue acknowledges every arg on its own (``{"event":"subscribe","arg":{...}}``) and refuses
a bad one with ``{"event":"error","code":"60018","msg":"Wrong URL or channel:books,instId:X
doesn't exist..."}`` while the socket stays open.

Feeds and channels (symbols are instrument ids: ``BTC-USDT``, ``BTC-USDT-SWAP``,
``BTC-USD-250627``, ``BTC-USD-250627-100000-C``):

- ``trades`` -> ``trades`` (aggregated per taker order and price: ``tradeId`` is the *last*
  fill id, ``count`` the number of fills; ``side`` is the taker side = the aggressor);
- ``orderbook`` -> ``books`` (400 levels: a snapshot, then incremental updates every 100 ms;
  the default, ``book_mode = "diff"``) or ``books5`` (``book_mode = "snapshot"`` /
  ``book_depth = 5``: a full 5-level snapshot per message);
- ``ticker`` -> ``tickers`` (best bid/ask, last price, ``vol24h``: base currency on spot,
  contracts on derivatives);
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
  rebuild from the resync snapshot). The ``checksum`` field is not verified: OKX has sent
  it as 0 since 2026-06-23 (exchanges.md 4.4). Frames without ``seqId`` (older API
  versions) are written without checks.
- ``trades``: fill ids are consecutive per instrument in the recordings, so a message whose
  first fill id (``tradeId - count + 1``) is above the last ``tradeId`` + 1 gets a ``gap``
  row. This is a heuristic (UNCONFIRMED by the venue, and the ELP per-source aggregation
  may reorder ids), so trades are never dropped for it.
- ``tickers`` and ``books5`` carry no sequence to check.

Keepalive: the venue closes a connection that has had no traffic for 30 s; the connection
sends the text ``ping`` (:meth:`OkxAdapter.keepalive_frame`) every
:attr:`OkxAdapter.keepalive_interval_secs` (the venue answers text ``pong``, which the
session skips), and the session answers a text ``ping`` from the venue with ``pong``.

Subscribe errors: a refused arg gets a ``subscribe_error`` row (detail = the venue's
message) and counts as resolved in ``pending_subscriptions``; the other args keep flowing.
When the message does not name the arg, every still unacknowledged arg of that request gets
the row (a later acknowledgement of one of them still writes ``subscribed``).

Limits: 480 subscribe/unsubscribe requests per connection per hour (the session asks for a
reconnect instead of resubscribing once :data:`MAX_REQUESTS_PER_SESSION` is spent), fewer
than 30 deep-book channels per connection (:data:`MAX_BOOKS_PER_CONNECTION`), 3 connection
attempts per second per IP (the planner keeps connections few).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import ClassVar, Final

import attrs
import msgspec

from collector.config import MarketSettings
from collector.events import (
    BookUpdate,
    Event,
    Instrument,
    InstrumentKind,
    Levels,
    OptionKind,
    Ticker,
    Trade,
    levels_from_values,
)
from collector.exchanges.base import (
    ConnectionPlan,
    ExchangeAdapter,
    InstrumentsRequest,
    ParseError,
    PlannedSubscription,
    Session,
    Subscription,
)
from collector.exchanges.common import PathRule, chunked, normalize_asset, optional_float

EXCHANGE: Final = "okx"
DEFAULT_URL: Final = "wss://ws.okx.com:8443"
PUBLIC_PATH: Final = "/ws/v5/public"
DEFAULT_REST_URL: Final = "https://www.okx.com"
MAX_ARGS_PER_SUBSCRIBE: Final = 100  # ~4.5 KB per frame (venue limit: 64 KB)
MAX_ARGS_PER_CONNECTION: Final = 300
# The venue advises fewer than 30 channels of 50/400-level books per connection.
MAX_BOOKS_PER_CONNECTION: Final = 25
# The venue allows 480 subscribe/unsubscribe requests per connection per hour.
MAX_REQUESTS_PER_SESSION: Final = 450
NOTICE_RECONNECT_CODE: Final = "64008"

_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}(-SWAP|-\d{6}(-\d+(\.\d+)?-[CP])?)?")
# "Wrong URL or channel:books,instId:NOPE-USDT doesn't exist. ..."
_ERROR_ARG_RE: Final = re.compile(r"channel:([\w-]+),\s*instId:(\S+?) doesn't exist", re.I)

Key = tuple[str, str]  # (channel, instId)


# --------------------------------------------------------------------------- wire structs


class _Arg(msgspec.Struct, gc=False):
    channel: str
    instId: str = ""


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


class _Ticker(msgspec.Struct, gc=False):
    last: str = ""
    ask_px: str = msgspec.field(default="", name="askPx")
    ask_sz: str = msgspec.field(default="", name="askSz")
    bid_px: str = msgspec.field(default="", name="bidPx")
    bid_sz: str = msgspec.field(default="", name="bidSz")
    vol24h: str = ""
    ts: int | None = None


class _Instrument(msgspec.Struct, gc=False):
    instId: str
    state: str = "live"


class _Instruments(msgspec.Struct, gc=False):
    code: str
    data: list[_Instrument] = []
    msg: str = ""


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_TRADES: Final = msgspec.json.Decoder(list[_Trade], strict=False)
_BOOKS: Final = msgspec.json.Decoder(list[_Book], strict=False)
_TICKERS: Final = msgspec.json.Decoder(list[_Ticker], strict=False)
_INSTRUMENTS: Final = msgspec.json.Decoder(_Instruments)
_ENCODER: Final = msgspec.json.Encoder()

_PARSE_ERRORS: Final = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError)


def _levels(levels: list[_Level]) -> Levels:
    values: list[float] = []
    append = values.append
    for level in levels:
        append(level.price)
        append(level.size)
    return levels_from_values(values)


def _opt_float(value: str) -> float | None:
    return float(value) if value else None


# --------------------------------------------------------------------------- adapter


@attrs.frozen
class OkxPlan(ConnectionPlan):
    """A connection plan that also names the channel of each subscription (same order)."""

    channels: tuple[str, ...] = ()


def channel_name(feed: str, market: MarketSettings | None = None) -> str:
    """The OKX channel of a feed; ``market`` supplies the order book options."""
    if feed == "trades":
        return "trades"
    if feed == "ticker":
        return "tickers"
    if feed == "orderbook":
        if market is not None and (market.book_mode == "snapshot" or market.book_depth == 5):
            return "books5"
        return "books"
    raise ValueError(f"okx has no channel for feed {feed!r}")


class OkxAdapter(ExchangeAdapter):
    """OKX v5 public market data (spot, swaps, futures, options)."""

    name: ClassVar[str] = EXCHANGE
    default_url: ClassVar[str] = DEFAULT_URL
    ws_path: ClassVar[str] = PUBLIC_PATH
    ws_path_rule: ClassVar[PathRule] = "host_only"
    default_rest_url: ClassVar[str | None] = DEFAULT_REST_URL
    symbols_path: ClassVar[str | None] = "/api/v5/public/instruments?instType=SPOT"
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

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        try:
            answer = _INSTRUMENTS.decode(body)
        except msgspec.DecodeError as exc:
            raise ParseError(f"okx instruments: {exc}") from exc
        if answer.code != "0":
            raise ParseError(f"okx instruments: code {answer.code}: {answer.msg}")
        return sorted(i.instId for i in answer.data if i.state == "live")

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
        channels of one instrument together."""
        chunks: list[list[PlannedSubscription]] = []
        current: list[PlannedSubscription] = []
        books = 0
        for items in by_symbol:
            item_books = sum(1 for _, channel in items if channel == "books")
            if current and (
                len(current) + len(items) > MAX_ARGS_PER_CONNECTION
                or books + item_books > MAX_BOOKS_PER_CONNECTION
            ):
                chunks.append(current)
                current, books = [], 0
            current.extend(items)
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
        self._subs: dict[Key, Subscription] = {
            (channel, sub.symbol): sub
            for sub, channel in zip(plan.subscriptions, channels, strict=True)
        }
        self._unacked: set[Key] = set(self._subs)
        # Args given up on after an error that did not name them (an ack still counts).
        self._doubtful: set[Key] = set()
        self._next_id = 1
        self.requests_sent = 0
        # Subscribe request id -> its args, until every arg is answered.
        self._requests: dict[str, list[Key]] = {}
        self._handlers: dict[str, _Handler] = {
            "trades": self._trades,
            "books": self._books,
            "books5": self._books5,
            "tickers": self._tickers,
        }
        self._last_seq: dict[str, int] = {}
        self._last_trade_id: dict[str, int] = {}
        # Instruments whose book was resubscribed after a gap, until the new snapshot.
        self._resyncing: set[str] = set()
        self.rejected: list[Subscription] = []

    # ----------------------------------------------------------------- subscribing

    def subscribe_frames(self, now_us: int = 0) -> list[str]:
        return [
            self._request("subscribe", keys)
            for keys in chunked(list(self._subs), MAX_ARGS_PER_SUBSCRIBE)
        ]

    def _request(self, op: str, keys: list[Key]) -> str:
        request_id = str(self._next_id)
        self._next_id += 1
        self.requests_sent += 1
        if op == "subscribe":
            self._requests[request_id] = list(keys)
        args = [{"channel": channel, "instId": inst} for channel, inst in keys]
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

    def _on_event(self, env: _Envelope, received_us: int) -> list[Event]:
        event = env.event
        if event == "subscribe" and env.arg is not None:
            key = (env.arg.channel, env.arg.instId)
            if env.id is not None and env.id in self._requests:
                waiting = self._requests[env.id]
                if key in waiting:
                    waiting.remove(key)
                if not waiting:
                    del self._requests[env.id]
            sub = self._subs.get(key)
            if sub is None:
                return []
            if key in self._unacked:
                self._unacked.discard(key)
                self._pending_subscriptions -= 1
            elif key in self._doubtful:
                self._doubtful.discard(key)
            else:
                return []  # a resubscription: its snapshot writes the resync row
            return [self.status("subscribed", sub.symbol, received_us, data_type=sub.feed)]
        if event == "error":
            return self._on_error(env, received_us)
        if event == "notice" and env.code == NOTICE_RECONNECT_CODE:
            self._reconnect_reason = f"okx notice {env.code}: {env.msg}"
        return []  # unsubscribe acks, channel-conn-count and other notices

    def _on_error(self, env: _Envelope, received_us: int) -> list[Event]:
        detail = f"{env.msg} (code {env.code})"
        match = _ERROR_ARG_RE.search(env.msg or "")
        keys: list[Key]
        if match is not None and (match.group(1), match.group(2)) in self._subs:
            keys = [(match.group(1), match.group(2))]
        else:
            request_id = env.id
            if request_id is None or request_id not in self._requests:
                # No id: the oldest request still waiting for answers.
                request_id = next(iter(self._requests), None)
            if request_id is None:
                return []
            keys = [k for k in self._requests[request_id] if k in self._unacked]
        events: list[Event] = []
        for key in keys:
            for waiting in self._requests.values():
                if key in waiting:
                    waiting.remove(key)
            sub = self._subs[key]
            if key in self._unacked:
                self._unacked.discard(key)
                self._pending_subscriptions -= 1
                if match is None:
                    self._doubtful.add(key)
            self.rejected.append(sub)
            self._resyncing.discard(sub.symbol)
            events.append(
                self.status(
                    "subscribe_error",
                    sub.symbol,
                    received_us,
                    data_type=sub.feed,
                    detail=f"{key[0]}:{key[1]}: {detail}",
                )
            )
        for request_id in [r for r, waiting in self._requests.items() if not waiting]:
            del self._requests[request_id]
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
            return handler(arg.instId, env.data, env.action, received_us)
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
        for msg in _BOOKS.decode(data):
            seq, prev_seq = msg.seq_id, msg.prev_seq_id
            if action == "snapshot":
                if symbol in self._resyncing:
                    self._resyncing.discard(symbol)
                    events.append(
                        self.status(
                            "resync",
                            symbol,
                            received_us,
                            data_type="orderbook",
                            received=seq,
                            detail=f"fresh books snapshot seqId={seq}",
                        )
                    )
                if seq is not None:
                    self._last_seq[symbol] = seq
                events.append(
                    BookUpdate(
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
                )
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
                    self._resyncing.add(symbol)
                    self._resubscribe(("books", symbol))
                self._last_seq[symbol] = seq
            events.append(
                BookUpdate(
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
            )
        return events

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
        return [
            Ticker(
                EXCHANGE,
                symbol,
                None if msg.ts is None else msg.ts * 1000,
                received_us,
                None,
                _opt_float(msg.bid_px),
                _opt_float(msg.bid_sz),
                _opt_float(msg.ask_px),
                _opt_float(msg.ask_sz),
                _opt_float(msg.last),
                _opt_float(msg.vol24h),
            )
            for msg in _TICKERS.decode(data)
        ]


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


def instrument_type(symbol: str) -> str:
    """OKX's ``instType`` of an instrument id: ``BTC-USDT`` SPOT, ``BTC-USDT-SWAP`` SWAP,
    ``BTC-USD-250627`` FUTURES, ``BTC-USD-250627-100000-C`` OPTION."""
    parts = symbol.split("-")
    if parts[-1] == "SWAP":
        return "SWAP"
    if len(parts) == 5:
        return "OPTION"
    return "FUTURES" if len(parts) == 3 else "SPOT"


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
