"""The whole service in-process against the fake OKX server, read back from Parquet.

Data and gap tests run on Trio's real clock (the writer uses worker threads) and wait on
the fake's events and the service's metrics; the keepalive test runs on the autojump
MockClock with a wall clock derived from it. Every wait is bounded with ``trio.fail_after``.
"""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from collector.clock import trio_wall_clock
from collector.service import EXIT_OK
from tests.fakes.okx import FakeOkx, book_frame, ticker_frame, trade_frame
from tests.venue_helpers import (
    QUIET_WEBSOCKET,
    read_rows,
    run_until_stopped,
    settle_frozen,
    venue_settings,
    wait_received,
    without_collector_time,
)

TIMEOUT = 15.0
TS_MS = 1_760_000_000_000
EPOCH_US = 1_760_000_000_000_000


async def test_trades_books_and_tickers_reach_parquet(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeOkx()
            await nursery.start(fake.run)
            fake.book_snapshots["BTC-USDT"] = book_frame(
                "BTC-USDT", "snapshot", [(100.5, 2)], [(101, 3)], TS_MS, 10, -1
            )
            settings = venue_settings("okx", fake.url, tmp_path, ["BTC-USDT", "eth-usdt-swap"])
            handle, stop = await run_until_stopped(nursery, settings)
            await fake.wait_subscribed(
                [
                    (ch, inst)
                    for ch in ("trades", "books", "tickers")
                    for inst in ("BTC-USDT", "ETH-USDT-SWAP")
                ]
            )
            frames = [
                trade_frame("BTC-USDT", 500, 100.5, 0.25, "buy", TS_MS + 1, seq_id=11),
                trade_frame("BTC-USDT", 503, 100.4, 1.5, "sell", TS_MS + 2, count=3, seq_id=12),
                book_frame("BTC-USDT", "update", [(100.5, 0)], [(101.5, 4)], TS_MS + 3, 15, 10),
                ticker_frame(
                    "ETH-USDT-SWAP",
                    last=2000.5,
                    bid=2000.4,
                    bid_size=10,
                    ask=2000.6,
                    ask_size=12,
                    vol24h=123456,
                    ts_ms=TS_MS + 4,
                    inst_type="SWAP",
                ),
            ]
            for frame in frames:
                assert await fake.send(frame) == 1
            # 6 acks + 1 snapshot + the frames above
            await wait_received(handle, 7 + len(frames), "okx")
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    trades = without_collector_time(read_rows(tmp_path, "okx", "BTC-USDT", "trades"))
    base = {"exchange": "okx", "symbol": "BTC-USDT"}
    assert [{**r, "timestamp_exchange": r["timestamp_exchange"].timestamp()} for r in trades] == [
        {**base, "timestamp_exchange": (TS_MS + 1) / 1000, "sequence": 500, "trade_id": "500",
         "price": 100.5, "size": 0.25, "side": "buy"},
        {**base, "timestamp_exchange": (TS_MS + 2) / 1000, "sequence": 503, "trade_id": "503",
         "price": 100.4, "size": 1.5, "side": "sell"},
    ]  # fmt: skip
    books = without_collector_time(read_rows(tmp_path, "okx", "BTC-USDT", "orderbook"))
    assert [
        (b["kind"], b["sequence"], b["prev_sequence"], b["bids"], b["asks"]) for b in books
    ] == [
        ("snapshot", 10, None, [{"price": 100.5, "size": 2.0}], [{"price": 101.0, "size": 3.0}]),
        ("delta", 15, 10, [{"price": 100.5, "size": 0.0}], [{"price": 101.5, "size": 4.0}]),
    ]
    tickers = read_rows(tmp_path, "okx", "ETH-USDT-SWAP", "ticker")
    assert [
        (
            t["bid_price"],
            t["bid_size"],
            t["ask_price"],
            t["ask_size"],
            t["last_price"],
            t["volume_24h"],
        )
        for t in tickers
    ] == [(2000.4, 10.0, 2000.6, 12.0, 2000.5, 123456.0)]
    status = read_rows(tmp_path, "okx", "BTC-USDT", "status")
    assert [s["event"] for s in status][:1] == ["connected"]
    assert sorted(s["data_type"] for s in status if s["event"] == "subscribed") == [
        "orderbook",
        "ticker",
        "trades",
    ]


async def test_book_gap_is_recorded_and_resubscribed_for_a_fresh_snapshot(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeOkx()
            await nursery.start(fake.run)
            fake.book_snapshots["BTC-USDT"] = book_frame(
                "BTC-USDT", "snapshot", [(100, 1)], [(101, 1)], TS_MS, 10, -1
            )
            settings = venue_settings("okx", fake.url, tmp_path, ["BTC-USDT"], feeds=["orderbook"])
            handle, stop = await run_until_stopped(nursery, settings)
            await fake.wait_subscribed([("books", "BTC-USDT")])
            await fake.send(book_frame("BTC-USDT", "update", [(100, 2)], [], TS_MS + 1, 15, 10))
            # the update with prevSeqId 20 does not follow seqId 15: a gap
            fake.book_snapshots["BTC-USDT"] = book_frame(
                "BTC-USDT", "snapshot", [(99, 5)], [(102, 5)], TS_MS + 3, 40, -1
            )
            await fake.send(book_frame("BTC-USDT", "update", [(100, 3)], [], TS_MS + 2, 25, 20))
            await fake.wait_for_message(lambda m: '"op":"unsubscribe"' in m)
            # ack + snapshot + 2 updates + unsubscribe ack + subscribe ack + fresh snapshot
            await wait_received(handle, 7, "okx")
            gaps = handle.metrics.sample(
                "collector_sequence_gaps_total", {"exchange": "okx", "data_type": "orderbook"}
            )
            assert gaps == 1
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    resubscribe = [m for m in fake.client_messages if m != "ping"][1:]
    assert [msgspec.json.decode(m)["op"] for m in resubscribe] == ["unsubscribe", "subscribe"]
    status = read_rows(tmp_path, "okx", "BTC-USDT", "status")
    gap_rows = [s for s in status if s["event"] in ("gap", "resync")]
    assert [
        (s["event"], s["data_type"], s["expected_sequence"], s["received_sequence"])
        for s in gap_rows
    ] == [("gap", "orderbook", 15, 20), ("resync", "orderbook", None, 40)]
    books = read_rows(tmp_path, "okx", "BTC-USDT", "orderbook")
    assert [(b["kind"], b["sequence"]) for b in books] == [
        ("snapshot", 10),
        ("delta", 15),
        ("delta", 25),
        ("snapshot", 40),
    ]


async def test_rejected_instrument_is_recorded_and_others_keep_flowing(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeOkx(reject={"NOPE-USDT"})
            await nursery.start(fake.run)
            settings = venue_settings(
                "okx", fake.url, tmp_path, ["NOPE-USDT", "BTC-USDT"], feeds=["trades"]
            )
            handle, stop = await run_until_stopped(nursery, settings)
            await fake.wait_subscribed([("trades", "BTC-USDT")])
            await fake.send(trade_frame("BTC-USDT", 7, 1.5, 2, "sell", TS_MS))
            await wait_received(handle, 3, "okx")
            assert handle.health.connections["okx-0"].subscribed_once
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    errors = [
        s
        for s in read_rows(tmp_path, "okx", "NOPE-USDT", "status")
        if s["event"] == "subscribe_error"
    ]
    assert len(errors) == 1
    assert errors[0]["detail"].startswith(
        "trades:NOPE-USDT: Wrong URL or channel:trades,instId:NOPE-USDT"
    )
    assert [t["trade_id"] for t in read_rows(tmp_path, "okx", "BTC-USDT", "trades")] == ["7"]


async def test_text_pings_keep_an_idle_connection_alive(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = math.inf  # frozen while the service starts
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            fake = FakeOkx(idle_timeout=30.0)
            await nursery.start(fake.run)
            settings = venue_settings(
                "okx", fake.url, tmp_path, ["BTC-USDT"], feeds=["trades"], websocket=QUIET_WEBSOCKET
            )
            handle, stop = await run_until_stopped(
                nursery, settings, wall_clock=trio_wall_clock(EPOCH_US)
            )
            await fake.wait_subscribed([("trades", "BTC-USDT")])
            autojump_clock.jump(settings.storage.flush_interval_secs)
            written = {"exchange": "okx", "data_type": "status"}
            await settle_frozen(
                autojump_clock,
                lambda: handle.metrics.sample("collector_rows_written_total", written) >= 2,
            )
            # Now nothing needs a thread: let virtual time run, with no data at all.
            autojump_clock.autojump_threshold = 0
            await trio.sleep(125)  # four times the venue's idle limit
            assert fake.connections == 1
            assert fake.idle_drops == 0
            assert len(fake.clients) == 1
            # one text "ping" every 20 s, each answered with "pong"
            assert fake.pings == 6
            assert [m for m in fake.client_messages if m == "ping"] == ["ping"] * 6
            autojump_clock.autojump_threshold = math.inf  # shutdown finalizes in threads
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()
    status = read_rows(tmp_path, "okx", "BTC-USDT", "status")
    assert [s["event"] for s in status] == ["connected", "subscribed", "disconnected"]
    assert status[0]["timestamp_collector"].timestamp() * 1e6 == pytest.approx(EPOCH_US, abs=2e6)


async def test_the_fake_drops_a_client_that_sends_no_ping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fake = FakeOkx(idle_timeout=30.0)
            await nursery.start(fake.run)
            async with open_websocket_url(f"{fake.url}/ws/v5/public") as ws:
                await fake.wait_connected()
                start = trio.current_time()
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
                assert trio.current_time() - start == pytest.approx(30.0)
            assert fake.idle_drops == 1
            nursery.cancel_scope.cancel()
