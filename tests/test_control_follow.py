"""What follows a symbol that joins a running connection at run time, through the real
service and fake venues on loopback, in virtual time: its silence is watched at once
(``silence_timeout_secs``), Binance futures open interest is polled for it at once (and no
more once it is removed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import trio
import trio.testing

from collector.exchanges.binance import DEFAULT_OPEN_INTEREST_INTERVAL_SECS
from collector.settings_check import parse_settings
from tests.fakes.binance import FakeBinance, mark_price_frame, trade_frame
from tests.fakes.binance_rest import FakeBinanceRest
from tests.real_time import fail_after_real
from tests.test_control_service import (
    controller_of,
    raw_settings,
    statuses,
    with_market,
    with_symbols,
)
from tests.venue_helpers import read_rows, running_service, wait_until

TIME_US = 1_700_000_000_000_000
E0_MS = 1_700_000_000_000
SILENCE = 10.0
STALE = {"exchange": "binance", "reason": "stale"}


# How far apart virtual times may be for "at once" / "in the same round" / "an interval on":
# the autojump clock can move (by the feeders' 1 s marks) while a REST fetch's worker thread
# runs, so a fetch is seen up to a few seconds late. A tenth of the 60 s polling interval
# still tells a poll at once from the next round, and one round from two.
SLACK: Final = 6.0


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


# --------------------------------------------------------------------------- open interest

OI_INTERVAL = 60.0
FAPI_OI = "/fapi/v1/openInterest"


def oi_times(rest: FakeBinanceRest, symbol: str) -> list[float]:
    """When the fake REST API was asked for ``symbol``'s open interest (Trio time)."""
    return [
        at
        for target, at in zip(rest.requests, rest.request_times, strict=True)
        if target.startswith(FAPI_OI) and target.endswith(f"symbol={symbol}")
    ]


async def feed_marks(fake: FakeBinance, symbols: list[str]) -> None:
    """A mark price of each of ``symbols`` every second (virtual), until cancelled."""
    k = 0
    while True:
        await trio.sleep(1.0)
        k += 1
        for symbol in symbols:
            frame = mark_price_frame(
                symbol, E0_MS + k * 1000, 65000 + k, 64990, 65001, "0.0001", E0_MS + 3_600_000
            )
            await fake.send(frame)


async def test_open_interest_is_polled_for_a_symbol_joined_live_and_stops_when_removed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    usdm, rest = FakeBinance(category="usdm"), FakeBinanceRest()
    rest.open_interest["BTCUSDT"] = (10659.5, E0_MS)
    rest.open_interest["ETHUSDT"] = (250000.0, E0_MS)
    async with fail_after_real(30), trio.open_nursery() as nursery:
        for fake in (usdm, rest):
            await nursery.start(fake.run)
        raw: dict[str, Any] = raw_settings(usdm.url, tmp_path, ["BTCUSDT"])
        raw["markets"][0] |= {
            "category": "usdm",
            "feeds": ["derivatives"],
            "rest_url": rest.url,
            "open_interest_interval_secs": OI_INTERVAL,
        }
        raw["websocket"] = {"message_timeout_secs": 600.0}
        settings = parse_settings(raw)
        async with running_service(settings, clock=autojump_clock) as handle:
            await usdm.wait_subscribed(["btcusdt@markPrice@1s"])
            async with trio.open_nursery() as feeding:
                feeding.start_soon(feed_marks, usdm, ["btcusdt", "ethusdt"])
                await wait_until(lambda: len(oi_times(rest, "BTCUSDT")) >= 1)
                await trio.sleep(20.0)

                report = await controller_of(handle).apply(
                    with_symbols(settings, ["BTCUSDT", "ETHUSDT"]), "test"
                )
                assert report.joined == ("binance-usdm-0",)
                await usdm.wait_subscribed(["ethusdt@markPrice@1s"], number=1)
                joined_at = trio.current_time()
                # At once, not at the next round (which is 40 s away).
                await wait_until(lambda: len(oi_times(rest, "ETHUSDT")) >= 1)
                assert oi_times(rest, "ETHUSDT")[0] - joined_at < SLACK
                # Then with every round, beside BTCUSDT.
                await wait_until(lambda: len(oi_times(rest, "ETHUSDT")) >= 2)
                btc, eth = oi_times(rest, "BTCUSDT"), oi_times(rest, "ETHUSDT")
                assert len(btc) == 2
                assert abs(eth[1] - btc[1]) < SLACK

                report = await controller_of(handle).apply(settings, "test")
                assert report.removed == (("binance-usdm", "ETHUSDT"),)
                removed_at = trio.current_time()
                await wait_until(lambda: len(oi_times(rest, "BTCUSDT")) >= 5)
                feeding.cancel_scope.cancel()
            assert usdm.connections == 1
            assert [t for t in oi_times(rest, "ETHUSDT") if t > removed_at] == []
        nursery.cancel_scope.cancel()

    # The polled value joined ETHUSDT's mark price state (its rows carry it).
    rows = read_rows(tmp_path, "binance-usdm", "ETHUSDT", "derivative_ticker")
    assert rows
    assert {r["open_interest"] for r in rows} <= {None, 250000.0}
    assert rows[-1]["open_interest"] == 250000.0


