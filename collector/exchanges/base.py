"""The sans-IO exchange adapter contract.

An adapter knows one venue: its URLs, subscribe frames, message formats and sequence
rules. It never imports trio, reads a clock or touches a socket or file: the connection
layer (``collector.ingest``) hands it frames with their receive time and sends what it
asks to send. Adding a venue is adding one module under ``collector.exchanges`` that
subclasses these two classes (modules are discovered by ``collector.exchanges``).

- :class:`ExchangeAdapter` (one per exchange): declares what the venue supports (feeds,
  market options and their values, URLs, per-connection limits); from that it validates
  markets at start and plans the connections (which subscriptions go on which socket).
  It also builds the venue's application keepalive frame, a pure function of the ping's
  number, so the connection's keepalive task never touches a session.
- :class:`Session` (one per connection attempt): subscribe frames, parsing, sequence
  state. A reconnect gets a fresh session, so sequence state never spans a disconnect
  (the ``disconnected``/``connected`` status rows mark that hole).

Adapters decode frames with ``msgspec`` into private wire structs declared ``gc=False``:
a decoded struct can never be part of a reference cycle, and untracked structs are
cheaper to decode and to free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Literal

import attrs

from collector.config import Feed, MarketSettings
from collector.events import Event, Instrument, Status, StatusEvent
from collector.exchanges.common import (
    FEED_DESCRIPTIONS,
    PathRule,
    check_base_url,
    check_rest_url,
    check_stream_feeds,
    choices,
    join_ws_path,
    pack_by_symbol,
)


class ParseError(Exception):
    """A frame the adapter could not understand. The connection skips it and counts it."""


@attrs.frozen
class Subscription:
    """One (symbol, feed) on a connection. ``symbol`` is the venue's spelling.

    ``silence_timeout_secs`` is the market's: how long the stream may go without data
    before the connection's watchdog replaces the connection (None: no limit of its own).
    It is not part of the subscription's identity (equality and hash are the symbol and
    feed), so sessions build and look up subscriptions without it.
    """

    symbol: str
    feed: str
    silence_timeout_secs: float | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Listing:
    """One symbol of a venue's listing (all-symbols mode): its spelling in settings, its
    quote asset (None where the listing does not say), the venue's status word, and
    whether the venue counts it as trading."""

    symbol: str
    quote: str | None
    status: str
    trading: bool


@attrs.frozen
class SnapshotRequest:
    """A book snapshot the session wants fetched over the venue's REST API (HTTP GET)."""

    symbol: str
    url: str


@attrs.frozen
class InstrumentsRequest:
    """One REST GET whose answer describes ``symbols`` (the venue's spelling) of one market.

    ``exchange`` is the market's :meth:`ExchangeAdapter.data_exchange` (the rows' exchange)
    and ``category`` its category (None: the venue's default), for the parser.
    """

    exchange: str
    url: str
    symbols: tuple[str, ...]
    category: str | None = None


@attrs.frozen
class Polling:
    """REST requests a connection repeats on a timer, for data the venue streams nowhere
    (Binance open interest): every ``interval_secs`` a round of ``requests``, at most
    ``per_second`` a second over every connection polling against the plan's REST budget
    (:meth:`ExchangeAdapter.snapshot_budget`; one rate per budget). ``data_type`` names the table the bodies' rows go to
    (its failures are reported against it)."""

    requests: tuple[SnapshotRequest, ...]
    interval_secs: float
    per_second: float
    data_type: str


@attrs.frozen
class ConnectionPlan:
    """What one WebSocket connection carries."""

    exchange: str
    name: str  # unique per service run, e.g. "binance-0"; used in logs, metrics and raw rows
    url: str
    subscriptions: tuple[Subscription, ...]
    raw: bool = False  # keep every frame of this connection in the raw feed

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.symbol for s in self.subscriptions))


# Why a session skipped a received update on purpose (never a parse error):
# - ``duplicate``: a trade or message the venue had already sent (its id at or below the
#   last one seen, or among the recent ids remembered);
# - ``stale``: a book update whose sequence is at or below the last one applied: applying it
#   would rewind the book;
# - ``while_resyncing``: a book update that came while the book was being rebuilt (after a
#   gap, before the fresh snapshot): it builds on a book the reader cannot have.
DiscardReason = Literal["duplicate", "stale", "while_resyncing"]
DISCARD_REASONS: Final[tuple[DiscardReason, ...]] = ("duplicate", "stale", "while_resyncing")

