"""``symbols EXCHANGE``: the venue's tradable symbols over its REST API (fake on loopback)."""

from __future__ import annotations

import io
import json
import re
import socket
import sys

import pytest
import trio

from collector.symbols import SymbolsError, list_symbols, run_symbols_command
from tests.fakes.binance_rest import FakeBinanceRest
from tests.fakes.listing_rest import FakeListingRest


async def test_binance_symbols_lists_trading_symbols_sorted() -> None:
    fake = FakeBinanceRest()
    fake.symbols = [("ETHUSDT", "TRADING"), ("BTCUSDT", "TRADING"), ("OLDUSDT", "BREAK")]
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        symbols = await trio.to_thread.run_sync(list_symbols, "binance", fake.url)
        assert symbols == ["BTCUSDT", "ETHUSDT"]
        assert fake.requests == ["/api/v3/exchangeInfo?permissions=SPOT&symbolStatus=TRADING"]
        nursery.cancel_scope.cancel()


async def test_json_output() -> None:
    fake = FakeBinanceRest()
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        status = await trio.to_thread.run_sync(
            lambda: run_symbols_command("binance", rest_url=fake.url, as_json=True, out=out)
        )
        nursery.cancel_scope.cancel()
    assert status == 0
    assert out.getvalue() == '["BTCUSDT", "ETHUSDT"]\n'


async def test_unreachable_venue_is_a_clear_error() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(SymbolsError, match="cannot reach binance"):
        await trio.to_thread.run_sync(list_symbols, "binance", f"http://127.0.0.1:{port}")


async def test_http_error_is_a_clear_error() -> None:
    fake = FakeBinanceRest()
    fake.fail_next = [429]
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        with pytest.raises(SymbolsError, match="HTTP 429"):
            await trio.to_thread.run_sync(list_symbols, "binance", fake.url)
        nursery.cancel_scope.cancel()


def test_unknown_exchange() -> None:
    with pytest.raises(SymbolsError, match="unknown exchange 'nyse'"):
        list_symbols("nyse")


def test_unknown_exchange_is_one_error_line_and_usage_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_symbols_command("nyse", rest_url=None, as_json=False, out=sys.stdout) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("collector: error: unknown exchange 'nyse'")
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize(
    ("category", "path", "expected"),
    [
        ("usdm", "/fapi/v1/exchangeInfo", ["BTCUSDT", "ETHUSDT"]),
        # COIN-M names the status contractStatus and spells the contract.
        ("coinm", "/dapi/v1/exchangeInfo", ["BTCUSD_250926", "BTCUSD_PERP"]),
        ("spot", "/api/v3/exchangeInfo?permissions=SPOT&symbolStatus=TRADING", ["BTCUSDT"]),
    ],
)
async def test_binance_futures_symbols_by_category(
    category: str, path: str, expected: list[str]
) -> None:
    fake = FakeBinanceRest()
    fake.symbols = [("BTCUSDT", "TRADING")]
    fake.usdm_symbols = [("ETHUSDT", "TRADING"), ("BTCUSDT", "TRADING"), ("OLDUSDT", "SETTLING")]
    fake.coinm_symbols = [
        ("BTCUSD_PERP", "TRADING"),
        ("BTCUSD_250926", "TRADING"),
        ("BTCUSD_250627", "DELIVERED"),
    ]
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        status = await trio.to_thread.run_sync(
            lambda: run_symbols_command(
                "binance", rest_url=fake.url, as_json=True, out=out, category=category
            )
        )
        nursery.cancel_scope.cancel()
    assert status == 0
    assert fake.requests == [path]
    assert out.getvalue() == json.dumps(expected) + "\n"


def test_binance_futures_symbols_default_to_the_category_api() -> None:
    from collector.exchanges.binance import BinanceAdapter

    assert BinanceAdapter.symbols_url(category="usdm") == (
        "https://fapi.binance.com/fapi/v1/exchangeInfo"
    )
    assert BinanceAdapter.symbols_url(category="coinm") == (
        "https://dapi.binance.com/dapi/v1/exchangeInfo"
    )


