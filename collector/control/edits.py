"""Edits of the running settings that add or remove symbols of a market.

The admin API (:mod:`collector.control.admin`) and the Kafka control topic
(:mod:`collector.control.kafka`) both turn a request into new settings here, then hand
them to the :class:`~collector.control.controller.Controller` like a ``SIGHUP`` reload:
one meaning for both. ``exchange`` names a market as the settings do (``bybit``) or as its
rows do (``bybit-linear``); a symbol may be spelled any way the venue takes. A request
that cannot be applied raises :class:`EditError` with an HTTP-like ``status`` (404: no such
market or symbol; 409: several markets match, or the service would be left without
symbols) and one line; nothing here checks the symbols themselves
(:func:`~collector.settings_check.check_settings` does, on the result).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from collector.config import ConfigError, MarketSettings, Settings
from collector.control.controller import ChangeRefused, ChangeReport, Controller
from collector.settings_check import canonical_pair, check_settings


class EditError(Exception):
    """A request that cannot be applied: ``status`` (400, 404, 409, 503) and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _matches(market: MarketSettings, exchange: str) -> bool:
    if market.exchange == exchange:
        return True
    try:
        return canonical_pair(market, market.symbols[0])[0] == exchange
    except (KeyError, ValueError):  # pragma: no cover - running settings are checked
        return False


def with_added(
    settings: Settings, exchange: str, symbols: Sequence[str], market: int | None = None
) -> Settings:
    """``settings`` with ``symbols`` added to the market of ``exchange`` (``market``: its
    index in ``settings.markets``, needed where the exchange has several)."""
    markets = list(settings.markets)
    candidates = [i for i, m in enumerate(markets) if _matches(m, exchange)]
    if market is not None:
        if market not in candidates:
            raise EditError(404, f"market {market} is no market of {exchange}")
        index = market
    elif not candidates:
        raise EditError(
            404, f"no market of {exchange} is running (add a market in the settings file)"
        )
    elif len(candidates) > 1:
        raise EditError(
            409,
            f"{exchange} has {len(candidates)} markets ({', '.join(map(str, candidates))}): "
            'name one with "market" (GET /admin/markets lists them)',
        )
    else:
        index = candidates[0]
    chosen = markets[index]
    adding = tuple(s for s in dict.fromkeys(symbols) if s not in chosen.symbols)
    markets[index] = msgspec.structs.replace(chosen, symbols=(*chosen.symbols, *adding))
    return msgspec.structs.replace(settings, markets=tuple(markets))


def without(settings: Settings, exchange: str, symbols: Sequence[str]) -> Settings:
    """``settings`` without ``symbols`` in the markets of ``exchange`` that have them (a
    market left without symbols goes). 404 when one of them is not collected."""
    markets: list[MarketSettings] = []
    found: set[str] = set()
    for market in settings.markets:
        if _matches(market, exchange):
            gone: set[str] = set()
            for configured in market.symbols:
                for asked in symbols:
                    if _same(market, configured, asked):
                        gone.add(configured)
                        found.add(asked)
            if gone:
                kept = tuple(s for s in market.symbols if s not in gone)
                if not kept:
                    continue  # the market's last symbol: the market goes
                market = msgspec.structs.replace(market, symbols=kept)
        markets.append(market)
    missing = [s for s in symbols if s not in found]
    if missing:
        raise EditError(404, f"{exchange} {', '.join(missing)} is not collected")
    if not markets:
        raise EditError(409, "cannot remove the last symbol of the service")
    return msgspec.structs.replace(settings, markets=tuple(markets))


def _same(market: MarketSettings, configured: str, asked: str) -> bool:
    """Whether ``asked`` names the configured symbol (in any spelling the venue takes)."""
    if configured == asked:
        return True
    try:
        return canonical_pair(market, configured) == canonical_pair(market, asked)
    except (KeyError, ValueError):
        return False


async def apply_edit(controller: Controller, new: Settings, origin: str) -> ChangeReport:
    """Check ``new`` (edited running settings) and apply it; EditError 400 for settings
    the checks refuse (a symbol the venue cannot have, a duplicate), 409 for a change the
    controller refuses, 503 when the ingest tasks ended meanwhile (shutdown)."""
    try:
        check_settings(new, origin)
    except ConfigError as exc:
        raise EditError(400, str(exc)) from None
    try:
        return await controller.apply(new, origin)
    except ChangeRefused as exc:
        raise EditError(409, str(exc)) from None
    except RuntimeError:  # the ingest nursery is closed: nothing to change
        raise EditError(503, "the service is stopping") from None
