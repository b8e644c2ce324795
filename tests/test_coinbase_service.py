"""The whole service against the fake Coinbase Advanced Trade server, read back from Parquet."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from collector.clock import trio_wall_clock
from collector.config import MarketSettings, WebSocketSettings
from collector.events import Status
from collector.exchanges.coinbase import CoinbaseAdapter
from tests.fakes.coinbase import (
    FakeCoinbase,
    l2_event,
    ticker_event,
    trade,
    trades_event,
)
from tests.venue_helpers import (
    QUIET_WEBSOCKET,
    drain,
    read_rows_by_time,
    received,
    running_service,
    start_supervised,
    venue_settings,
    wait_until,
)

EPOCH_US = 1_786_309_548_000_000
T0 = EPOCH_US + 123_456  # an exchange time in the trades/books sent


@pytest.fixture(autouse=True)
def _no_coinbase_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COINBASE_API_KEY", raising=False)
    monkeypatch.delenv("COINBASE_API_SECRET_FILE", raising=False)


async def test_trades_books_tickers_and_a_gap_resync_end_up_in_parquet(tmp_path: Path) -> None:
    fake = FakeCoinbase()
    fake.books["BTC-USD"] = ([(100.0, 1.0), (99.5, 2.0)], [(101.0, 3.0)])
    fake.recent_trades["BTC-USD"] = [
        trade("BTC-USD", 11, 100.5, 0.2, T0 - 2_000_000, "SELL"),
        trade("BTC-USD", 10, 100.0, 0.1, T0 - 3_000_000, "BUY"),
    ]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.run)
            settings = venue_settings("coinbase", fake.url, tmp_path, ("BTC-USD", "eth-usd"))
            async with running_service(settings) as handle:
                await fake.wait_subscribed("heartbeats", ["heartbeats"])
                await fake.wait_subscribed("level2", ["BTC-USD", "ETH-USD"])
                await fake.send(
                    "market_trades",
                    [trades_event([trade("BTC-USD", 12, 101.0, 0.5, T0, "BUY")])],
                    product="BTC-USD",
                )
                await fake.send(
                    "l2_data",
                    [l2_event("BTC-USD", [(100.0, 0.0)], [(101.5, 4.0)], T0)],
                    product="BTC-USD",
                )
                await fake.send(
                    "ticker",
                    [ticker_event("ETH-USD", 2000.5, 2000.0, 1.5, 2001.0, 2.5, 12345.0)],
                    product="ETH-USD",
                )
                # Three messages lost: a gap, then level2 resubscribed and a fresh snapshot.
                fake.books["BTC-USD"] = ([(99.0, 7.0)], [(102.0, 8.0)])
                await fake.send(
                    "l2_data",
                    [l2_event("BTC-USD", [(99.0, 7.0)], [], T0 + 1)],
                    product="BTC-USD",
                    skip=3,
                )
                await fake.wait_messages(6)  # 4 subscribes + unsubscribe + subscribe level2
                await fake.wait_subscribed("level2", ["BTC-USD", "ETH-USD"])
                await wait_until(lambda: received(handle) >= fake.frames_sent)
                assert handle.metrics.sum_samples("collector_sequence_gaps_total") == 2
            nursery.cancel_scope.cancel()

    trades = read_rows_by_time(tmp_path, "coinbase", "BTC-USD", "trades")
    assert [(r["trade_id"], r["price"], r["size"], r["side"]) for r in trades] == [
        ("11", 100.5, 0.2, "buy"),  # sent as SELL: the maker's side
        ("10", 100.0, 0.1, "sell"),
        ("12", 101.0, 0.5, "sell"),
    ]
    assert trades[2]["timestamp_exchange"].timestamp() * 1e6 == pytest.approx(T0)
    assert trades[2]["sequence"] == 12

    books = read_rows_by_time(tmp_path, "coinbase", "BTC-USD", "orderbook")
    assert [(r["kind"], r["bids"], r["asks"]) for r in books] == [
        (
            "snapshot",
            [{"price": 100.0, "size": 1.0}, {"price": 99.5, "size": 2.0}],
            [{"price": 101.0, "size": 3.0}],
        ),
        ("delta", [{"price": 100.0, "size": 0.0}], [{"price": 101.5, "size": 4.0}]),
        ("delta", [{"price": 99.0, "size": 7.0}], []),
        ("snapshot", [{"price": 99.0, "size": 7.0}], [{"price": 102.0, "size": 8.0}]),
    ]
    tickers = read_rows_by_time(tmp_path, "coinbase", "ETH-USD", "ticker")
    assert [
        (r["bid_price"], r["bid_size"], r["ask_price"], r["ask_size"], r["last_price"])
        for r in tickers
    ] == [(2000.0, 1.5, 2001.0, 2.5, 2000.5)]
    assert tickers[0]["volume_24h"] == 12345.0

    status = read_rows_by_time(tmp_path, "coinbase", "BTC-USD", "status")
    events = [r["event"] for r in status]
    assert events.count("subscribed") == 3  # trades, orderbook, ticker
    [gap] = [r for r in status if r["event"] == "gap"]
    assert gap["count"] == 3
    assert gap["received_sequence"] - gap["expected_sequence"] == 3
    [resync] = [r for r in status if r["event"] == "resync"]
    assert resync["data_type"] == "orderbook"
    assert events.index("gap") < events.index("resync")
    eth_status = read_rows_by_time(tmp_path, "coinbase", "ETH-USD", "status")
    assert [r["event"] for r in eth_status].count("gap") == 1
    sent = [msgspec.json.decode(m) for m in fake.client_messages]
    assert [(m["type"], m["channel"]) for m in sent[4:]] == [
        ("unsubscribe", "level2"),
        ("subscribe", "level2"),
    ]
    assert sent[4]["product_ids"] == ["BTC-USD", "ETH-USD"]


async def test_a_rejected_product_is_recorded_and_the_others_keep_flowing(
    tmp_path: Path,
) -> None:
    fake = FakeCoinbase(reject_products=["DOGE-EUR"])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.run)
            settings = venue_settings("coinbase", fake.url, tmp_path, ("BTC-USD", "DOGE-EUR"))
            async with running_service(settings) as handle:
                await fake.wait_subscribed("market_trades", ["BTC-USD"])
                await fake.wait_subscribed("ticker", ["BTC-USD"])
                await fake.wait_subscribed("level2", ["BTC-USD"])
                await fake.send(
                    "market_trades",
                    [trades_event([trade("BTC-USD", 7, 1.5, 2.0, T0, "SELL")])],
                    product="BTC-USD",
                )
                await wait_until(lambda: received(handle) >= fake.frames_sent)
                await wait_until(lambda: handle.health.ready)
            nursery.cancel_scope.cancel()
    errors = [
        r
        for r in read_rows_by_time(tmp_path, "coinbase", "DOGE-EUR", "status")
        if r["event"] == "subscribe_error"
    ]
    assert sorted(r["data_type"] for r in errors) == ["orderbook", "ticker", "trades"]
    assert all("DOGE-EUR is not a valid product" in r["detail"] for r in errors)
    assert [
        r["trade_id"] for r in read_rows_by_time(tmp_path, "coinbase", "BTC-USD", "trades")
    ] == ["7"]


async def test_heartbeats_keep_a_quiet_connection_past_the_venue_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No market data for 10 minutes: the heartbeats subscription keeps the connection up.

    Without it the fake drops a client after 60 s idle (the venue closes idle channels).
    Heartbeats are no data, so the stale watchdog's timeout is set longer than the test
    (with the default 30 s it would replace the quiet connection). Runs one supervised
    connection (the part of the service that keeps it alive) in virtual time: the whole
    service uses worker threads, which would make the autojump clock leap ahead.
    """
    fake = FakeCoinbase()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        market = MarketSettings(exchange="coinbase", symbols=("BTC-USD",), base_url=fake.url)
        metrics, _, rx = start_supervised(
            nursery,
            CoinbaseAdapter(),
            market,
            trio_wall_clock(EPOCH_US),
            settings=WebSocketSettings(**QUIET_WEBSOCKET),
        )
        with trio.fail_after(700):
            await fake.wait_subscribed("heartbeats", ["heartbeats"])
            await trio.sleep(600)
        assert fake.connections == 1
        assert fake.dropped_idle == 0
        assert fake.dropped_unsubscribed == 0
        assert fake.heartbeats_sent >= 599
        assert metrics.sum_samples("collector_websocket_disconnects_total") == 0
        nursery.cancel_scope.cancel()
    events = drain(rx)
    assert [e.event for e in events if isinstance(e, Status)] == [
        "connected",
        "subscribed",
        "subscribed",
        "subscribed",
        "disconnected",  # the cancellation at the end only
    ]


async def test_the_fake_drops_a_client_without_heartbeats_after_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The fake's rule the test above relies on (a plain trio-websocket client)."""
    from trio_websocket import ConnectionClosed, open_websocket_url

    fake = FakeCoinbase()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        with trio.fail_after(300):
            async with open_websocket_url(fake.url) as ws:
                await ws.send_message(
                    '{"type":"subscribe","product_ids":["BTC-USD"],"channel":"ticker"}'
                )
                await ws.get_message()  # the subscriptions answer
                start = trio.current_time()
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()  # nothing comes: the fake closes the idle channel
                assert trio.current_time() - start == pytest.approx(60.0, abs=0.01)
        assert fake.dropped_idle == 1
        nursery.cancel_scope.cancel()
