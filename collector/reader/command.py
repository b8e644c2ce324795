"""The ``book`` and ``holes`` commands: the reader from the command line.

``python -m collector book EXCHANGE SYMBOL --at TIME [--depth N] [--json]`` prints the order
book as of TIME; ``python -m collector holes [EXCHANGE [SYMBOL]] [--from T] [--to T]
[--json]`` lists the holes overlapping that range. Both read ``--data`` (a data directory,
default ``./data``, or ``s3://bucket/prefix`` with ``--endpoint-url`` and ``--region``).

Exit status, as for every command: 0 done; 1 the data cannot answer (no order book
recorded for the symbol, the book not known at TIME because of a hole, the files or S3 not
readable); 2 bad usage (a time that does not parse, a depth below 1, a data directory that
does not exist). Failures are one ``collector: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Final

import pyarrow as pa

from collector.reader.books import BookReset, BookView, book_at
from collector.reader.catalog import list_files
from collector.reader.data import DataReader
from collector.reader.errors import ReaderError, UsageError
from collector.reader.holes import ORDERBOOK, Hole
from collector.reader.times import to_us

EXIT_OK: Final = 0
EXIT_NO_ANSWER: Final = 1
EXIT_USAGE: Final = 2


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--endpoint-url``, ``--region``: where the recorded data is."""
    parser.add_argument(
        "--data",
        metavar="PATH|s3://BUCKET/PREFIX",
        default="data",
        help="the data directory or S3 prefix to read (default: ./data)",
    )
    parser.add_argument(
        "--endpoint-url", metavar="URL", help="S3-compatible endpoint (MinIO, R2...)"
    )
    parser.add_argument("--region", metavar="REGION", help="S3 region (default: AWS_REGION)")


def add_book_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exchange", metavar="EXCHANGE", help="exchange, e.g. binance-usdm")
    parser.add_argument("symbol", metavar="SYMBOL", help="symbol as recorded, e.g. BTCUSDT")
    parser.add_argument(
        "--at",
        metavar="TIME",
        required=True,
        help="ISO 8601 (UTC unless an offset is given) or milliseconds since the epoch",
    )
    parser.add_argument(
        "--depth", metavar="N", type=int, default=10, help="levels per side (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    add_data_arguments(parser)


def add_holes_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exchange", metavar="EXCHANGE", nargs="?", help="only this exchange")
    parser.add_argument("symbol", metavar="SYMBOL", nargs="?", help="only this symbol")
    parser.add_argument("--from", dest="start", metavar="TIME", help="range start (default: all)")
    parser.add_argument("--to", dest="end", metavar="TIME", help="range end, exclusive")
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    add_data_arguments(parser)


def _guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command, turning its expected failures into one line and an exit status."""
    try:
        return run(args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (ReaderError, OSError, pa.ArrowException) as exc:
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_NO_ANSWER)


def _fail(message: str, code: int) -> int:
    print(f"collector: error: {message}", file=sys.stderr)
    return code


def _reader(args: argparse.Namespace) -> DataReader:
    return DataReader(args.data, endpoint_url=args.endpoint_url, region=args.region)


def run_book_command(args: argparse.Namespace) -> int:
    return _guarded(_book, args)


def _book(args: argparse.Namespace) -> int:
    at_us = to_us(args.at)
    if args.depth < 1:
        raise UsageError(f"--depth must be at least 1, not {args.depth}")
    data = _reader(args)
    if not list_files(data.source, exchange=args.exchange, symbol=args.symbol, data_type=ORDERBOOK):
        return _fail(
            f"no order book recorded for {args.exchange} {args.symbol} in {args.data}",
            EXIT_NO_ANSWER,
        )
    item = book_at(data.source, args.exchange, args.symbol, at_us, depth=args.depth)
    if args.json:
        print(json.dumps({"exchange": args.exchange, "symbol": args.symbol, **item.to_dict()}))
        return EXIT_OK if isinstance(item, BookView) else EXIT_NO_ANSWER
    if isinstance(item, BookReset):
        because = item.event + (f" ({item.detail})" if item.detail else "")
        return _fail(
            f"the book of {args.exchange} {args.symbol} is not known at {args.at}: "
            f"{because} at {_iso(item.time)}",
            EXIT_NO_ANSWER,
        )
    print("\n".join(book_lines(args.exchange, args.symbol, item)))
    return EXIT_OK


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def book_lines(exchange: str, symbol: str, view: BookView) -> list[str]:
    """The book as a price ladder: asks from the worst shown down to the best, then bids
    from the best down."""
    sequence = "" if view.sequence is None else f", sequence {view.sequence}"
    lines = [
        f"{exchange} {symbol} order book at {_iso(view.time)}",
        f"last update {_iso(view.updated)} ({view.kind}{sequence})",
        f"{'side':<4}  {'price':>18}  {'size':>18}",
    ]
    lines += [f"{'ask':<4}  {price!s:>18}  {size!s:>18}" for price, size in reversed(view.asks)]
    lines += [f"{'bid':<4}  {price!s:>18}  {size!s:>18}" for price, size in view.bids]
    return lines


def run_holes_command(args: argparse.Namespace) -> int:
    return _guarded(_holes, args)


def _holes(args: argparse.Namespace) -> int:
    data = _reader(args)
    found = data.holes(start=args.start, end=args.end, exchange=args.exchange, symbol=args.symbol)
    if args.json:
        print(json.dumps([hole.to_dict() for hole in found], indent=2))
        return EXIT_OK
    print(
        "\t".join(("start", "end", "exchange", "symbol", "event", "data_type", "count", "detail"))
    )
    for hole in found:
        print(hole_line(hole))
    return EXIT_OK


def hole_line(hole: Hole) -> str:
    """One tab-separated line: start, end (``open`` if not seen ending), exchange, symbol,
    event, data type (``*``: every feed), count, detail."""
    return "\t".join(
        (
            _iso(hole.start),
            _iso(hole.end) if hole.end is not None else "open",
            hole.exchange,
            hole.symbol,
            hole.event,
            hole.data_type or "*",
            "" if hole.count is None else str(hole.count),
            hole.detail or "",
        )
    )
