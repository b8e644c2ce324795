"""The instrument listings of Kraken, Coinbase, Bitfinex and Upbit, as their public REST
APIs answer them, for :class:`~tests.fakes.rest.FakeRest` routes and parser tests.

Each body is built in the venue's documented shape (field names, nesting, numbers as
strings or numbers as the venue sends them), with values of real instruments; none is a
recording. What a venue's docs do not show is marked where it is used:

- Kraken ``GET /0/public/AssetPairs``: ``{"error": [], "result": {KEY: pair}}``, every pair
  with ``altname``, ``wsname`` (v1 spelling: ``XBT/USD``), ``base``/``quote`` (``XXBT``,
  ``ZUSD``), ``pair_decimals``, ``lot_decimals``, ``ordermin``, ``costmin``, ``tick_size``,
  ``status``; dark-pool entries (``.d``) without ``wsname``.
- Coinbase ``GET /api/v3/brokerage/market/products/{product_id}`` (Get Public Product): one
  product object; an unknown product answers HTTP 404 (the error body's text is
  UNCONFIRMED).
- Bitfinex ``GET /v2/conf/pub:info:pair`` and ``.../pub:info:pair:futures``:
  ``[[[PAIR, [null, null, null, MIN_ORDER_SIZE, MAX_ORDER_SIZE, null, null, null,
  INITIAL_MARGIN, MIN_MARGIN]], ...]]`` (sizes as strings in the docs' example; the
  margins of spot pairs are null).
- Upbit ``GET /v1/market/all``: a list of ``{"market", "korean_name", "english_name"}``
  (with ``isDetails=true`` also ``market_event``, kept here to show it is not read;
  ``market_warning`` was removed on 2024-11-20).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from tests.fakes.rest import Answer, Query

_encode: Final = msgspec.json.encode

KRAKEN_PAIRS: Final[dict[str, dict[str, Any]]] = {
    "XXBTZUSD": {
        "altname": "XBTUSD", "wsname": "XBT/USD", "aclass_base": "currency", "base": "XXBT",
        "aclass_quote": "currency", "quote": "ZUSD", "lot": "unit", "cost_decimals": 5,
        "pair_decimals": 1, "lot_decimals": 8, "lot_multiplier": 1, "leverage_buy": [2, 3],
        "leverage_sell": [2, 3], "fees": [[0, 0.4]], "fees_maker": [[0, 0.25]],
        "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40,
        "ordermin": "0.00005", "costmin": "0.5", "tick_size": "0.1", "status": "online",
    },
    "XXBTZUSD.d": {
        "altname": "XBTUSD.d", "aclass_base": "currency", "base": "XXBT",
        "aclass_quote": "currency", "quote": "ZUSD", "pair_decimals": 1, "lot_decimals": 8,
        "ordermin": "0.00005", "status": "online",
    },
    "XDGUSD": {
        "altname": "XDGUSD", "wsname": "XDG/USD", "aclass_base": "currency", "base": "XXDG",
        "aclass_quote": "currency", "quote": "ZUSD", "lot": "unit", "cost_decimals": 9,
        "pair_decimals": 7, "lot_decimals": 8, "lot_multiplier": 1, "ordermin": "13",
        "costmin": "0.5", "tick_size": "0.0000001", "status": "online",
    },
    # An older answer without tick_size: the price step is 10^-pair_decimals.
    "SOLEUR": {
        "altname": "SOLEUR", "wsname": "SOL/EUR", "aclass_base": "currency", "base": "SOL",
        "aclass_quote": "currency", "quote": "ZEUR", "pair_decimals": 2, "lot_decimals": 8,
        "ordermin": "0.02", "costmin": "0.45", "status": "cancel_only",
    },
}  # fmt: skip


def kraken_asset_pairs(query: Query | None = None) -> tuple[int, bytes]:
    return 200, _encode({"error": [], "result": KRAKEN_PAIRS})


COINBASE_PRODUCTS: Final[dict[str, dict[str, Any]]] = {
    "BTC-USD": {
        "product_id": "BTC-USD", "price": "68923.67", "price_percentage_change_24h": "-0.28",
        "volume_24h": "11005.02587005", "volume_percentage_change_24h": "164.9",
        "base_increment": "0.00000001", "quote_increment": "0.01", "quote_min_size": "1",
        "quote_max_size": "150000000", "base_min_size": "0.00000001", "base_max_size": "3400",
        "base_name": "Bitcoin", "quote_name": "US Dollar", "watched": False,
        "is_disabled": False, "new": False, "status": "online", "cancel_only": False,
        "limit_only": False, "post_only": False, "trading_disabled": False,
        "auction_mode": False, "product_type": "SPOT", "quote_currency_id": "USD",
        "base_currency_id": "BTC", "fcm_trading_session_details": None,
        "mid_market_price": "", "alias": "", "alias_to": ["BTC-USDC"],
        "base_display_symbol": "BTC", "quote_display_symbol": "USD", "view_only": False,
        "price_increment": "0.01", "display_name": "BTC-USD", "product_venue": "CBE",
    },
    "ETH-BTC": {
        "product_id": "ETH-BTC", "price": "0.0521", "base_increment": "0.00000001",
        "quote_increment": "0.00001", "quote_min_size": "0.00001", "base_min_size": "0.00022",
        "base_max_size": "2400", "status": "online", "trading_disabled": False,
        "product_type": "SPOT", "quote_currency_id": "BTC", "base_currency_id": "ETH",
        "price_increment": "0.00001", "display_name": "ETH-BTC",
    },
}  # fmt: skip
COINBASE_PRODUCT_PATH: Final = "/api/v3/brokerage/market/products/"


def coinbase_product(product_id: str) -> tuple[int, bytes]:
    """The Get Public Product answer for ``product_id`` (HTTP 404 for an unknown one)."""
    product = COINBASE_PRODUCTS.get(product_id)
    if product is None:
        return 404, b'{"error":"NOT_FOUND","message":"product not found"}'
    return 200, _encode(product)


def coinbase_routes(*product_ids: str) -> dict[str, Answer]:
    """FakeRest routes (by exact path) answering for each of ``product_ids``."""

    def route(product_id: str) -> Answer:
        return lambda query: coinbase_product(product_id)

    return {f"{COINBASE_PRODUCT_PATH}{pid}": route(pid) for pid in product_ids}


BITFINEX_PAIRS: Final[list[list[Any]]] = [
    ["BTCUSD", [None, None, None, "0.00004", "2000.0", None, None, None, None, None]],
    ["ETHUSD", [None, None, None, "0.0008", "5000.0", None, None, None, None, None]],
    ["TESTBTC:TESTUSD", [None, None, None, "0.00006", "2000.0", None, None, None, None, None]],
]
BITFINEX_FUTURES: Final[list[list[Any]]] = [
    ["BTCF0:USTF0", [None, None, None, "0.00004", "100.0", None, None, None, 0.01, 0.005]],
    ["ETHF0:USTF0", [None, None, None, "0.0008", "2000.0", None, None, None, 0.01, 0.005]],
]


def bitfinex_pair_info(query: Query | None = None) -> tuple[int, bytes]:
    return 200, _encode([BITFINEX_PAIRS])


def bitfinex_futures_info(query: Query | None = None) -> tuple[int, bytes]:
    return 200, _encode([BITFINEX_FUTURES])


UPBIT_MARKETS: Final[list[dict[str, Any]]] = [
    {"market": "KRW-BTC", "korean_name": "비트코인", "english_name": "Bitcoin",
     "market_event": {"warning": False, "caution": {"PRICE_FLUCTUATIONS": False,
                      "TRADING_VOLUME_SOARING": False, "DEPOSIT_AMOUNT_SOARING": False,
                      "GLOBAL_PRICE_DIFFERENCES": False,
                      "CONCENTRATION_OF_SMALL_ACCOUNTS": False}}},
    {"market": "BTC-ETH", "korean_name": "이더리움", "english_name": "Ethereum",
     "market_event": {"warning": False, "caution": {}}},
    {"market": "USDT-XRP", "korean_name": "리플", "english_name": "XRP",
     "market_event": {"warning": True, "caution": {}}},
]  # fmt: skip


def upbit_markets(query: Query | None = None) -> tuple[int, bytes]:
    return 200, _encode(UPBIT_MARKETS)
