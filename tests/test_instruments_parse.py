"""Instrument listings -> ``instruments`` rows, per venue: the recorded REST answers of
``shared/samples`` (skipped without them) and answers in the venues' current documented
shape; and the requests each adapter makes for a market."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from collector.config import MarketSettings
from collector.events import Instrument
from collector.exchanges import get_adapter_class, known_exchanges
from collector.exchanges.base import InstrumentsRequest, ParseError
from collector.exchanges.binance import BinanceAdapter
from collector.exchanges.bitfinex import BitfinexAdapter
from collector.exchanges.bybit import BybitAdapter
from collector.exchanges.coinbase import CoinbaseAdapter
from collector.exchanges.deribit import DeribitAdapter
from collector.exchanges.kraken import KrakenAdapter
from collector.exchanges.okx import OkxAdapter
from collector.exchanges.upbit import UpbitAdapter
from collector.settings_check import parse_settings
from tests.fakes.spot_rest import (
    bitfinex_futures_info,
    bitfinex_pair_info,
    coinbase_product,
    kraken_asset_pairs,
    upbit_markets,
)
from tests.samples import read_f2, require_sample

T = 1_786_000_000_000_000  # receive time, us


def market(exchange: str, *symbols: str, **options: Any) -> MarketSettings:
    return MarketSettings(
        exchange=exchange, symbols=symbols, feeds=("trades", "instruments"), **options
    )


def recorded_body(sample: str, url_contains: str) -> bytes:
    capture = read_f2(require_sample(f"cryptofeed-v3/{sample}.jsonl.zst"))
    record = next(capture.http(url_contains))
    assert record.data is not None
    return record.data.encode()


def by_symbol(rows: list[Instrument]) -> dict[str, Instrument]:
    return {row.symbol: row for row in rows}


def fields(row: Instrument, *names: str) -> tuple[Any, ...]:
    return tuple(getattr(row, name) for name in names)


UNITS = ("kind", "size_unit", "contract_size", "contract_unit", "inverse")
ASSETS = ("base_asset", "quote_asset", "settle_asset")
STEPS = ("tick_size", "lot_size", "min_size")


# --------------------------------------------------------------------------- requests


def test_binance_spot_asks_for_its_symbols_only_and_futures_for_the_category_listing() -> None:
    adapter = BinanceAdapter()
    (spot,) = adapter.instruments_requests(market("binance", "btcusdt", "ethusdt"))
    assert spot.url == (
        "https://api.binance.com/api/v3/exchangeInfo?symbols=%5B%22BTCUSDT%22%2C%22ETHUSDT%22%5D"
    )
    assert (spot.exchange, spot.symbols) == ("binance", ("BTCUSDT", "ETHUSDT"))
    (coinm,) = adapter.instruments_requests(
        market("binance", "btcusd_perp", category="coinm", rest_url="http://127.0.0.1:9/")
    )
    assert coinm.url == "http://127.0.0.1:9/dapi/v1/exchangeInfo"
    assert (coinm.exchange, coinm.symbols, coinm.category) == (
        "binance-coinm",
        ("BTCUSD_PERP",),
        "coinm",
    )


def test_bybit_okx_and_deribit_ask_per_symbol() -> None:
    bybit = BybitAdapter().instruments_requests(market("bybit", "btcusd", category="inverse"))
    assert [(r.exchange, r.url) for r in bybit] == [
        (
            "bybit-inverse",
            "https://api.bybit.com/v5/market/instruments-info?category=inverse&symbol=BTCUSD",
        )
    ]
    okx = OkxAdapter().instruments_requests(
        market("okx", "btc-usdt", "BTC-USDT-SWAP", "BTC-USD-250627", "BTC-USD-250627-100000-C")
    )
    base = "https://www.okx.com/api/v5/public/instruments"
    assert [r.url for r in okx] == [
        f"{base}?instType=SPOT&instId=BTC-USDT",
        f"{base}?instType=SWAP&instId=BTC-USDT-SWAP",
        f"{base}?instType=FUTURES&instId=BTC-USD-250627",
        f"{base}?instType=OPTION&instId=BTC-USD-250627-100000-C&instFamily=BTC-USD",
    ]
    deribit = DeribitAdapter().instruments_requests(market("deribit", "btc-perpetual"))
    assert [r.url for r in deribit] == [
        "https://www.deribit.com/api/v2/public/get_instrument?instrument_name=BTC-PERPETUAL"
    ]


def test_every_venue_lists_instruments_and_the_feed_needs_another() -> None:
    assert [n for n in known_exchanges() if not get_adapter_class(n).lists_instruments] == []
    for exchange, symbol in (("kraken", "BTC/USD"), ("upbit", "KRW-BTC")):
        parse_settings(
            {"markets": [{"exchange": exchange, "symbols": [symbol],
                          "feeds": ["trades", "instruments"], "rest_url": "http://127.0.0.1:9"}]}
        )  # fmt: skip
    # Alone it would record nothing to describe.
    with pytest.raises(Exception, match="'instruments' describes the instruments of the market"):
        parse_settings(
            {"markets": [{"exchange": "binance", "symbols": ["BTCUSDT"], "feeds": ["instruments"]}]}
        )


# --------------------------------------------------------------------------- Binance


def test_binance_recorded_spot_usdm_and_coinm_listings() -> None:
    spot = BinanceAdapter.parse_instruments(
        InstrumentsRequest("binance", "u", ("BTCUSDT", "NOPEUSDT"), "spot"),
        recorded_body("BINANCE", "exchangeInfo"),
        T,
    )
    (row,) = spot  # the symbol the listing lacks gets no row
    assert fields(row, *UNITS) == ("spot", "base", None, None, None)
    assert fields(row, *ASSETS) == ("BTC", "USDT", None)
    assert fields(row, *STEPS) == (0.01, 0.00001, 0.00001)
    assert (row.timestamp_exchange, row.timestamp_collector) == (1633998511098000, T)
    assert (row.exchange, row.expiry, row.status) == ("binance", None, "TRADING")

    (usdm,) = BinanceAdapter.parse_instruments(
        InstrumentsRequest("binance-usdm", "u", ("BTCUSDT",), "usdm"),
        recorded_body("BINANCE_FUTURES", "exchangeInfo"),
        T,
    )
    assert fields(usdm, *UNITS) == ("perpetual", "base", None, None, False)
    assert fields(usdm, *ASSETS) == ("BTC", "USDT", "USDT")
    assert fields(usdm, *STEPS) == (0.01, 0.001, 0.001)
    assert usdm.expiry is None  # deliveryDate 4133404800000 (2100) is no expiry

    coinm = by_symbol(
        BinanceAdapter.parse_instruments(
            InstrumentsRequest("binance-coinm", "u", ("BTCUSD_PERP", "BTCUSD_210924"), "coinm"),
            recorded_body("BINANCE_DELIVERY", "exchangeInfo"),
            T,
        )
    )
    perp, quarter = coinm["BTCUSD_PERP"], coinm["BTCUSD_210924"]
    assert fields(perp, *UNITS) == ("perpetual", "contracts", 100.0, "USD", True)
    assert fields(perp, *ASSETS) == ("BTC", "USD", "BTC")
    assert fields(quarter, *UNITS) == ("future", "contracts", 100.0, "USD", True)
    assert quarter.expiry == 1632470400000 * 1000
    assert (quarter.status, quarter.exchange) == ("TRADING", "binance-coinm")


def test_binance_unreadable_answer_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="binance exchangeInfo"):
        BinanceAdapter.parse_instruments(
            InstrumentsRequest("binance", "u", ("BTCUSDT",)), b'{"code":-1121}', T
        )


# --------------------------------------------------------------------------- Bybit


def test_bybit_recorded_linear_and_spot_listings() -> None:
    (linear,) = BybitAdapter.parse_instruments(
        InstrumentsRequest("bybit-linear", "u", ("BTCUSDT",), "linear"),
        recorded_body("BYBIT", "category=linear"),
        T,
    )
    assert fields(linear, *UNITS) == ("perpetual", "base", None, None, False)
    assert fields(linear, *ASSETS) == ("BTC", "USDT", "USDT")
    assert linear.tick_size is not None
    assert linear.lot_size is not None
    assert linear.timestamp_exchange == 1786310817197000
    (spot,) = BybitAdapter.parse_instruments(
        InstrumentsRequest("bybit", "u", ("BTCUSDT",), "spot"),
        recorded_body("BYBIT", "category=spot"),
        T,
    )
    assert fields(spot, *UNITS) == ("spot", "base", None, None, None)
    assert fields(spot, *ASSETS) == ("BTC", "USDT", None)
    assert fields(spot, *STEPS) == (0.1, 0.000001, 0.000001)


def bybit_answer(category: str, *items: dict[str, Any], ret_code: int = 0) -> bytes:
    return msgspec.json.encode(
        {
            "retCode": ret_code,
            "retMsg": "OK" if ret_code == 0 else "params error",
            "result": {"category": category, "list": list(items), "nextPageCursor": ""},
            "retExtInfo": {},
            "time": 1786310817000,
        }
    )


def test_bybit_inverse_future_counts_usd() -> None:
    item = {
        "symbol": "BTCUSDH26",
        "contractType": "InverseFutures",
        "status": "Trading",
        "baseCoin": "BTC",
        "quoteCoin": "USD",
        "deliveryTime": "1774598400000",
        "priceFilter": {"minPrice": "0.50", "maxPrice": "1999999.00", "tickSize": "0.50"},
        "lotSizeFilter": {"maxOrderQty": "100000000", "minOrderQty": "1", "qtyStep": "1"},
        "settleCoin": "BTC",
    }
    (row,) = BybitAdapter.parse_instruments(
        InstrumentsRequest("bybit-inverse", "u", ("BTCUSDH26",), "inverse"),
        bybit_answer("inverse", item),
        T,
    )
    assert fields(row, *UNITS) == ("future", "usd", 1.0, "USD", True)
    assert fields(row, *ASSETS) == ("BTC", "USD", "BTC")
    assert fields(row, *STEPS) == (0.5, 1.0, 1.0)
    assert row.expiry == 1774598400000 * 1000


def test_bybit_options_usdc_and_usdt_settled() -> None:
    """Option items in the instruments-info docs' shape (``optionsType``, no
    ``contractType``); sizes in the base coin; the strike from the name."""

    def option(symbol: str, kind: str, settle: str) -> dict[str, Any]:
        return {
            "symbol": symbol, "optionsType": kind, "status": "Trading", "baseCoin": "BTC",
            "quoteCoin": "USD" if settle == "USDC" else "USDT", "settleCoin": settle,
            "launchTime": "1766102400000", "deliveryTime": "1766736000000",
            "deliveryFeeRate": "0.00015", "displayName": "",
            "priceFilter": {"minPrice": "5", "maxPrice": "1110000", "tickSize": "5"},
            "lotSizeFilter": {"maxOrderQty": "500", "minOrderQty": "0.01", "qtyStep": "0.01"},
        }  # fmt: skip

    usdc, usdt = "BTC-26DEC25-100000-C", "BTC-26DEC25-90000-P-USDT"
    rows = BybitAdapter.parse_instruments(
        InstrumentsRequest("bybit-option", "u", (usdc, usdt), "option"),
        bybit_answer("option", option(usdc, "Call", "USDC"), option(usdt, "Put", "USDT")),
        T,
    )
    expiry = 1766736000000 * 1000
    assert rows == [
        Instrument("bybit-option", usdc, 1786310817000000, T, None, kind="option",
                   base_asset="BTC", quote_asset="USD", settle_asset="USDC", inverse=False,
                   size_unit="base", tick_size=5.0, lot_size=0.01, min_size=0.01,
                   expiry=expiry, strike=100000.0, option_kind="call", status="Trading"),
        Instrument("bybit-option", usdt, 1786310817000000, T, None, kind="option",
                   base_asset="BTC", quote_asset="USDT", settle_asset="USDT", inverse=False,
                   size_unit="base", tick_size=5.0, lot_size=0.01, min_size=0.01,
                   expiry=expiry, strike=90000.0, option_kind="put", status="Trading"),
    ]  # fmt: skip


def test_bybit_error_answer_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="retCode 10001"):
        BybitAdapter.parse_instruments(
            InstrumentsRequest("bybit", "u", ("X",), "spot"),
            bybit_answer("spot", ret_code=10001),
            T,
        )


# --------------------------------------------------------------------------- OKX


def test_okx_recorded_spot_swap_future_and_option_listings() -> None:
    def rows(inst_type: str, symbol: str) -> Instrument:
        (row,) = OkxAdapter.parse_instruments(
            InstrumentsRequest("okx", "u", (symbol,), inst_type),
            recorded_body("OKX", f"instType={inst_type}"),
            T,
        )
        return row

    spot = rows("SPOT", "BTC-USDT")
    assert fields(spot, *UNITS) == ("spot", "base", None, None, None)
    assert fields(spot, *ASSETS) == ("BTC", "USDT", None)
    assert fields(spot, *STEPS) == (0.1, 0.00000001, 0.00001)
    assert (spot.status, spot.timestamp_exchange) == ("live", None)

    swap = rows("SWAP", "BTC-USD-SWAP")
    assert fields(swap, *UNITS) == ("perpetual", "contracts", 100.0, "USD", True)
    assert fields(swap, *ASSETS) == ("BTC", "USD", "BTC")
    assert swap.expiry is None

    future = rows("FUTURES", "BTC-USD-220520")
    assert fields(future, *UNITS) == ("future", "contracts", 100.0, "USD", True)
    assert future.expiry == 1653033600000 * 1000

    option = rows("OPTION", "BTC-USD-220514-22000-C")
    # ctVal 1 x ctMult 0.1: a contract is 0.1 BTC; the premium is quoted in BTC.
    assert fields(option, *UNITS) == ("option", "contracts", 0.1, "BTC", False)
    assert fields(option, *ASSETS) == ("BTC", "BTC", "BTC")
    assert (option.strike, option.option_kind) == (22000.0, "call")
    assert option.expiry == 1652515200000 * 1000


def test_okx_linear_swap_in_the_current_shape() -> None:
    body = msgspec.json.encode(
        {
            "code": "0",
            "msg": "",
            "data": [
                {
                    "instType": "SWAP",
                    "instId": "ETH-USDT-SWAP",
                    "instFamily": "ETH-USDT",
                    "uly": "ETH-USDT",
                    "settleCcy": "USDT",
                    "ctVal": "0.1",
                    "ctMult": "1",
                    "ctValCcy": "ETH",
                    "ctType": "linear",
                    "optType": "",
                    "stk": "",
                    "expTime": "",
                    "tickSz": "0.01",
                    "lotSz": "0.01",
                    "minSz": "0.01",
                    "state": "live",
                    "baseCcy": "",
                    "quoteCcy": "",
                }
            ],
        }
    )
    (row,) = OkxAdapter.parse_instruments(
        InstrumentsRequest("okx", "u", ("ETH-USDT-SWAP",), "SWAP"), body, T
    )
    assert fields(row, *UNITS) == ("perpetual", "contracts", 0.1, "ETH", False)
    assert fields(row, *ASSETS) == ("ETH", "USDT", "USDT")
    with pytest.raises(ParseError, match="code 51001"):
        OkxAdapter.parse_instruments(
            InstrumentsRequest("okx", "u", ("X-Y",), "SPOT"),
            b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}',
            T,
        )


# --------------------------------------------------------------------------- Deribit


def test_deribit_recorded_listings_inverse_future_linear_perpetual_and_option() -> None:
    btc = recorded_body("DERIBIT", "currency=BTC")
    rows = by_symbol(
        DeribitAdapter.parse_instruments(
            InstrumentsRequest("deribit", "u", ("BTC-25MAR22", "BTC-24SEP21-40000-P")), btc, T
        )
    )
    future = rows["BTC-25MAR22"]  # an answer from before instrument_type: quoted in USD
    assert fields(future, *UNITS) == ("future", "usd", 10.0, "USD", True)
    assert fields(future, *ASSETS) == ("BTC", "USD", "BTC")
    assert fields(future, *STEPS) == (0.5, 10.0, 10.0)
    assert future.expiry == 1648195200000 * 1000
    option = rows["BTC-24SEP21-40000-P"]
    assert fields(option, *UNITS) == ("option", "base", 1.0, "BTC", False)
    assert (option.strike, option.option_kind, option.quote_asset) == (40000.0, "put", "BTC")

    (linear,) = DeribitAdapter.parse_instruments(
        InstrumentsRequest("deribit", "u", ("BTC_USDC-PERPETUAL",)),
        recorded_body("DERIBIT", "currency=USDC"),
        T,
    )
    assert fields(linear, *UNITS) == ("perpetual", "base", 0.001, "BTC", False)
    assert fields(linear, *ASSETS) == ("BTC", "USDC", "USDC")
    assert (linear.expiry, linear.status) == (None, "active")


def test_deribit_get_instrument_in_the_current_shape() -> None:
    body = msgspec.json.encode(
        {
            "jsonrpc": "2.0",
            "result": {
                "tick_size": 0.5,
                "settlement_period": "perpetual",
                "settlement_currency": "BTC",
                "quote_currency": "USD",
                "counter_currency": "USD",
                "min_trade_amount": 10,
                "kind": "future",
                "is_active": True,
                "state": "open",
                "instrument_name": "BTC-PERPETUAL",
                "instrument_type": "reversed",
                "expiration_timestamp": 32503708800000,
                "contract_size": 10,
                "base_currency": "BTC",
            },
            "usIn": 1786000000000000,
            "usOut": 1786000000000150,
            "usDiff": 150,
            "testnet": False,
        }
    )
    (row,) = DeribitAdapter.parse_instruments(
        InstrumentsRequest("deribit", "u", ("BTC-PERPETUAL",)), body, T
    )
    assert fields(row, *UNITS) == ("perpetual", "usd", 10.0, "USD", True)
    assert (row.expiry, row.status, row.timestamp_exchange) == (None, "open", 1786000000000150)
    with pytest.raises(ParseError, match="error 13020: not_found"):
        DeribitAdapter.parse_instruments(
            InstrumentsRequest("deribit", "u", ("BTC-NOPE",)),
            b'{"jsonrpc":"2.0","error":{"code":13020,"message":"not_found"}}',
            T,
        )


# --------------------------------------------------------------------------- Kraken


def test_kraken_asks_once_per_market_for_the_whole_listing() -> None:
    (request,) = KrakenAdapter().instruments_requests(
        market("kraken", "btc/usd", "DOGE/USD", "BTC/USD", rest_url="http://127.0.0.1:9/")
    )
    assert request == InstrumentsRequest(
        "kraken", "http://127.0.0.1:9/0/public/AssetPairs", ("BTC/USD", "DOGE/USD")
    )


def test_kraken_asset_pairs_by_their_websocket_names() -> None:
    """v1 names in ``wsname`` (XBT, XDG) match the v2 settings names; a dark-pool entry
    and a pair not asked for are skipped; an older answer without ``tick_size``."""
    _, body = kraken_asset_pairs()
    request = InstrumentsRequest("kraken", "u", ("BTC/USD", "DOGE/USD", "SOL/EUR", "ETH/USD"))
    rows = KrakenAdapter.parse_instruments(request, body, T)
    assert rows == [
        Instrument("kraken", "BTC/USD", None, T, None, kind="spot", base_asset="BTC",
                   quote_asset="USD", settle_asset=None, inverse=None, size_unit="base", tick_size=0.1, lot_size=1e-8, min_size=0.00005,
                   status="online"),
        Instrument("kraken", "DOGE/USD", None, T, None, kind="spot", base_asset="DOGE",
                   quote_asset="USD", settle_asset=None, inverse=None, size_unit="base", tick_size=1e-7, lot_size=1e-8, min_size=13.0,
                   status="online"),
        Instrument("kraken", "SOL/EUR", None, T, None, kind="spot", base_asset="SOL",
                   quote_asset="EUR", settle_asset=None, inverse=None, size_unit="base", tick_size=0.01, lot_size=1e-8, min_size=0.02,
                   status="cancel_only"),
    ]  # fmt: skip


def test_kraken_error_answer_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="EGeneral:Too many requests"):
        KrakenAdapter.parse_instruments(
            InstrumentsRequest("kraken", "u", ("BTC/USD",)),
            b'{"error":["EGeneral:Too many requests"],"result":{}}',
            T,
        )


# --------------------------------------------------------------------------- Coinbase


def test_coinbase_asks_per_product() -> None:
    requests = CoinbaseAdapter().instruments_requests(market("coinbase", "btc-usd", "ETH-BTC"))
    assert [(r.exchange, r.url, r.symbols) for r in requests] == [
        ("coinbase", "https://api.coinbase.com/api/v3/brokerage/market/products/BTC-USD",
         ("BTC-USD",)),
        ("coinbase", "https://api.coinbase.com/api/v3/brokerage/market/products/ETH-BTC",
         ("ETH-BTC",)),
    ]  # fmt: skip


def test_coinbase_public_product() -> None:
    _, body = coinbase_product("BTC-USD")
    request = InstrumentsRequest("coinbase", "u", ("BTC-USD",))
    assert CoinbaseAdapter.parse_instruments(request, body, T) == [
        Instrument("coinbase", "BTC-USD", None, T, None, kind="spot", base_asset="BTC",
                   quote_asset="USD", settle_asset=None, inverse=None, size_unit="base",
                   tick_size=0.01, lot_size=1e-8, min_size=1e-8, status="online")
    ]  # fmt: skip
    _, eth = coinbase_product("ETH-BTC")
    (row,) = CoinbaseAdapter.parse_instruments(
        InstrumentsRequest("coinbase", "u", ("ETH-BTC",)), eth, T
    )
    assert fields(row, *ASSETS, *STEPS) == ("ETH", "BTC", None, 0.00001, 1e-8, 0.00022)
    # another product than asked for describes nothing
    assert CoinbaseAdapter.parse_instruments(request, eth, T) == []
    with pytest.raises(ParseError, match="coinbase product"):
        CoinbaseAdapter.parse_instruments(request, b'{"error":"NOT_FOUND"}', T)


# --------------------------------------------------------------------------- Bitfinex


def test_bitfinex_asks_for_the_pair_and_the_futures_info() -> None:
    requests = BitfinexAdapter().instruments_requests(
        market("bitfinex", "tBTCUSD", "BTCF0:USTF0", "tETHUSD")
    )
    assert requests == [
        InstrumentsRequest("bitfinex", "https://api-pub.bitfinex.com/v2/conf/pub:info:pair",
                           ("tBTCUSD", "tETHUSD")),
        InstrumentsRequest("bitfinex",
                           "https://api-pub.bitfinex.com/v2/conf/pub:info:pair:futures",
                           ("tBTCF0:USTF0",)),
    ]  # fmt: skip
    (only,) = BitfinexAdapter().instruments_requests(market("bitfinex", "tBTCF0:USTF0"))
    assert only.url.endswith("/pub:info:pair:futures")


def test_bitfinex_spot_pairs_and_perpetuals() -> None:
    _, spot_body = bitfinex_pair_info()
    spot = BitfinexAdapter.parse_instruments(
        InstrumentsRequest("bitfinex", "u", ("tBTCUSD", "tTESTBTC:TESTUSD", "tNOPE:USD")),
        spot_body,
        T,
    )
    assert spot == [
        Instrument("bitfinex", "tBTCUSD", None, T, None, kind="spot", base_asset="BTC",
                   quote_asset="USD", settle_asset=None, inverse=None, size_unit="base",
                   min_size=0.00004),
        Instrument("bitfinex", "tTESTBTC:TESTUSD", None, T, None, kind="spot",
                   base_asset="TESTBTC", quote_asset="TESTUSD", settle_asset=None,
                   inverse=None, size_unit="base", min_size=0.00006),
    ]  # fmt: skip
    _, futures_body = bitfinex_futures_info()
    (perpetual,) = BitfinexAdapter.parse_instruments(
        InstrumentsRequest("bitfinex", "u", ("tBTCF0:USTF0",)), futures_body, T
    )
    assert perpetual == Instrument(
        "bitfinex", "tBTCF0:USTF0", None, T, None, kind="perpetual", base_asset="BTC",
        quote_asset="USDT", settle_asset="USDT", inverse=False, size_unit="base",
        min_size=0.00004,
    )  # fmt: skip
    with pytest.raises(ParseError, match="bitfinex pair info"):
        BitfinexAdapter.parse_instruments(
            InstrumentsRequest("bitfinex", "u", ("tBTCUSD",)), b'["error",10020,"x"]', T
        )


# --------------------------------------------------------------------------- Upbit


def test_upbit_market_list_has_no_steps() -> None:
    (request,) = UpbitAdapter().instruments_requests(market("upbit", "krw-btc", "USDT-XRP"))
    assert request == InstrumentsRequest(
        "upbit", "https://api.upbit.com/v1/market/all", ("KRW-BTC", "USDT-XRP")
    )
    _, body = upbit_markets()
    assert UpbitAdapter.parse_instruments(request, body, T) == [
        Instrument("upbit", "KRW-BTC", None, T, None, kind="spot", base_asset="BTC",
                   quote_asset="KRW", settle_asset=None, inverse=None, size_unit="base"),
        Instrument("upbit", "USDT-XRP", None, T, None, kind="spot", base_asset="XRP",
                   quote_asset="USDT", settle_asset=None, inverse=None, size_unit="base"),
    ]  # fmt: skip
    with pytest.raises(ParseError, match="upbit markets"):
        UpbitAdapter.parse_instruments(request, b'{"error":{"name":"x"}}', T)
