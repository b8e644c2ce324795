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
from typing import ClassVar, Final, Literal

import msgspec

Side = Literal["buy", "sell"]
BookKind = Literal["snapshot", "delta"]
StatusEvent = Literal[
    "connected",
    "subscribed",
    "disconnected",
    "gap",
    "resync",
    "dropped",
    "subscribe_error",
]
Direction = Literal["recv", "send"]

# (price, size); size 0 removes the level in a delta.
Level = tuple[float, float]
# A book side's levels as one flat array('d'): price, size, price, size, ...
# (see ``compact_books``).
FlatLevels = array


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
    bids: list[Level] | FlatLevels[float]
    asks: list[Level] | FlatLevels[float]


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


class Status(msgspec.Struct, frozen=True, gc=False):
    """A row that tells readers about the data itself: connects, gaps, drops and the like.

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


class Raw(msgspec.Struct, frozen=True, gc=False):
    """One WebSocket message exactly as received or sent (the optional ``raw`` feed).

    Raw rows are kept per exchange, not per symbol: ``symbol`` is :data:`RAW_SYMBOL`.
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


Event = Trade | BookUpdate | Ticker | Status | Raw

# The symbol under which raw frames of an exchange are filed (they belong to a connection,
# not to one symbol).
RAW_SYMBOL: Final = "_all"

DATA_TYPES: Final[tuple[str, ...]] = ("trades", "orderbook", "ticker", "status", "raw")


def compact_books(events: list[Event]) -> None:
    """Replace, in place, each ``BookUpdate`` of ``events`` by one with flat levels.

    A book's level tuples and lists are objects the garbage collector tracks: about forty
    for a 20-level book. Waiting in the event channel at full speed, they kept its
    young-generation passes busy (20-30 ms each with the GIL held, several a second), and
    a lagging writer made it worse: the passes ran in the flush's worker thread too. A flat
    ``array('d')`` is one untracked object. Connections compact what they send; the
    writer takes either form. Levels that are not pairs of numbers are left as they are,
    for the writer to refuse with the reason.
    """
    for index, event in enumerate(events):
        if type(event) is BookUpdate and not (
            type(event.bids) is array and type(event.asks) is array
        ):
            try:
                bids, asks = _flat(event.bids), _flat(event.asks)
            except (TypeError, ValueError):
                continue
            events[index] = _replace(event, bids=bids, asks=asks)


def _flat(levels: list[Level] | FlatLevels[float]) -> FlatLevels[float]:
    if isinstance(levels, array):
        return levels
    values: list[float] = []
    append = values.append
    for price, size in levels:
        append(price)
        append(size)
    return array("d", values)


_replace: Final = msgspec.structs.replace
