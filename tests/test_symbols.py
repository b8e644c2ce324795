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
        ("bybit", "linear", "bybit cannot list symbols by category"),
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
