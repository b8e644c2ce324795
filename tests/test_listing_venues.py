"""All-symbols mode (``symbols = ["*"]``) on every venue that can list its symbols: each
listing is read over real HTTP from a fake REST API on 127.0.0.1 answering in the venue's
documented shape (tests/fakes/listing_rest.py, tests/fakes/spot_rest.py; values of real
instruments, none a recording), then resolved and planned by the real code.

Each test asserts that the resolved symbols are spelled as the venue's WebSocket markets
spell them (the adapter's ``normalize_symbol`` leaves them unchanged: they are subscribed
as they are), that entries the venue does not trade are left out, that ``symbols_regex``
and ``max_symbols`` apply, and that the plan stays within the adapter's declared
per-connection limits. Binance and paged Bybit are in tests/test_listings.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import trio

from collector.config import Settings
from collector.control.listings import Listings, refresh_once, resolve_settings
from collector.exchanges import get_adapter_class
from collector.planning import plan_service
from collector.settings_check import parse_settings
from tests.fakes.bybit import FakeBybit
from tests.fakes.bybit import trade_frame as bybit_trade_frame
from tests.fakes.listing_rest import FakeListingRest
from tests.fakes.rest import FakeRest, Query
from tests.fakes.spot_rest import COINBASE_PRODUCTS, KRAKEN_PAIRS, kraken_asset_pairs, upbit_markets
from tests.test_control_service import controller_of, service, settle
from tests.venue_helpers import read_rows

TIMEOUT = 20.0


def settings_of(market: dict[str, Any]) -> Settings:
    return parse_settings(
        {"collector": {"metrics_host": "127.0.0.1", "metrics_port": 0}, "markets": [market]}
    )


async def resolved_symbols(
    fake: FakeRest | FakeListingRest, exchange: str, **options: Any
) -> tuple[str, ...]:
    """Resolve one ``*`` market of ``exchange`` (listing from ``fake``), check its plan
    against the venue's limits and its spelling, and return its symbols."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.run)
            market = {"exchange": exchange, "symbols": ["*"], "rest_url": fake.url, **options}
            resolved = await trio.to_thread.run_sync(resolve_settings, settings_of(market))
            nursery.cancel_scope.cancel()
    [only] = resolved.markets
    adapter = get_adapter_class(exchange)
    for symbol in only.symbols:
        assert adapter.normalize_symbol(symbol) == symbol  # subscribed as spelled
    plan = plan_service(resolved)
    assert {s for c in plan.connections for s in c.symbols} == set(only.symbols)
    for connection in plan.connections:
        if adapter.max_subscriptions_per_connection is not None:
            assert len(connection.subscriptions) <= adapter.max_subscriptions_per_connection
        if adapter.max_symbols_per_connection is not None:
            assert len(connection.symbols) <= adapter.max_symbols_per_connection
    return only.symbols


# --------------------------------------------------------------------------- OKX


async def test_okx_spot_keeps_live_instruments_by_their_inst_id() -> None:
    fake = FakeListingRest()
    live = [f"C{i:03d}-USDT" for i in range(400)]
    fake.okx = {
        ("SPOT", ""): [(name, "live") for name in live]
        + [("LUNA-USDT", "suspend"), ("NEW-USDT", "preopen"), ("BTC-USDC", "live")]
    }
    symbols = await resolved_symbols(fake, "okx", feeds=["trades"], symbols_regex=".*-USDT")
    assert symbols == tuple(live)  # 400 trades channels: two connections of <= 300
    assert fake.requests == ["/api/v5/public/instruments?instType=SPOT"]

    capped = await resolved_symbols(fake, "okx", feeds=["trades"], max_symbols=2)
    assert capped == ("BTC-USDC", "C000-USDT")
    # quoteCcy and state, as the listing names them.
    quoted = await resolved_symbols(fake, "okx", feeds=["trades"], quote=["usdc"])
    assert quoted == ("BTC-USDC",)
    suspended = await resolved_symbols(fake, "okx", feeds=["trades"], status=["SUSPEND", "preopen"])
    assert suspended == ("LUNA-USDT", "NEW-USDT")


