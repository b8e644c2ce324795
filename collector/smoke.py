"""``python -m collector test EXCHANGE [SYMBOL]``: is this venue reachable from here, now?

Connects to one venue the way the service does (the same adapter, connection loop and
parsers: :func:`collector.ingest.supervisor.run_exchange`), subscribes one symbol, prints
what arrives for ``--seconds`` and ends with a one-line verdict. Nothing is written to
disk and no HTTP port is opened, so it can run beside a running service.

Exit status: 0 when market data arrived and no subscription was refused; 1 otherwise
(nothing arrived, or the venue refused a feed); 2 for bad arguments (unknown exchange,
a symbol the venue cannot have), as for bad settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Final, TextIO

import attrs
import msgspec
import trio

from collector.clock import system_wall_us
from collector.config import ConfigError, Settings
from collector.events import BookUpdate, Event, Raw, Status, level_pairs

# The symbol tested when none is given: a liquid market each venue is sure to list.
DEFAULT_SYMBOLS: Final[dict[str, str]] = {
    "binance": "btcusdt",
    "bitfinex": "tBTCUSD",
    "bybit": "BTCUSDT",
    "coinbase": "BTC-USD",
    "deribit": "BTC-PERPETUAL",
    "kraken": "BTC/USD",
    "okx": "BTC-USDT",
    "upbit": "KRW-BTC",
}
# Where a venue needs a category to tell its markets apart, the one tested by default.
DEFAULT_CATEGORIES: Final[dict[str, str]] = {"bybit": "spot"}
DEFAULT_FEEDS: Final = ("trades", "orderbook", "ticker")
DEFAULT_SECONDS: Final = 5.0
# Lines printed per data type; later events are only counted (a book sends hundreds).
LINES_PER_TYPE: Final = 5
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``test`` command's arguments."""
    parser.add_argument("exchange", metavar="EXCHANGE", help="exchange name, e.g. binance")
    parser.add_argument(
        "symbol",
        metavar="SYMBOL",
        nargs="?",
        help="the symbol to subscribe (default: a liquid one of the venue, e.g. binance btcusdt)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"how long to listen (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--feeds",
        metavar="LIST",
        default=",".join(DEFAULT_FEEDS),
        help=f"comma-separated feeds (default {','.join(DEFAULT_FEEDS)})",
    )
    parser.add_argument("--base-url", metavar="URL", help="WebSocket URL (default: the venue's)")
    parser.add_argument(
        "--rest-url", metavar="URL", help="REST API base for book snapshots (default: the venue's)"
    )
    parser.add_argument(
        "--category",
        metavar="CATEGORY",
        help="the venue's product category (as in settings; bybit default spot)",
    )


@attrs.frozen
class Verdict:
    """What arrived: events per data type, refused feeds; ``ok`` says whether it worked."""

    counts: Counter[str]
    refused: tuple[str, ...]
    seconds: float

    @property
    def data_events(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind not in ("status", "raw"))

    @property
    def ok(self) -> bool:
        return self.data_events > 0 and not self.refused

    def line(self, exchange: str, symbol: str) -> str:
        seen = ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items())) or "nothing"
        head = f"{exchange} {symbol}: {seen} in {self.seconds:g} s"
        if self.refused:
            return f"FAIL {head}; refused: {'; '.join(self.refused)}"
        if not self.data_events:
            return f"FAIL {head}; no market data arrived"
        return f"OK {head}"


def smoke_settings(
    exchange: str,
    symbol: str,
    feeds: tuple[str, ...],
    *,
    base_url: str | None = None,
    rest_url: str | None = None,
    category: str | None = None,
) -> Settings:
    """Settings for one market of one symbol, checked as a settings file is (raises
    ConfigError naming the problem). Storage and HTTP are never used."""
    from collector.settings_check import parse_settings

    market: dict[str, object] = {"exchange": exchange, "symbols": [symbol], "feeds": list(feeds)}
    for key, value in (("base_url", base_url), ("rest_url", rest_url), ("category", category)):
        if value is not None:
            market[key] = value
    return parse_settings({"markets": [market]}, source="test")


