"""Helpers shared by several venue adapters (sans-IO: no trio, no clock, no sockets).

- settings checks with the same wording for every venue: :func:`check_stream_feeds`,
  :func:`check_base_url`, :func:`check_rest_url`, and :func:`choices` to name allowed values;
- connection planning: :func:`pack_by_symbol` (all subscriptions of one symbol on one
  connection, within per-connection limits), :func:`chunked` (fixed-size slices, e.g. of
  a subscribe frame's topics) and :func:`join_ws_path` (a venue's path joined to a
  ``base_url``);
- :class:`RecentIds`, a bounded per-symbol set of recently seen trade ids.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Final, Literal, TypeVar
from urllib.parse import urlsplit

from collector.config import MarketSettings

T = TypeVar("T")

# How a venue's WebSocket path joins a base URL (see join_ws_path).
PathRule = Literal["always", "unless_present", "host_only"]


# --------------------------------------------------------------------------- settings checks

# What each feed holds, for messages that refuse one.
FEED_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "trades": "executed trades",
    "orderbook": "the order book",
    "ticker": "best bid/ask",
    "derivatives": "mark/index price, funding, open interest, option greeks",
    "liquidations": "forced liquidations",
    "instruments": "contract sizes, units, ticks and expiries from the venue's REST listing",
}


def check_stream_feeds(exchange: str, market: MarketSettings, feeds: Collection[str]) -> None:
    """ValueError unless the market asks for at least one feed the venue streams."""
    if not any(feed in feeds for feed in market.feeds):
        if "instruments" in market.feeds:
            raise ValueError(
                f"{exchange} feeds: 'instruments' describes the instruments of the market's "
                f"streams; add at least one of {', '.join(feeds)}"
            )
        raise ValueError(
            f"{exchange} feeds: 'raw' keeps the frames of other feeds; "
            f"add at least one of {', '.join(feeds)}"
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


# Venues' names of an asset that differ from the common one (Kraken's XBT and XDG).
_ASSET_ALIASES: Final[Mapping[str, str]] = {"XBT": "BTC", "XDG": "DOGE"}


def normalize_asset(asset: str) -> str:
    """An asset's common name for the ``instruments`` table: upper case, ``XBT`` -> ``BTC``."""
    upper = asset.strip().upper()
    return _ASSET_ALIASES.get(upper, upper)


def optional_float(value: str | float | None) -> float | None:
    """A number of a REST listing, which venues send as a string (``""`` or absent: none)."""
    if value is None or value == "":
        return None
    return float(value)


def choices(values: Sequence[object], *, quoted: bool = False) -> str:
    """Allowed values for a message, in the given order: ``1, 25, 100 or 250``."""
    names = [repr(v) if quoted else str(v) for v in values]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


# --------------------------------------------------------------------------- planning


def join_ws_path(base: str, path: str, rule: PathRule) -> str:
    """A venue's WebSocket ``path`` joined to ``base`` (the default URL or a ``base_url``).

    Without a ``path`` the base is used exactly as given. Otherwise the base loses a final
    slash and ``path`` is appended: ``always``; ``unless_present`` (not when the base
    already ends with it); ``host_only`` (only to a URL without a path of its own: one
    with a path is the whole URL, e.g. a generator's or a proxy's).
    """
    if not path:
        return base
    base = base.rstrip("/")
    if rule == "unless_present" and base.endswith(path):
        return base
    if rule == "host_only" and urlsplit(base).path not in ("", "/"):
        return base
    return f"{base}{path}"


def pack_by_symbol(
    by_symbol: Iterable[list[T]], limit: int | None, *, max_symbols: int | None = None
) -> list[list[T]]:
    """Greedy packing of per-symbol lists into chunks of at most ``limit`` items and at
    most ``max_symbols`` symbols (None: no limit of that kind).

    A symbol's items are never split: a new chunk starts when the next symbol's items
    would push the current one past a limit (a symbol with more than ``limit`` items gets a
    chunk of its own).
    """
    chunks: list[list[T]] = []
    current: list[T] = []
    symbols = 0
    for items in by_symbol:
        if current and (
            (limit is not None and len(current) + len(items) > limit)
            or (max_symbols is not None and symbols >= max_symbols)
        ):
            chunks.append(current)
            current = []
            symbols = 0
        current.extend(items)
        symbols += 1
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
