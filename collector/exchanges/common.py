"""Helpers shared by several venue adapters (sans-IO: no trio, no clock, no sockets).

- settings checks with the same wording for every venue: :func:`check_stream_feeds`,
  :func:`check_base_url`, :func:`check_rest_url`;
- connection planning: :func:`pack_by_symbol` (all subscriptions of one symbol on one
  connection, at most ``limit`` per connection) and :func:`chunked` (fixed-size slices, for
  subscribe frames or symbols per connection);
- :func:`url_with_path` (a venue path appended to a host-only ``base_url``);
- :class:`RecentIds`, a bounded per-symbol set of recently seen trade ids.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from collector.config import MarketSettings

T = TypeVar("T")


# --------------------------------------------------------------------------- settings checks


def check_stream_feeds(exchange: str, market: MarketSettings, feeds: Collection[str]) -> None:
    """ValueError unless the market asks for at least one feed the venue streams."""
    if not any(feed in feeds for feed in market.feeds):
        raise ValueError(
            f"{exchange} feeds: 'raw' keeps the frames of other feeds; "
            "add at least one of trades, orderbook, ticker"
        )


def check_base_url(exchange: str, market: MarketSettings) -> None:
    """ValueError unless ``base_url`` (when set) is a ``ws://`` or ``wss://`` URL."""
    if market.base_url is not None and not market.base_url.startswith(("ws://", "wss://")):
        raise ValueError(
            f"{exchange} base_url must start with ws:// or wss:// (got {market.base_url!r})"
        )


def check_rest_url(exchange: str, market: MarketSettings) -> None:
    """ValueError unless ``rest_url`` (when set) is an ``http://`` or ``https://`` URL."""
    if market.rest_url is not None and not market.rest_url.startswith(("http://", "https://")):
        raise ValueError(
            f"{exchange} rest_url must start with http:// or https:// (got {market.rest_url!r})"
        )


# --------------------------------------------------------------------------- planning


def url_with_path(base_url: str | None, default: str, path: str) -> str:
    """``base_url`` (or ``default``) with ``path`` appended; a URL with a path is used as is."""
    base = (base_url or default).rstrip("/")
    return base if urlsplit(base).path not in ("", "/") else f"{base}{path}"


def pack_by_symbol(by_symbol: Iterable[list[T]], limit: int) -> list[list[T]]:
    """Greedy packing of per-symbol lists into chunks of at most ``limit`` items.

    A symbol's items are never split: a new chunk starts when the next symbol's items
    would push the current one past ``limit`` (a symbol with more than ``limit`` items
    gets a chunk of its own).
    """
    chunks: list[list[T]] = []
    current: list[T] = []
    for items in by_symbol:
        if current and len(current) + len(items) > limit:
            chunks.append(current)
            current = []
        current.extend(items)
    if current:
        chunks.append(current)
    return chunks


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# --------------------------------------------------------------------------- trade ids


class RecentIds:
    """A bounded set of recently seen ids per symbol (oldest forgotten first)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sets: dict[str, set[str]] = {}
        self._orders: dict[str, deque[str]] = {}

    def add(self, symbol: str, trade_id: str) -> bool:
        """Remember ``trade_id``; False if it was already remembered (a duplicate)."""
        seen = self._sets.get(symbol)
        if seen is None:
            seen = self._sets[symbol] = set()
            self._orders[symbol] = deque()
        if trade_id in seen:
            return False
        order = self._orders[symbol]
        if len(order) >= self.limit:
            seen.discard(order.popleft())
        order.append(trade_id)
        seen.add(trade_id)
        return True