@pytest.mark.parametrize(
    ("exchange", "category", "message"),
    [
        ("binance", "inverse", "binance category must be 'spot', 'usdm' or 'coinm'"),
        ("bybit", "usdm", "bybit category must be 'spot', 'linear', 'inverse' or 'option'"),
        ("okx", "MARGIN", "okx category must be an instrument type"),
        ("deribit", "perpetual", "deribit category must be an instrument kind"),
        ("coinbase", "spot", "coinbase cannot list symbols by category"),
        ("bitfinex", "perpetual", "bitfinex category must be 'exchange' or 'futures'"),
    ],
)
def test_a_category_the_venue_cannot_list_is_a_clear_error(
    exchange: str, category: str, message: str
) -> None:
    with pytest.raises(SymbolsError, match=re.escape(message)):
        list_symbols(exchange, None, category)


def test_the_command_line_takes_a_category(capsys: pytest.CaptureFixture[str]) -> None:
    from collector.cli import main

    assert main(["symbols", "binance", "--category", "inverse"]) == 2  # a usage error
    assert "binance category must be" in capsys.readouterr().err


async def test_unreachable_venue_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    status = await trio.to_thread.run_sync(
        lambda: run_symbols_command(
            "binance", rest_url=f"http://127.0.0.1:{port}", as_json=False, out=sys.stdout
        )
    )
    assert status == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("collector: error: cannot reach binance: ")
    assert captured.err.count("\n") == 1


# --------------------------------------------------------------------------- every category


async def _listed(fake: FakeListingRest, exchange: str, category: str | None) -> list[str]:
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        status = await trio.to_thread.run_sync(
            lambda: run_symbols_command(
                exchange, rest_url=fake.url, as_json=True, out=out, category=category
            )
        )
        nursery.cancel_scope.cancel()
    assert status == 0
    listed: list[str] = json.loads(out.getvalue())
    return listed


@pytest.mark.parametrize(
    ("category", "path", "expected"),
    [
        (None, "instType=SPOT", ["BTC-USDT"]),
        ("SWAP", "instType=SWAP", ["BTC-USD-SWAP", "BTC-USDT-SWAP"]),
        ("futures", "instType=FUTURES", ["BTC-USD-250926"]),
        ("OPTION:BTC-USD", "instType=OPTION&instFamily=BTC-USD", ["BTC-USD-250926-100000-C"]),
    ],
)
async def test_okx_symbols_by_instrument_type(
    category: str | None, path: str, expected: list[str]
) -> None:
    fake = FakeListingRest()
    fake.okx = {
        ("SPOT", ""): [("BTC-USDT", "live")],
        ("SWAP", ""): [("BTC-USDT-SWAP", "live"), ("BTC-USD-SWAP", "live"),
                       ("OLD-USDT-SWAP", "suspend")],
        ("FUTURES", ""): [("BTC-USD-250926", "live"), ("BTC-USD-251226", "preopen")],
        ("OPTION", "BTC-USD"): [("BTC-USD-250926-100000-C", "live")],
    }  # fmt: skip
    assert await _listed(fake, "okx", category) == expected
    assert fake.requests == [f"/api/v5/public/instruments?{path}"]


