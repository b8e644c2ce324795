"""Applies a change of markets to the running service, without a restart.

The :class:`Controller` holds the settings the service runs now (the instance's: the
shard's when sharded) and, given new ones (:meth:`Controller.apply`: a ``SIGHUP``
reload, the admin API), applies the difference (:mod:`collector.control.changes`)
without touching the other symbols' connections, streams or files:

- **Added pairs** are planned on new connections of their own (the venue's planning and
  limits, names that continue the run's: ``binance-3``); each starts under its
  exchange's supervisor (a venue not running yet gets its exchange task), with its
  metric series created and its ``/health`` entry, so ``/ready`` waits for it to
  subscribe. An ``added`` status row per stream (its ``detail`` names the change's
  origin: ``listed``, ``SIGHUP`` ...) goes on the exchange's event channel first; then its
  session writes the ``subscribed`` rows as the venue acknowledges.
  Existing connections are never replaced for an addition: replacing one would put a
  ``disconnected``/``connected`` pair (a hole) into every other symbol it carries.
- **Removed pairs** are taken off the connections that carry them: an ``unsubscribed``
  status row per stream (symbol and data type) is written, then nothing more of the symbol
  (the connection's sink drops its rows; :class:`~collector.ingest.sink.EventSink`), its
  ``collector_websocket_connected`` and last-data series go. The connection's plan is
  reduced, so its next reconnect subscribes only what is left; until then the venue may
  keep sending the removed streams, which are read and dropped (no venue is sent an
  unsubscribe frame here). A connection left with no symbol is stopped and leaves
  ``/health``.
- The files' metadata (the market options of files opened from now on), the trade
  analytics' pairs, the shard gauges and the ``instruments`` listings (an added symbol's
  fetched at once, a removed one's no more; :class:`~collector.instruments.
  InstrumentListings`) follow.

Changes are applied one at a time (a lock), each in one pass that does all its planning
before it changes anything: a change that cannot be planned (a new venue whose adapter
cannot start) raises :class:`ChangeRefused` and changes nothing. Changes are not written
back to the settings file: a restart runs the file's markets (docs/operations.md).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable

import attrs
import trio

from collector.analytics import TradeAnalytics, large_trade_sizes
from collector.clock import WallClock
from collector.config import ConfigError, MarketSettings, Settings
from collector.control.changes import MarketsChange, diff_settings, pair_markets
from collector.credentials import make_adapter
from collector.events import Event, Status, feed_data_type
from collector.exchanges.base import ConnectionPlan, ExchangeAdapter, Subscription
from collector.ingest.connection import IngestContext
from collector.ingest.supervisor import ConnectionControl, ExchangeRunner
from collector.instruments import InstrumentListings, instrument_jobs
from collector.series import create_connection_series
from collector.settings_check import canonical_pair
from collector.sharding import Pair
from collector.storage import FileMetadataSource

log = logging.getLogger(__name__)

_NUMBERED = re.compile(r"^(?P<prefix>.*)-(?P<index>\d+)$")


class ChangeRefused(Exception):
    """A change that cannot be applied; nothing was changed. One line for the user."""


@attrs.frozen
class ChangeReport:
    """What one :meth:`Controller.apply` did: the pairs added and removed (as the rows
    spell them), the connections started and stopped, and the keys whose change needs a
    restart (not applied)."""

    added: tuple[Pair, ...]
    removed: tuple[Pair, ...]
    started: tuple[str, ...]
    stopped: tuple[str, ...]
    restart: tuple[str, ...]
    # Running connections that took added subscriptions live (live_subscriptions venues).
    joined: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "added": [list(p) for p in self.added],
            "removed": [list(p) for p in self.removed],
            "connections_started": list(self.started),
            "connections_joined": list(self.joined),
            "connections_stopped": list(self.stopped),
            "needs_restart": list(self.restart),
        }


# Starts an exchange task for a venue that had none (in the service's ingest nursery),
# running the plans given; returns it once started.
StartExchange = Callable[[ExchangeAdapter, list[ConnectionPlan]], Awaitable[ExchangeRunner]]


class Controller:
    """The service's markets while it runs; see the module docstring.

    Owned by the service (``run_service``), which hands it the running exchanges
    (``runners``, by venue name) and how to start a new one (``start_exchange``, which
    runs it in the ingest nursery and returns it once started). Used by the ``SIGHUP``
    reload and the admin API; never raises for a venue's failure (connections retry on
    their own), only :class:`ChangeRefused` before anything changed.
    """

    def __init__(
        self,
        settings: Settings,
        runners: dict[str, ExchangeRunner],
        start_exchange: StartExchange,
        ctx: IngestContext,
        *,
        file_metadata: FileMetadataSource | None = None,
        analytics: TradeAnalytics | None = None,
        instruments: InstrumentListings | None = None,
        wall_clock: WallClock,
        sharded: bool = False,
        configured_pairs: int | None = None,
    ) -> None:
        self.settings = settings
        self.runners = runners
        self._start_exchange = start_exchange
        self.ctx = ctx
        self.file_metadata = file_metadata
        self.analytics = analytics
        self.instruments = instruments
        self.wall_clock = wall_clock
        # Sharded: the fleet's pair count comes with each reload (an admin change leaves it);
        # else it is this instance's own.
        self.sharded = sharded
        self.configured_pairs = configured_pairs
        self.lock = trio.Lock()
        # Every connection name of this run: a stopped connection's name is not reused
        # (its metric series and raw rows keep meaning one connection).
        self._names = {name for runner in runners.values() for name in runner.controls}

    # ------------------------------------------------------------------ reading

    def markets(self) -> list[dict[str, object]]:
        """The running markets: index, exchange (and the rows' exchange), category,
        feeds, symbols as configured."""
        described = []
        for index, market in enumerate(self.settings.markets):
            pairs = [canonical_pair(market, s) for s in market.symbols]
            described.append(
                {
                    "market": index,
                    "exchange": market.exchange,
                    "data_exchange": pairs[0][0],
                    "category": market.category,
                    "feeds": list(market.feeds),
                    "symbols": list(market.symbols),
                }
            )
        return described

    # ------------------------------------------------------------------ changing

    async def apply(
        self,
        new: Settings,
        origin: str,
        *,
        configured_pairs: int | None = None,
    ) -> ChangeReport:
        """Run ``new`` (checked settings of this instance) from now on, as far as markets
        go (see the module docstring); ``origin`` names the change in logs and in the
        ``unsubscribed`` rows' detail (``SIGHUP``, ``admin API``). ``configured_pairs``:
        how many pairs the whole fleet's settings configure now (the shard gauge).

        Raises ChangeRefused (nothing changed) when an added venue's adapter cannot start.
        """
        async with self.lock:
            return await self._apply(new, origin, configured_pairs)

    async def _apply(
        self, new: Settings, origin: str, configured_pairs: int | None
    ) -> ChangeReport:
        change = diff_settings(self.settings, new)
        planned = self._plan_additions(change)  # may raise ChangeRefused: nothing done yet
        stopped = await self._remove(change.removed, origin) if change.removed else []
        started: list[str] = []
        joined: list[str] = []
        for venue, (adapter, plans) in planned.items():
            runner = self.runners.get(venue)
            if runner is not None:
                await self._record_added(runner.events, plans, origin)
            if runner is not None and adapter.live_subscriptions:
                for plan in list(plans):
                    name = self._join(runner, plan)
                    if name is not None:
                        plans.remove(plan)
                        joined.append(name)
            if not plans:
                continue
            started += [plan.name for plan in plans]
            self._announce(adapter, plans)
            if runner is None:
                runner = await self._start_exchange(adapter, plans)
                self.runners[venue] = runner
                await self._record_added(runner.events, plans, origin)
            else:
                for plan in plans:
                    runner.start(plan)
        self._follow(new, change, configured_pairs)
        report = ChangeReport(
            change.added_pairs,
            change.removed,
            tuple(started),
            tuple(stopped),
            change.restart,
            tuple(dict.fromkeys(joined)),
        )
        if not change.applies_nothing or change.restart:
            log.info(
                "markets changed (%s): %d pairs added, %d removed",
                origin,
                len(report.added),
                len(report.removed),
                extra=report.as_dict(),
            )
        if change.restart:
            log.warning(
                "settings changed that apply only at a restart (not applied): %s",
                ", ".join(change.restart),
                extra={"origin": origin},
            )
        return report

    def _plan_additions(
        self, change: MarketsChange
    ) -> dict[str, tuple[ExchangeAdapter, list[ConnectionPlan]]]:
        """The new connections of ``change.added``, by venue, named after the run's."""
        by_venue: dict[str, list[MarketSettings]] = defaultdict(list)
        for market in change.added:
            by_venue[market.exchange].append(market)
        planned: dict[str, tuple[ExchangeAdapter, list[ConnectionPlan]]] = {}
        taken = set(self._names)
        for venue, markets in by_venue.items():
            runner = self.runners.get(venue)
            if runner is not None:
                adapter = runner.adapter
            else:
                try:
                    adapter = make_adapter(venue)
                except (ValueError, OSError, ConfigError) as exc:
                    raise ChangeRefused(f"{venue}: {exc}") from None
            plans = []
            for plan in adapter.plan_connections(markets):
                name = _fresh_name(plan.name, taken)
                taken.add(name)
                plans.append(attrs.evolve(plan, name=name))
            planned[venue] = (adapter, plans)
        return planned

    def _join(self, runner: ExchangeRunner, plan: ConnectionPlan) -> str | None:
        """Add ``plan``'s subscriptions to a running connection that could carry them
        (same URL and options, room within the venue's limits, not in a planned handover);
        returns its name, or None where none can (``plan`` then gets its own connection).
        The attempt running now takes the grown plan at its next read; a reconnect, from
        the plan."""
        adapter = runner.adapter
        field = adapter.wire_names_field
        for control in runner.controls.values():
            current = control.plan
            if (
                len(control.inboxes) > 1
                or not _joinable(current, plan, field)
                or control.sink.removed.intersection(plan.symbols)
            ):
                continue  # in a handover, other options, or re-adding what it dropped
            subscriptions = (*current.subscriptions, *plan.subscriptions)
            symbols = dict.fromkeys((*current.symbols, *plan.symbols))
            most_subs = adapter.max_subscriptions_per_connection
            most_symbols = adapter.max_symbols_per_connection
            if (most_subs is not None and len(subscriptions) > most_subs) or (
                most_symbols is not None and len(symbols) > most_symbols
            ):
                continue
            changes: dict[str, object] = {"subscriptions": subscriptions}
            if field is not None:
                changes[field] = (*getattr(current, field), *getattr(plan, field))
            grown = attrs.evolve(current, **changes)  # type: ignore[arg-type]
            control.plan = grown
            for inbox in control.inboxes:
                inbox.put(grown)
            self.ctx.health.add_symbols(current.name, plan.symbols)
            handovers = adapter.max_connection_lifetime_secs is not None
            create_connection_series(
                self.ctx.metrics, grown, self.wall_clock(), handovers=handovers
            )
            log.info(
                "symbols added to a running connection",
                extra={"connection": current.name, "symbols": list(plan.symbols)},
            )
            return current.name
        return None

    async def _record_added(
        self,
        events: trio.MemorySendChannel[list[Event]],
        plans: Iterable[ConnectionPlan],
        origin: str,
    ) -> None:
        """One ``added`` status row per added (symbol, table), saying why (``origin``:
        ``SIGHUP``, ``admin API``, ``listed``, ...), so the data itself tells a symbol added
        while the service ran (a new listing, say) from one configured at start. Sent on the
        exchange's event channel before the new subscriptions go out, so it comes before
        their ``subscribed`` rows; not a hole and not the start of the data (that is the
        venue's ``subscribed`` acknowledgement)."""
        now_us = self.wall_clock()
        streams = dict.fromkeys(
            (plan.exchange, sub.symbol, feed_data_type(sub.feed))
            for plan in plans
            for sub in plan.subscriptions
        )
        rows: list[Event] = [
            Status(
                exchange,
                symbol,
                None,
                now_us,
                None,
                "added",
                data_type,
                detail=f"added at run time ({origin})",
            )
            for exchange, symbol, data_type in streams
        ]
        if not rows:
            return
        try:
            await events.send(rows)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            # The exchange is ending (shutdown): its connections will not start either.
            log.warning("added rows not recorded: the exchange's event channel is closed")
            return
        if self.ctx.doorbell is not None:
            self.ctx.doorbell.sent()

    def _announce(self, adapter: ExchangeAdapter, plans: Iterable[ConnectionPlan]) -> None:
        """Health entries and metric series of new connections, before they start."""
        now_us = self.wall_clock()
        handovers = adapter.max_connection_lifetime_secs is not None
        for plan in plans:
            self._names.add(plan.name)
            self.ctx.health.add_connection(plan.name, plan.exchange, plan.symbols)
            create_connection_series(self.ctx.metrics, plan, now_us, handovers=handovers)

    async def _remove(self, pairs: Iterable[Pair], origin: str) -> list[str]:
        """Take ``pairs`` off every connection that carries them; returns the names of the
        connections stopped (left with no symbol)."""
        gone: dict[str, set[str]] = defaultdict(set)  # rows' exchange -> symbols
        for exchange, symbol in pairs:
            gone[exchange].add(symbol)
        stopping: list[ConnectionControl] = []
        for runner in self.runners.values():
            for control in list(runner.controls.values()):
                plan = control.plan
                symbols = gone.get(plan.exchange, set()).intersection(plan.symbols)
                field = runner.adapter.wire_names_field
                if symbols and await self._take_off(control, symbols, origin, field):
                    stopping.append(control)
        for control in stopping:
            await control.stop()
            self.ctx.health.remove_connection(control.plan.name)
        return [control.plan.name for control in stopping]

    async def _take_off(
        self, control: ConnectionControl, symbols: set[str], origin: str, field: str | None
    ) -> bool:
        """Remove ``symbols`` from one connection: rows, plan, health and series. True when
        the connection is left with nothing (the caller stops it). ``field``: the plan's
        wire names field (its venue's ``wire_names_field``)."""
        plan = control.plan
        removed = [sub for sub in plan.subscriptions if sub.symbol in symbols]
        kept = tuple(sub for sub in plan.subscriptions if sub.symbol not in symbols)
        sink = control.sink
        sink.removed.update(symbols)  # from here on nothing of them is written ...
        now_us = self.wall_clock()
        streams = dict.fromkeys((sub.symbol, feed_data_type(sub.feed)) for sub in removed)
        rows: list[Event] = [
            Status(
                plan.exchange,
                symbol,
                None,
                now_us,
                None,
                "unsubscribed",
                data_type,
                detail=f"removed at run time ({origin})",
            )
            for symbol, data_type in streams
        ]
        await sink.send(rows, now_us)  # ... but these rows
        last_data = self.ctx.metrics.last_data(plan.exchange)
        for key in streams:
            last_data.pop(key, None)
        self.ctx.health.remove_symbols(plan.name, tuple(sorted(symbols)))
        if not kept:
            return True
        control.plan = reduce_plan(plan, kept, field)
        for inbox in control.inboxes:  # a live venue unsubscribes at the next read
            inbox.put(control.plan)  # (only attempts of a live venue have inboxes)
        log.info(
            "symbols removed from a running connection",
            extra={"connection": plan.name, "symbols": sorted(symbols), "origin": origin},
        )
        return False

    def _follow(self, new: Settings, change: MarketsChange, configured: int | None) -> None:
        """What else follows the markets: files' metadata, analytics, shard gauges."""
        self.settings = new
        pairs = pair_markets(new)
        if self.file_metadata is not None:
            self.file_metadata.update(
                {
                    canonical_pair(market, symbol): market
                    for market in new.markets
                    for symbol in market.symbols
                }
            )
        if self.analytics is not None:
            self.analytics.uncover(change.removed)
            covered = large_trade_sizes(new.markets)
            added = set(change.added_pairs)
            self.analytics.cover(
                {p: size for p, size in covered.items() if p in added}, self.wall_clock()
            )
        if self.instruments is not None and (change.added or change.removed):
            adapters = [runner.adapter for runner in self.runners.values()]
            self.instruments.follow(instrument_jobs(new.markets, adapters))
        if configured is not None:
            self.configured_pairs = configured
        elif not self.sharded or self.configured_pairs is None:
            self.configured_pairs = len(pairs)
        self.ctx.metrics.update_assignment(pairs, self.configured_pairs)


def reduce_plan(
    plan: ConnectionPlan, kept: tuple[Subscription, ...], wire_names_field: str | None
) -> ConnectionPlan:
    """``plan`` with only the subscriptions ``kept`` (a subsequence of its own, in order),
    and its venue's per-subscription wire names (``wire_names_field``) reduced alike."""
    changes: dict[str, object] = {"subscriptions": kept}
    if wire_names_field is not None:
        names = getattr(plan, wire_names_field)
        wanted = set(kept)
        changes[wire_names_field] = tuple(
            name for sub, name in zip(plan.subscriptions, names, strict=True) if sub in wanted
        )
    return attrs.evolve(plan, **changes)  # type: ignore[arg-type]


def _joinable(current: ConnectionPlan, plan: ConnectionPlan, wire_names_field: str | None) -> bool:
    """Whether ``plan``'s subscriptions may go on ``current``'s connection: the same plan
    class and every field the same but the name, the subscriptions and their wire names."""
    if type(current) is not type(plan):
        return False
    skip = {"name", "subscriptions", wire_names_field}
    return all(
        getattr(current, f.name) == getattr(plan, f.name)
        for f in attrs.fields(type(current))
        if f.name not in skip
    )


def _fresh_name(name: str, taken: set[str]) -> str:
    """``name`` if no connection of the run had it, else the same prefix with the next
    free number (``binance-0`` -> ``binance-3``)."""
    if name not in taken:
        return name
    match = _NUMBERED.match(name)
    prefix = match["prefix"] if match else name
    used = [
        int(m["index"])
        for other in taken
        if (m := _NUMBERED.match(other)) and m["prefix"] == prefix
    ]
    return f"{prefix}-{max(used, default=-1) + 1}"
