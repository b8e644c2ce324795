"""Planning across exchanges: the adapters and connections a configuration runs.

Connections are planned once per run: the command line builds a :class:`ServicePlan` from
checked settings (where an adapter that cannot start is a settings error, exit status 2)
and hands it to :func:`collector.service.run_service`, which opens exactly what was planned.
``check-config`` describes the same plan. Planning spans every venue of the settings, so it
lives above ``collector.exchanges``, whose modules each know one venue. The plan also
carries the instance's shard :class:`~collector.sharding.Assignment` (what it collects out
of all configured pairs), for the metrics and the files' metadata.
"""

from __future__ import annotations

from collections import defaultdict

import attrs

from collector.config import ConfigError, MarketSettings, Settings
from collector.credentials import make_adapter
from collector.exchanges.base import ConnectionPlan, ExchangeAdapter
from collector.settings_check import canonical_pair, is_all_symbols
from collector.sharding import Assignment, Pair, assignment


@attrs.frozen
class ExchangePlan:
    """One exchange's adapter and the connections it opens, in order."""

    adapter: ExchangeAdapter
    connections: tuple[ConnectionPlan, ...]


@attrs.frozen
class ServicePlan:
    """What one service run does: its settings and, per configured exchange (in settings
    order), the adapter and its connections; and its shard's assignment."""

    settings: Settings
    exchanges: tuple[ExchangePlan, ...]
    assignment: Assignment

    def markets_by_pair(self) -> dict[Pair, MarketSettings]:
        """Each (exchange, symbol) as the rows spell them -> its market's settings."""
        return {
            canonical_pair(market, symbol): market
            for market in self.settings.markets
            for symbol in market.symbols
        }

    @property
    def connections(self) -> tuple[ConnectionPlan, ...]:
        """Every connection of every exchange, in plan order."""
        return tuple(c for exchange in self.exchanges for c in exchange.connections)


def plan_service(settings: Settings, shard: Assignment | None = None) -> ServicePlan:
    """Make each configured exchange's adapter and plan its connections.

    ``shard`` is what this instance collects when sharded (``settings`` are then the
    shard's, :func:`~collector.sharding.shard_settings`); None: every pair of ``settings``.

    ``settings`` must have passed :func:`collector.settings_check.check_settings` (as those of
    ``load_settings`` and ``parse_settings`` have). Credentials are loaded here
    (:func:`collector.credentials.make_adapter`: e.g. Coinbase's key file): an adapter that
    cannot start raises ConfigError, its message starting with the exchange's name.
    """
    by_exchange: dict[str, list[MarketSettings]] = defaultdict(list)
    for index, market in enumerate(settings.markets):
        if is_all_symbols(market):  # the command line resolves them first
            raise ConfigError(f'markets[{index}]: symbols = ["*"] is not resolved')
        by_exchange[market.exchange].append(market)
    planned = []
    for name, markets in by_exchange.items():
        try:
            adapter = make_adapter(name)
        except (ValueError, OSError) as exc:
            message = str(exc)
            raise ConfigError(
                message if message.startswith(name) else f"{name}: {message}"
            ) from None
        planned.append(ExchangePlan(adapter, tuple(adapter.plan_connections(markets))))
    return ServicePlan(settings, tuple(planned), shard or assignment(settings, None))


def describe_connections(plan: ServicePlan) -> list[dict[str, object]]:
    """A plain description of every planned connection (for ``check-config``)."""
    return [
        {
            "name": connection.name,
            "exchange": connection.exchange,
            "url": connection.url,
            "subscriptions": len(connection.subscriptions),
            "symbols": list(connection.symbols),
            "raw": connection.raw,
        }
        for connection in plan.connections
    ]


def describe_exchanges(plan: ServicePlan) -> list[dict[str, object]]:
    """Per exchange of ``plan`` (as the rows name it): its symbols, connections and the
    most streams (subscriptions) one connection carries, beside the venue's limit (None:
    the venue declares none). ``check-config``'s summary of a large plan."""
    symbols: dict[str, set[str]] = defaultdict(set)
    connections: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    limits: dict[str, int | None] = {}
    for exchange in plan.exchanges:
        for connection in exchange.connections:
            name = connection.exchange
            symbols[name].update(connection.symbols)
            connections[name] += 1
            most[name] = max(most[name], len(connection.subscriptions))
            limits[name] = exchange.adapter.max_subscriptions_per_connection
    return [
        {
            "exchange": name,
            "symbols": len(symbols[name]),
            "connections": connections[name],
            "max_streams_per_connection": most[name],
            "venue_limit_per_connection": limits[name],
        }
        for name in connections
    ]
