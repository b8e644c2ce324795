"""``python -m collector symbols EXCHANGE [--category C]``: the venue's tradable symbols (of
one product category, where it has several) from its REST API."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from collector.exchanges import get_adapter_class, known_exchanges
from collector.exchanges.base import ParseError
from collector.rest import HTTP_GEO_BLOCKED, RestError, fetch

EXIT_FAILED = 1  # the venue could not be reached or gave an unexpected answer
EXIT_USAGE = 2  # an exchange the collector does not know (or cannot list)


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
    try:
        adapter = get_adapter_class(exchange)
    except KeyError:
        known = ", ".join(known_exchanges())
        raise SymbolsError(f"unknown exchange {exchange!r} (known: {known})", EXIT_USAGE) from None
    try:
        url = adapter.symbols_url(rest_url, category)
    except (NotImplementedError, ValueError) as exc:
        raise SymbolsError(str(exc), EXIT_USAGE) from None
    try:
        body = fetch(url)
    except RestError as exc:
        product = None if category in (None, adapter.default_category) else f"{exchange}-{category}"
        advice = f"; {adapter.geo_block_advice(product)}" if exc.status == HTTP_GEO_BLOCKED else ""
        raise SymbolsError(f"cannot reach {exchange}: {exc}{advice}") from None
    try:
        return adapter.parse_symbols(body)
    except ParseError as exc:
        raise SymbolsError(f"unexpected answer from {url}: {exc}") from None


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
