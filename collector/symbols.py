"""``python -m collector symbols EXCHANGE [--category C]``: the venue's tradable symbols (of
one product category, where it has several) from its REST API."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TextIO, TypeVar

from collector.exchanges import get_adapter_class, known_exchanges
from collector.exchanges.base import ExchangeAdapter, Listing, ParseError
from collector.rest import HTTP_GEO_BLOCKED, RestError, fetch

EXIT_FAILED = 1  # the venue could not be reached or gave an unexpected answer
EXIT_USAGE = 2  # an exchange the collector does not know (or cannot list)
# Most pages of a paged listing (Bybit: up to 1000 symbols a page) before giving up.
MAX_PAGES = 50

_T = TypeVar("_T")


class SymbolsError(Exception):
    """The symbols could not be listed; the message is fit to show the user and
    ``exit_code`` is the command's exit status for it."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def list_symbols(
    exchange: str, rest_url: str | None = None, category: str | None = None
) -> list[str]:
    """Tradable symbols of ``exchange`` (of its ``category``, where it has several; None:
    the venue's default), by a blocking HTTP GET. Raises SymbolsError."""
    adapter = _adapter(exchange)
    pages = _pages(adapter, exchange, rest_url, category, adapter.parse_symbols)
    if len(pages) == 1:
        return pages[0]
    return sorted({symbol for page in pages for symbol in page})


def list_listing(
    exchange: str, rest_url: str | None = None, category: str | None = None
) -> list[Listing]:
    """Every listed symbol of ``exchange`` (of its ``category``) with its quote asset and
    status where the venue says (:meth:`~collector.exchanges.base.ExchangeAdapter.parse_listing`),
    sorted by symbol, by blocking HTTP GETs: what all-symbols mode resolves from. Raises
    SymbolsError."""
    adapter = _adapter(exchange)
    pages = _pages(adapter, exchange, rest_url, category, adapter.parse_listing)
    unique = {listing.symbol: listing for page in pages for listing in page}
    return [unique[symbol] for symbol in sorted(unique)]


def _adapter(exchange: str) -> type[ExchangeAdapter]:
    try:
        return get_adapter_class(exchange)
    except KeyError:
        known = ", ".join(known_exchanges())
        raise SymbolsError(f"unknown exchange {exchange!r} (known: {known})", EXIT_USAGE) from None


def _pages(
    adapter: type[ExchangeAdapter],
    exchange: str,
    rest_url: str | None,
    category: str | None,
    parse: Callable[[bytes], list[_T]],
) -> list[list[_T]]:
    """Each page of the venue's listing, parsed by ``parse``."""
    try:
        url = adapter.symbols_url(rest_url, category)
    except (NotImplementedError, ValueError) as exc:
        raise SymbolsError(str(exc), EXIT_USAGE) from None
    # A category stored under its own exchange name (binance-usdm) gets that product's advice.
    product = None
    if category in adapter.categories and category != adapter.default_category:
        product = f"{exchange}-{category}"
    pages: list[list[_T]] = []
    next_url: str | None = url
    while next_url is not None:
        if len(pages) == MAX_PAGES:
            raise SymbolsError(f"{exchange} listed more than {MAX_PAGES} pages of symbols")
        url = next_url
        try:
            body = fetch(url)
        except RestError as exc:
            geo = exc.status == HTTP_GEO_BLOCKED
            advice = f"; {adapter.geo_block_advice(product)}" if geo else ""
            raise SymbolsError(f"cannot reach {exchange}: {exc}{advice}") from None
        try:
            pages.append(parse(body))
            next_url = adapter.symbols_next_url(url, body)
        except ParseError as exc:
            raise SymbolsError(f"unexpected answer from {url}: {exc}") from None
    return pages


def run_symbols_command(
    exchange: str,
    *,
    rest_url: str | None,
    as_json: bool,
    out: TextIO | None = None,
    category: str | None = None,
) -> int:
    """Print the symbols, one per line (or a JSON array). Returns the exit status: 0, or
    1 when the venue cannot be reached, 2 for an unknown exchange (one error line)."""
    out = out or sys.stdout
    try:
        symbols = list_symbols(exchange, rest_url, category)
    except SymbolsError as exc:
        print(f"collector: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if as_json:
        out.write(json.dumps(symbols) + "\n")
    else:
        out.writelines(f"{s}\n" for s in symbols)
    return 0