# --------------------------------------------------------------------------- Bybit


async def test_bybit_spot_keeps_trading_symbols_only() -> None:
    fake = FakeListingRest()
    fake.bybit = {
        "spot": [("BTCUSDT", "Trading"), ("ETHUSDT", "Trading"), ("OLDUSDT", "Closed")]
        + [("ETHBTC", "Trading")]
        + [(f"C{i:03d}USDT", "Trading") for i in range(250)]
    }
    symbols = await resolved_symbols(
        fake, "bybit", category="spot", feeds=["trades"], symbols_regex="[A-Z]+USDT"
    )
    assert symbols == ("BTCUSDT", "ETHUSDT")  # the regex keeps out the digits
    symbols = await resolved_symbols(fake, "bybit", category="spot", feeds=["trades", "orderbook"])
    assert len(symbols) == 253
    assert "OLDUSDT" not in symbols
    # quoteCoin and status, as the listing names them.
    symbols = await resolved_symbols(
        fake, "bybit", category="spot", feeds=["trades"], quote=["BTC"]
    )
    assert symbols == ("ETHBTC",)
    symbols = await resolved_symbols(
        fake, "bybit", category="spot", feeds=["trades"], status=["closed"]
    )
    assert symbols == ("OLDUSDT",)


# --------------------------------------------------------------------------- Deribit


async def test_deribit_keeps_active_instruments_of_every_kind() -> None:
    """A Deribit market has no category: its ``*`` lists every kind (the instrument name
    says what it is); ``symbols_regex`` narrows it."""
    fake = FakeListingRest()
    fake.deribit = {
        "future": [("BTC-PERPETUAL", True), ("BTC-27DEC24", False), ("ETH-27JUN25", True)],
        "option": [("BTC-27JUN25-100000-C", True), ("ETH-27JUN25-4000-P", True)],
        "spot": [("BTC_USDC", True)],
    }
    symbols = await resolved_symbols(fake, "deribit", feeds=["trades"])
    assert symbols == (
        "BTC-27JUN25-100000-C",
        "BTC-PERPETUAL",
        "BTC_USDC",
        "ETH-27JUN25",
        "ETH-27JUN25-4000-P",
    )
    assert fake.requests == ["/api/v2/public/get_instruments?currency=any&expired=false"]
    symbols = await resolved_symbols(
        fake, "deribit", feeds=["trades"], symbols_regex=".*-PERPETUAL"
    )
    assert symbols == ("BTC-PERPETUAL",)


# --------------------------------------------------------------------------- Bitfinex


async def test_bitfinex_pairs_are_spelled_with_the_t_prefix() -> None:
    fake = FakeListingRest()
    fake.bitfinex = {
        "pub:list:pair:exchange": ["BTCUSD", "ETHUSD", "TESTBTC:TESTUSD"]
        + [f"C{i:02d}USD" for i in range(30)],
        "pub:list:pair:futures": ["BTCF0:USTF0", "ETHF0:USTF0"],
    }
    symbols = await resolved_symbols(fake, "bitfinex", feeds=["trades"], symbols_regex="t[A-Z]+")
    assert symbols == ("tBTCUSD", "tETHUSD")
    # 33 pairs on 25 channels a connection.
    symbols = await resolved_symbols(fake, "bitfinex", feeds=["trades"])
    assert len(symbols) == 33
    assert "tTESTBTC:TESTUSD" in symbols
    # A Bitfinex market has no category: its ``*`` is the exchange (spot) pairs only.
    assert fake.requests[-1] == "/v2/conf/pub:list:pair:exchange"


# --------------------------------------------------------------------------- Kraken