# Why a session found one of its books invalid and resyncs that symbol (a fresh snapshot):
# - ``checksum``: the venue's book checksum differs from the local book's (Kraken, OKX while
#   it sends one, Bitfinex);
# - ``crossed``: after a whole update the best bid is at or above the best ask.
# (A sequence gap resyncs too; it is counted as a gap, not here.)
BookResyncReason = Literal["checksum", "crossed"]
BOOK_RESYNC_REASONS: Final[tuple[BookResyncReason, ...]] = ("checksum", "crossed")
# Each reason in words, for the ``resync`` row of the fresh snapshot ("... after a <words>").
RESYNC_REASON_TEXT: Final[Mapping[BookResyncReason, str]] = {
    "checksum": "checksum mismatch",
    "crossed": "crossed book",
}


@attrs.frozen
class BookResync:
    """A session found ``symbol``'s book invalid for ``reason`` and is resyncing it."""

    symbol: str
    reason: BookResyncReason


@attrs.frozen
class Discarded:
    """``count`` received updates of one (symbol, data_type) a session skipped for ``reason``."""

    symbol: str
    data_type: str
    reason: DiscardReason
    count: int


@attrs.frozen
class Actions:
    """What a session wants done after one call, for its one caller (the connection task).

    Every public entry of :class:`Session` returns one of these; the caller acts on each
    field before it hands the session anything else:

    - ``errors``: the frames of this read that could not be parsed, in order (each added no
      events; the others were still parsed). The caller counts them and may end the
      connection when most recent frames fail.
    - ``send``: frames to send, in order (subscribe frames, pongs, resubscriptions).
    - ``fetch``: REST book snapshots to fetch; each body is handed back through
      :meth:`Session.receive_snapshot`.
    - ``reconnect``: why the venue wants this connection dropped (e.g. a shutdown notice),
      or None. The caller ends the connection; a reconnect gets a fresh session.
    - ``subscribed``: every subscription of the plan is now resolved (acknowledged, or
      refused for good), so the connection counts as subscribed.
    - ``statuses``: the ``gap`` and ``subscribe_error`` rows among this call's events, so
      the caller can count and log them without scanning the events.
    - ``discarded``: the received updates the session skipped on purpose since the last
      result (duplicates, stale or resyncing book updates), counted per (symbol,
      data_type, reason). They are in no event: this is the only record of them, and the
      caller exports and writes it down.
    - ``resyncs``: the books found invalid in this call (checksum mismatch, crossed book),
      each being resynced; their ``gap`` rows are in ``statuses``. The caller counts them
      by reason (``collector_book_resyncs_total``).
    """

    errors: tuple[ParseError, ...] = ()
    send: tuple[str, ...] = ()
    fetch: tuple[SnapshotRequest, ...] = ()
    reconnect: str | None = None
    subscribed: bool = False
    statuses: tuple[Status, ...] = ()
    discarded: tuple[Discarded, ...] = ()
    resyncs: tuple[BookResync, ...] = ()


# The result of a read that asks for nothing (nearly every read): built once, not per read.
_NOTHING = Actions()
_NOTHING_SUBSCRIBED = Actions(subscribed=True)


