"""All-symbols mode (``symbols = ["*"]``): the filters, resolution, the settings checks,
``check-config``, and listings and delistings applied to the running service.

The service tests run the real service against the fake Binance WebSocket and the fake
Binance REST API (its exchangeInfo is the listing), on the real Trio clock like the other
service-level control tests (the writer and the listing use worker threads): every wait is
bounded by ``trio.fail_after`` and ordered by the fakes' own waits (a request arrived, a
stream subscribed), never by sleeping.
"""

from __future__ import annotations

import itertools
import json
import string
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
import trio
import trio.testing

from collector.cli import main
from collector.config import ConfigError, Settings
from collector.control.controller import Controller
from collector.control.listings import (
    ListingError,
    Listings,
    refresh_once,
    resolve_settings,
    select,
    watch_listings,
)
from collector.exchanges.base import Listing
from collector.exchanges.binance import BinanceAdapter
from collector.planning import describe_exchanges, plan_service
from collector.settings_check import parse_settings
from collector.sharding import Shard
from collector.symbols import SymbolsError
from tests.fakes.binance import FakeBinance
from tests.fakes.binance_rest import FakeBinanceRest
from tests.fakes.listing_rest import FakeListingRest
from tests.real_time import fail_after_real
from tests.test_control_service import controller_of, service, settle, statuses, trade, trade_ids
from tests.venue_helpers import read_rows

TIMEOUT = 20.0


def star_market(**options: Any) -> dict[str, Any]:
    return {"exchange": "binance", "symbols": ["*"], "feeds": ["trades"], **options}


def settings_with(*markets: dict[str, Any], data_dir: Path | None = None) -> Settings:
    raw: dict[str, Any] = {
        "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
        "markets": list(markets),
    }
    if data_dir is not None:
        raw["storage"] = {"data_dir": str(data_dir)}
    return parse_settings(raw)


LISTING = [
    Listing("BTCUSDT", "USDT", "TRADING", True),
    Listing("ETHBTC", "BTC", "TRADING", True),
    Listing("ETHUSDT", "USDT", "TRADING", True),
    Listing("LUNAUSDT", "USDT", "BREAK", False),
    Listing("SOLUSDT", "USDT", "TRADING", True),
    Listing("BAD-NAME", "USDT", "TRADING", True),
]


def chosen(**options: Any) -> list[str]:
    [market] = settings_with(star_market(**options)).markets
    return select(LISTING, market, set())


# --------------------------------------------------------------------------- filters


def test_the_default_keeps_every_trading_symbol_the_collector_can_spell() -> None:
    assert chosen() == ["BTCUSDT", "ETHBTC", "ETHUSDT", "SOLUSDT"]


def test_quote_status_regex_and_cap() -> None:
    assert chosen(quote=["usdt"]) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert chosen(status=["break"]) == ["LUNAUSDT"]
    assert chosen(status=["TRADING", "BREAK"], quote=["USDT"]) == [
        "BTCUSDT",
        "ETHUSDT",
        "LUNAUSDT",
        "SOLUSDT",
    ]
    assert chosen(symbols_regex="ETH.*") == ["ETHBTC", "ETHUSDT"]
    assert chosen(symbols_regex="ETH") == []  # the whole symbol matches
    # The first in sorted order, after the other filters.
    assert chosen(quote=["USDT"], max_symbols=2) == ["BTCUSDT", "ETHUSDT"]
    assert chosen(max_symbols=100) == ["BTCUSDT", "ETHBTC", "ETHUSDT", "SOLUSDT"]


def test_a_symbol_listed_by_name_in_another_market_stays_there() -> None:
    settings = settings_with(
        {"exchange": "binance", "symbols": ["ethusdt"], "feeds": ["trades", "ticker"]},
        star_market(quote=["USDT"], max_symbols=2),
    )
    resolved = resolve_settings(settings, lambda exchange, rest, category: LISTING)
    assert [m.symbols for m in resolved.markets] == [("ethusdt",), ("BTCUSDT", "SOLUSDT")]
    assert resolved.markets[1].feeds == ("trades",)


