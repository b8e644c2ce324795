"""Exchange adapters (sans-IO), by the name used in ``[[markets]] exchange``."""

from __future__ import annotations

from collector.exchanges.base import ExchangeAdapter
from collector.exchanges.binance import BinanceAdapter

_ADAPTERS: dict[str, type[ExchangeAdapter]] = {
    BinanceAdapter.name: BinanceAdapter,
}


def known_exchanges() -> list[str]:
    return sorted(_ADAPTERS)


def get_adapter_class(name: str) -> type[ExchangeAdapter]:
    """The adapter class for an exchange name; KeyError if unknown."""
    return _ADAPTERS[name]
