"""Planning across exchanges: which connections a configuration opens."""

from __future__ import annotations

from collections import defaultdict

from collector.config import ConfigError, MarketSettings, Settings
from collector.credentials import make_adapter
from collector.exchanges.base import ConnectionPlan, ExchangeAdapter


def plan_all(settings: Settings) -> list[tuple[ExchangeAdapter, list[ConnectionPlan]]]:
    """One adapter and its connection plans per configured exchange, in settings order.

    Raises ConfigError when an adapter cannot start (e.g. unreadable credentials).
    """
    by_exchange: dict[str, list[MarketSettings]] = defaultdict(list)
    for market in settings.markets:
        by_exchange[market.exchange].append(market)
    planned = []
    for name, markets in by_exchange.items():
        try:
            # Credentials (e.g. Coinbase's key file) are read here, from the environment.
            adapter = make_adapter(name)
        except (ValueError, OSError) as exc:
            message = str(exc)
            raise ConfigError(
                message if message.startswith(name) else f"{name}: {message}"
            ) from None
        planned.append((adapter, adapter.plan_connections(markets)))
    return planned


def describe_plans(settings: Settings) -> list[dict[str, object]]:
    """A plain description of every connection (for ``check-config``)."""
    return [
        {
            "name": plan.name,
            "exchange": plan.exchange,
            "url": plan.url,
            "subscriptions": len(plan.subscriptions),
            "symbols": list(plan.symbols),
            "raw": plan.raw,
        }
        for _, plans in plan_all(settings)
        for plan in plans
    ]