def test_binance_listing_names_quote_and_status() -> None:
    body = json.dumps(
        {
            "symbols": [
                {"symbol": "ETHUSDT", "status": "TRADING", "quoteAsset": "USDT"},
                {"symbol": "BTCUSD_PERP", "contractStatus": "PENDING_TRADING"},
            ]
        }
    ).encode()
    assert BinanceAdapter.parse_listing(body) == [
        Listing("BTCUSD_PERP", None, "PENDING_TRADING", False),
        Listing("ETHUSDT", "USDT", "TRADING", True),
    ]


# --------------------------------------------------------------------------- resolution


def test_one_listing_per_venue_and_a_market_resolved_to_nothing_is_left_out() -> None:
    calls: list[tuple[str, str | None, str | None]] = []

    def fetch(exchange: str, rest: str | None, category: str | None) -> list[Listing]:
        calls.append((exchange, rest, category))
        return LISTING

    settings = settings_with(
        star_market(quote=["USDT"]), star_market(quote=["EUR"]), star_market(quote=["BTC"])
    )
    resolved = resolve_settings(settings, fetch)
    assert [m.symbols for m in resolved.markets] == [("BTCUSDT", "ETHUSDT", "SOLUSDT"), ("ETHBTC",)]
    assert calls == [("binance", None, None)]

    with pytest.raises(ListingError) as nothing:
        resolve_settings(settings_with(star_market(quote=["EUR"])), fetch)
    assert nothing.value.exit_code == 2


def test_a_listing_that_fails_is_a_start_up_error_with_exit_1() -> None:
    def fetch(exchange: str, rest: str | None, category: str | None) -> list[Listing]:
        raise SymbolsError("cannot reach binance: connection refused")

    with pytest.raises(ListingError, match=r"markets\[0\]: cannot reach binance") as failed:
        resolve_settings(settings_with(star_market()), fetch)
    assert failed.value.exit_code == 1