class Session(ABC):
    """Per-connection protocol state, with one owner: the connection task. Never blocks.

    The owner calls :meth:`subscribe` once after the handshake, :meth:`receive` with the
    frames of each read, and :meth:`receive_snapshot` with each REST body it fetched; each
    returns the :class:`Actions` the session wants done, and the owner never reads or
    clears the session's state to learn them (as with h11's ``Connection``). No other task
    calls a session: the keepalive frame comes from
    :meth:`ExchangeAdapter.keepalive_frame`, which needs no session state.

    A venue implements the hooks :meth:`subscribe_frames`, :meth:`parse` (and may replace
    :meth:`parse_batch` with a faster loop) and :meth:`parse_snapshot`. While parsing, it
    asks for things through the protected state below; the next result hands them over
    and clears them:

    - ``_outgoing``: frames to send (``send``);
    - ``_snapshot_requests``: snapshots to fetch (``fetch``);
    - ``_reconnect_reason``: set to end the connection (``reconnect``);
    - ``_pending_subscriptions``: decremented as subscriptions are acknowledged or refused
      for good (``subscribed`` once it reaches 0);
    - rows built with :meth:`status` or :meth:`gap` of kind ``gap`` or ``subscribe_error``
      are collected for ``statuses``, so build those rows through them;
    - :meth:`count_discard`, called for every received update skipped on purpose, counts it
      for ``discarded`` (nothing a session skips may vanish without a count);
    - :meth:`book_invalid`, called when a book fails a checksum or is crossed, builds its
      ``gap`` row and reports it in ``resyncs``; the venue then resyncs that symbol alone.
    """

    def __init__(self, plan: ConnectionPlan) -> None:
        self.plan = plan
        self.exchange = plan.exchange
        self._outgoing: list[str] = []
        # REST book snapshots to fetch (venues whose book sync needs one, e.g. Binance diff depth).
        self._snapshot_requests: list[SnapshotRequest] = []
        self._reconnect_reason: str | None = None
        self._pending_subscriptions = len(plan.subscriptions)
        self._notable_statuses: list[Status] = []
        # (symbol, data_type, reason) -> updates skipped since the last result.
        self._discarded: dict[tuple[str, str, DiscardReason], int] = {}
        self._resyncs: list[BookResync] = []

    @property
    def pending_subscriptions(self) -> int:
        """Subscriptions neither acknowledged nor refused yet (read-only; 0: all resolved)."""
        return self._pending_subscriptions

    # ----------------------------------------------------------------- the owner's calls

    def subscribe(self, now_us: int) -> Actions:
        """The frames to send right after the WebSocket handshake (``send``, in order).

        ``now_us`` is the wall-clock time (for venues that sign subscriptions).
        """
        frames = self.subscribe_frames(now_us)
        return self._take((), frames)

    def change_plan(self, plan: ConnectionPlan, now_us: int) -> Actions:
        """The connection's plan changed while it runs (symbols added or removed at run
        time, :mod:`collector.control`): the frames that subscribe what ``plan`` adds and
        unsubscribe what it no longer has (``send``). Only for a venue whose adapter
        declares ``live_subscriptions``. The added subscriptions count as pending until
        acknowledged (their ``subscribed`` rows come as for the first ones); the removed
        ones' data may still come for a moment (the connection drops it)."""
        known = set(self.plan.subscriptions)
        wanted = set(plan.subscriptions)
        added = tuple(s for s in plan.subscriptions if s not in known)
        removed = tuple(s for s in self.plan.subscriptions if s not in wanted)
        frames = self.change_frames(plan, added, removed) if added or removed else []
        self.plan = plan
        self._pending_subscriptions += len(added)
        return self._take((), frames)

    def receive(self, payloads: Sequence[bytes], received_us: int, events: list[Event]) -> Actions:
        """Parse the frames of one read in order, appending their events to ``events``.

        Costs one result per read, not per frame: a read that asks for nothing returns a
        shared constant.
        """
        errors = self.parse_batch(payloads, received_us, events)
        if (
            errors
            or self._outgoing
            or self._snapshot_requests
            or self._notable_statuses
            or self._discarded
            or self._resyncs
            or self._reconnect_reason is not None
        ):
            return self._take(errors, ())
        return _NOTHING_SUBSCRIBED if self._pending_subscriptions <= 0 else _NOTHING

    def receive_snapshot(
        self, request: SnapshotRequest, body: bytes, received_us: int, events: list[Event]
    ) -> Actions:
        """Apply the body of a REST snapshot fetched for ``request``, appending its events.

        ``received_us`` is when the body arrived. An unreadable body is in ``errors``
        (it adds no events; the session may ask for the snapshot again in ``fetch``).
        """
        try:
            events += self.parse_snapshot(request, body, received_us)
        except ParseError as exc:
            return self._take((exc,), ())
        return self._take((), ())

    def receive_polled(
        self, request: SnapshotRequest, body: bytes, received_us: int, events: list[Event]
    ) -> Actions:
        """Apply the body of a polled REST request (:meth:`ExchangeAdapter.polling`),
        appending its events; ``received_us`` is when the body arrived. An unreadable body is
        in ``errors`` (it adds no events; the next round asks again)."""
        try:
            events += self.parse_polled(request, body, received_us)
        except ParseError as exc:
            return self._take((exc,), ())
        return self._take((), ())

    def _take(self, errors: Sequence[ParseError], first: Sequence[str]) -> Actions:
        """Hand over (and forget) everything asked for since the last result."""
        actions = Actions(
            tuple(errors),
            (*first, *self._outgoing),
            tuple(self._snapshot_requests),
            self._reconnect_reason,
            self._pending_subscriptions <= 0,
            tuple(self._notable_statuses),
            discarded=self._take_discarded(),
            resyncs=tuple(self._resyncs),
        )
        self._outgoing.clear()
        self._resyncs.clear()
        self._snapshot_requests.clear()
        self._reconnect_reason = None
        self._notable_statuses.clear()
        return actions

    def _take_discarded(self) -> tuple[Discarded, ...]:
        if not self._discarded:
            return ()
        counts = tuple(
            Discarded(symbol, data_type, reason, count)
            for (symbol, data_type, reason), count in self._discarded.items()
        )
        self._discarded.clear()
        return counts

    # ----------------------------------------------------------------- the venue's hooks

    @abstractmethod
    def subscribe_frames(self, now_us: int) -> list[str]:
        """Frames to send right after the WebSocket handshake, in order (see :meth:`subscribe`)."""

    def change_frames(
        self,
        plan: ConnectionPlan,
        added: tuple[Subscription, ...],
        removed: tuple[Subscription, ...],
    ) -> list[str]:
        """Frames that subscribe ``added`` (subscriptions of ``plan``, the new plan) and
        unsubscribe ``removed`` on the live connection, in order (see :meth:`change_plan`).
        A venue whose adapter declares ``live_subscriptions`` implements it."""
        raise NotImplementedError(f"{self.exchange} cannot change subscriptions while connected")

    @abstractmethod
    def parse(self, payload: bytes, received_us: int) -> list[Event]:
        """Events in one received message (text or binary, as raw bytes).

        Raises :class:`ParseError` for a frame it cannot understand.
        """

    def parse_batch(
        self, payloads: Sequence[bytes], received_us: int, events: list[Event]
    ) -> list[ParseError]:
        """Parse the messages of one read in order, appending their events to ``events``.

        Returns the error of each frame that could not be parsed, in order; such a frame
        adds no events and the others are still parsed. This default calls :meth:`parse`
        for each frame; an adapter whose frames are small and many (Binance trades) does
        the same work in one loop, without a few Python calls per frame.
        """
        errors: list[ParseError] = []
        parse = self.parse
        extend = events.extend
        for payload in payloads:
            try:
                extend(parse(payload, received_us))
            except ParseError as exc:
                errors.append(exc)
        return errors

    def parse_snapshot(
        self, request: SnapshotRequest, body: bytes, received_us: int
    ) -> list[Event]:
        """Events from the body of a fetched REST snapshot. Raises ParseError."""
        raise NotImplementedError(f"{self.exchange} requests no REST snapshots")

    def parse_polled(self, request: SnapshotRequest, body: bytes, received_us: int) -> list[Event]:
        """Events from the body of a polled REST request. Raises ParseError."""
        raise NotImplementedError(f"{self.exchange} polls nothing")

    def count_discard(
        self, symbol: str, data_type: str, reason: DiscardReason, count: int = 1
    ) -> None:
        """Count ``count`` received updates of ``symbol``'s ``data_type`` that the session
        skips on purpose, for the next result's ``discarded``."""
        key = (symbol, data_type, reason)
        self._discarded[key] = self._discarded.get(key, 0) + count

    def book_invalid(
        self, symbol: str, received_us: int, reason: BookResyncReason, detail: str
    ) -> Status:
        """The ``gap`` row of a book found invalid for ``reason`` (``detail`` says how, and
        what the session does about it), reported in the next result's ``resyncs``.

        The book's rows are untrustworthy from here to the fresh snapshot, whose ``resync``
        row closes the hole (as after a sequence gap). The caller resyncs the symbol.
        """
        self._resyncs.append(BookResync(symbol, reason))
        return self.status("gap", symbol, received_us, data_type="orderbook", detail=detail)

    def gap(
        self,
        symbol: str,
        received_us: int,
        data_type: str | None,
        expected: int,
        received: int,
        *,
        detail: str | None = None,
        timestamp_exchange: int | None = None,
    ) -> Status:
        """A ``gap`` row for a known number of missing ids: ``expected`` was due,
        ``received`` came, so ``received - expected`` are missing."""
        return self.status(
            "gap",
            symbol,
            received_us,
            data_type=data_type,
            expected=expected,
            received=received,
            count=received - expected,
            detail=detail,
            timestamp_exchange=timestamp_exchange,
        )

    def status(
        self,
        event: StatusEvent,
        symbol: str,
        received_us: int,
        *,
        data_type: str | None = None,
        expected: int | None = None,
        received: int | None = None,
        count: int | None = None,
        detail: str | None = None,
        timestamp_exchange: int | None = None,
    ) -> Status:
        """Build a status row for this connection's exchange (``gap`` and ``subscribe_error``
        rows also go to the next result's ``statuses``)."""
        row = Status(
            self.exchange,
            symbol,
            timestamp_exchange,
            received_us,
            None,
            event,
            data_type,
            expected,
            received,
            count,
            detail,
        )
        if event == "gap" or event == "subscribe_error":
            self._notable_statuses.append(row)
        return row


