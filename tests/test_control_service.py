"""Symbols added and removed while the real service runs, against the fake Binance.

The controller (``handle.controller.apply``), a ``SIGHUP`` sent to this process, and the
admin API over real HTTP. Real Trio clock (the writer and the HTTP client use worker
threads); every wait is bounded with ``trio.fail_after`` and synchronised by the fake's
waits and ``wait_all_tasks_blocked``, never by sleeping.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from collector.config import Settings
from collector.control.controller import Controller
from collector.control.listings import Listings
from collector.control.reload import Reload
from collector.planning import plan_service
from collector.service import EXIT_BAD_SETTINGS, EXIT_OK, ServiceError, ServiceHandle, run_service
from collector.settings_check import load_settings, parse_settings
from tests.fakes.binance import FakeBinance, depth_diff_frame, trade_frame
from tests.fakes.binance_rest import FakeBinanceRest
from tests.fakes.bybit import FakeBybit
from tests.fakes.bybit import trade_frame as bybit_trade_frame
from tests.fakes.okx import FakeOkx
from tests.fakes.okx import trade_frame as okx_trade_frame
from tests.test_http import fetch_metrics
from tests.venue_helpers import read_rows

TIMEOUT = 20.0
TIME_US = 1_700_000_000_000_000
TOKEN = "s3cr3t-admin-token"
TOKEN_ENV = "COLLECTOR_TEST_ADMIN_TOKEN"


def raw_settings(
    fake_url: str, data_dir: Path, symbols: list[str], **collector: Any
) -> dict[str, Any]:
    return {
        "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0, **collector},
        "storage": {"data_dir": str(data_dir)},
        "markets": [
            {"exchange": "binance", "symbols": symbols, "base_url": fake_url, "feeds": ["trades"]}
        ],
    }


def settings_for(fake_url: str, data_dir: Path, symbols: list[str], **collector: Any) -> Settings:
    return parse_settings(raw_settings(fake_url, data_dir, symbols, **collector))


def with_symbols(settings: Settings, symbols: list[str]) -> Settings:
    [market] = settings.markets
    market = msgspec.structs.replace(market, symbols=tuple(symbols))
    return msgspec.structs.replace(settings, markets=(market,))


@asynccontextmanager
async def service(
    settings: Settings,
    *,
    reload: Reload | None = None,
    env: Mapping[str, str] | None = None,
    listings: Listings | None = None,
) -> AsyncIterator[ServiceHandle]:
    """The service in-process; on exit a clean stop (exit status 0)."""
    codes: list[int] = []
    done = trio.Event()

    async def run(task_status: trio.TaskStatus[ServiceHandle]) -> None:
        codes.append(
            await run_service(
                plan_service(settings),
                handle_signals=False,
                reload=reload,
                env=env or {},
                listings=listings,
                task_status=task_status,
            )
        )
        done.set()

    async with trio.open_nursery() as nursery:
        handle: ServiceHandle = await nursery.start(run)
        yield handle
        handle.shutdown.request("test")
        await done.wait()
    assert codes == [EXIT_OK]


def controller_of(handle: ServiceHandle) -> Controller:
    assert handle.controller is not None
    return handle.controller


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked(cushion=0.01)


async def trade(fake: FakeBinance, symbol: str, trade_id: int, expected: int = 1) -> None:
    frame = trade_frame(symbol, trade_id, 100.0 + trade_id, 0.5, TIME_US + trade_id, True)
    assert await fake.send(frame) == expected
    await settle()


def statuses(data_dir: Path, symbol: str) -> list[tuple[str, str | None]]:
    rows = read_rows(data_dir, "binance", symbol, "status")
    rows.sort(key=lambda r: r["timestamp_collector"])
    return [(r["event"], r["data_type"]) for r in rows]


def trade_ids(data_dir: Path, symbol: str) -> list[int]:
    return [int(r["trade_id"]) for r in read_rows(data_dir, "binance", symbol, "trades")]


# --------------------------------------------------------------------------- controller


def with_market(settings: Settings, symbols: list[str], **options: Any) -> Settings:
    """``settings`` and one more Binance market (the first's URL and feeds)."""
    [market] = settings.markets
    extra = msgspec.structs.replace(market, symbols=tuple(symbols), **options)
    return msgspec.structs.replace(settings, markets=(market, extra))


# A market whose connections cannot be shared with the first's (another REST base for its
# book snapshots): its symbols need a connection of their own.
OTHER_REST = {"rest_url": "http://127.0.0.1:9"}


async def test_an_added_symbol_joins_the_live_connection(tmp_path: Path) -> None:
    """Binance takes SUBSCRIBE on a live connection: no new connection, no hole."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = settings_for(fake.url, tmp_path, ["btcusdt", "ethusdt"])
            async with service(settings) as handle:
                await fake.wait_subscribed(["btcusdt@trade", "ethusdt@trade"])
                await trade(fake, "btcusdt", 1)

                report = await controller_of(handle).apply(
                    with_symbols(settings, ["btcusdt", "ethusdt", "solusdt"]), "test"
                )
                assert (report.added, report.removed) == ((("binance", "SOLUSDT"),), ())
                assert (report.joined, report.started) == (("binance-0",), ())
                # Taken at the connection's next read.
                await trade(fake, "ethusdt", 1)
                await fake.wait_subscribed(["solusdt@trade"], number=1)
                await settle()
                await trade(fake, "solusdt", 1)
                await trade(fake, "btcusdt", 2)
                assert fake.connections == 1
                assert handle.health.ready
                assert handle.health.connections["binance-0"].symbols == (
                    "BTCUSDT",
                    "ETHUSDT",
                    "SOLUSDT",
                )
                subscribes = [m for m in fake.client_messages if "SUBSCRIBE" in m]
                assert len(subscribes) == 2
                assert '"params":["solusdt@trade"]' in subscribes[1]
            nursery.cancel_scope.cancel()

    assert trade_ids(tmp_path, "BTCUSDT") == [1, 2]
    assert trade_ids(tmp_path, "SOLUSDT") == [1]
    assert statuses(tmp_path, "BTCUSDT") == [
        ("connected", None),
        ("subscribed", "trades"),
        ("disconnected", None),
    ]
    # The connection was up already: the new symbol's first rows are the controller's
    # `added` row (saying why) and the venue's acknowledgement.
    assert statuses(tmp_path, "SOLUSDT") == [
        ("added", "trades"),
        ("subscribed", "trades"),
        ("disconnected", None),
    ]
    [added] = [
        r for r in read_rows(tmp_path, "binance", "SOLUSDT", "status") if r["event"] == "added"
    ]
    assert added["detail"] == "added at run time (test)"


async def test_an_added_symbol_gets_its_own_connection_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = settings_for(fake.url, tmp_path, ["btcusdt", "ethusdt"])
            async with service(settings) as handle:
                await fake.wait_subscribed(["btcusdt@trade", "ethusdt@trade"])
                await trade(fake, "btcusdt", 1)
                await trade(fake, "ethusdt", 1)

                report = await controller_of(handle).apply(
                    with_market(settings, ["solusdt"], **OTHER_REST), "test"
                )
                assert report.added == (("binance", "SOLUSDT"),)
                assert report.removed == ()
                assert (report.started, report.joined) == (("binance-1",), ())
                assert report.restart == ()
                # /ready waits for the new connection, then follows it.
                assert "binance-1" in handle.health.connections
                await fake.wait_subscribed(["solusdt@trade"])
                await settle()
                assert handle.health.ready

                await trade(fake, "btcusdt", 2)
                await trade(fake, "ethusdt", 2)
                await trade(fake, "solusdt", 1)
                assert fake.connections == 2  # the first connection was never replaced
                samples = await fetch_metrics(handle.http_port)
                connected = {
                    dict(labels)["symbol"]: value
                    for (name, labels), value in samples.items()
                    if name == "collector_websocket_connected"
                }
                assert connected == {"BTCUSDT": 1, "ETHUSDT": 1, "SOLUSDT": 1}
                assert samples[("collector_shard_pairs", frozenset())] == 3
                assert (
                    samples[
                        (
                            "collector_shard_pair_info",
                            frozenset({("exchange", "binance"), ("symbol", "SOLUSDT")}),
                        )
                    ]
                    == 1
                )
            nursery.cancel_scope.cancel()

    assert trade_ids(tmp_path, "BTCUSDT") == [1, 2]
    assert trade_ids(tmp_path, "ETHUSDT") == [1, 2]
    assert trade_ids(tmp_path, "SOLUSDT") == [1]
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        # One connection from start to stop: no hole, only the shutdown's disconnect.
        assert statuses(tmp_path, symbol) == [
            *([("added", "trades")] if symbol == "SOLUSDT" else []),
            ("connected", None),
            ("subscribed", "trades"),
            ("disconnected", None),
        ]


async def test_a_removed_symbol_is_unsubscribed_and_its_rows_stop(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = settings_for(fake.url, tmp_path, ["btcusdt", "ethusdt"])
            async with service(settings) as handle:
                await fake.wait_subscribed(["btcusdt@trade", "ethusdt@trade"])
                await trade(fake, "btcusdt", 1)
                await trade(fake, "ethusdt", 1)

                controller = controller_of(handle)
                report = await controller.apply(with_symbols(settings, ["btcusdt"]), "test")
                assert report.removed == (("binance", "ETHUSDT"),)
                assert report.stopped == ()  # BTCUSDT is still on it
                # The venue sends ETHUSDT until it has the UNSUBSCRIBE, sent after the
                # connection's next read: what comes meanwhile is read and dropped.
                await trade(fake, "ethusdt", 2)
                await fake.wait_unsubscribed(["ethusdt@trade"])
                assert fake.clients[0].streams == {"btcusdt@trade"}
                assert (
                    '"method":"UNSUBSCRIBE","params":["ethusdt@trade"]'
                    in (fake.client_messages[-1])
                )
                await trade(fake, "ethusdt", 3, expected=0)
                await trade(fake, "btcusdt", 2)
                assert fake.connections == 1
                assert controller.runners["binance"].controls["binance-0"].plan.symbols == (
                    "BTCUSDT",
                )
                assert handle.health.connections["binance-0"].symbols == ("BTCUSDT",)
                samples = await fetch_metrics(handle.http_port)
                series = {
                    (name, dict(labels).get("symbol"))
                    for (name, labels), _ in samples.items()
                    if name
                    in (
                        "collector_websocket_connected",
                        "collector_last_data_timestamp_seconds",
                        "collector_shard_pair_info",
                    )
                }
                assert {symbol for _, symbol in series} == {"BTCUSDT"}
                assert samples[("collector_shard_pairs", frozenset())] == 1

                # Added again: on a connection of its own (not the one that dropped it).
                report = await controller.apply(settings, "test")
                assert report.started == ("binance-1",)
                await fake.wait_subscribed(["ethusdt@trade"], number=2)
                await settle()
                await trade(fake, "ethusdt", 4)
            nursery.cancel_scope.cancel()

    assert trade_ids(tmp_path, "BTCUSDT") == [1, 2]
    assert trade_ids(tmp_path, "ETHUSDT") == [1, 4]
    assert statuses(tmp_path, "BTCUSDT") == [
        ("connected", None),
        ("subscribed", "trades"),
        ("disconnected", None),
    ]
    assert statuses(tmp_path, "ETHUSDT") == [
        ("connected", None),
        ("subscribed", "trades"),
        ("unsubscribed", "trades"),
        ("added", "trades"),
        ("connected", None),
        ("subscribed", "trades"),
        ("disconnected", None),
    ]
    [unsubscribed] = [
        r
        for r in read_rows(tmp_path, "binance", "ETHUSDT", "status")
        if r["event"] == "unsubscribed"
    ]
    assert unsubscribed["detail"] == "removed at run time (test)"


async def test_a_connection_left_without_symbols_is_stopped(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = settings_for(fake.url, tmp_path, ["btcusdt"])
            async with service(settings) as handle:
                await fake.wait_subscribed(["btcusdt@trade"])
                controller = controller_of(handle)
                await controller.apply(with_market(settings, ["solusdt"], **OTHER_REST), "test")
                await fake.wait_subscribed(["solusdt@trade"])
                await trade(fake, "solusdt", 1)

                report = await controller.apply(settings, "test")
                assert report.stopped == ("binance-1",)
                await fake.wait_clients(1)
                assert sorted(handle.health.connections) == ["binance-0"]
                assert sorted(controller.runners["binance"].controls) == ["binance-0"]
                assert handle.health.ready
                await trade(fake, "btcusdt", 1)
            nursery.cancel_scope.cancel()

    # The stopped connection wrote no disconnected row: the symbol was unsubscribed.
    assert statuses(tmp_path, "SOLUSDT") == [
        ("added", "trades"),
        ("connected", None),
        ("subscribed", "trades"),
        ("unsubscribed", "trades"),
    ]
    assert trade_ids(tmp_path, "SOLUSDT") == [1]


async def test_other_changes_are_reported_as_needing_a_restart(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = settings_for(fake.url, tmp_path, ["btcusdt"])
            async with service(settings) as handle:
                await fake.wait_subscribed()
                changed = settings_for(fake.url, tmp_path, ["BTCUSDT"], log_level="debug")
                report = await controller_of(handle).apply(changed, "test")
                assert report.restart == ("collector.log_level",)
                assert report.added == report.removed == ()  # a respelling is no change
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- SIGHUP


async def test_sighup_reads_the_settings_file_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "settings.toml"
    data_dir = tmp_path / "data"

    def write(symbols: list[str], extra: str = "") -> None:
        listed = ", ".join(f'"{s}"' for s in symbols)
        path.write_text(
            f'[collector]\nmetrics_host = "127.0.0.1"\nmetrics_port = 0\n{extra}\n'
            f'[storage]\ndata_dir = "{data_dir}"\n'
            f'[[markets]]\nexchange = "binance"\nsymbols = [{listed}]\n'
            f'base_url = "{fake.url}"\nfeeds = ["trades"]\n'
        )

    def reload() -> tuple[Settings, int]:
        settings, _ = load_settings(path, {})
        return settings, 2

    caplog.set_level(logging.INFO, logger="collector")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            write(["btcusdt"])
            settings, _ = load_settings(path, {})
            async with service(settings, reload=reload) as handle:
                await fake.wait_subscribed(["btcusdt@trade"])

                write(["btcusdt", "ethusdt"], extra='log_level = "debug"')
                os.kill(os.getpid(), signal.SIGHUP)
                await fake.wait_subscribed(["ethusdt@trade"])
                await settle()
                # Joined the live connection (Binance subscribes on a live connection).
                assert handle.health.connections["binance-0"].symbols == ("BTCUSDT", "ETHUSDT")
                assert handle.metrics.sample("collector_configured_pairs") == 2

                # A file that does not load: one line, the running markets stay.
                path.write_text("[[markets]\n")
                os.kill(os.getpid(), signal.SIGHUP)
                await trio.testing.wait_all_tasks_blocked(cushion=0.2)
                await trade(fake, "ethusdt", 1)
                assert fake.connections == 1
            nursery.cancel_scope.cancel()

    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(
            "settings changed that apply only at a restart (not applied): collector.log_level"
        )
        for m in messages
    )
    assert any(m.startswith("reload failed, keeping the running markets:") for m in messages)
    assert trade_ids(data_dir, "ETHUSDT") == [1]


# --------------------------------------------------------------------------- admin API


def _request(
    port: int, method: str, path: str, token: str | None = None, body: object = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text.decode()


async def call(
    port: int, method: str, path: str, token: str | None = None, body: object = None
) -> tuple[int, Any]:
    return await trio.to_thread.run_sync(_request, port, method, path, token, body)


async def test_the_admin_api_is_off_without_a_token(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            async with service(settings_for(fake.url, tmp_path, ["btcusdt"])) as handle:
                status, _ = await call(handle.http_port, "GET", "/admin/markets", TOKEN)
                assert status == 404
                status, _ = await call(
                    handle.http_port, "POST", "/admin/markets/binance/symbols", TOKEN, {}
                )
                assert status == 404
            nursery.cancel_scope.cancel()


async def test_the_admin_api_adds_lists_and_removes_symbols(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {TOKEN_ENV: TOKEN}
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            settings = settings_for(fake.url, tmp_path, ["btcusdt"], admin_token_env=TOKEN_ENV)
            async with service(settings, env=env) as handle:
                port = handle.http_port
                await fake.wait_subscribed(["btcusdt@trade"])
                for token in (None, "wrong", TOKEN + "x"):
                    assert await call(port, "GET", "/admin/markets", token) == (
                        401,
                        {"error": "unauthorized"},
                    )
                    status, _ = await call(
                        port, "POST", "/admin/markets/binance/symbols", token, {"symbols": ["x"]}
                    )
                    assert status == 401
                assert fake.connections == 1

                status, listed = await call(port, "GET", "/admin/markets", TOKEN)
                assert status == 200
                assert listed == {
                    "markets": [
                        {
                            "market": 0,
                            "exchange": "binance",
                            "data_exchange": "binance",
                            "category": None,
                            "feeds": ["trades"],
                            "symbols": ["btcusdt"],
                        }
                    ]
                }

                status, report = await call(
                    port, "POST", "/admin/markets/binance/symbols", TOKEN, {"symbols": ["ethusdt"]}
                )
                assert status == 200
                assert report == {
                    "added": [["binance", "ETHUSDT"]],
                    "removed": [],
                    "connections_started": [],
                    "connections_joined": ["binance-0"],
                    "connections_stopped": [],
                    "needs_restart": [],
                }
                await trade(fake, "btcusdt", 1)  # the connection's next read subscribes
                await fake.wait_subscribed(["ethusdt@trade"])
                await settle()
                await trade(fake, "ethusdt", 1)

                bad = [
                    ({"symbols": []}, 400),
                    ({"symbol": "solusdt"}, 400),
                    ({"symbols": ["not a symbol!"]}, 400),
                    ({"symbols": ["solusdt"], "market": 3}, 404),
                ]
                for body, expected in bad:
                    status, answer = await call(
                        port, "POST", "/admin/markets/binance/symbols", TOKEN, body
                    )
                    assert (status, sorted(answer)) == (expected, ["error"]), body
                status, _ = await call(
                    port, "POST", "/admin/markets/okx/symbols", TOKEN, {"symbols": ["BTC-USDT"]}
                )
                assert status == 404

                status, report = await call(
                    port, "DELETE", "/admin/markets/binance/symbols/ETHUSDT", TOKEN
                )
                assert status == 200
                assert report["removed"] == [["binance", "ETHUSDT"]]
                assert report["connections_stopped"] == []
                status, _ = await call(
                    port, "DELETE", "/admin/markets/binance/symbols/ethusdt", TOKEN
                )
                assert status == 404
                status, answer = await call(
                    port, "DELETE", "/admin/markets/binance/symbols/btcusdt", TOKEN
                )
                assert (status, answer) == (
                    409,
                    {"error": "cannot remove the last symbol of the service"},
                )
            nursery.cancel_scope.cancel()

    assert statuses(tmp_path, "ETHUSDT") == [
        ("added", "trades"),
        ("subscribed", "trades"),
        ("unsubscribed", "trades"),
    ]
    assert trade_ids(tmp_path, "ETHUSDT") == [1]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert TOKEN not in logged


async def test_an_admin_token_variable_that_is_unset_stops_the_start(tmp_path: Path) -> None:
    settings = settings_for("ws://127.0.0.1:1", tmp_path, ["btcusdt"], admin_token_env=TOKEN_ENV)
    for env in ({}, {TOKEN_ENV: ""}):
        with pytest.raises(ServiceError, match=TOKEN_ENV) as caught:
            await run_service(plan_service(settings), handle_signals=False, env=env)
        assert caught.value.exit_code == EXIT_BAD_SETTINGS


# --------------------------------------------------------------------------- Bybit


async def test_bybit_subscribes_and_unsubscribes_on_the_live_connection(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBybit()
            await nursery.start(fake.run)
            settings = parse_settings(
                {
                    "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                    "storage": {"data_dir": str(tmp_path)},
                    "markets": [
                        {
                            "exchange": "bybit",
                            "category": "linear",
                            "symbols": ["BTCUSDT", "ETHUSDT"],
                            "feeds": ["trades"],
                            "base_url": fake.url,
                        }
                    ],
                }
            )
            async with service(settings) as handle:
                await fake.wait_subscribed(["publicTrade.BTCUSDT", "publicTrade.ETHUSDT"])
                controller = controller_of(handle)
                report = await controller.apply(
                    with_symbols(settings, ["BTCUSDT", "SOLUSDT"]), "test"
                )
                assert report.added == (("bybit-linear", "SOLUSDT"),)
                assert report.removed == (("bybit-linear", "ETHUSDT"),)
                assert (report.joined, report.started, report.stopped) == (
                    ("bybit-linear-0",),
                    (),
                    (),
                )
                await fake.wait_subscribed(["publicTrade.SOLUSDT"])
                await fake.wait_for_message(
                    lambda m: '"op":"unsubscribe","args":["publicTrade.ETHUSDT"]' in m
                )
                await settle()
                assert [c.topics for c in fake.clients] == [
                    {"publicTrade.BTCUSDT", "publicTrade.SOLUSDT"}
                ]
                for n, symbol in enumerate(("BTCUSDT", "SOLUSDT", "ETHUSDT"), start=1):
                    frame = bybit_trade_frame(
                        symbol, f"id-{n}", 100.0, 1.0, "Buy", 1_760_000_000_000 + n, n
                    )
                    await fake.send(frame)
                await settle()
                assert fake.connections == 1
            nursery.cancel_scope.cancel()

    rows = {
        symbol: [
            (r["event"], r["data_type"])
            for r in read_rows(tmp_path, "bybit-linear", symbol, "status")
        ]
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    }
    assert rows["ETHUSDT"] == [
        ("connected", None),
        ("subscribed", "trades"),
        ("unsubscribed", "trades"),
    ]
    assert rows["SOLUSDT"] == [
        ("added", "trades"),
        ("subscribed", "trades"),
        ("disconnected", None),
    ]
    assert rows["BTCUSDT"] == [
        ("connected", None),
        ("subscribed", "trades"),
        ("disconnected", None),
    ]
    traded = {
        symbol: len(read_rows(tmp_path, "bybit-linear", symbol, "trades"))
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    }
    assert traded == {"BTCUSDT": 1, "ETHUSDT": 0, "SOLUSDT": 1}


# --------------------------------------------------------------------------- a new venue


async def test_a_market_of_a_venue_not_running_starts_its_exchange(tmp_path: Path) -> None:
    """OKX takes no live subscriptions here: its market gets an exchange task and a
    connection of its own; the analytics cover the new pair and drop the removed one."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            binance = FakeBinance()
            okx = FakeOkx()
            await nursery.start(binance.run)
            await nursery.start(okx.run)
            raw = raw_settings(binance.url, tmp_path, ["btcusdt"])
            raw["analytics"] = {"enabled": True}
            settings = parse_settings(raw)
            async with service(settings) as handle:
                await binance.wait_subscribed(["btcusdt@trade"])
                controller = controller_of(handle)
                raw["markets"].append(
                    {
                        "exchange": "okx",
                        "symbols": ["BTC-USDT"],
                        "feeds": ["trades"],
                        "base_url": okx.url,
                    }
                )
                report = await controller.apply(parse_settings(raw), "test")
                assert report.started == ("okx-0",)
                assert sorted(controller.runners) == ["binance", "okx"]
                await okx.wait_subscribed([("trades", "BTC-USDT")])
                await settle()
                assert handle.health.ready
                await okx.send(okx_trade_frame("BTC-USDT", 7, 100.0, 0.5, "buy", 1_760_000_000_000))
                await settle()
                samples = await fetch_metrics(handle.http_port)
                analysed = {
                    dict(labels)["exchange"]
                    for (name, labels), _ in samples.items()
                    if name == "collector_analytics_trades"
                }
                assert analysed == {"binance", "okx"}

                raw["markets"].pop(0)
                report = await controller.apply(parse_settings(raw), "test")
                assert report.stopped == ("binance-0",)
                await binance.wait_clients(0)
                assert sorted(handle.health.connections) == ["okx-0"]
                samples = await fetch_metrics(handle.http_port)
                analysed = {
                    dict(labels)["exchange"]
                    for (name, labels), _ in samples.items()
                    if name == "collector_analytics_trades"
                }
                assert analysed == {"okx"}
            nursery.cancel_scope.cancel()

    assert [r["trade_id"] for r in read_rows(tmp_path, "okx", "BTC-USDT", "trades")] == ["7"]
    assert statuses(tmp_path, "BTCUSDT")[-1] == ("unsubscribed", "trades")


async def test_a_symbol_removed_from_a_venue_without_live_subscriptions(tmp_path: Path) -> None:
    """OKX here: no unsubscribe frame; the venue keeps sending the removed symbol on the
    running connection until it reconnects, and its rows are dropped."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            okx = FakeOkx()
            await nursery.start(okx.run)
            market = {"exchange": "okx", "feeds": ["trades"], "base_url": okx.url}
            raw: dict[str, Any] = {
                "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                "storage": {"data_dir": str(tmp_path)},
                "markets": [{**market, "symbols": ["BTC-USDT", "ETH-USDT"]}],
            }
            async with service(parse_settings(raw)) as handle:
                await okx.wait_subscribed([("trades", "BTC-USDT"), ("trades", "ETH-USDT")])
                raw["markets"] = [{**market, "symbols": ["BTC-USDT"]}]
                report = await controller_of(handle).apply(parse_settings(raw), "test")
                assert report.removed == (("okx", "ETH-USDT"),)
                assert (report.stopped, report.joined, report.started) == ((), (), ())
                for n, inst in enumerate(("ETH-USDT", "BTC-USDT"), start=1):
                    frame = okx_trade_frame(inst, n, 100.0, 0.5, "buy", 1_760_000_000_000 + n)
                    assert await okx.send(frame) == 1
                await settle()
                assert okx.connections == 1
                assert not any("unsubscribe" in m for m in okx.client_messages)
            nursery.cancel_scope.cancel()

    assert [r["trade_id"] for r in read_rows(tmp_path, "okx", "BTC-USDT", "trades")] == ["2"]
    assert read_rows(tmp_path, "okx", "ETH-USDT", "trades") == []
    eth = [(r["event"], r["data_type"]) for r in read_rows(tmp_path, "okx", "ETH-USDT", "status")]
    assert eth == [("connected", None), ("subscribed", "trades"), ("unsubscribed", "trades")]


async def test_a_diff_book_joining_a_live_connection_syncs_from_a_rest_snapshot(
    tmp_path: Path,
) -> None:
    """Binance diff depth: the joined symbol's acknowledgement asks for its REST snapshot,
    as at start, and its book is written from there; the other book never resyncs."""
    ws, rest = FakeBinance(), FakeBinanceRest()
    rest.set_book("BTCUSDT", 105, bids=[(100.0, 5.0)], asks=[(101.0, 2.0)])
    rest.set_book("ETHUSDT", 205, bids=[(10.0, 1.0)], asks=[(11.0, 1.0)])
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(ws.run)
            await nursery.start(rest.run)
            market = {
                "exchange": "binance",
                "feeds": ["orderbook"],
                "book_mode": "diff",
                "base_url": ws.url,
                "rest_url": rest.url,
            }
            raw: dict[str, Any] = {
                "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                "storage": {"data_dir": str(tmp_path)},
                "markets": [{**market, "symbols": ["btcusdt"]}],
            }
            async with service(parse_settings(raw)) as handle:
                await ws.wait_subscribed(["btcusdt@depth@100ms"])
                await ws.send(depth_diff_frame("btcusdt", 101, 110, [(100.0, 4.0)], [], TIME_US))
                await rest.wait_requests(1)
                await settle()
                raw["markets"] = [{**market, "symbols": ["btcusdt", "ethusdt"]}]
                report = await controller_of(handle).apply(parse_settings(raw), "test")
                assert report.joined == ("binance-0",)
                await ws.wait_subscribed(["ethusdt@depth@100ms"], number=1)
                await ws.send(depth_diff_frame("ethusdt", 201, 210, [(10.0, 2.0)], [], TIME_US))
                await rest.wait_requests(2)
                await settle()
                await ws.send(depth_diff_frame("ethusdt", 211, 220, [(10.0, 3.0)], [], TIME_US))
                await ws.send(depth_diff_frame("btcusdt", 111, 120, [(100.0, 6.0)], [], TIME_US))
                await settle()
                assert ws.connections == 1
            nursery.cancel_scope.cancel()

    assert rest.requests == [
        "/api/v3/depth?symbol=BTCUSDT&limit=1000",
        "/api/v3/depth?symbol=ETHUSDT&limit=1000",
    ]
    eth = read_rows(tmp_path, "binance", "ETHUSDT", "orderbook")
    assert [(r["kind"], r["sequence"]) for r in eth] == [
        ("delta", 210),
        ("snapshot", 210),
        ("delta", 220),
    ]
    btc = statuses(tmp_path, "BTCUSDT")
    assert ("resync", "orderbook") in btc  # its start-up sync
    assert btc.count(("resync", "orderbook")) == 1
