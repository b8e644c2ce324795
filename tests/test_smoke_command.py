"""``python -m collector test``: the real command as a subprocess against the fake Binance.

The fake runs in the test's Trio loop on 127.0.0.1 and the command connects to it with
``--base-url``; what the command prints and its exit status are checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from collector.cli import main
from collector.settings_check import parse_settings
from collector.smoke import DEFAULT_CATEGORIES, DEFAULT_SYMBOLS, smoke_settings
from tests.fakes.binance import FakeBinance, book_ticker_frame, trade_frame

pytestmark = pytest.mark.slow

TIMEOUT = 60.0
T0_US = 1_700_000_000_000_000
REPO = Path(__file__).resolve().parent.parent


async def run_test_command(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR__")}
    env["PYTHONPATH"] = str(REPO)
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "collector", "test", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )


async def feed_when_subscribed(fake: FakeBinance) -> None:
    await fake.wait_subscribed(["btcusdt@trade", "btcusdt@bookTicker"])
    await fake.send(trade_frame("btcusdt", 41, "50000.5", "0.25", T0_US, buyer_maker=False))
    await fake.send(book_ticker_frame("btcusdt", 7, "50000", "1", "50001", "2"))


async def test_data_arriving_is_printed_and_the_verdict_is_ok() -> None:
    fake = FakeBinance()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        nursery.start_soon(feed_when_subscribed, fake)
        done = await run_test_command(
            "binance", "--base-url", fake.url, "--feeds", "trades,ticker", "--seconds", "3"
        )
        nursery.cancel_scope.cancel()
    out = done.stdout.decode()
    assert done.returncode == 0, (out, done.stderr.decode())
    assert "testing binance btcusdt (trades, ticker) for 3 s" in out
    assert "trade_id=41 price=50000.5 size=0.25 side=buy" in out
    assert "ticker BTCUSDT" in out
    assert "bid_price=50000.0" in out
    assert "status BTCUSDT subscribed trades" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("OK binance btcusdt: ")
    assert "trades 1" in last
    assert "ticker 1" in last


async def test_a_refused_subscription_fails_with_the_reason() -> None:
    fake = FakeBinance(reject_streams=["btcusdt@trade"])
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        done = await run_test_command(
            "binance", "btcusdt", "--base-url", fake.url, "--feeds", "trades", "--seconds", "2"
        )
        nursery.cancel_scope.cancel()
    last = done.stdout.decode().strip().splitlines()[-1]
    assert done.returncode == 1
    assert last.startswith("FAIL binance btcusdt: ")
    assert "refused: trades" in last


async def test_silence_fails_with_no_market_data() -> None:
    fake = FakeBinance()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        done = await run_test_command(
            "binance", "ethusdt", "--base-url", fake.url, "--feeds", "trades", "--seconds", "1.5"
        )
        nursery.cancel_scope.cancel()
    last = done.stdout.decode().strip().splitlines()[-1]
    assert done.returncode == 1
    assert last.startswith("FAIL binance ethusdt: ")
    assert last.endswith("no market data arrived")
    assert fake.connections >= 1  # it did connect: silence, not a refused connection


async def test_an_unreachable_venue_fails() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = await run_test_command(
        "binance", "--base-url", f"ws://127.0.0.1:{port}", "--feeds", "trades", "--seconds", "1"
    )
    assert done.returncode == 1
    assert done.stdout.decode().strip().splitlines()[-1].endswith("no market data arrived")


def test_bad_arguments_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "nosuchvenue"]) == 2
    assert capsys.readouterr().err.strip() == (
        "collector: error: unknown exchange 'nosuchvenue' (known: "
        + ", ".join(sorted(DEFAULT_SYMBOLS))
        + ")"
    )
    assert main(["test", "coinbase", "BTCUSD"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("collector: error: test: markets[0].symbols:")
    assert "\n" not in err
    assert main(["test", "binance", "--seconds", "0"]) == 2
    assert "--seconds must be above 0" in capsys.readouterr().err


def test_every_venue_has_a_valid_default_symbol() -> None:
    from collector.exchanges import known_exchanges

    assert sorted(DEFAULT_SYMBOLS) == sorted(known_exchanges())
    for exchange, symbol in DEFAULT_SYMBOLS.items():
        feeds = ("trades", "orderbook", "ticker")
        category = DEFAULT_CATEGORIES.get(exchange)
        settings = smoke_settings(exchange, symbol, feeds, category=category)
        assert settings.markets[0].symbols == (symbol,)
    # The same document passes the service's own checks (nothing special-cased here).
    parse_settings({"markets": [{"exchange": "kraken", "symbols": [DEFAULT_SYMBOLS["kraken"]]}]})
