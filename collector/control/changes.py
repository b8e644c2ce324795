"""The difference between the running settings and new ones: what a reload can apply.

A reload applies changes of *markets* only: the (exchange, symbol) pairs collected, and
the options of the market each pair is in. Everything else (the sections ``collector``,
``storage``, ``websocket``, ...) is read once at start; a change there is reported as
needing a restart and not applied.

Pairs are compared as the rows spell them (:func:`~collector.settings_check.canonical_pair`),
so respelling a symbol (``btcusdt`` -> ``BTCUSDT``) or moving it within its market's list
changes nothing. A pair whose market options changed (feeds, book options, base URL,
its large-trade size, ...) is removed and added again: its streams are subscribed anew
with the new options.

Pure functions of two :class:`~collector.config.Settings`; nothing here runs I/O.
"""

from __future__ import annotations

import attrs
import msgspec

from collector.config import MarketSettings, Settings
from collector.settings_check import canonical_pair
from collector.sharding import Pair

# The sections read once at start (a change needs a restart), in settings order.
RESTART_SECTIONS = (
    "collector",
    "storage",
    "aws",
    "websocket",
    "kafka",
    "redis",
    "analytics",
    "binary",
)


@attrs.frozen
class MarketsChange:
    """What changes from one settings to the next.

    ``removed``: pairs collected now and not after (or whose market options changed), in
    sorted order. ``added``: the markets of the new settings reduced to their added pairs'
    symbols (settings order; a market none of whose pairs is added is left out).
    ``restart``: the keys (``section.key``) whose change is not applied, in settings order.
    """

    removed: tuple[Pair, ...] = ()
    added: tuple[MarketSettings, ...] = ()
    restart: tuple[str, ...] = ()

    @property
    def added_pairs(self) -> tuple[Pair, ...]:
        """The pairs of ``added`` (settings order)."""
        return tuple(canonical_pair(m, s) for m in self.added for s in m.symbols)

    @property
    def applies_nothing(self) -> bool:
        return not self.removed and not self.added


def _pair_options(market: MarketSettings, symbol: str) -> MarketSettings:
    """``market`` as it shapes the one pair of ``symbol``: its options, without the other
    symbols (the large-trade size reduced to the symbol's own)."""
    size = market.large_trade_size
    if isinstance(size, dict):
        size = size.get(symbol)
    return msgspec.structs.replace(market, symbols=(), large_trade_size=size)


def pair_markets(settings: Settings) -> dict[Pair, MarketSettings]:
    """Each pair of ``settings`` -> its market's options as :func:`_pair_options` gives them."""
    return {
        canonical_pair(market, symbol): _pair_options(market, symbol)
        for market in settings.markets
        for symbol in market.symbols
    }


def restart_keys(old: Settings, new: Settings) -> tuple[str, ...]:
    """The keys outside ``markets`` whose values differ (``section.key``), in settings order."""
    changed = []
    for name in RESTART_SECTIONS:
        before = msgspec.structs.asdict(getattr(old, name))
        after = msgspec.structs.asdict(getattr(new, name))
        changed += [f"{name}.{key}" for key in before if before[key] != after[key]]
    return tuple(changed)


def diff_settings(old: Settings, new: Settings) -> MarketsChange:
    """What turns ``old`` into ``new`` (both checked settings of one instance: the shard's,
    when sharded)."""
    before = pair_markets(old)
    after = pair_markets(new)
    removed = sorted(pair for pair, options in before.items() if after.get(pair) != options)
    added_markets = []
    for market in new.markets:
        symbols = tuple(
            symbol
            for symbol in market.symbols
            if before.get(pair := canonical_pair(market, symbol)) != after[pair]
        )
        if symbols:
            added_markets.append(msgspec.structs.replace(market, symbols=symbols))
    return MarketsChange(tuple(removed), tuple(added_markets), restart_keys(old, new))
