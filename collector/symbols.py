"""``python -m collector symbols EXCHANGE``: the venue's tradable symbols from its REST API."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from collector.exchanges import get_adapter_class, known_exchanges
from collector.exchanges.base import ParseError
from collector.rest import RestError, fetch


class SymbolsError(Exception):
    """The symbols could not be listed; the message is fit to show the user."""


def list_symbols(
    exchange: str, rest_url: str | None = None, category: str | None = None
) -> list[str]:
    """Tradable symbols of ``exchange`` (of its ``category``, where it has several; None:
    the venue's default), by a blocking HTTP GET. Raises SymbolsError."""
    try:
        adapter = get_adapter_class(exchange)
    except KeyError:
        known = ", ".join(known_exchanges())
        raise SymbolsError(f"unknown exchange {exchange!r} (known: {known})") from None
    try:
        url = adapter.symbols_url(rest_url, category)
    except (NotImplementedError, ValueError) as exc:
        raise SymbolsError(str(exc)) from None
    try:
        body = fetch(url)
    except RestError as exc:
        raise SymbolsError(f"cannot reach {exchange}: {exc}") from None
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
    """Print the symbols, one per line (or a JSON array). Returns the exit status."""
    out = out or sys.stdout
    try:
        symbols = list_symbols(exchange, rest_url, category)
    except SymbolsError as exc:
        print(f"collector: error: {exc}", file=sys.stderr)
        return 1
    if as_json:
        out.write(json.dumps(symbols) + "\n")
    else:
        out.writelines(f"{s}\n" for s in symbols)
    return 0
