"""What follows a symbol that joins a running connection at run time, through the real
service and fake venues on loopback, in virtual time: its silence is watched at once
(``silence_timeout_secs``), Binance futures open interest is polled for it at once (and no
more once it is removed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from collector.settings_check import parse_settings
from tests.fakes.binance import FakeBinance, trade_frame
from tests.real_time import fail_after_real
from tests.test_control_service import controller_of, raw_settings, statuses, with_symbols
from tests.venue_helpers import running_service, wait_until

TIME_US = 1_700_000_000_000_000
SILENCE = 10.0
STALE = {"exchange": "binance", "reason": "stale"}


async def feed_trades(fake: FakeBinance, symbols: list[str], every: float = 2.0) -> None:
    """A trade of each of ``symbols`` every ``every`` seconds (virtual), until cancelled."""
    trade_id = 0
    while True:
        await trio.sleep(every)
        trade_id += 1
        for symbol in symbols:
            await fake.send(trade_frame(symbol, trade_id, 100.0, 0.5, TIME_US + trade_id, True))


async def test_a_symbol_joined_live_is_watched_for_silence_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """SOLUSDT joins the running connection and never trades: its ``silent`` row comes
    ``silence_timeout_secs`` after it joined (not at a reconnect that never comes: the
    other streams keep the connection alive), and only for it."""
    fake = FakeBinance()
    async with fail_after_real(30), trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        raw: dict[str, Any] = raw_settings(fake.url, tmp_path, ["btcusdt", "ethusdt"])
        raw["websocket"] = {"message_timeout_secs": 600.0}
        raw["markets"][0]["silence_timeout_secs"] = SILENCE
        settings = parse_settings(raw)
        async with running_service(settings, clock=autojump_clock) as handle:
            await fake.wait_subscribed(["btcusdt@trade", "ethusdt@trade"])
            async with trio.open_nursery() as feeding:
                feeding.start_soon(feed_trades, fake, ["btcusdt", "ethusdt"])
                await trio.sleep(3 * SILENCE)  # the streams with data keep it
                assert handle.metrics.sample("collector_websocket_disconnects_total", STALE) == 0

                report = await controller_of(handle).apply(
                    with_symbols(settings, ["btcusdt", "ethusdt", "solusdt"]), "test"
                )
                assert report.joined == ("binance-0",)
                await fake.wait_subscribed(["solusdt@trade"], number=1)
                joined_at = trio.current_time()
                await wait_until(
                    lambda: (
                        handle.metrics.sample("collector_websocket_disconnects_total", STALE) >= 1
                    )
                )
                silent_after = trio.current_time() - joined_at
                await fake.wait_connected(2)  # replaced: the new one subscribes all three
                await fake.wait_subscribed(["solusdt@trade"], number=2)
                feeding.cancel_scope.cancel()
            assert SILENCE - 1 <= silent_after <= SILENCE + 1
            assert fake.connections == 2
        nursery.cancel_scope.cancel()

    assert ("silent", "trades") in statuses(tmp_path, "SOLUSDT")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert ("silent", "trades") not in statuses(tmp_path, symbol)
