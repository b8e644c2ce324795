"""HTTP 451 (a venue refusing this location): the error says which other host to use.

Fake servers on 127.0.0.1 answer 451 to the WebSocket handshake, to the REST book snapshot
and to the symbol listing; the errors name the hosts the venue documents (Binance's
market-data-only hosts, Bybit's regional hosts), or say that there are none.
"""

from __future__ import annotations

import logging
from functools import partial
from itertools import count

import pytest
import trio
from trio_websocket import WebSocketRequest

from collector.events import Event
from collector.exchanges.base import SnapshotRequest
from collector.exchanges.binance import BinanceAdapter
from collector.exchanges.bybit import BybitAdapter
from collector.exchanges.okx import OkxAdapter
from collector.ingest.connection import run_connection
from collector.ingest.errors import ConnectFailed
from collector.ingest.pacer import Pacer
from collector.ingest.sink import EventSink
from collector.ingest.snapshots import FetchedSnapshot, run_snapshot_fetcher
from collector.symbols import SymbolsError, list_symbols
from tests.fakes.binance_rest import FakeBinanceRest
from tests.test_connection import EPOCH_US, binance_plans, make_ctx, ws_settings
from tests.ws_helpers import start_server

TIMEOUT = 15.0
BINANCE_STREAM_MIRROR = "wss://data-stream.binance.vision"
BINANCE_REST_MIRROR = "https://data-api.binance.vision"


async def test_websocket_handshake_451_names_binance_market_data_host() -> None:
    async def refuse(request: WebSocketRequest) -> None:
        await request.reject(451, body=b'{"code":0,"msg":"Service unavailable"}')

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await start_server(nursery, refuse)
            adapter, plans = binance_plans(url)
            (plan,) = plans
            ctx = make_ctx(ws_settings(), plans)
            tx, _rx = trio.open_memory_channel[list[Event]](8)
            with pytest.raises(ConnectFailed) as failed:
                await run_connection(plan, adapter, ctx, EventSink(tx, "binance", ctx.metrics))
            nursery.cancel_scope.cancel()
    message = str(failed.value)
    assert "HTTP 451" in message
    assert "geo-block" in message
    assert f'base_url = "{BINANCE_STREAM_MIRROR}"' in message
    assert "binance.us is a different exchange" in message
    assert failed.value.status == 451
    # /health shows the same advice for the connection that is down.
    last_error = ctx.health.connections[plan.name].last_error
    assert last_error is not None
    assert BINANCE_STREAM_MIRROR in last_error


async def test_other_handshake_refusals_get_no_geo_advice() -> None:
    async def refuse(request: WebSocketRequest) -> None:
        await request.reject(403, body=b"forbidden")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await start_server(nursery, refuse)
            adapter, plans = binance_plans(url)
            ctx = make_ctx(ws_settings(), plans)
            tx, _rx = trio.open_memory_channel[list[Event]](8)
            with pytest.raises(ConnectFailed) as failed:
                await run_connection(plans[0], adapter, ctx, EventSink(tx, "binance", ctx.metrics))
            nursery.cancel_scope.cancel()
    assert "HTTP 403" in str(failed.value)
    assert "geo-block" not in str(failed.value)


async def test_rest_snapshot_451_is_logged_with_the_rest_mirror(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rest = FakeBinanceRest()
    rest.fail_next = [451]
    rest.set_book("BTCUSDT", 105, bids=[(100.0, 5.0)], asks=[(101.0, 2.0)])
    requests_tx, requests_rx = trio.open_memory_channel[SnapshotRequest](1)
    bodies_tx, bodies_rx = trio.open_memory_channel[FetchedSnapshot](0)
    adapter, _ = binance_plans("ws://127.0.0.1:1")
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING, "collector.ingest.snapshots"):
        async with trio.open_nursery() as nursery:
            await nursery.start(rest.run)
            url = f"{rest.url}/api/v3/depth?symbol=BTCUSDT&limit=1000"
            nursery.start_soon(
                partial(
                    run_snapshot_fetcher,
                    requests_rx,
                    bodies_tx,
                    "binance",
                    partial(next, count(EPOCH_US)),
                    Pacer(1000.0),
                    initial_retry_secs=0.01,
                    geo_block_advice=adapter.geo_block_advice(),
                )
            )
            with requests_tx:
                requests_tx.send_nowait(SnapshotRequest("BTCUSDT", url))
            fetched = [body async for body in bodies_rx]  # retried, then fetched
            nursery.cancel_scope.cancel()
    assert len(fetched) == 1
    (warning,) = [r.getMessage() for r in caplog.records if "snapshot failed" in r.getMessage()]
    assert "HTTP 451" in warning
    assert f'rest_url = "{BINANCE_REST_MIRROR}"' in warning


async def test_symbol_listing_451_names_the_mirror_for_rest_url() -> None:
    rest = FakeBinanceRest()
    rest.fail_next = [451]
    async with trio.open_nursery() as nursery:
        await nursery.start(rest.run)
        with pytest.raises(SymbolsError) as failed:
            await trio.to_thread.run_sync(list_symbols, "binance", rest.url)
        nursery.cancel_scope.cancel()
    assert failed.value.exit_code == 1
    assert "HTTP 451" in str(failed.value)
    assert BINANCE_REST_MIRROR in str(failed.value)
    assert "--rest-url" in str(failed.value)


def test_advice_names_only_documented_hosts() -> None:
    """Bybit's regional hosts (for regional accounts); OKX documents none we can name."""
    bybit = BybitAdapter.geo_block_advice()
    assert "bybit refuses requests from this location (HTTP 451" in bybit
    assert "wss://stream.bybit.tr" in bybit
    okx = OkxAdapter.geo_block_advice()
    assert "documents no other host" in okx
    assert "wss://" not in okx


async def test_futures_listing_451_names_no_spot_mirror() -> None:
    """Binance's market-data-only hosts serve spot only: a refused futures listing must not
    send the user to them."""
    rest = FakeBinanceRest()
    rest.fail_next = [451]
    async with trio.open_nursery() as nursery:
        await nursery.start(rest.run)
        with pytest.raises(SymbolsError) as failed:
            await trio.to_thread.run_sync(list_symbols, "binance", rest.url, "usdm")
        nursery.cancel_scope.cancel()
    message = str(failed.value)
    assert "binance-usdm refuses requests from this location (HTTP 451" in message
    assert BINANCE_REST_MIRROR not in message
    assert "documents no other host" in message


def test_futures_connections_get_no_spot_mirror_advice() -> None:
    spot = BinanceAdapter.geo_block_advice("binance")
    assert "data-stream.binance.vision" in spot
    for futures in ("binance-usdm", "binance-coinm"):
        advice = BinanceAdapter.geo_block_advice(futures)
        assert "binance.vision" not in advice
        assert f"{futures} refuses" in advice