async def test_kraken_names_are_the_v2_wsnames_of_online_pairs() -> None:
    fake = FakeRest({"/0/public/AssetPairs": kraken_asset_pairs})
    symbols = await resolved_symbols(fake, "kraken", feeds=["trades"])
    # XBT -> BTC, XDG -> DOGE; the dark pool (.d) and cancel_only SOL/EUR left out.
    assert symbols == ("BTC/USD", "DOGE/USD")
    assert "SOLEUR" in KRAKEN_PAIRS
    symbols = await resolved_symbols(fake, "kraken", feeds=["trades"], max_symbols=1)
    assert symbols == ("BTC/USD",)
    # The quote is the v2 name's (ZUSD -> USD); the status AssetPairs' own word.
    symbols = await resolved_symbols(fake, "kraken", feeds=["trades"], quote=["usd"])
    assert symbols == ("BTC/USD", "DOGE/USD")
    symbols = await resolved_symbols(
        fake, "kraken", feeds=["trades"], quote=["EUR"], status=["cancel_only"]
    )
    assert symbols == ("SOL/EUR",)


# --------------------------------------------------------------------------- Coinbase


def coinbase_products(query: Query) -> tuple[int, bytes]:
    """``GET /api/v3/brokerage/market/products``: ``{"products": [...], "num_products"}``;
    a delisted and a trading-disabled product, and one future (its id has three parts)."""
    usd = {"quote_currency_id": "USD"}
    products = [
        *COINBASE_PRODUCTS.values(),
        {"product_id": "OLD-USD", "status": "delisted", "trading_disabled": True, **usd},
        {"product_id": "HALT-USD", "status": "online", "trading_disabled": True, **usd},
        {"product_id": "BIT-31JAN25-CDE", "status": "online", "product_type": "FUTURE", **usd},
        *({"product_id": f"C{i:02d}-USD", "status": "online", **usd} for i in range(15)),
    ]
    return 200, msgspec.json.encode({"products": products, "num_products": len(products)})


async def test_coinbase_product_ids_of_trading_products() -> None:
    fake = FakeRest({"/api/v3/brokerage/market/products": coinbase_products})
    symbols = await resolved_symbols(fake, "coinbase", feeds=["trades"])
    # 17 products on 10 a connection; the future's id is not one the collector spells.
    assert len(symbols) == 17
    assert {"BTC-USD", "ETH-BTC"} <= set(symbols)
    assert not {"OLD-USD", "HALT-USD", "BIT-31JAN25-CDE"} & set(symbols)
    symbols = await resolved_symbols(fake, "coinbase", feeds=["trades"], symbols_regex=".*-BTC")
    assert symbols == ("ETH-BTC",)
    symbols = await resolved_symbols(fake, "coinbase", feeds=["trades"], quote=["BTC"])
    assert symbols == ("ETH-BTC",)
    symbols = await resolved_symbols(fake, "coinbase", feeds=["trades"], status=["delisted"])
    assert symbols == ("OLD-USD",)


# --------------------------------------------------------------------------- Upbit


async def test_upbit_market_codes_quote_first() -> None:
    fake = FakeRest({"/v1/market/all": upbit_markets})
    symbols = await resolved_symbols(fake, "upbit", feeds=["trades"])
    assert symbols == ("BTC-ETH", "KRW-BTC", "USDT-XRP")
    symbols = await resolved_symbols(fake, "upbit", feeds=["trades"], symbols_regex="KRW-.*")
    assert symbols == ("KRW-BTC",)
    symbols = await resolved_symbols(fake, "upbit", feeds=["trades"], quote=["btc", "USDT"])
    assert symbols == ("BTC-ETH", "USDT-XRP")


# --------------------------------------------------------------------------- the service


def bybit_statuses(data_dir: Path, symbol: str) -> list[tuple[str, str | None, str | None]]:
    rows = read_rows(data_dir, "bybit-linear", symbol, "status")
    rows.sort(key=lambda r: r["timestamp_collector"])
    return [(r["event"], r["data_type"], r["detail"]) for r in rows]


async def bybit_trade(fake: FakeBybit, symbol: str, n: int) -> None:
    frame = bybit_trade_frame(symbol, f"{symbol}-{n}", 100.0, 1.0, "Buy", 1_760_000_000_000 + n, n)
    assert await fake.send(frame) == 1
    await settle()


