"""The holes in the data, from the ``status`` table.

Which status events are holes (:data:`HOLE_EVENTS`), and over what time each one runs:

- ``disconnected``: data of the symbol is missing from the row until the next
  ``connected`` row of the same exchange and symbol (a restart's, after a crash too);
- ``gap``: the venue's sequence jumped: ``count`` updates of the feed are missing just
  before the row. For an order book the book is unknown until the next ``resync`` (or
  ``connected``) row of the symbol, so the hole runs until then; for other feeds it is an
  instant;
- ``dropped``: events received but not written (at shutdown), over the span its detail
  gives (to the microsecond), else an instant;
- ``silent``: a feed had had no data for the ``silence_timeout_secs`` in its detail, so
  the hole starts that long before the row (a market may also just have been quiet) and
  runs until the next ``connected`` row;
- ``subscribe_error``: the venue refused a feed for good: nothing of it until the next
  ``subscribed`` row for that feed;
- ``unsubscribed``: the symbol was removed while the service ran (:mod:`collector.control`):
  nothing of the feed, on purpose, until the next ``subscribed`` row for it (the symbol
  added again), if any. A hole all the same: a book must not be carried across it.

Not holes: ``connected`` and ``subscribed`` (they end holes), ``resync`` (a book starting
again from a snapshot, after a gap when it follows one), ``discarded`` (updates skipped on
purpose because they were already recorded or could not apply) and ``handover`` (a planned
switch of connection that continues where the old one stopped). A hole's ``end`` is
``None`` when the rows read do not show it ending (e.g. the recording stopped there).

:func:`find_holes` reads every status row of the exchange and symbol asked about (the
tables are small: a few rows an hour per symbol), because a hole that began before the range
can still be open in it, and one in it can end after it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from collector.reader.source import Source
from collector.reader.tables import read_table
from collector.reader.times import from_us

STATUS: Final = "status"
ORDERBOOK: Final = "orderbook"
HOLE_EVENTS: Final = frozenset(
    {"disconnected", "gap", "dropped", "silent", "subscribe_error", "unsubscribed"}
)
_COLUMNS: Final = (
    "exchange",
    "symbol",
    "timestamp_collector",
    "event",
    "data_type",
    "expected_sequence",
    "received_sequence",
    "count",
    "detail",
)
_DROP_SPAN: Final = re.compile(r"between (\d+) and (\d+)")
_SILENCE: Final = re.compile(r" for (\d+(?:\.\d+)?)s\b")


@dataclass(frozen=True)
class Hole:
    """A stretch of missing (or unusable) data of one exchange and symbol.

    ``data_type`` is the feed it concerns; ``None`` means every feed of the symbol.
    ``start`` and ``end`` as described in the module docstring (``end`` ``None``: not seen
    ending); ``at`` is the time of the status row itself. ``count``, ``detail`` and the
    sequences are the row's.
    """

    exchange: str
    symbol: str
    event: str
    data_type: str | None
    start: datetime
    end: datetime | None
    at: datetime
    count: int | None = None
    expected_sequence: int | None = None
    received_sequence: int | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (times as ISO 8601 strings), e.g. for JSON."""
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "event": self.event,
            "data_type": self.data_type,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "at": _iso(self.at),
            "count": self.count,
            "expected_sequence": self.expected_sequence,
            "received_sequence": self.received_sequence,
            "detail": self.detail,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Row = Mapping[str, Any]


def _us(row: Row) -> int:
    return int(row["timestamp_collector"])


def _next_us(rows: list[Row], after: int, wanted: Any) -> int | None:
    """The time of the first row after index ``after`` for which ``wanted(row)`` holds."""
    for row in rows[after + 1 :]:
        if wanted(row):
            return _us(row)
    return None


def _span(rows: list[Row], index: int) -> tuple[int, int | None]:
    """(start, end) in microseconds of the hole of ``rows[index]`` (see the module doc)."""
    row = rows[index]
    event, at, feed, detail = row["event"], _us(row), row["data_type"], row["detail"] or ""

    def connected(r: Row) -> bool:
        return bool(r["event"] == "connected")

    if event == "disconnected":
        return at, _next_us(rows, index, connected)
    if event == "gap":
        if feed != ORDERBOOK:
            return at, at
        return at, _next_us(
            rows,
            index,
            lambda r: connected(r) or (r["event"] == "resync" and r["data_type"] == feed),
        )
    if event == "dropped":
        span = _DROP_SPAN.search(detail)
        if span is not None:
            first, last = int(span.group(1)), int(span.group(2))
            return first, max(first, last)
        return at, at
    if event == "silent":
        silence = _SILENCE.search(detail)
        start = at - round(float(silence.group(1)) * 1_000_000) if silence else at
        return start, _next_us(rows, index, connected)
    # subscribe_error, unsubscribed
    return at, _next_us(
        rows, index, lambda r: r["event"] == "subscribed" and r["data_type"] == feed
    )


def holes_from_rows(
    rows: Iterable[Row], start_us: int | None = None, end_us: int | None = None
) -> list[Hole]:
    """The holes that ``rows`` (status rows with at least the columns of :data:`_COLUMNS`,
    ``timestamp_collector`` in microseconds) show overlapping ``[start_us, end_us)``,
    sorted by start, exchange and symbol. A hole overlaps when it starts before
    ``end_us`` and has not ended before ``start_us``."""
    by_stream: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        by_stream[row["exchange"], row["symbol"]].append(row)
    found: list[tuple[int, Hole]] = []
    for stream_rows in by_stream.values():
        stream_rows.sort(key=_us)
        for index, row in enumerate(stream_rows):
            if row["event"] not in HOLE_EVENTS:
                continue
            start, end = _span(stream_rows, index)
            if end_us is not None and start >= end_us:
                continue
            if start_us is not None and end is not None and end < start_us:
                continue
            hole = Hole(
                exchange=row["exchange"],
                symbol=row["symbol"],
                event=row["event"],
                data_type=row["data_type"],
                start=from_us(start),
                end=None if end is None else from_us(end),
                at=from_us(_us(row)),
                count=row["count"],
                expected_sequence=row["expected_sequence"],
                received_sequence=row["received_sequence"],
                detail=row["detail"],
            )
            found.append((start, hole))
    found.sort(key=lambda item: (item[0], item[1].exchange, item[1].symbol))
    return [hole for _, hole in found]


def status_rows(
    source: Source,
    *,
    end_us: int | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
) -> list[dict[str, Any]]:
    """Every status row received before ``end_us`` (of the exchange and symbol, where
    given), with ``timestamp_collector`` as integer microseconds. Blocking."""
    table = read_table(
        source, STATUS, end_us=end_us, exchange=exchange, symbol=symbol, columns=_COLUMNS
    )
    table = table.set_column(
        table.schema.get_field_index("timestamp_collector"),
        "timestamp_collector",
        table.column("timestamp_collector").cast("int64"),
    )
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def find_holes(
    source: Source,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
) -> list[Hole]:
    """The holes overlapping ``[start_us, end_us)`` (see :func:`holes_from_rows`), of one
    exchange and/or symbol where given. Blocking: reads every status row (of the exchange
    and symbol), also those after ``end_us``, where a hole of the range may end.
    """
    rows = status_rows(source, exchange=exchange, symbol=symbol)
    return holes_from_rows(rows, start_us, end_us)
