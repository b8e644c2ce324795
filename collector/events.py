"""Normalized market-data events: what adapters produce and the writer stores.

Every event is a frozen ``msgspec.Struct`` (cheap to build, no GC tracking). Field order
follows the Parquet schemas in ``collector.storage.schemas``. All timestamps are integer
microseconds since the Unix epoch, UTC:

- ``timestamp_exchange``: the venue's event time, ``None`` when the venue sends none;
- ``timestamp_collector``: when the frame carrying the event was received.

``DATA_TYPE`` on each class names the file stream (and S3 prefix) the event belongs to.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import ClassVar, Final, Literal, TypeAlias

import msgspec

Side = Literal["buy", "sell"]
# ``checkpoint``: the collector's own statement of the whole book (the writer's, at the
# start of every order book file: collector.storage.checkpoints), not the venue's snapshot.
BookKind = Literal["snapshot", "delta", "checkpoint"]
StatusEvent = Literal[
    "connected",
    "subscribed",
    "added",
    "unsubscribed",
    "disconnected",
    "gap",
    "resync",
    "dropped",
    "subscribe_error",
    "discarded",
    "silent",
    "handover",
    "fetch_error",
    "outlet_overflow",
    "poll_error",
]
Direction = Literal["recv", "send", "rest", "open"]
PositionSide = Literal["long", "short"]
SizeUnit = Literal["base", "contracts", "usd"]
OpenInterestUnit = SizeUnit
InstrumentKind = Literal["spot", "perpetual", "future", "option"]
OptionKind = Literal["call", "put"]

# One side of a book: one flat array('d') of price, size, price, size, ... (size 0 removes
# the level in a delta). Adapters build it with ``levels_from_pairs`` or
# ``levels_from_values``; readers get pairs back with ``level_pairs``. Why flat: as a list
# of tuples, a book's levels are an object per level for the garbage collector to track
# while events wait in channels, and its young-generation passes stall the event loop with
# the GIL held; an array is one object, which the writer copies into its columns by two
# slices.
Levels: TypeAlias = "array[float]"


class Trade(msgspec.Struct, frozen=True, gc=False):
    """One executed trade. ``side`` is the aggressor (taker) side, ``None`` if unknown."""

    DATA_TYPE: ClassVar[str] = "trades"

    exchange: str
    symbol: str
    timestamp_exchange: int | None
    timestamp_collector: int
    sequence: int | None
    trade_id: str
    price: float
    size: float
    side: Side | None


class BookUpdate(msgspec.Struct, frozen=True, gc=False):
    """An order book snapshot (the whole visible book) or delta (changed levels only).

    ``sequence`` is the venue's last update id covered by this message,
    ``first_sequence`` the first one (equal to ``sequence`` where the venue has one id),
    ``prev_sequence`` the id the venue says came before (``None`` if it does not say).
    ``bids`` and ``asks`` are :data:`Levels`, in the venue's order.
    """

    DATA_TYPE: ClassVar[str] = "orderbook"

    exchange: str
    symbol: str
    timestamp_exchange: int | None
    timestamp_collector: int
    sequence: int | None
    kind: BookKind
    first_sequence: int | None
    prev_sequence: int | None
    bids: Levels
    asks: Levels


class Ticker(msgspec.Struct, frozen=True, gc=False):
    """Best bid/ask (and, where the venue sends them, last price and 24 h volume)."""

    DATA_TYPE: ClassVar[str] = "ticker"

    exchange: str
    symbol: str
    timestamp_exchange: int | None
    timestamp_collector: int
    sequence: int | None
    bid_price: float | None
    bid_size: float | None
    ask_price: float | None
    ask_size: float | None
    last_price: float | None
    volume_24h: float | None


class DerivativeTicker(msgspec.Struct, frozen=True, gc=False):
    """A derivative's venue-computed state: mark/index price, funding, open interest and,
    for options, implied volatilities and greeks. Every value is ``None`` where the venue
    does not send it.

    Venues that push partial updates (Bybit ``tickers`` deltas) are merged by the session:
    each row holds the venue's values *as they stand after* the message, so every row is
    usable alone. ``source`` names the venue channel whose message produced the row.

    Units: prices in the quote currency; funding rates and implied volatilities as
    fractions (0.0001 = 0.01 %; 0.55 = 55 % IV); ``funding_interval_h`` in hours;
    ``open_interest`` in the venue's unit, named by ``open_interest_unit`` (``base``,
    ``contracts`` or ``usd``); ``open_interest_value`` is the venue's own valuation of it.
    """

    DATA_TYPE: ClassVar[str] = "derivative_ticker"

    exchange: str
    symbol: str
    timestamp_exchange: int | None
    timestamp_collector: int
    sequence: int | None
    source: str
    last_price: float | None = None
    mark_price: float | None = None
    index_price: float | None = None
    funding_rate: float | None = None
    funding_timestamp: int | None = None
    next_funding_timestamp: int | None = None
    funding_interval_h: float | None = None
    predicted_funding_rate: float | None = None
    funding_8h: float | None = None
    open_interest: float | None = None
    open_interest_unit: OpenInterestUnit | None = None
    open_interest_value: float | None = None
    estimated_settlement_price: float | None = None
    settlement_price: float | None = None
    mark_iv: float | None = None
    bid_iv: float | None = None
    ask_iv: float | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    rho: float | None = None
    underlying_price: float | None = None
    underlying_index: str | None = None


class Liquidation(msgspec.Struct, frozen=True, gc=False):
    """One forced liquidation, as the venue reports it.

    ``side`` is the side of the *liquidation order*: ``sell`` closes a long position,
    ``buy`` a short one (venues that report the position's side are inverted into this);
    ``position_side`` is the liquidated position (``long``/``short``) where known.
    ``price_kind`` says what ``price`` is (``bankruptcy``, ``trade``, ``order``, ...) and
    ``size_unit`` what ``size`` is counted in (``base``, ``contracts`` or ``usd``). The
    optional tail is for venues that send more: the average fill price, the position's
    entry price, the venue's status of the liquidation order, the loss it booked.
    """

    DATA_TYPE: ClassVar[str] = "liquidations"

    exchange: str
    symbol: str
    timestamp_exchange: int | None
    timestamp_collector: int
    sequence: int | None
    liquidation_id: str | None
    side: Side | None
    position_side: PositionSide | None
    price: float
    price_kind: str
    size: float
    size_unit: SizeUnit
    avg_price: float | None = None
    entry_price: float | None = None
    status: str | None = None
    loss: float | None = None


class Instrument(msgspec.Struct, frozen=True, gc=False):
    """One instrument as the venue's REST listing describes it: what its sizes and prices
    mean. Written for each configured symbol at start and then periodically
    (:mod:`collector.instruments`); ``timestamp_collector`` is when the listing arrived,
    ``timestamp_exchange`` the venue's server time in the answer (where it sends one).

    Assets are normalized (upper case, ``XBT`` -> ``BTC``). ``settle_asset`` is ``None``
    for spot. ``size_unit`` says what the sizes of this instrument's other rows (trades,
    book levels, ticker sizes) count:

    - ``base``: amounts of ``base_asset``;
    - ``contracts``: contracts of ``contract_size`` units of ``contract_unit`` each (the
      base asset, or the quote for an ``inverse`` contract);
    - ``usd``: US dollars (the quote) of an inverse contract.

    ``inverse`` is true where the contract's value is fixed in the quote currency (USD)
    and it settles in the base: such sizes become base amounts only by dividing by the
    price. ``None`` for spot. ``tick_size`` is the price step, ``lot_size`` the size step
    and ``min_size`` the smallest order, all in the instrument's own units. ``expiry``
    (us) is ``None`` for perpetuals and spot; ``strike`` and ``option_kind`` are set for
    options only. ``status`` is the venue's own word for the instrument's state
    (``TRADING``, ``Trading``, ``live``, ``open``).
    """

    DATA_TYPE: ClassVar[str] = "instruments"

    exchange: str
    symbol: str
    timestamp_exchange: int | None
    timestamp_collector: int
    sequence: int | None
    kind: InstrumentKind
    base_asset: str
    quote_asset: str
    settle_asset: str | None
    inverse: bool | None
    size_unit: SizeUnit
    contract_size: float | None = None
    contract_unit: str | None = None
    tick_size: float | None = None
    lot_size: float | None = None
    min_size: float | None = None
    expiry: int | None = None
    strike: float | None = None
    option_kind: OptionKind | None = None
    status: str | None = None


class Status(msgspec.Struct, frozen=True, gc=False):
    """A row that tells readers about the data itself: connects, gaps, drops, discards and
    the like.

    ``data_type`` names the feed the row is about (``None``: the whole connection).
    """

    DATA_TYPE: ClassVar[str] = "status"

    exchange: str
    symbol: str
    timestamp_exchange: int | None
    timestamp_collector: int
    sequence: int | None
    event: StatusEvent
    data_type: str | None = None
    expected_sequence: int | None = None
    received_sequence: int | None = None
    count: int | None = None
    detail: str | None = None


class IntervalStats(msgspec.Struct, frozen=True, gc=False):
    """One symbol's trades over one analytics interval (:mod:`collector.analytics`).

    The interval is ``[interval_start, timestamp_exchange)`` in the trades' receive time
    (``timestamp_collector``); ``timestamp_exchange`` is the interval's end (the time the
    figures are as of), ``timestamp_collector`` when the row was made. Sizes are the
    trades' own units; ``buy_volume``/``sell_volume`` by aggressor side (trades of unknown
    side count in ``volume`` only). ``vwap``, ``high`` and ``low`` are ``None`` for an
    interval without trades, ``buy_sell_ratio`` while ``sell_volume`` is 0;
    ``large_trade_size`` is the threshold (``None``: none configured, ``large_trades`` 0).
    """

    DATA_TYPE: ClassVar[str] = "analytics"

    exchange: str
    symbol: str
    timestamp_exchange: int | None
    timestamp_collector: int
    sequence: int | None
    interval_start: int
    trades: int
    volume: float
    buy_volume: float
    sell_volume: float
    buy_sell_ratio: float | None
    vwap: float | None
    high: float | None
    low: float | None
    large_trades: int
    large_trade_size: float | None


class Raw(msgspec.Struct, frozen=True, gc=False):
    """One message exactly as received or sent (the optional ``raw`` feed).

    Raw rows are kept per exchange, not per symbol: ``symbol`` is :data:`RAW_SYMBOL`.
    ``direction`` says what the row is:

    - ``open``: a connection attempt came up (empty payload, ``url`` the WebSocket's);
    - ``recv``/``send``: a WebSocket message received or sent;
    - ``rest``: the body of a REST request the connection made (a book snapshot, a polled
      request), ``url`` the request's, written where the session was handed it (so the
      rows of a connection, in order, are what its session saw, in order).

    ``sequence`` names the connection attempt: the ``timestamp_collector`` of its ``open``
    row, the same on every row of the attempt (so the rows of two attempts of one
    connection that overlap, at a planned reconnect, stay apart). Enough to replay a
    session from its rows (``python -m collector reparse``).
    """

    DATA_TYPE: ClassVar[str] = "raw"

    exchange: str
    symbol: str
    timestamp_exchange: int | None
    timestamp_collector: int
    sequence: int | None
    connection: str
    direction: Direction
    payload: bytes
    url: str | None = None


Event = (
    Trade
    | BookUpdate
    | Ticker
    | DerivativeTicker
    | Liquidation
    | Instrument
    | IntervalStats
    | Status
    | Raw
)

# The symbol under which raw frames of an exchange are filed (they belong to a connection,
# not to one symbol).
RAW_SYMBOL: Final = "_all"

DATA_TYPES: Final[tuple[str, ...]] = (
    "trades",
    "orderbook",
    "ticker",
    "derivative_ticker",
    "liquidations",
    "instruments",
    "analytics",
    "status",
    "raw",
)

# The data type (table) each subscribed feed of the settings writes. Status rows about a
# subscription (``subscribed``, ``subscribe_error``, ``silent``) name the data type, so they
# match the rows of the stream they are about.
FEED_DATA_TYPES: Final[Mapping[str, str]] = {
    "trades": "trades",
    "orderbook": "orderbook",
    "ticker": "ticker",
    "derivatives": "derivative_ticker",
    "liquidations": "liquidations",
    "instruments": "instruments",
}

# Data types that come only when something happens at the venue (a liquidation), not as a
# steady stream: hours without a row are normal, so their silence is no sign of a dead
# connection (the watchdog never waits for them).
SPORADIC_DATA_TYPES: Final = frozenset({"liquidations"})


def feed_data_type(feed: str) -> str:
    """The data type a subscribed ``feed`` writes (the feed's own name if it has no other)."""
    return FEED_DATA_TYPES.get(feed, feed)


def levels_from_pairs(pairs: Iterable[tuple[float, float]]) -> Levels:
    """One side's :data:`Levels` from ``(price, size)`` pairs, e.g. as a decoder gave them.

    Every item must be a pair (as a decoded ``tuple[float, float]`` is): the items are
    chained, not checked.
    """
    return array("d", [*_chain(pairs)])


def levels_from_values(values: Iterable[float]) -> Levels:
    """One side's :data:`Levels` from flat values: price, size, price, size, ...

    For venues whose levels need a step per level (a side to pick, a delete to map to size
    0): appending both numbers to a list and converting it once is cheaper than building a
    pair per level.
    """
    return array("d", values)


def level_pairs(levels: Levels) -> list[tuple[float, float]]:
    """The ``(price, size)`` pairs of one side's :data:`Levels`, for readers and tests.

    Raises ``ValueError`` for an odd number of values (not levels).
    """
    return list(zip(levels[0::2], levels[1::2], strict=True))


_chain: Final = chain.from_iterable