# A subscription with its name on the wire; one group's subscriptions by symbol.
PlannedSubscription = tuple[Subscription, str]
_Group = dict[str, list[PlannedSubscription]]


class ExchangeAdapter(ABC):
    """One venue: what it supports, symbol rules, limits and connection planning.

    A venue *declares* what it supports in the class attributes below: its feeds, which
    market options it takes and which values, its URLs and its per-connection limits. The
    checks of market settings (:meth:`check_market`), the symbols URL, the connection URL
    and the planning of connections (:meth:`plan_connections`) are done here from those
    declarations, once for every venue, so that the same mistake is refused in the same
    words everywhere. A venue overrides a method only where its protocol truly differs
    (e.g. a book depth that applies to one book mode only, a limit on one kind of channel).

    An adapter is created once per exchange at start and outlives every connection; state
    that must survive reconnects (e.g. recent trade ids) lives on it.
    """

    name: ClassVar[str]

    # --------------------------------------------------------------- declared capabilities

    # The venue's WebSocket URL: ``default_url`` (or a market's ``base_url``) joined with
    # ``ws_path`` by ``ws_path_rule`` (see :func:`join_ws_path`); no ``ws_path``: the URL is
    # used as it is.
    default_url: ClassVar[str]
    ws_path: ClassVar[str] = ""
    ws_path_rule: ClassVar[PathRule] = "always"
    # The venue's public REST API (symbol lists, and book snapshots where the venue needs
    # them) and the path below it that lists the tradable symbols (None: cannot list).
    default_rest_url: ClassVar[str | None] = None
    symbols_path: ClassVar[str | None] = None
    # What to do when the venue refuses this location (HTTP 451, a geo-block): the venue's
    # documented alternative hosts, if it has any (see :meth:`geo_block_advice`).
    geo_block_hosts: ClassVar[str | None] = None

    # The feeds that are subscriptions on the venue ("raw" is none: it keeps every frame).
    stream_feeds: ClassVar[tuple[Feed, ...]] = ("trades", "orderbook", "ticker")
    # Market options the venue takes and their values, in the order they are named in
    # messages. Empty: the venue has no such option and refuses it.
    book_modes: ClassVar[tuple[str, ...]] = ()
    book_depths: ClassVar[tuple[int, ...]] = ()
    # Non-empty: every market must name one (the same symbol means another instrument in
    # each, so the venue's files are kept apart by :meth:`data_exchange`), unless the venue
    # names a ``default_category`` that a market without one gets.
    categories: ClassVar[tuple[str, ...]] = ()
    default_category: ClassVar[str | None] = None
    # Feeds of ``stream_feeds`` that markets of a category cannot have (a venue's spot
    # category has no derivatives data); a category not named here has every stream feed.
    category_lacks: ClassVar[Mapping[str, tuple[Feed, ...]]] = {}
    # Whether a market may set ``rest_url`` (the REST base of its book snapshots and of
    # its instrument listings).
    takes_rest_url: ClassVar[bool] = False
    # Whether the venue implements :meth:`instruments_requests` and
    # :meth:`parse_instruments` (markets may then ask for the ``instruments`` feed), and
    # the most listing requests per second it gets (its REST budget, with margin).
    lists_instruments: ClassVar[bool] = False
    instrument_requests_per_second: ClassVar[float] = 2.0
    # Whether a market may set ``open_interest_interval_secs`` (the venue's open interest
    # is polled over REST: :meth:`polling`).
    takes_open_interest_interval: ClassVar[bool] = False
    # Why the venue refuses or restricts an option: appended to the standard sentence.
    # Keys are option names, or "book_mode/book_depth" for a venue that takes neither.
    option_notes: ClassVar[Mapping[str, str]] = {}

    # The plan type of this venue's connections; ``plan_fields`` fills its extra fields,
    # and the field named ``wire_names_field`` (if any) gets each subscription's name on
    # the wire (stream, topic, channel), in subscription order.
    plan_class: ClassVar[type[ConnectionPlan]] = ConnectionPlan
    wire_names_field: ClassVar[str | None] = None
    # Most subscriptions (symbol x feed) and most symbols on one connection (None: no
    # limit of that kind). A symbol's subscriptions always share one connection.
    max_subscriptions_per_connection: ClassVar[int | None] = None
    max_symbols_per_connection: ClassVar[int | None] = None

    # Most frames this client may send per second on one connection (venue limit, with margin).
    client_messages_per_second: ClassVar[float] = 5.0
    # Send keepalive_frame() this often (None: the venue needs no app-level keepalive).
    keepalive_interval_secs: ClassVar[float | None] = None
    # Most connection attempts per second to this venue, over all its connections (venue
    # limits are per IP; 1/s stays within all of those documented in exchanges.md).
    connections_per_second: ClassVar[float] = 1.0
    # Most REST snapshot requests per second to this venue, over all its connections that
    # spend one budget (:meth:`snapshot_budget`); :meth:`snapshot_rate` may give a plan another.
    snapshot_requests_per_second: ClassVar[float] = 1.0
    # The venue closes every connection at this age, in seconds (None: it documents no
    # limit). The supervisor then replaces each connection before it is due, without a hole
    # (``websocket.planned_reconnect_lead_secs``; ``collector.ingest.handover``). Declare it
    # only where the venue documents one, and only for a venue whose rows carry sequences
    # that grow within each stream (trade ids, book update ids): the switch drops the
    # overlap of the two connections by them. Of the venues here only Binance documents one;
    # for the others none was found (exchanges.md: UNCONFIRMED, or only idle timeouts).
    max_connection_lifetime_secs: ClassVar[float | None] = None
    # Whether the venue's sessions subscribe and unsubscribe on a live connection
    # (:meth:`Session.change_frames`): symbols added at run time may then join a running
    # connection, and removed ones are unsubscribed (collector.control).
    live_subscriptions: ClassVar[bool] = False
    # Whether :meth:`parse_listing` names each symbol's quote asset and status (the
    # ``quote`` and ``status`` filters of all-symbols mode need it).
    listing_quotes: ClassVar[bool] = False

    # --------------------------------------------------------------- geo-blocks

    @classmethod
    def geo_block_advice(cls, exchange: str | None = None) -> str:
        """The sentence added to an HTTP 451 answer (REST or WebSocket handshake): the venue
        refuses requests from this location. Names only hosts the venue documents.

        ``exchange`` is the stored exchange name of the refused market (``binance-usdm``);
        None means the venue's default product. A venue whose other hosts serve only some of
        its products overrides :meth:`geo_block_hosts_for`.
        """
        name = exchange or cls.name
        refused = f"{name} refuses requests from this location (HTTP 451: a geo-block)"
        hosts = cls.geo_block_hosts_for(name)
        if hosts:
            return f"{refused}; {hosts}"
        return f"{refused}; it documents no other host for it: run where {name} serves"

    @classmethod
    def geo_block_hosts_for(cls, exchange: str) -> str | None:
        """The documented other hosts for the product stored as ``exchange`` (default: the
        venue's :attr:`geo_block_hosts`, whatever the product)."""
        return cls.geo_block_hosts

    # --------------------------------------------------------------- symbols

    @classmethod
    def symbols_url(cls, rest_url: str | None = None, category: str | None = None) -> str:
        """The REST URL that lists the venue's tradable symbols (``rest_url`` replaces the
        default REST base). NotImplementedError when the venue declares no symbols path, or
        ``category`` is given and the venue cannot list symbols by category (a venue that
        can overrides this; ValueError for a category it does not have)."""
        if category is not None:
            raise NotImplementedError(f"{cls.name} cannot list symbols by category")
        if cls.symbols_path is None or cls.default_rest_url is None:
            raise NotImplementedError(f"{cls.name} cannot list symbols")
        return f"{(rest_url or cls.default_rest_url).rstrip('/')}{cls.symbols_path}"

    @classmethod
    def symbols_next_url(cls, url: str, body: bytes) -> str | None:
        """The URL of the next page of a paged symbols listing, after the page ``url``
        answered with ``body``; None (the default): that was the last (or only) page."""
        return None

    @classmethod
    def parse_symbols(cls, body: bytes) -> list[str]:
        """Tradable symbols (the venue's spelling, as used in settings) from that body.

        Raises ParseError when the body is not what the venue sends.
        """
        raise NotImplementedError(f"{cls.name} cannot list symbols")

    @classmethod
    def parse_listing(cls, body: bytes) -> list[Listing]:
        """Every listed symbol of that body, with its quote asset and status where the
        venue's listing names them (all-symbols mode, collector.control.listings). The
        default: the :meth:`parse_symbols` symbols, trading, quote unknown; a venue whose
        listing says more overrides this and sets :attr:`listing_quotes`.

        Raises ParseError when the body is not what the venue sends.
        """
        return [Listing(symbol, None, "TRADING", True) for symbol in cls.parse_symbols(body)]

    # --------------------------------------------------------------- instruments

    def instruments_requests(self, market: MarketSettings) -> list[InstrumentsRequest]:
        """The REST GETs that describe every symbol of ``market`` (a checked market with
        the ``instruments`` feed), below its :meth:`rest_url`. A venue that
        ``lists_instruments`` overrides this and :meth:`parse_instruments`."""
        raise NotImplementedError(f"{self.name} cannot list instruments")

    @classmethod
    def parse_instruments(
        cls, request: InstrumentsRequest, body: bytes, received_us: int
    ) -> list[Instrument]:
        """The instruments of ``request.symbols`` found in its answer ``body`` (received at
        ``received_us``), one row each; a symbol the answer lacks has none (the caller
        reports it). Rows are filed under ``request.exchange`` and the symbol as
        configured (the venue's spelling). Raises ParseError for an unreadable body or an
        error answer."""
        raise NotImplementedError(f"{cls.name} cannot list instruments")

    @staticmethod
    @abstractmethod
    def normalize_symbol(symbol: str) -> str:
        """The venue's spelling of a configured symbol; ValueError if it cannot be one."""

    @classmethod
    def data_exchange(cls, market: MarketSettings) -> str:
        """The ``exchange`` of this market's rows, files and metrics: the venue's name, unless
        one venue name covers markets whose symbols collide (Bybit's categories)."""
        return cls.name

    # --------------------------------------------------------------- settings checks

    @classmethod
    def check_market(cls, market: MarketSettings) -> None:
        """Reject options the venue does not support (ValueError with a clear message).

        In this order: the book options, ``rest_url``, ``open_interest_interval_secs``,
        ``category``, ``feeds``, ``base_url`` and the ``rest_url`` scheme; each against what
        the venue declares.
        """
        cls.check_book_options(market)
        if market.rest_url is not None and not cls.takes_rest_url:
            raise cls.no_option("rest_url")
        if market.open_interest_interval_secs is not None and not cls.takes_open_interest_interval:
            raise cls.no_option("open_interest_interval_secs")
        cls.check_category(market)
        cls.check_feeds(market)
        check_base_url(cls.name, market)
        check_rest_url(cls.name, market)

    @classmethod
    def check_category(cls, market: MarketSettings) -> None:
        """No category unless the venue declares categories; then one of them is required
        (none stands for ``default_category`` where the venue has one)."""
        if not cls.categories:
            if market.category is not None:
                raise cls.no_option("category")
        elif market.category is None and cls.default_category is not None:
            return
        elif market.category not in cls.categories:
            if cls.default_category is not None:
                raise ValueError(
                    f"{cls.name} category must be {choices(cls.categories, quoted=True)} "
                    f"(got {market.category!r}){cls.option_notes.get('category', '')}"
                )
            got = "nothing" if market.category is None else repr(market.category)
            raise ValueError(
                f"{cls.name} needs category {choices(cls.categories, quoted=True)} "
                f"(got {got}){cls.option_notes.get('category', '')}"
            )

    @classmethod
    def check_book_options(cls, market: MarketSettings) -> None:
        """``book_mode`` and ``book_depth`` against the declared values (none: refused)."""
        mode, depth = market.book_mode, market.book_depth
        if not cls.book_modes and not cls.book_depths:
            if mode is not None or depth is not None:
                raise cls.no_option("book_mode/book_depth")
            return
        if mode is not None and mode not in cls.book_modes:
            if not cls.book_modes:
                raise cls.no_option("book_mode")
            note = cls.option_notes.get("book_mode", "")
            if len(cls.book_modes) == 1:
                raise ValueError(f"{cls.name} book_mode can only be {cls.book_modes[0]!r}{note}")
            raise ValueError(
                f"{cls.name} book_mode must be {choices(cls.book_modes, quoted=True)} "
                f"(got {mode!r}){note}"
            )
        if depth is not None and depth not in cls.book_depths:
            if not cls.book_depths:
                raise cls.no_option("book_depth")
            raise ValueError(
                f"{cls.name} book_depth must be {choices(cls.book_depths)} (got {depth})"
            )

    @classmethod
    def market_feeds(cls, market: MarketSettings) -> tuple[Feed, ...]:
        """The feeds ``market`` can have: ``stream_feeds`` less what its category lacks."""
        lacks = cls.category_lacks.get(market.category or cls.default_category or "", ())
        return tuple(feed for feed in cls.stream_feeds if feed not in lacks)

    @classmethod
    def check_feeds(cls, market: MarketSettings) -> None:
        """Every feed asked for is one the venue (and the market's category) has, and at
        least one is a subscription (``raw`` alone keeps nothing)."""
        offered = cls.market_feeds(market)
        for feed in market.feeds:
            if feed == "raw" or feed in offered:
                continue
            if feed == "instruments" and cls.lists_instruments:
                continue
            what = FEED_DESCRIPTIONS.get(feed, feed)
            if feed in cls.stream_feeds:
                having = [c for c in cls.categories if feed not in cls.category_lacks.get(c, ())]
                category = market.category or cls.default_category
                raise ValueError(
                    f"{cls.name} category {category!r} has no {feed} feed ({what}); "
                    f"category {choices(having, quoted=True)} has"
                )
            raise ValueError(
                f"{cls.name} has no {feed} feed ({what}){cls.option_notes.get(feed, '')}"
            )
        check_stream_feeds(cls.name, market, offered)

    @classmethod
    def no_option(cls, option: str) -> ValueError:
        """The standard refusal of an option the venue does not take (with the venue's note)."""
        plural = "s" if "/" in option else ""
        note = cls.option_notes.get(option, "")
        return ValueError(f"{cls.name} has no {option} option{plural}{note}")

    # --------------------------------------------------------------- planning

    def connection_url(self, market: MarketSettings) -> str:
        """The WebSocket URL of this market's connections."""
        return join_ws_path(market.base_url or self.default_url, self.ws_path, self.ws_path_rule)

    def feed_url(self, market: MarketSettings, feed: str) -> str:
        """The WebSocket URL of one feed of this market: :meth:`connection_url`, unless the
        venue serves the market's feeds on separate endpoints (Binance USD-M routes book
        streams to ``/public`` and trades to ``/market``). Feeds with different URLs never
        share a connection, so such a symbol's subscriptions are on one connection per URL.
        """
        return self.connection_url(market)

    def rest_url(self, market: MarketSettings) -> str | None:
        """This market's REST base (its ``rest_url`` or the venue's), without a final slash."""
        base = market.rest_url or self.default_rest_url
        return None if base is None else base.rstrip("/")

    def plan_fields(self, market: MarketSettings) -> dict[str, Any]:
        """Values of ``plan_class``'s own fields for this market (e.g. its book depth).

        Markets whose fields differ never share a connection: one connection has one value.
        """
        return {}

    def wire_name(self, symbol: str, feed: str, market: MarketSettings) -> str:
        """The venue's name of one subscription (stream, topic, channel), kept on the plan in
        ``wire_names_field``; ``market`` supplies its options (e.g. the book depth)."""
        return feed

    def connection_name(self, index: int, fields: Mapping[str, Any]) -> str:
        """The plan's name, unique per service run: ``{name}-{index}``."""
        return f"{self.name}-{index}"

    def pack(self, by_symbol: list[list[PlannedSubscription]]) -> list[list[PlannedSubscription]]:
        """Split the subscriptions of one group of markets (a list per symbol) over
        connections, within the declared limits and keeping each symbol's together."""
        return pack_by_symbol(
            by_symbol,
            self.max_subscriptions_per_connection,
            max_symbols=self.max_symbols_per_connection,
        )

    def plan_connections(self, markets: Sequence[MarketSettings]) -> list[ConnectionPlan]:
        """Split all markets of this exchange over as few connections as its limits allow.

        Markets share a connection only when they have the same URL (:meth:`feed_url`, per
        feed), ``raw`` choice, :meth:`data_exchange` and :meth:`plan_fields`. All
        subscriptions of one symbol with one URL go on one connection, in settings order; a
        subscription listed twice is planned once. The markets must have passed
        :meth:`check_market`.
        """
        groups: dict[tuple[str, bool, str, tuple[tuple[str, Any], ...]], _Group] = {}
        for market in markets:
            raw, exchange = "raw" in market.feeds, self.data_exchange(market)
            fields = tuple(self.plan_fields(market).items())
            urls = {f: self.feed_url(market, f) for f in market.feeds if f in self.stream_feeds}
            for symbol in market.symbols:
                canonical = self.normalize_symbol(symbol)
                for feed, url in urls.items():
                    by_symbol = groups.setdefault((url, raw, exchange, fields), {})
                    planned = by_symbol.setdefault(canonical, [])
                    sub = Subscription(canonical, feed, market.silence_timeout_secs)
                    if all(sub != known for known, _ in planned):
                        planned.append((sub, self.wire_name(canonical, feed, market)))
        plans: list[ConnectionPlan] = []
        for (url, raw, exchange, fields), by_symbol in groups.items():
            for chunk in self.pack(list(by_symbol.values())):
                extra = dict(fields)
                if self.wire_names_field is not None:
                    extra[self.wire_names_field] = tuple(name for _, name in chunk)
                plans.append(
                    self.plan_class(
                        exchange=exchange,
                        name=self.connection_name(len(plans), dict(fields)),
                        url=url,
                        subscriptions=tuple(sub for sub, _ in chunk),
                        raw=raw,
                        **extra,
                    )
                )
        return plans

    # --------------------------------------------------------------- connections

    def snapshot_rate(self, plan: ConnectionPlan) -> float:
        """Most REST snapshot requests per second for ``plan``'s budget, shared by every
        connection of that budget (:meth:`snapshot_budget`): the declared
        ``snapshot_requests_per_second``, unless the venue's budget differs by endpoint."""
        return self.snapshot_requests_per_second

    def snapshot_budget(self, plan: ConnectionPlan) -> str:
        """The name of the REST budget ``plan``'s snapshots spend (venues limit per IP:
        every connection of one budget shares one pacer; see :mod:`collector.ingest.pacer`).
        Default: one budget per venue."""
        return self.name

    def polling(self, plan: ConnectionPlan) -> Polling | None:
        """The REST requests ``plan``'s connection repeats on a timer (None: none, the
        default). Their bodies go to :meth:`Session.receive_polled`."""
        return None

    def keepalive_frame(self, number: int) -> str | None:
        """The venue's application-level keepalive (ping) frame, or None: the venue needs none.

        ``number`` counts one connection's keepalives from 1; the connection's keepalive
        task keeps it and sends the frame every ``keepalive_interval_secs``. A pure
        function of ``number``: it reads and changes no state, of the adapter or of any
        session, so the keepalive task can call it while the receive loop owns the
        session. A venue whose ping carries an id builds it from ``number`` in an id space
        that cannot be taken for one of the session's request ids (the venue echoes the id
        in its pong, which the session skips by its method or event, never by id).
        """
        return None

    @abstractmethod
    def open_session(self, plan: ConnectionPlan) -> Session:
        """Fresh protocol state for one connection attempt."""
