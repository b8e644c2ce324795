"""All-symbols mode: markets with ``symbols = ["*"]``, resolved from the venue's listing.

A ``*`` market collects every symbol its venue lists (``collector.symbols``: the code of
``python -m collector symbols``), reduced by the market's filters, in this order:

- ``status``: the venue's status words to keep (case-insensitive); None: the symbols the
  venue counts as trading (Binance: ``TRADING``);
- ``quote``: quote assets to keep (venues whose listing names them: ``listing_quotes``);
- ``symbols_regex``: a regular expression the whole symbol matches (``re.fullmatch``);
- a symbol that another market of the settings lists by name is left to that market, and
  one the collector cannot spell (``normalize_symbol`` refuses it) is skipped (logged);
- ``max_symbols``: the first that many in sorted (code point) order of the venue's
  spelling: deterministic, the same on every instance and at every refresh.

:func:`resolve_settings` runs at start (the command line, before planning and sharding:
resolved pairs are sharded like listed ones) and at each ``SIGHUP``; its blocking GETs run
one after another, one listing per distinct (venue, category, REST base), so a settings
file with several ``*`` markets of one venue asks it once. :func:`watch_listings` is the
service's task that resolves again every ``symbols_refresh_secs`` (in a worker thread)
and hands the difference to the :class:`~collector.control.controller.Controller`: the
delisted pairs first (their ``unsubscribed`` rows say ``delisted``), then the listed ones
(origin ``listed`` in the logs); other symbols are not touched. Only what the listing
changed since its last reading is applied: a symbol the admin API added is never removed
here, and a listed one it removed is not added back until the venue lists it anew.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable

import attrs
import msgspec
import trio

from collector.config import ConfigError, MarketSettings, Settings
from collector.control.controller import ChangeRefused, Controller
from collector.exchanges.base import Listing
from collector.settings_check import canonical_pair, is_all_symbols
from collector.sharding import Pair, Shard, assignment, shard_settings
from collector.symbols import EXIT_FAILED, EXIT_USAGE, SymbolsError, list_listing

log = logging.getLogger(__name__)

ORIGIN_LISTED = "listed"
ORIGIN_DELISTED = "delisted"

# (exchange, REST base or None, category or None) -> the venue's listing; raises SymbolsError.
FetchListing = Callable[[str, str | None, str | None], list[Listing]]


class ListingError(ConfigError):
    """A ``*`` market could not be resolved; ``exit_code`` is 1 when it may pass (the venue
    could not be reached or answered oddly), 2 when it will not (nothing matches)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def has_all_symbols(settings: Settings) -> bool:
    """Whether any market of ``settings`` is a ``*`` market."""
    return any(is_all_symbols(market) for market in settings.markets)


def select(listing: Iterable[Listing], market: MarketSettings, taken: set[Pair]) -> list[str]:
    """The symbols of ``listing`` that the ``*`` ``market`` collects (its filters; see the
    module docstring), in sorted order; their pairs are added to ``taken`` (pairs already in
    it are skipped)."""
    statuses = {s.upper() for s in market.status} if market.status is not None else None
    quotes = {q.upper() for q in market.quote} if market.quote is not None else None
    regex = re.compile(market.symbols_regex) if market.symbols_regex is not None else None
    chosen: list[str] = []
    for item in sorted(listing, key=lambda listed: listed.symbol):
        if market.max_symbols is not None and len(chosen) == market.max_symbols:
            break
        if (item.status.upper() not in statuses) if statuses is not None else not item.trading:
            continue
        if quotes is not None and (item.quote is None or item.quote.upper() not in quotes):
            continue
        if regex is not None and not regex.fullmatch(item.symbol):
            continue
        try:
            pair = canonical_pair(market, item.symbol)
        except ValueError:
            log.warning(
                "listed symbol skipped: the collector cannot spell it",
                extra={"exchange": market.exchange, "symbol": item.symbol},
            )
            continue
        if pair in taken:
            continue
        taken.add(pair)
        chosen.append(item.symbol)
    return chosen


def resolve_settings(settings: Settings, fetch: FetchListing = list_listing) -> Settings:
    """``settings`` with each ``*`` market's symbols resolved (blocking: network I/O). A
    ``*`` market that resolves to nothing is left out (logged). Unchanged settings when
    there is no ``*`` market.

    Raises ListingError: a venue could not be listed (exit status 1), or no market is left
    (exit status 2)."""
    if not has_all_symbols(settings):
        return settings
    taken = {
        canonical_pair(m, s) for m in settings.markets if not is_all_symbols(m) for s in m.symbols
    }
    listings: dict[tuple[str, str | None, str | None], list[Listing]] = {}
    markets: list[MarketSettings] = []
    for index, market in enumerate(settings.markets):
        if not is_all_symbols(market):
            markets.append(market)
            continue
        key = (market.exchange, market.rest_url, market.category)
        if key not in listings:
            try:
                listings[key] = fetch(*key)
            except SymbolsError as exc:
                code = EXIT_USAGE if exc.exit_code == EXIT_USAGE else EXIT_FAILED
                raise ListingError(f"markets[{index}]: {exc}", code) from None
        symbols = select(listings[key], market, taken)
        if not symbols:
            log.warning(
                "a * market lists no symbol its filters keep",
                extra={"market": index, "exchange": market.exchange},
            )
            continue
        markets.append(msgspec.structs.replace(market, symbols=tuple(symbols)))
    if not markets:
        raise ListingError('no symbol is left to collect: every "*" market resolved to none', 2)
    return msgspec.structs.replace(settings, markets=tuple(markets))