async def test_a_connection_that_polled_nothing_starts_polling_for_a_joined_symbol(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A USD-M trades connection (no open interest) takes a derivatives market's symbol:
    its poller starts then."""
    usdm, rest = FakeBinance(category="usdm"), FakeBinanceRest()
    rest.open_interest["ETHUSDT"] = (250000.0, E0_MS)
    async with fail_after_real(30), trio.open_nursery() as nursery:
        for fake in (usdm, rest):
            await nursery.start(fake.run)
        raw: dict[str, Any] = raw_settings(usdm.url, tmp_path, ["BTCUSDT"])
        raw["markets"][0] |= {
            "category": "usdm",
            "rest_url": rest.url,
        }
        raw["websocket"] = {"message_timeout_secs": 600.0}
        settings = parse_settings(raw)
        async with running_service(settings, clock=autojump_clock) as handle:
            await usdm.wait_subscribed(["btcusdt@aggTrade"])
            async with trio.open_nursery() as feeding:
                # Marks every second: the clock moves by at most that while a fetch runs.
                feeding.start_soon(feed_marks, usdm, ["ethusdt"])
                await trio.sleep(5.0)
                assert oi_times(rest, "BTCUSDT") == []
                report = await controller_of(handle).apply(
                    with_market(settings, ["ETHUSDT"], feeds=("derivatives",)), "test"
                )
                assert (report.joined, report.started) == (("binance-usdm-0",), ())
                await usdm.wait_subscribed(["ethusdt@markPrice@1s"], number=1)
                joined_at = trio.current_time()
                await wait_until(lambda: len(oi_times(rest, "ETHUSDT")) >= 2)
                feeding.cancel_scope.cancel()
            first, second = oi_times(rest, "ETHUSDT")[:2]
            assert first - joined_at < SLACK
            # The next round an interval on (measured at the fake: the clock may move by a
            # jump while a fetch's worker thread runs).
            assert abs(second - joined_at - DEFAULT_OPEN_INTEREST_INTERVAL_SECS) < SLACK
            assert oi_times(rest, "BTCUSDT") == []
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- instruments

FETCHES = "collector_instrument_fetches_total"
LISTING_INTERVAL = 600.0


def listings(rest: FakeBinanceRest) -> list[tuple[float, list[str]]]:
    """When spot exchangeInfo was asked, and for which symbols."""
    asked = []
    for target, at in zip(rest.requests, rest.request_times, strict=True):
        parts = urlsplit(target)
        if parts.path == "/api/v3/exchangeInfo":
            asked.append((at, json.loads(parse_qs(parts.query)["symbols"][0])))
    return asked


async def test_an_added_symbols_listing_is_fetched_when_added_and_a_removed_ones_no_more(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    venue, rest = FakeBinance(), FakeBinanceRest()
    rest.symbols.append(("SOLUSDT", "TRADING"))
    async with fail_after_real(30), trio.open_nursery() as nursery:
        for fake in (venue, rest):
            await nursery.start(fake.run)
        raw: dict[str, Any] = raw_settings(
            venue.url, tmp_path, ["btcusdt", "ethusdt"], instruments_interval_secs=LISTING_INTERVAL
        )
        raw["markets"][0] |= {"feeds": ["trades", "instruments"], "rest_url": rest.url}
        raw["websocket"] = {"message_timeout_secs": 3600.0}
        settings = parse_settings(raw)
        async with running_service(settings, clock=autojump_clock) as handle:

            def fetched(n: int) -> bool:
                ok = {"exchange": "binance", "outcome": "ok"}
                return handle.metrics.sample(FETCHES, ok) >= n

            await wait_until(lambda: fetched(1))
            await trio.sleep(20.0)
            report = await controller_of(handle).apply(
                with_symbols(settings, ["btcusdt", "ethusdt", "solusdt"]), "test"
            )
            added_at = trio.current_time()
            assert report.joined == ("binance-0",)
            await wait_until(lambda: fetched(2))  # at once, not at the next round
            report = await controller_of(handle).apply(
                with_symbols(settings, ["btcusdt", "solusdt"]), "test"
            )
            assert report.removed == (("binance", "ETHUSDT"),)
            await trio.sleep(LISTING_INTERVAL / 2)
            assert not fetched(3)  # the removal asked for nothing
            await trio.sleep(LISTING_INTERVAL / 2)
            await wait_until(lambda: fetched(3))  # the next round
        nursery.cancel_scope.cancel()

    (start, first), (added, second), (later, third) = listings(rest)
    assert (first, second, third) == (
        ["BTCUSDT", "ETHUSDT"],
        ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
        ["BTCUSDT", "SOLUSDT"],
    )
    assert added - added_at < SLACK
    # The removal fetched nothing: the next round did (the clock may jump ahead while a
    # fetch's worker thread runs, so no closer bound).
    assert later - start >= LISTING_INTERVAL
    sol = read_rows(tmp_path, "binance", "SOLUSDT", "instruments")
    assert [(r["symbol"], r["kind"], r["base_asset"]) for r in sol] == [
        ("SOLUSDT", "spot", "SOL")
    ] * 2


async def test_a_market_that_adds_the_instruments_feed_at_run_time_gets_its_listing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """No market listed instruments at start: the listing task waits, and fetches the
    added market's listing when it comes."""
    venue, rest = FakeBinance(), FakeBinanceRest()
    async with fail_after_real(30), trio.open_nursery() as nursery:
        for fake in (venue, rest):
            await nursery.start(fake.run)
        raw: dict[str, Any] = raw_settings(venue.url, tmp_path, ["btcusdt"])
        raw["markets"][0] |= {"rest_url": rest.url}
        raw["websocket"] = {"message_timeout_secs": 3600.0}
        settings = parse_settings(raw)
        async with running_service(settings, clock=autojump_clock) as handle:
            await venue.wait_subscribed(["btcusdt@trade"])
            await trio.sleep(20.0)
            assert listings(rest) == []
            await controller_of(handle).apply(
                with_market(settings, ["ethusdt"], feeds=("trades", "instruments")), "test"
            )
            ok = {"exchange": "binance", "outcome": "ok"}
            await wait_until(lambda: handle.metrics.sample(FETCHES, ok) >= 1)
        nursery.cancel_scope.cancel()

    assert [symbols for _, symbols in listings(rest)] == [["ETHUSDT"]]
    [eth] = read_rows(tmp_path, "binance", "ETHUSDT", "instruments")
    assert eth["base_asset"] == "ETH"