async def test_bybit_linear_star_market_through_the_service(tmp_path: Path) -> None:
    """A Bybit linear ``*`` market run by the real service against the fake Bybit
    WebSocket and the fake instruments-info: resolved at start, then a refresh that
    delists ETHUSDT and lists SOLUSDT changes only those two, on the live connection."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBybit()
            rest = FakeListingRest()
            await nursery.start(fake.run)
            await nursery.start(rest.run)
            rest.bybit = {
                "linear": [
                    ("BTCUSDT", "Trading"),
                    ("ETHUSDT", "Trading"),
                    ("XRPUSDT", "Trading"),
                    ("NEWUSDT", "PreLaunch"),
                ]
            }
            template = parse_settings(
                {
                    "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                    "storage": {"data_dir": str(tmp_path)},
                    "markets": [
                        {
                            "exchange": "bybit",
                            "category": "linear",
                            "symbols": ["*"],
                            "feeds": ["trades"],
                            "base_url": fake.url,
                            "rest_url": rest.url,
                        }
                    ],
                }
            )
            listings = Listings(template, None)
            settings = await trio.to_thread.run_sync(resolve_settings, template)
            listings.resolved = listings.resolved_pairs(settings)
            assert settings.markets[0].symbols == ("BTCUSDT", "ETHUSDT", "XRPUSDT")
            assert rest.requests == ["/v5/market/instruments-info?category=linear&limit=1000"]

            async with service(settings) as handle:
                await fake.wait_subscribed(
                    ["publicTrade.BTCUSDT", "publicTrade.ETHUSDT", "publicTrade.XRPUSDT"],
                    category="linear",
                )
                await bybit_trade(fake, "BTCUSDT", 1)
                await bybit_trade(fake, "ETHUSDT", 1)

                rest.bybit["linear"] = [
                    ("BTCUSDT", "Trading"),
                    ("ETHUSDT", "Delivering"),  # no longer trading: delisted
                    ("SOLUSDT", "Trading"),
                    ("XRPUSDT", "Trading"),
                ]
                controller = controller_of(handle)
                assert await refresh_once(controller, listings)
                await fake.wait_for_message(
                    lambda m: '"op":"unsubscribe","args":["publicTrade.ETHUSDT"]' in m
                )
                await fake.wait_subscribed(["publicTrade.SOLUSDT"], category="linear")
                await settle()
                assert [c.topics for c in fake.clients] == [
                    {"publicTrade.BTCUSDT", "publicTrade.XRPUSDT", "publicTrade.SOLUSDT"}
                ]
                await bybit_trade(fake, "SOLUSDT", 1)
                await bybit_trade(fake, "BTCUSDT", 2)
                assert fake.connections == 1
                assert [m.symbols for m in controller.settings.markets] == [
                    ("BTCUSDT", "XRPUSDT", "SOLUSDT")
                ]
            nursery.cancel_scope.cancel()

    assert [row[:2] for row in bybit_statuses(tmp_path, "ETHUSDT")] == [
        ("connected", None),
        ("subscribed", "trades"),
        ("unsubscribed", "trades"),
    ]
    assert bybit_statuses(tmp_path, "ETHUSDT")[2][2] == "removed at run time (delisted)"
    [added, subscribed, _] = bybit_statuses(tmp_path, "SOLUSDT")
    assert added == ("added", "trades", "added at run time (listed)")
    assert subscribed[0] == "subscribed"
    assert [event for event, _, _ in bybit_statuses(tmp_path, "BTCUSDT")] == [
        "connected",
        "subscribed",
        "disconnected",
    ]
    trades = {
        symbol: len(read_rows(tmp_path, "bybit-linear", symbol, "trades"))
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
    }
    assert trades == {"BTCUSDT": 2, "ETHUSDT": 1, "SOLUSDT": 1, "XRPUSDT": 0}