@attrs.define
class Listings:
    """What :func:`watch_listings` needs: the full settings as the file says them (with
    their ``*`` markets), this instance's shard (None: not sharded), how to list a venue,
    and the pairs of the ``*`` markets this instance collects (as resolved last)."""

    template: Settings
    shard: Shard | None
    fetch: FetchListing = list_listing
    resolved: frozenset[Pair] = frozenset()

    @property
    def interval_secs(self) -> float:
        """The smallest ``symbols_refresh_secs`` of the ``*`` markets (inf: none)."""
        return min(
            (m.symbols_refresh_secs for m in self.template.markets if is_all_symbols(m)),
            default=math.inf,
        )

    def instance_settings(self) -> tuple[Settings, int, frozenset[Pair]]:
        """Resolve now (blocking): this instance's settings, the pairs the whole fleet
        configures, and the ``*`` markets' pairs of this instance. Raises ListingError,
        ShardError (ConfigError)."""
        full = resolve_settings(self.template, self.fetch)
        mine = shard_settings(full, self.shard) if self.shard is not None else full
        return mine, assignment(full, self.shard).configured, self.resolved_pairs(mine)

    def resolved_pairs(self, settings: Settings) -> frozenset[Pair]:
        """The pairs of resolved ``settings`` that come from the ``*`` markets (not listed
        by name in the template)."""
        named = {
            canonical_pair(m, s)
            for m in self.template.markets
            if not is_all_symbols(m)
            for s in m.symbols
        }
        return frozenset(
            pair
            for m in settings.markets
            for s in m.symbols
            if (pair := canonical_pair(m, s)) not in named
        )


def _pairs_of(settings: Settings) -> dict[Pair, str]:
    return {canonical_pair(m, s): s for m in settings.markets for s in m.symbols}


def _without(settings: Settings, gone: set[Pair]) -> Settings:
    markets = []
    for market in settings.markets:
        kept = tuple(s for s in market.symbols if canonical_pair(market, s) not in gone)
        if kept:
            markets.append(msgspec.structs.replace(market, symbols=kept))
    return msgspec.structs.replace(settings, markets=tuple(markets))


def _with(settings: Settings, resolved: Settings, added: set[Pair]) -> Settings:
    """``settings`` plus the ``added`` pairs, each in the market of ``resolved`` that has
    it: joined to a running market with the same options, else as a market of its own."""
    markets = list(settings.markets)
    for market in resolved.markets:
        symbols = [s for s in market.symbols if canonical_pair(market, s) in added]
        if not symbols:
            continue
        options = msgspec.structs.replace(market, symbols=())
        for i, running in enumerate(markets):
            if msgspec.structs.replace(running, symbols=()) == options:
                markets[i] = msgspec.structs.replace(running, symbols=(*running.symbols, *symbols))
                break
        else:
            markets.append(msgspec.structs.replace(market, symbols=tuple(symbols)))
    return msgspec.structs.replace(settings, markets=tuple(markets))


async def refresh_once(controller: Controller, listings: Listings) -> bool:
    """Resolve the ``*`` markets again (in a worker thread) and apply the difference to
    the running markets: delisted pairs removed, then listed pairs added. False (logged,
    nothing changed) when the listing failed or the change was refused."""
    try:
        resolved, configured, pairs = await trio.to_thread.run_sync(listings.instance_settings)
    except ConfigError as exc:
        log.warning("symbol listing failed, keeping the running symbols: %s", exc)
        return False
    before = listings.resolved
    running = _pairs_of(controller.settings)
    delisted = {pair for pair in before - pairs if pair in running}
    listed = {pair for pair in pairs - before if pair not in running}
    try:
        if delisted:
            reduced = _without(controller.settings, delisted)
            if reduced.markets:  # else removed together with the additions below
                await controller.apply(reduced, ORIGIN_DELISTED, configured_pairs=configured)
                delisted = set()
        if listed or delisted:
            grown = _with(_without(controller.settings, delisted), resolved, listed)
            if not grown.markets:
                log.error("every running symbol was delisted: keeping them until one is listed")
                return False
            await controller.apply(
                grown, ORIGIN_LISTED if not delisted else "listing", configured_pairs=configured
            )
    except ChangeRefused as exc:
        log.error("listing change refused, keeping the running symbols: %s", exc)
        return False
    listings.resolved = pairs
    if listed or delisted or before != pairs:
        log.info(
            "symbol listing refreshed",
            extra={"listed": len(listed), "delisted": len(before - pairs)},
        )
    return True


async def watch_listings(
    controller: Controller,
    listings: Listings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every :attr:`Listings.interval_secs`, :func:`refresh_once` (a failed listing is
    tried again after a tenth of the interval, at most a minute). Runs until cancelled;
    a cancel during a listing abandons its worker thread's result."""
    task_status.started()
    interval = listings.interval_secs
    if math.isinf(interval):
        return
    delay = interval
    while True:
        await trio.sleep(delay)
        ok = await refresh_once(controller, listings)
        delay = interval if ok else min(interval / 10, 60.0)