@pytest.mark.parametrize(
    ("category", "expected"),
    [(None, ["BTCUSDT"]), ("linear", ["BTC-26DEC25", "BTCUSDT"]), ("inverse", ["BTCUSD"]),
     ("option", ["BTC-26DEC25-100000-C", "ETH-26DEC25-3000-P"])],
)  # fmt: skip
async def test_bybit_symbols_of_every_category(category: str | None, expected: list[str]) -> None:
    fake = FakeListingRest()
    fake.bybit = {
        "spot": [("BTCUSDT", "Trading")],
        "linear": [("BTCUSDT", "Trading"), ("BTC-26DEC25", "Trading"), ("NEWUSDT", "PreLaunch")],
        "inverse": [("BTCUSD", "Trading")],
        "option": [("BTC-26DEC25-100000-C", "Trading"), ("ETH-26DEC25-3000-P", "Trading")],
    }
    assert await _listed(fake, "bybit", category) == expected
    query = {None: "category=spot", "linear": "category=linear&limit=1000",
             "inverse": "category=inverse&limit=1000",
             "option": "category=option&limit=1000&baseCoin=All"}[category]  # fmt: skip
    assert fake.requests == [f"/v5/market/instruments-info?{query}"]


async def test_bybit_symbols_follow_the_page_cursor() -> None:
    """1000 a page: 2001 linear symbols take three requests, each with the last cursor."""
    fake = FakeListingRest()
    names = [f"C{i:04d}USDT" for i in range(2001)]
    fake.bybit = {"linear": [(name, "Trading") for name in reversed(names)]}
    assert await _listed(fake, "bybit", "linear") == names
    base = "/v5/market/instruments-info?category=linear&limit=1000"
    assert fake.requests == [base, f"{base}&cursor=1000", f"{base}&cursor=2000"]


@pytest.mark.parametrize(
    ("category", "expected"),
    [(None, ["BTC-PERPETUAL", "BTC-27DEC24-100000-C", "BTC_USDC"]),
     ("option", ["BTC-27DEC24-100000-C"]), ("spot", ["BTC_USDC"])],
)  # fmt: skip
async def test_deribit_symbols_by_kind(category: str | None, expected: list[str]) -> None:
    fake = FakeListingRest()
    fake.deribit = {
        "future": [("BTC-PERPETUAL", True), ("BTC-27SEP24", False)],
        "option": [("BTC-27DEC24-100000-C", True)],
        "spot": [("BTC_USDC", True)],
    }
    assert await _listed(fake, "deribit", category) == expected
    kind = "" if category is None else f"&kind={category}"
    assert fake.requests == [f"/api/v2/public/get_instruments?currency=any&expired=false{kind}"]


def test_okx_options_need_a_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_symbols_command("okx", rest_url=None, as_json=False, category="OPTION") == 2
    assert capsys.readouterr().err.startswith(
        "collector: error: okx lists options per instrument family: category 'OPTION:BTC-USD'"
    )


@pytest.mark.parametrize(
    ("category", "key", "expected"),
    [(None, "exchange", ["tBTCUSD", "tTESTBTC:TESTUSD"]),
     ("exchange", "exchange", ["tBTCUSD", "tTESTBTC:TESTUSD"]),
     ("futures", "futures", ["tBTCF0:USTF0", "tETHF0:USTF0"])],
)  # fmt: skip
async def test_bitfinex_symbols_of_spot_pairs_and_perpetuals(
    category: str | None, key: str, expected: list[str]
) -> None:
    """Perpetuals are listed as the markets name them (``tBTCF0:USTF0``), ready for a
    market with the ``derivatives`` feed."""
    fake = FakeListingRest()
    fake.bitfinex = {
        "pub:list:pair:exchange": ["BTCUSD", "TESTBTC:TESTUSD"],
        "pub:list:pair:futures": ["BTCF0:USTF0", "ETHF0:USTF0"],
    }
    assert await _listed(fake, "bitfinex", category) == expected
    assert fake.requests == [f"/v2/conf/pub:list:pair:{key}"]
    from collector.settings_check import parse_settings

    # What it lists is what a market takes (perpetuals with their derivative feeds).
    parse_settings(
        {"markets": [{"exchange": "bitfinex", "symbols": expected,
                      "feeds": ["trades", "derivatives"] if key == "futures" else ["trades"]}]}
    )  # fmt: skip
