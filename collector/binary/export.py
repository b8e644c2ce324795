"""The ``export-binary`` command: the MD and TRADES column files, from the Parquet files.

``python -m collector export-binary --out DIR [--data PATH|s3://...] [--from T] [--to T]
[EXCHANGE [SYMBOL]]`` reads, with :mod:`collector.reader`, the ``trades``, ``ticker`` and
order book snapshot rows of each (exchange, symbol) with trades received in ``[from, to)``,
merges them by receive time (at an equal receive time quotes come before trades) and
writes them with the live outlet's own row rules (:mod:`collector.binary.columns`), so a
day exported whole gives the bytes the outlet wrote for the same rows.

Quotes received before ``--from`` are not read: MD's best bid and ask are NaN until the
first quote in the range. Each day's file set written replaces that day's set under
``--out`` (written beside it, then renamed column by column): export into a directory the
live outlet is not writing to. A symbol's rows are held in memory while it is exported.

Exit status: 0 done; 1 the data cannot answer (no trades in the range, files not
readable); 2 bad usage (a time that does not parse, a data directory that does not exist).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector.binary.columns import RowBuilder, RowKey, Rows
from collector.binary.files import BinaryWriter
from collector.events import BookUpdate, Event, Ticker, Trade
from collector.reader.command import (
    EXIT_NO_ANSWER,
    EXIT_OK,
    EXIT_USAGE,
    add_data_arguments,
)
from collector.reader.data import DataReader
from collector.reader.errors import ReaderError, UsageError

# Events fed to the writer per round (bounds the rows held before a write).
_ROUND: int = 100_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exchange", metavar="EXCHANGE", nargs="?", help="only this exchange")
    parser.add_argument("symbol", metavar="SYMBOL", nargs="?", help="only this symbol")
    parser.add_argument("--out", metavar="DIR", required=True, help="root of the column files")
    parser.add_argument("--from", dest="start", metavar="TIME", help="range start (default: all)")
    parser.add_argument("--to", dest="end", metavar="TIME", help="range end, exclusive")
    add_data_arguments(parser)


def run_export_command(args: argparse.Namespace) -> int:
    """Run the command; its expected failures are one ``collector: error:`` line."""
    try:
        return _export(args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (ReaderError, OSError, pa.ArrowException) as exc:
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_NO_ANSWER)


def _fail(message: str, code: int) -> int:
    print(f"collector: error: {message}", file=sys.stderr)
    return code


def _export(args: argparse.Namespace) -> int:
    data = DataReader(args.data, endpoint_url=args.endpoint_url, region=args.region)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is not a directory")
    streams = data.catalog(
        exchange=args.exchange,
        symbol=args.symbol,
        data_type="trades",
        start=args.start,
        end=args.end,
    )
    if not streams:
        where = " ".join(x for x in (args.exchange, args.symbol) if x) or "any symbol"
        return _fail(f"no trades recorded for {where} in {args.data} in that range", EXIT_NO_ANSWER)
    for stream in streams:
        rows = export_symbol(data, out, stream.exchange, stream.symbol, args.start, args.end)
        print(f"{stream.exchange}\t{stream.symbol}\t{rows} trades")
    return EXIT_OK


def export_symbol(
    data: DataReader,
    out: Path,
    exchange: str,
    symbol: str,
    start: str | None = None,
    end: str | None = None,
) -> int:
    """Write the column files of one (exchange, symbol) under ``out``; the trades written.
    Raises ``OSError`` for the files and the reader's errors for the data."""
    events = sorted(_events(data, exchange, symbol, start, end), key=_order)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        writer = BinaryWriter(staging)
        builder = RowBuilder()
        trades = 0
        try:
            for at in range(0, len(events), _ROUND):
                rows: dict[RowKey, Rows] = {}
                trades += builder.add((e for _, _, e in events[at : at + _ROUND]), rows)
                writer.write(rows)
        finally:
            writer.close()
        for path in sorted(staging.rglob("*.bin")):
            target = out / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        return trades
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _order(item: tuple[int, int, Event]) -> tuple[int, int]:
    return item[0], item[1]


def _events(
    data: DataReader, exchange: str, symbol: str, start: str | None, end: str | None
) -> Iterator[tuple[int, int, Event]]:
    """(receive time, 0 for a quote or 1 for a trade, event), in file order per table."""
    kinds = {s.data_type for s in data.catalog(exchange=exchange, symbol=symbol)}
    where = {"exchange": exchange, "symbol": symbol, "start": start, "end": end}
    if "ticker" in kinds:
        table = data.table(
            "ticker", columns=["timestamp_collector", "bid_price", "ask_price"], **where
        )
        columns = (_values(table[c]) for c in table.column_names)
        for ts, bid, ask in zip(*columns, strict=True):
            quote = Ticker(exchange, symbol, None, ts, None, bid, None, ask, None, None, None)
            yield ts, 0, quote
    if "orderbook" in kinds:
        dataset, row_filter = data.dataset("orderbook", **where)
        snapshots = pc.field("kind") == "snapshot"
        table = dataset.to_table(
            columns=["timestamp_collector", "bids", "asks"],
            filter=snapshots if row_filter is None else row_filter & snapshots,
        )
        tops = zip(
            _values(table["timestamp_collector"]),
            _first_prices(table["bids"]),
            _first_prices(table["asks"]),
            strict=True,
        )
        for ts, bid, ask in tops:
            bids = array("d") if bid is None else array("d", (bid, 0.0))
            asks = array("d") if ask is None else array("d", (ask, 0.0))
            book = BookUpdate(exchange, symbol, None, ts, None, "snapshot", None, None, bids, asks)
            yield ts, 0, book
    table = data.table(
        "trades",
        columns=["timestamp_collector", "trade_id", "price", "size", "side"],
        **where,
    )
    columns = (_values(table[c]) for c in table.column_names)
    for ts, trade_id, price, size, side in zip(*columns, strict=True):
        yield ts, 1, Trade(exchange, symbol, None, ts, None, trade_id, price, size, side)


def _values(column: pa.ChunkedArray) -> list[Any]:
    """A column's values; timestamps as integer microseconds (the events' unit)."""
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    values: list[Any] = column.to_pylist()
    return values


def _first_prices(column: pa.ChunkedArray) -> list[float | None]:
    """The price of each row's first level (``None`` for an empty or null side)."""
    out: list[float | None] = []
    for chunk in column.chunks:
        assert isinstance(chunk, pa.ListArray)
        offsets = chunk.offsets.to_pylist()
        valid = chunk.is_valid().to_pylist()
        firsts = [
            offsets[i] if valid[i] and offsets[i + 1] > offsets[i] else -1
            for i in range(len(chunk))
        ]
        prices = chunk.values.field("price")
        if not len(prices):
            out.extend([None] * len(chunk))
            continue
        taken = pc.take(prices, pa.array([max(i, 0) for i in firsts], pa.int64())).to_pylist()
        out.extend(p if i >= 0 else None for i, p in zip(firsts, taken, strict=True))
    return out
