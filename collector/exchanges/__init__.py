"""Exchange adapters (sans-IO), by the name used in ``[[markets]] exchange``.

Adding a venue is adding one module here with an :class:`ExchangeAdapter` subclass that
sets ``name``: modules are discovered at first use, nothing else to register.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from collector.exchanges.base import ExchangeAdapter

_NOT_VENUES = frozenset({"base", "common"})


@cache
def _adapters() -> dict[str, type[ExchangeAdapter]]:
    found: dict[str, type[ExchangeAdapter]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_VENUES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, ExchangeAdapter)
                and value is not ExchangeAdapter
                and value.__module__ == module.__name__
                and "name" in vars(value)
            ):
                if value.name in found:
                    raise RuntimeError(f"two adapters are named {value.name!r}")
                found[value.name] = value
    return found


def known_exchanges() -> list[str]:
    return sorted(_adapters())


def get_adapter_class(name: str) -> type[ExchangeAdapter]:
    """The adapter class for an exchange name; KeyError if unknown."""
    return _adapters()[name]
