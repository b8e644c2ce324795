"""``symbols EXCHANGE``: the venue's tradable symbols over its REST API (fake on loopback)."""

from __future__ import annotations

import io
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