@pytest.mark.parametrize(
    ("market", "message"),
    [
        ({"symbols": ["*", "btcusdt"]}, "stands alone"),
        ({"symbols": ["btcusdt"], "quote": ["USDT"]}, r"quote: only with symbols = \["),
        ({"symbols": ["btcusdt"], "max_symbols": 3}, "max_symbols: only with"),
        ({"symbols_regex": "(unclosed"}, "symbols_regex"),
        ({"large_trade_size": {"BTCUSDT": 1.0}}, "one size for every symbol"),
        ({"exchange": "deribit", "quote": ["USD"]}, "quote"),
    ],
)
def test_settings_checks_of_star_markets(market: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_with(star_market(**market))


def test_a_star_market_passes_the_checks() -> None:
    [market] = settings_with(star_market(quote=["USDT"], symbols_regex="[A-Z]+")).markets
    assert market.symbols == ("*",)
    assert market.symbols_refresh_secs == 3600.0


# --------------------------------------------------------------------------- command line


def write_settings(path: Path, rest_url: str, data_dir: Path, **options: Any) -> Path:
    market = star_market(rest_url=rest_url, **options)
    lines = [
        "[storage]",
        f'data_dir = "{data_dir}"',
        "[[markets]]",
        *(f"{key} = {json.dumps(value)}" for key, value in market.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_check_config_resolves_and_shows_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            rest = FakeBinanceRest()
            # The fake's quote asset is what follows the first three letters.
            bases = ["".join(p) for p in itertools.product(string.ascii_uppercase, repeat=3)]
            rest.symbols = [(f"{base}USDT", "TRADING") for base in bases[:1500]]
            rest.symbols += [("ETHBTC", "TRADING"), ("OLDUSDT", "BREAK")]
            await nursery.start(rest.run)
            path = write_settings(tmp_path / "s.toml", rest.url, tmp_path, quote=["USDT"])

            code = await trio.to_thread.run_sync(main, ["check-config", "--json", str(path)])
            assert code == 0
            document = json.loads(capsys.readouterr().out)
            [resolved] = document["resolved_markets"]
            assert len(resolved["symbols"]) == 1500
            assert "ETHBTC" not in resolved["symbols"]
            assert document["settings"]["markets"][0]["symbols"] == ["*"]
            [binance] = document["exchanges"]
            assert binance["symbols"] == 1500
            assert binance["max_streams_per_connection"] <= binance["venue_limit_per_connection"]
            assert binance["connections"] == len(document["connections"]) >= 2

            code = await trio.to_thread.run_sync(main, ["check-config", str(path)])
            assert code == 0
            out = capsys.readouterr().out
            assert "#   binance: 1500 symbols, " in out

            requests = len(rest.requests)
            code = await trio.to_thread.run_sync(
                main, ["check-config", "--no-resolve", "--json", str(path)]
            )
            assert code == 0
            document = json.loads(capsys.readouterr().out)
            assert document["unresolved_markets"] == [0]
            assert document["connections"] == []
            assert len(rest.requests) == requests  # no network I/O
            nursery.cancel_scope.cancel()


def test_run_stops_with_exit_1_when_the_listing_cannot_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_settings(tmp_path / "s.toml", "http://127.0.0.1:9", tmp_path / "data")
    assert main(["run", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("collector: error: markets[0]: cannot reach binance")
    assert not (tmp_path / "data").exists()  # nothing started


# --------------------------------------------------------------------------- the service


async def test_listed_and_delisted_symbols_while_running(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            rest = FakeBinanceRest()
            await nursery.start(fake.run)
            await nursery.start(rest.run)
            rest.symbols = [
                ("BTCUSDT", "TRADING"),
                ("ETHUSDT", "TRADING"),
                ("XRPUSDT", "TRADING"),
                ("ETHBTC", "TRADING"),
            ]
            market = star_market(
                base_url=fake.url, rest_url=rest.url, quote=["USDT"], symbols_regex="[A-Z]+USDT"
            )
            template = settings_with(market, data_dir=tmp_path)
            listings = Listings(template, None)
            settings = await trio.to_thread.run_sync(resolve_settings, template)
            listings.resolved = listings.resolved_pairs(settings)
            assert settings.markets[0].symbols == ("BTCUSDT", "ETHUSDT", "XRPUSDT")

            async with service(settings) as handle:
                streams = ["btcusdt@trade", "ethusdt@trade", "xrpusdt@trade"]
                await fake.wait_subscribed(streams)
                await trade(fake, "btcusdt", 1)
                await trade(fake, "ethusdt", 1)

                # ETHUSDT is delisted, SOLUSDT listed (and one more that the regex keeps out).
                rest.symbols = [
                    ("BTCUSDT", "TRADING"),
                    ("SOLUSDT", "TRADING"),
                    ("XRPUSDT", "TRADING"),
                    ("SOL_USDT", "TRADING"),
                ]
                controller = controller_of(handle)
                assert await refresh_once(controller, listings)
                await trade(fake, "btcusdt", 2)  # a read: the plan change is taken
                await fake.wait_unsubscribed(["ethusdt@trade"])
                await fake.wait_subscribed(["solusdt@trade"], number=1)
                await settle()
                await trade(fake, "solusdt", 1)
                await trade(fake, "btcusdt", 3)
                assert fake.connections == 1
                assert handle.health.connections["binance-0"].symbols == (
                    "BTCUSDT",
                    "XRPUSDT",
                    "SOLUSDT",
                )
                assert [m.symbols for m in controller.settings.markets] == [
                    ("BTCUSDT", "XRPUSDT", "SOLUSDT")
                ]
                # The same listing again changes nothing.
                messages = len(fake.client_messages)
                assert await refresh_once(controller, listings)
                assert len(fake.client_messages) == messages
            nursery.cancel_scope.cancel()

    assert trade_ids(tmp_path, "BTCUSDT") == [1, 2, 3]
    assert trade_ids(tmp_path, "ETHUSDT") == [1]
    assert trade_ids(tmp_path, "SOLUSDT") == [1]
    assert statuses(tmp_path, "BTCUSDT") == [
        ("connected", None),
        ("subscribed", "trades"),
        ("disconnected", None),
    ]
    assert statuses(tmp_path, "ETHUSDT") == [
        ("connected", None),
        ("subscribed", "trades"),
        ("unsubscribed", "trades"),
    ]
    [unsubscribed] = [
        r
        for r in read_rows(tmp_path, "binance", "ETHUSDT", "status")
        if r["event"] == "unsubscribed"
    ]
    assert unsubscribed["detail"] == "removed at run time (delisted)"
    assert statuses(tmp_path, "SOLUSDT") == [
        ("added", "trades"),
        ("subscribed", "trades"),
        ("disconnected", None),
    ]
    [listed] = [
        r for r in read_rows(tmp_path, "binance", "SOLUSDT", "status") if r["event"] == "added"
    ]
    assert listed["detail"] == "added at run time (listed)"


async def test_the_service_refreshes_the_listing_on_its_interval(tmp_path: Path) -> None:
    """``run_service(listings=...)`` runs the refresh task: the listing is read again after
    ``symbols_refresh_secs`` and a listed symbol is subscribed."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            rest = FakeBinanceRest()
            await nursery.start(fake.run)
            await nursery.start(rest.run)
            market = star_market(base_url=fake.url, rest_url=rest.url, symbols_refresh_secs=0.05)
            template = settings_with(market, data_dir=tmp_path)
            listings = Listings(template, None)
            settings = await trio.to_thread.run_sync(resolve_settings, template)
            listings.resolved = listings.resolved_pairs(settings)
            assert len(rest.requests) == 1

            async with service(settings, listings=listings) as handle:
                await fake.wait_subscribed(["btcusdt@trade", "ethusdt@trade"])
                rest.symbols = [*rest.symbols, ("SOLUSDT", "TRADING")]
                await rest.wait_requests(3)  # a refresh surely after the change
                await trade(fake, "btcusdt", 1)
                await fake.wait_subscribed(["solusdt@trade"], number=1)
                assert controller_of(handle).settings.markets[0].symbols == (
                    "BTCUSDT",
                    "ETHUSDT",
                    "SOLUSDT",
                )
            nursery.cancel_scope.cancel()


class RecordingController:
    """Stands in for the Controller (its ``settings`` and ``apply``): records each change
    with the Trio time it came."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.applied: list[tuple[float, str, tuple[str, ...]]] = []
        self.changed = trio.Event()

    async def apply(self, new: Settings, origin: str, *, configured_pairs: int | None) -> None:
        self.settings = new
        symbols = tuple(s for m in new.markets for s in m.symbols)
        self.applied.append((trio.current_time(), origin, symbols))
        self.changed.set()
        self.changed = trio.Event()


async def test_refresh_every_interval_and_a_failed_listing_is_retried_sooner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    xrp = Listing("XRPUSDT", "USDT", "TRADING", True)
    listing = [Listing("BTCUSDT", "USDT", "TRADING", True), xrp]
    failing = [False]
    failed = trio.Event()

    def fetch(exchange: str, rest: str | None, category: str | None) -> list[Listing]:
        """Runs in the refresh's worker thread (the first call: in the test's)."""
        if failing[0]:
            failing[0] = False  # the next reading succeeds
            trio.from_thread.run_sync(failed.set)
            raise SymbolsError("cannot reach binance: HTTP 503")
        return list(listing)

    template = settings_with(star_market(symbols_refresh_secs=3600))
    listings = Listings(template, None, fetch)
    settings = resolve_settings(template, fetch)
    listings.resolved = listings.resolved_pairs(settings)
    stub = RecordingController(settings)
    controller = cast(Controller, stub)
    async with fail_after_real(), trio.open_nursery() as nursery:
        await nursery.start(watch_listings, controller, listings)
        listing[:] = [Listing("ETHUSDT", "USDT", "TRADING", True), xrp]
        while len(stub.applied) < 2:
            await stub.changed.wait()
        # Delisted first (its own change, so its rows say so), then listed.
        assert stub.applied == [
            (3600.0, "delisted", ("XRPUSDT",)),
            (3600.0, "listed", ("XRPUSDT", "ETHUSDT")),
        ]
        failing[0] = True
        listing.append(Listing("SOLUSDT", "USDT", "TRADING", True))
        await failed.wait()  # the refresh at 7200 failed: nothing changed
        assert trio.current_time() == 7200.0
        assert len(stub.applied) == 2
        while len(stub.applied) < 3:
            await stub.changed.wait()
        assert stub.applied[2] == (7200.0 + 60.0, "listed", ("XRPUSDT", "ETHUSDT", "SOLUSDT"))
        nursery.cancel_scope.cancel()


def test_sharded_instances_share_the_resolved_pairs_out() -> None:
    """Resolved pairs are sharded like listed ones: the instances' shares are disjoint,
    cover every pair, and each knows the fleet's count."""
    listing = [Listing(f"S{i:02d}USDT", "USDT", "TRADING", True) for i in range(40)]
    template = settings_with(
        {"exchange": "binance", "symbols": ["btcusdt"], "feeds": ["trades"]}, star_market()
    )
    shares = []
    for index in range(3):
        listings = Listings(template, Shard(index, 3), lambda e, r, c: listing)
        settings, configured, pairs = listings.instance_settings()
        assert configured == 41
        assert ("binance", "BTCUSDT") not in pairs  # listed by name: not the listing's
        shares.append({(m.exchange, s.upper()) for m in settings.markets for s in m.symbols})
    assert sum(len(share) for share in shares) == 41
    assert set().union(*shares) == {("binance", f"S{i:02d}USDT") for i in range(40)} | {
        ("binance", "BTCUSDT")
    }


async def test_a_paged_bybit_listing_resolves_and_plans_within_the_venue_limits() -> None:
    """Other venues resolve by the same code as ``symbols`` (Bybit: three pages)."""
    fake = FakeListingRest()
    names = [f"C{i:04d}USDT" for i in range(2001)]
    fake.bybit = {"linear": [(name, "Trading") for name in names] + [("NEWUSDT", "PreLaunch")]}
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        market = {
            "exchange": "bybit",
            "category": "linear",
            "symbols": ["*"],
            "feeds": ["trades", "orderbook"],
            "rest_url": fake.url,
            "symbols_regex": "C1.*",
            "max_symbols": 900,
        }
        resolved = await trio.to_thread.run_sync(resolve_settings, settings_with(market))
        nursery.cancel_scope.cancel()
    assert len(fake.requests) == 3
    [bybit] = resolved.markets
    assert bybit.symbols == tuple(names[1000:1900])
    plan = plan_service(resolved)
    [summary] = describe_exchanges(plan)
    assert summary["symbols"] == 900
    limit = plan.exchanges[0].adapter.max_subscriptions_per_connection
    assert limit is not None
    assert all(len(c.subscriptions) <= limit for c in plan.connections)


async def test_a_refresh_applies_only_what_the_listing_changed() -> None:
    """An admin edit of a ``*`` market stands: a symbol added by hand is not removed, one
    removed by hand is not added back while the venue keeps listing it."""
    listing = [Listing(s, "USDT", "TRADING", True) for s in ("BTCUSDT", "ETHUSDT", "XRPUSDT")]
    template = settings_with(star_market())
    listings = Listings(template, None, lambda e, r, c: listing)
    settings = resolve_settings(template, listings.fetch)
    listings.resolved = listings.resolved_pairs(settings)
    # By hand: XRPUSDT removed, ADAUSDT (not listed) added.
    edited = msgspec.structs.replace(settings.markets[0], symbols=("BTCUSDT", "ETHUSDT", "ADAUSDT"))
    stub = RecordingController(msgspec.structs.replace(settings, markets=(edited,)))
    assert await refresh_once(cast(Controller, stub), listings)
    assert stub.applied == []
    # ETHUSDT delisted, SOLUSDT listed: only those change.
    listing[1] = Listing("SOLUSDT", "USDT", "TRADING", True)
    assert await refresh_once(cast(Controller, stub), listings)
    assert [(origin, symbols) for _, origin, symbols in stub.applied] == [
        ("delisted", ("BTCUSDT", "ADAUSDT")),
        ("listed", ("BTCUSDT", "ADAUSDT", "SOLUSDT")),
    ]
