"""The data-only watchdog, per-stream last-data times and ``silence_timeout_secs``.

Connections run against the fake venues over loopback, in virtual time (``autojump_clock``
with a wall clock derived from it), so times can be asserted exactly. Only data counts as
life: WebSocket pings (answered inside the WebSocket client) and a venue's heartbeats and
pongs (frames that parse to no events) must not keep a connection whose data stopped.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from collector.clock import trio_wall_clock
from collector.config import Feed, MarketSettings, WebSocketSettings
from collector.events import DerivativeTicker, Event, Raw, Status, Ticker, Trade
from collector.exchanges.base import Subscription
from collector.exchanges.binance import BinanceAdapter
from collector.exchanges.bybit import BybitAdapter
from collector.exchanges.kraken import KrakenAdapter
from collector.ingest.supervisor import supervise_connection
from collector.ingest.watchdog import Activity
from collector.metrics import Metrics
from tests.fakes.binance import FakeBinance, book_ticker_frame
from tests.fakes.bybit import FakeBybit
from tests.fakes.bybit import ticker_frame as bybit_ticker_frame
from tests.fakes.kraken import FakeKraken
from tests.fakes.kraken import trade_frame as kraken_trade_frame
from tests.test_connection import (
    EPOCH_US,
    TIMEOUT,
    Recorder,
    disconnects,
    make_ctx,
    send_settled,
    start_supervised,
    trade,
    vtime,
    ws_settings,
)
from tests.venue_helpers import drain
from tests.venue_helpers import start_supervised as start_venue_supervised

LAST_DATA = "collector_last_data_timestamp_seconds"


# --------------------------------------------------------------------------- data only


async def test_pings_every_3s_do_not_keep_a_dead_feed_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance(ping_interval=3.0)
        await nursery.start(fake.run)
        rec, ctx, _ = await start_supervised(
            nursery, fake.url, ws_settings(message_timeout_secs=5.0)
        )
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed")
            await trio.sleep(1.0)
            await send_settled(fake, trade(1))
            await trio.sleep(1.0)
            await send_settled(fake, trade(2))  # t = 2: the last data
            disconnected = await rec.wait_status("disconnected")
            # The pings at 3 and 6 s were answered, yet the connection went stale at 7 s.
            assert fake.pongs == 2
            assert [vtime(r) for r in disconnected] == [7.0]
            assert disconnected[0].detail == "StaleConnection: no data for 5.0s"
            assert await disconnects(ctx, "stale") == 1
        nursery.cancel_scope.cancel()


async def test_binance_pings_every_20s_do_not_hide_silence_from_the_default_30s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance(ping_interval=20.0)
        await nursery.start(fake.run)
        rec, ctx, _ = await start_supervised(nursery, fake.url, WebSocketSettings())
        with trio.fail_after(TIMEOUT):
            subscribed = await rec.wait_status("subscribed")
            assert vtime(subscribed[0]) == 0.0  # the subscription reply is data
            disconnected = await rec.wait_status("disconnected")
            assert fake.pongs == 1  # the ping at 20 s
            assert vtime(disconnected[0]) == 30.0
            assert await disconnects(ctx, "stale") == 1
        nursery.cancel_scope.cancel()


async def test_venue_heartbeats_are_no_data(autojump_clock: trio.testing.MockClock) -> None:
    """Kraken's heartbeat channel (one frame a second) while its trades stop."""
    fake = FakeKraken(heartbeat_interval=1.0, idle_timeout=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        market = MarketSettings(
            exchange="kraken", symbols=("BTC/USD",), feeds=("trades",), base_url=fake.url
        )
        metrics, _, rx = start_venue_supervised(
            nursery,
            KrakenAdapter(),
            market,
            trio_wall_clock(EPOCH_US),
            settings=WebSocketSettings(message_timeout_secs=5.0),
        )
        with trio.fail_after(TIMEOUT):
            await fake.wait_subscribed("trade", ["BTC/USD"])
            await trio.testing.wait_all_tasks_blocked()
            assert (
                await fake.send(kraken_trade_frame("BTC/USD", [(1, 100.0, 0.5, "buy", EPOCH_US)]))
                == 1
            )
            await trio.testing.wait_all_tasks_blocked()
            t_data = trio.current_time()
            received_before = metrics.sample(
                "collector_messages_received_total", {"exchange": "kraken"}
            )
            await fake.wait_disconnected()  # the collector closed it
            # Heartbeats kept coming (one a second) until the watchdog ended the connection.
            received = metrics.sample("collector_messages_received_total", {"exchange": "kraken"})
            assert received - received_before >= 4
        nursery.cancel_scope.cancel()
    events = drain(rx)
    (disconnected, *_) = [e for e in events if isinstance(e, Status) and e.event == "disconnected"]
    assert disconnected.detail == "StaleConnection: no data for 5.0s"
    assert disconnected.timestamp_collector == EPOCH_US + int((t_data + 5.0) * 1e6)


# --------------------------------------------------------------------------- last-data metric


async def test_last_data_time_per_stream_is_exported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, ctx, _ = await start_supervised(
            nursery,
            fake.url,
            ws_settings(),
            symbols=("btcusdt", "ethusdt"),
            feeds=("trades", "ticker"),
        )
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed", 4)
            await trio.sleep(1.0)
            await send_settled(fake, trade(1))
            await trio.sleep(1.0)
            await send_settled(fake, book_ticker_frame("ethusdt", 7, 99.0, 1.0, 101.0, 2.0))
            await trio.sleep(1.0)
            await send_settled(fake, trade(2))
        metrics = ctx.metrics

        def last_data(symbol: str, data_type: str) -> float | None:
            labels = {"exchange": "binance", "symbol": symbol, "data_type": data_type}
            return metrics.registry.get_sample_value(LAST_DATA, labels)

        assert last_data("BTCUSDT", "trades") == EPOCH_US / 1e6 + 3.0
        assert last_data("ETHUSDT", "ticker") == EPOCH_US / 1e6 + 2.0
        # Streams without data have no series yet (a connection alone makes none; run_service
        # creates every planned one at its start); status rows are no stream of their own.
        assert last_data("ETHUSDT", "trades") is None
        assert last_data("BTCUSDT", "status") is None
        assert f'{LAST_DATA}{{data_type="trades",exchange="binance",symbol="BTCUSDT"}}' in (
            metrics.render().decode()
        )
        nursery.cancel_scope.cancel()


def test_activity_counts_the_sessions_events_not_the_raw_rows() -> None:
    streams: dict[tuple[str, str], int] = {}
    activity = Activity(0.0, streams)
    raw = Raw("binance", "_all", None, 5, None, "binance-0", "recv", b"{}")
    trade_event = Trade("binance", "BTCUSDT", None, 5, 1, "1", 1.0, 1.0, "buy")
    ticker = Ticker("binance", "ETHUSDT", None, 5, None, 1.0, 1.0, 2.0, 1.0, None, None)
    status = Status("binance", "ETHUSDT", None, 5, None, "subscribed", "trades")
    batch: list[Event] = [raw, trade_event, trade_event, ticker, status]
    activity.saw(batch, 1, 2.5, 5_000_000)
    assert activity.last_data == 2.5
    assert activity.streams == {("BTCUSDT", "trades"): 2.5, ("ETHUSDT", "ticker"): 2.5}
    assert streams == {("BTCUSDT", "trades"): 5_000_000, ("ETHUSDT", "ticker"): 5_000_000}


# --------------------------------------------------------------------------- silence_timeout_secs


def silent_market(
    url: str, silence: float, symbols: Sequence[str] = ("btcusdt", "ethusdt")
) -> MarketSettings:
    return MarketSettings(
        exchange="binance",
        symbols=tuple(symbols),
        feeds=("trades",),
        base_url=url,
        silence_timeout_secs=silence,
    )


async def start_with_market(
    nursery: trio.Nursery,
    market: MarketSettings,
    settings: WebSocketSettings,
) -> tuple[Recorder, Metrics]:
    adapter = BinanceAdapter()
    (plan,) = adapter.plan_connections([market])
    ctx = make_ctx(settings, [plan])
    tx, rx = trio.open_memory_channel[list[Event]](64)
    recorder = Recorder()
    nursery.start_soon(recorder.run, rx)
    nursery.start_soon(supervise_connection, plan, adapter, ctx, tx)
    return recorder, ctx.metrics


async def feed_btc_trades(fake: FakeBinance, until: float, every: float = 2.0) -> None:
    trade_id = 0
    while trio.current_time() + every <= until:
        await trio.sleep(every)
        trade_id += 1
        await send_settled(fake, trade(trade_id))


def test_the_silence_limit_reaches_each_subscription_and_is_not_its_identity() -> None:
    market = silent_market("ws://127.0.0.1:1", 12.5)
    (plan,) = BinanceAdapter().plan_connections([market])
    assert [s.silence_timeout_secs for s in plan.subscriptions] == [12.5, 12.5]
    assert plan.subscriptions[0] == Subscription("BTCUSDT", "trades")
    assert hash(plan.subscriptions[0]) == hash(Subscription("BTCUSDT", "trades"))


async def test_a_silent_stream_on_a_busy_connection_is_recorded_and_reconnected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, metrics = await start_with_market(
            nursery, silent_market(fake.url, 10.0), ws_settings(message_timeout_secs=30.0)
        )
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed", 2)
            nursery.start_soon(feed_btc_trades, fake, 9.0)
            (silent,) = await rec.wait_status("silent")
            assert (silent.symbol, silent.data_type, vtime(silent)) == ("ETHUSDT", "trades", 10.0)
            assert silent.detail == "no trades data for 10.0s (silence_timeout_secs): reconnecting"
            disconnected = await rec.wait_status("disconnected", 2)
            assert [vtime(r) for r in disconnected] == [10.0, 10.0]
            assert {r.detail for r in disconnected} == {
                "StaleConnection: no data on ETHUSDT trades for 10.0s"
            }
            await trio.testing.wait_all_tasks_blocked()
            stale = {"exchange": "binance", "reason": "stale"}
            assert metrics.sample("collector_websocket_disconnects_total", stale) == 1
            # BTCUSDT's trades kept coming: only ETHUSDT was silent.
            assert [vtime(t) for t in rec.trades()] == [2.0, 4.0, 6.0, 8.0]
            # The replacement subscribes both streams afresh.
            await fake.wait_connected(2)
            await rec.wait_status("subscribed", 4)
        nursery.cancel_scope.cancel()


async def test_streams_with_data_and_refused_streams_keep_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeBinance(reject_streams={"ethusdt@trade"})
        await nursery.start(fake.run)
        rec, _ = await start_with_market(
            nursery, silent_market(fake.url, 5.0), ws_settings(message_timeout_secs=30.0)
        )
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribe_error")
            start = trio.current_time()
            await feed_btc_trades(fake, start + 40.0)  # every 2 s, within the 5 s limit
        assert trio.current_time() == pytest.approx(start + 40.0)
        assert rec.status("silent") == []
        assert rec.status("disconnected") == []
        assert fake.connections == 1
        assert len(rec.trades()) == 20
        nursery.cancel_scope.cancel()


async def test_on_a_raw_connection_frames_without_events_are_no_data(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every frame of a raw connection is kept as a raw row, but only the session's events
    are data: an answer to nobody's request every 2 s does not keep it."""
    async with trio.open_nursery() as nursery:
        fake = FakeBinance()
        await nursery.start(fake.run)
        rec, _, _ = await start_supervised(
            nursery, fake.url, ws_settings(message_timeout_secs=5.0), feeds=("trades", "raw")
        )
        with trio.fail_after(TIMEOUT):
            await rec.wait_status("subscribed")
            for _ in range(2):
                await trio.sleep(2.0)
                await send_settled(fake, '{"result":null,"id":999}')
            disconnected = await rec.wait_status("disconnected")
        answers = [vtime(e) for e in rec.events if type(e) is Raw and b"999" in e.payload]
        assert answers == [2.0, 4.0]  # kept, yet the connection went stale at 5 s
        assert [vtime(r) for r in disconnected] == [5.0]
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- derivative feeds


def bybit_market(url: str, feeds: tuple[Feed, ...], silence: float) -> MarketSettings:
    return MarketSettings(
        exchange="bybit",
        category="linear",
        symbols=("BTCUSDT",),
        feeds=feeds,
        base_url=url,
        silence_timeout_secs=silence,
    )


async def test_a_derivatives_stream_is_watched_under_its_data_type(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The ``derivatives`` feed writes ``derivative_ticker`` rows: those are its data, and its
    silent row names that data type."""
    async with trio.open_nursery() as nursery:
        fake = FakeBybit()
        await nursery.start(fake.run)
        market = bybit_market(fake.url, ("derivatives",), 5.0)
        _, _, rx = start_venue_supervised(
            nursery, BybitAdapter(), market, trio_wall_clock(EPOCH_US)
        )
        with trio.fail_after(TIMEOUT):
            await fake.wait_subscribed(["tickers.BTCUSDT"])
            start = trio.current_time()
            for n in range(10):  # every 2 s for 20 s, within the 5 s limit
                fields = {"markPrice": str(100 + n)}
                await fake.send(bybit_ticker_frame("BTCUSDT", "snapshot", fields, n, n))
                await trio.sleep(2.0)
            await fake.wait_connected(2)  # silent 5 s after the last snapshot: replaced
        events = drain(rx)
        (silent,) = [e for e in events if isinstance(e, Status) and e.event == "silent"]
        assert (silent.data_type, silent.detail) == (
            "derivative_ticker",
            "no derivatives data for 5.0s (silence_timeout_secs): reconnecting",
        )
        assert (silent.timestamp_collector - EPOCH_US) / 1e6 == pytest.approx(start + 23.0)
        assert len([e for e in events if isinstance(e, DerivativeTicker)]) == 10
        nursery.cancel_scope.cancel()


async def test_a_liquidations_only_connection_lives_on_pongs_and_is_never_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Hours without a liquidation are normal: no silence limit applies to the stream, and
    the venue's pongs keep a connection that carries nothing else (default 30 s timeout)."""
    async with trio.open_nursery() as nursery:
        fake = FakeBybit()
        await nursery.start(fake.run)
        market = bybit_market(fake.url, ("liquidations",), 5.0)
        _, _, rx = start_venue_supervised(
            nursery, BybitAdapter(), market, trio_wall_clock(EPOCH_US)
        )
        with trio.fail_after(TIMEOUT):
            await fake.wait_subscribed(["allLiquidation.BTCUSDT"])
            await trio.sleep(125.0)
        assert fake.connections == 1
        assert fake.pings == 6  # a ping every 20 s, each answered
        events = drain(rx)
        assert [e.event for e in events if isinstance(e, Status)] == ["connected", "subscribed"]
        nursery.cancel_scope.cancel()


def test_activity_of_a_plan_knows_whether_only_sporadic_streams_ride_on_it() -> None:
    adapter = BybitAdapter()
    cases: list[tuple[tuple[Feed, ...], bool]] = [
        (("liquidations",), True),
        (("liquidations", "trades"), False),
        (("derivatives",), False),
    ]
    for feeds, sporadic in cases:
        (plan,) = adapter.plan_connections([bybit_market("ws://127.0.0.1:1", feeds, 5.0)])
        assert Activity.for_plan(0.0, {}, plan).sporadic_only is sporadic