def describe(event: Event) -> str:
    """One short line for an event (books: their size and best levels)."""
    if isinstance(event, Status):
        what = f"{event.event} {event.data_type or ''}".rstrip()
        return f"status {event.symbol} {what}" + (f": {event.detail}" if event.detail else "")
    if isinstance(event, BookUpdate):
        bids, asks = level_pairs(event.bids), level_pairs(event.asks)
        best_bid = max(bids, default=None)
        best_ask = min(asks, default=None)
        return (
            f"orderbook {event.symbol} {event.kind} {len(bids)} bids {len(asks)} asks"
            f" best bid {best_bid} best ask {best_ask} seq {event.sequence}"
        )
    if isinstance(event, Raw):
        return f"raw {event.direction} {len(event.payload)} bytes"
    fields = msgspec.structs.asdict(event)
    for key in ("exchange", "timestamp_collector"):
        fields.pop(key, None)
    symbol = fields.pop("symbol", "")
    shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    return f"{type(event).DATA_TYPE} {symbol} {shown}"


async def listen(settings: Settings, seconds: float, out: TextIO) -> Verdict:
    """Run the settings' connections for ``seconds``, printing what arrives to ``out``.

    Owns its nursery: the connections are cancelled when the time is up (reconnects with
    backoff happen inside, as in the service). Raises ConfigError for an adapter that
    cannot start (e.g. unreadable credentials).
    """
    from collector.health import HealthState
    from collector.ingest.connection import IngestContext
    from collector.ingest.supervisor import run_exchange
    from collector.metrics import Metrics
    from collector.planning import plan_service

    plan = plan_service(settings)
    metrics = Metrics()
    health = HealthState(metrics)
    for connection in plan.connections:
        health.add_connection(connection.name, connection.exchange, connection.symbols)
    ctx = IngestContext(settings.websocket, metrics, health, system_wall_us)
    counts: Counter[str] = Counter()
    refused: list[str] = []
    started = time.monotonic()
    event_tx, event_rx = trio.open_memory_channel[list[Event]](64)
    async with trio.open_nursery() as nursery:
        with event_tx:
            for exchange in plan.exchanges:
                await nursery.start(
                    run_exchange, exchange.adapter, exchange.connections, ctx, event_tx.clone()
                )
        with trio.move_on_after(seconds):
            async for batch in event_rx:
                for event in batch:
                    kind = type(event).DATA_TYPE
                    counts[kind] += 1
                    if isinstance(event, Status) and event.event == "subscribe_error":
                        refused.append(f"{event.data_type or 'subscription'}: {event.detail}")
                    if isinstance(event, Status) or counts[kind] <= LINES_PER_TYPE:
                        print(f"{time.monotonic() - started:7.3f} {describe(event)}", file=out)
        nursery.cancel_scope.cancel()
    return Verdict(counts, tuple(refused), seconds)


def run_test_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The ``test`` command: returns its exit status (see the module docstring)."""
    out = out or sys.stdout
    from collector.logs import setup_logging

    symbol = args.symbol or DEFAULT_SYMBOLS.get(args.exchange)
    try:
        if symbol is None:
            names = ", ".join(sorted(DEFAULT_SYMBOLS))
            raise ConfigError(f"unknown exchange '{args.exchange}' (known: {names})")
        if not args.seconds > 0:
            raise ConfigError(f"--seconds must be above 0 (got {args.seconds:g})")
        feeds = tuple(f.strip() for f in args.feeds.split(",") if f.strip())
        settings = smoke_settings(
            args.exchange,
            symbol,
            feeds,
            base_url=args.base_url,
            rest_url=args.rest_url,
            category=args.category or DEFAULT_CATEGORIES.get(args.exchange),
        )
        # Connection problems (refused, TLS, timeouts) are logged: shown as text lines.
        setup_logging("warning", "text")
        print(
            f"testing {args.exchange} {symbol} ({', '.join(feeds)}) for {args.seconds:g} s",
            file=out,
        )
        verdict = trio.run(listen, settings, args.seconds, out)
    except ConfigError as exc:
        print(f"collector: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(verdict.line(args.exchange, symbol), file=out)
    return EXIT_OK if verdict.ok else EXIT_FAILED
