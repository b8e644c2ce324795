"""The reader's front door: :class:`DataReader`, one object per data directory or S3 prefix.

It holds the :class:`~collector.reader.source.Source` and turns the caller's forms of time
(``datetime``, ISO 8601, epoch milliseconds: :mod:`.times`) into the microseconds the
modules below work in. Every method is blocking I/O on the source (local reads or S3
requests); none keeps state between calls, so one reader serves any number of calls, also
from several threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as ds

from collector.reader import books, catalog, holes, tables
from collector.reader.books import BookItem
from collector.reader.catalog import DataFile, Stream
from collector.reader.errors import UsageError
from collector.reader.holes import Hole
from collector.reader.source import open_source
from collector.reader.times import TimeLike, to_us

if TYPE_CHECKING:
    import duckdb


def _us(value: TimeLike | None) -> int | None:
    return None if value is None else to_us(value)


def _range(start: TimeLike | None, end: TimeLike | None) -> tuple[int | None, int | None]:
    start_us, end_us = _us(start), _us(end)
    if start_us is not None and end_us is not None and end_us < start_us:
        raise UsageError(f"the end ({end}) is before the start ({start})")
    return start_us, end_us


def _interval_us(every: timedelta | float | None) -> int | None:
    if every is None:
        return None
    if isinstance(every, timedelta):
        return every // timedelta(microseconds=1)
    return round(every * 1_000_000)


class DataReader:
    """Read what the collector recorded under ``location``: a data directory, or
    ``s3://bucket[/prefix]`` (the prefix the uploader wrote under; ``endpoint_url`` and
    ``region`` for S3 only, see :func:`~collector.reader.source.open_source`).

    Times (``start``, ``end``, ``at``) are ``datetime`` (naive: UTC), ISO 8601 strings or
    epoch milliseconds, and select on ``timestamp_collector``, the receive time. Ranges are
    ``[start, end)``; a bound left out is open. ``exchange`` and ``symbol`` are spelled as in
    the rows (``binance-usdm``, ``BTC/USD``).

    Raises :class:`~collector.reader.errors.UsageError` at once for a directory that does
    not exist or an S3 location without a bucket.
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self.source = open_source(location, endpoint_url=endpoint_url, region=region)

    def catalog(
        self,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        data_type: str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> list[Stream]:
        """Every stream (exchange, symbol, data type) with its file count and first and last
        receive time; with ``start``/``end``, those with data in that range."""
        start_us, end_us = _range(start, end)
        return catalog.catalog(
            self.source,
            exchange=exchange,
            symbol=symbol,
            data_type=data_type,
            start_us=start_us,
            end_us=end_us,
        )

    def files(
        self,
        data_type: str | None = None,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
    ) -> list[DataFile]:
        """The finished files, sorted by stream and start (see :class:`DataFile`)."""
        return catalog.list_files(
            self.source, exchange=exchange, symbol=symbol, data_type=data_type
        )

    def dataset(
        self,
        data_type: str,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        exchange: str | None = None,
        symbol: str | None = None,
    ) -> tuple[ds.Dataset, ds.Expression | None]:
        """The pyarrow dataset of the table's files that can hold the range, and the filter
        that selects the range's rows (pass it to ``to_table``, ``scanner``...)."""
        start_us, end_us = _range(start, end)
        return tables.dataset(
            self.source,
            data_type,
            start_us=start_us,
            end_us=end_us,
            exchange=exchange,
            symbol=symbol,
        )

    def table(
        self,
        data_type: str,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        exchange: str | None = None,
        symbol: str | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """The rows of any table (``trades``, ``orderbook``, ``ticker``, ``status``, ...)
        received in ``[start, end)``, with the path columns ``date`` and ``data_type``."""
        start_us, end_us = _range(start, end)
        return tables.read_table(
            self.source,
            data_type,
            start_us=start_us,
            end_us=end_us,
            exchange=exchange,
            symbol=symbol,
            columns=columns,
        )

    def relation(
        self,
        data_type: str,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        exchange: str | None = None,
        symbol: str | None = None,
        connection: duckdb.DuckDBPyConnection | None = None,
    ) -> duckdb.DuckDBPyRelation:
        """The same rows as :meth:`table`, as a lazy DuckDB relation (needs the ``reader``
        extra). Register it by name with ``.create_view(name)`` to use it in SQL."""
        start_us, end_us = _range(start, end)
        return tables.relation(
            self.source,
            data_type,
            start_us=start_us,
            end_us=end_us,
            exchange=exchange,
            symbol=symbol,
            connection=connection,
        )

    def holes(
        self,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        exchange: str | None = None,
        symbol: str | None = None,
    ) -> list[Hole]:
        """The holes (disconnects, gaps, drops, silences, refused subscriptions) that
        overlap ``[start, end)``, sorted by start (see :mod:`collector.reader.holes`)."""
        start_us, end_us = _range(start, end)
        return holes.find_holes(
            self.source, start_us=start_us, end_us=end_us, exchange=exchange, symbol=symbol
        )

    def book(
        self,
        exchange: str,
        symbol: str,
        start: TimeLike,
        end: TimeLike,
        *,
        depth: int | None = 10,
        every: timedelta | float | None = None,
    ) -> Iterator[BookItem]:
        """Replay the order book: the book as of ``start``, then a :class:`BookView` at each
        update (or every ``every``, a ``timedelta`` or seconds) until ``end``, and a
        :class:`BookReset` at each hole. See :mod:`collector.reader.books`."""
        return books.replay_book(
            self.source,
            exchange,
            symbol,
            to_us(start),
            to_us(end),
            depth=depth,
            every_us=_interval_us(every),
        )

    def book_at(
        self, exchange: str, symbol: str, at: TimeLike, *, depth: int | None = 10
    ) -> BookItem:
        """The book as of ``at``: a :class:`BookView`, or a :class:`BookReset` saying why it
        is not known then."""
        return books.book_at(self.source, exchange, symbol, to_us(at), depth=depth)
