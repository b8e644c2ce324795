"""The whole service against a fake Bitfinex: frames in, Parquet rows out; gaps; keepalive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from collector.clock import trio_wall_clock
from collector.settings_check import parse_settings
from tests.fakes.bitfinex import EPOCH_MS, FakeBitfinex, book_levels
from tests.test_bitfinex_parse import reference_checksum
from tests.venue_helpers import (
    QUIET_WEBSOCKET,
    read_rows_us,
    received,
    running_service,
    venue_settings,
    wait_until,
)

BTC = "tBTCUSD"
ETH = "tETHUSD"
EPOCH_US = EPOCH_MS * 1000
KEYS = [("trades", BTC), ("book", BTC), ("ticker", BTC)]


def is_book_subscribe(message: dict[str, Any]) -> bool:
    return message.get("event") == "subscribe" and message.get("channel") == "book"


async def test_frames_become_parquet_rows(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeBitfinex()
    fake.books[BTC] = book_levels([(50000.0, 1.5), (49990.0, 2.0)], [(50010.0, 0.5)])
    fake.trade_snapshots[BTC] = [(100, EPOCH_MS - 5000, 0.1, 49999.0)]
    await nursery.start(fake.run)
    settings = venue_settings("bitfinex", fake.url, tmp_path, [BTC], log_level="warning")
    async with running_service(settings) as handle:
        with trio.fail_after(10):
            await fake.wait_subscribed(KEYS)
            await wait_until(lambda: handle.health.ready)
            await fake.send_channel("trades", BTC, "te", [401, EPOCH_MS + 1, 0.25, 50005.0])
            await fake.send_channel("trades", BTC, "tu", [401, EPOCH_MS + 1, 0.25, 50005.0])
            await fake.send_channel("trades", BTC, "te", [402, EPOCH_MS + 2, -0.75, 50000.0])
            await fake.send_channel("book", BTC, [50000.0, 2, 3.0])
            await fake.send_channel("book", BTC, [50010.0, 0, -1])
            ticker = [50000.0, 3.0, 50010.0, 0.5, 120.0, 0.0024, 50005.0, 1234.5, 51000.0, 49000.0]
            await fake.send_channel("ticker", BTC, ticker)
            # info, conf, 3 subscribed, book and trade snapshots, then the 6 frames above.
            await wait_until(lambda: received(handle, "bitfinex") >= 13)
    trades = read_rows_us(tmp_path, "bitfinex", "trades")
    assert [
        (r["symbol"], r["timestamp_exchange"], r["trade_id"], r["price"], r["size"], r["side"])
        for r in trades
    ] == [
        (BTC, (EPOCH_MS + 1) * 1000, "401", 50005.0, 0.25, "buy"),
        (BTC, (EPOCH_MS + 2) * 1000, "402", 50000.0, 0.75, "sell"),
    ]
    books = read_rows_us(tmp_path, "bitfinex", "orderbook")
    assert [(r["kind"], r["bids"], r["asks"]) for r in books] == [
        (
            "snapshot",
            [{"price": 50000.0, "size": 1.5}, {"price": 49990.0, "size": 2.0}],
            [{"price": 50010.0, "size": 0.5}],
        ),
        ("delta", [{"price": 50000.0, "size": 3.0}], []),
        ("delta", [], [{"price": 50010.0, "size": 0.0}]),
    ]
    sequences = [r["sequence"] for r in books]
    assert sequences == sorted(sequences)
    assert None not in sequences
    assert all(r["timestamp_exchange"] is not None for r in books)
    [row] = read_rows_us(tmp_path, "bitfinex", "ticker")
    assert (
        row["bid_price"],
        row["bid_size"],
        row["ask_price"],
        row["last_price"],
        row["volume_24h"],
    ) == (
        50000.0,
        3.0,
        50010.0,
        50005.0,
        1234.5,
    )
    events = [(r["event"], r["data_type"]) for r in read_rows_us(tmp_path, "bitfinex", "status")]
    assert {("subscribed", "trades"), ("subscribed", "orderbook"), ("subscribed", "ticker")} <= set(
        events
    )
    assert fake.client_messages[0] == '{"event":"conf","flags":229376}'


async def test_sequence_gap_is_recorded_and_books_resynced(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeBitfinex(unknown_symbols=[ETH])
    fake.books[BTC] = book_levels([(50000.0, 1.0)], [(50010.0, 1.0)])
    await nursery.start(fake.run)
    settings = venue_settings("bitfinex", fake.url, tmp_path, [BTC, ETH], log_level="warning")
    async with running_service(settings) as handle:
        with trio.fail_after(10):
            await fake.wait_subscribed(KEYS)
            # ETH was refused, so readiness does not wait for it.
            await wait_until(lambda: handle.health.ready)
            fake.books[BTC] = book_levels([(49000.0, 4.0)], [(49010.0, 4.0)])
            fake.skip_sequence(3)
            await fake.send_channel("book", BTC, [50000.0, 1, 2.0])
            await fake.wait_client_messages(lambda m: m.get("event") == "unsubscribe")
            await fake.wait_client_messages(is_book_subscribe, n=2)
            await fake.wait_subscribed(KEYS)
            await fake.send_channel("book", BTC, [49000.0, 1, 5.0])
            # info, conf, 3 subscribed + 3 errors, 2 snapshots, the gap frame, unsubscribed,
            # subscribed, the new snapshot and the last update.
            await wait_until(lambda: received(handle, "bitfinex") >= 15)
            gaps = handle.metrics.sample(
                "collector_sequence_gaps_total", {"exchange": "bitfinex", "data_type": ""}
            )
            assert gaps == 2  # one row per symbol of the connection
    status = read_rows_us(tmp_path, "bitfinex", "status")
    gap_rows = [r for r in status if r["event"] == "gap"]
    assert sorted(
        (r["symbol"], r["data_type"], r["expected_sequence"], r["received_sequence"], r["count"])
        for r in gap_rows
    ) == [(BTC, None, 3, 6, 3), (ETH, None, 3, 6, 3)]
    [resync] = [r for r in status if r["event"] == "resync"]
    assert (resync["symbol"], resync["data_type"]) == (BTC, "orderbook")
    refused = [r for r in status if r["event"] == "subscribe_error"]
    assert {(r["symbol"], r["data_type"]) for r in refused} == {
        (ETH, "trades"),
        (ETH, "orderbook"),
        (ETH, "ticker"),
    }
    assert all("symbol: invalid (code 10300)" in r["detail"] for r in refused)
    books = read_rows_us(tmp_path, "bitfinex", "orderbook")
    assert [(r["kind"], r["bids"]) for r in books] == [
        ("snapshot", [{"price": 50000.0, "size": 1.0}]),
        ("snapshot", [{"price": 49000.0, "size": 4.0}]),
        ("delta", [{"price": 49000.0, "size": 5.0}]),
    ]
    assert resync["received_sequence"] == books[1]["sequence"]
    assert fake.connections == 1


async def test_info_20051_makes_the_client_reconnect(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeBitfinex()
    await nursery.start(fake.run)
    settings = parse_settings(
        {
            "collector": {"metrics_port": 0, "metrics_host": "127.0.0.1", "log_level": "error"},
            "storage": {"data_dir": str(tmp_path)},
            "websocket": {"initial_retry_delay_secs": 0.01, "max_retry_delay_secs": 0.02},
            "markets": [
                {
                    "exchange": "bitfinex",
                    "symbols": [BTC],
                    "feeds": ["ticker"],
                    "base_url": fake.url,
                }
            ],
        }
    )
    async with running_service(settings):
        with trio.fail_after(10):
            await fake.wait_subscribed([("ticker", BTC)])
            await fake.send_info(20051, "Stopping. Please try to reconnect")
            await fake.wait_connected(2)
            await fake.wait_subscribed([("ticker", BTC)])
    reasons = [
        r["detail"]
        for r in read_rows_us(tmp_path, "bitfinex", "status")
        if r["event"] == "disconnected"
    ]
    assert any("20051" in (reason or "") for reason in reasons)


async def test_heartbeats_and_pings_keep_the_connection_alive(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    # The fake drops a client silent for 20 s; the venue sends hb every 15 s per channel.
    fake = FakeBitfinex(client_idle_timeout=20.0, hb_interval=15.0)
    await nursery.start(fake.run)
    settings = venue_settings(
        "bitfinex", fake.url, tmp_path, [BTC], log_level="warning", websocket=QUIET_WEBSOCKET
    )
    async with running_service(settings, trio_wall_clock(EPOCH_US), autojump_clock) as handle:
        with trio.fail_after(10):
            await fake.wait_subscribed(KEYS)
        start = trio.current_time()
        await trio.sleep(120)
        assert trio.current_time() - start == pytest.approx(120, abs=1e-9)
        [client] = fake.clients
        assert client.pings >= 8  # one every 15 s
        assert fake.idle_drops == 0
        assert fake.connections == 1
        # The venue's heartbeats (3 channels x 8) arrived meanwhile (no data: they do not
        # feed the stale watchdog, whose timeout this test sets longer than its run).
        assert received(handle, "bitfinex") >= 7 + 24
    status = read_rows_us(tmp_path, "bitfinex", "status")
    assert [r["event"] for r in status if r["event"] in ("gap", "subscribe_error")] == []


async def test_fake_drops_a_silent_client(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    fake = FakeBitfinex(client_idle_timeout=20.0)
    await nursery.start(fake.run)
    with trio.fail_after(60):
        async with open_websocket_url(f"{fake.url}/ws/2") as ws:
            assert '"event":"info"' in str(await ws.get_message())
            start = trio.current_time()
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert trio.current_time() - start == pytest.approx(20, abs=1e-9)
    assert fake.idle_drops == 1


async def test_fake_limits_channels_per_connection(nursery: trio.Nursery) -> None:
    fake = FakeBitfinex(max_channels=1)
    await nursery.start(fake.run)
    with trio.fail_after(5):
        async with open_websocket_url(f"{fake.url}/ws/2") as ws:
            await ws.get_message()  # info
            await ws.send_message('{"event":"subscribe","channel":"ticker","symbol":"tBTCUSD"}')
            assert '"event":"subscribed"' in str(await ws.get_message())
            await ws.send_message('{"event":"subscribe","channel":"ticker","symbol":"tBTCUSD"}')
            assert '"code":10301' in str(await ws.get_message())
            await ws.send_message('{"event":"subscribe","channel":"ticker","symbol":"tETHUSD"}')
            reply = str(await ws.get_message())
            assert '"code":10305' in reply
            assert '"symbol":"tETHUSD"' in reply


async def test_a_book_checksum_mismatch_resubscribes_that_book(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The conf asks for checksum frames; one that does not match the book makes a gap
    row, that book alone is resubscribed, its new snapshot has a resync row naming the
    reason, the metric counts it, and the book goes on."""
    fake = FakeBitfinex()
    fake.books[BTC] = book_levels([(50000.0, 1.0)], [(50010.0, 1.0)])
    await nursery.start(fake.run)
    settings = venue_settings("bitfinex", fake.url, tmp_path, [BTC], log_level="warning")
    async with running_service(settings) as handle:
        with trio.fail_after(10):
            await fake.wait_subscribed(KEYS)
            await wait_until(lambda: handle.health.ready)
            # The fake sends numbers as msgspec writes them: the wire text the sum is over.
            good = reference_checksum([("50000.0", "1.0")], [("50010.0", "-1.0")])
            await fake.send_channel("book", BTC, "cs", good)
            await fake.send_channel("book", BTC, "cs", good + 1)
            await fake.wait_client_messages(lambda m: m.get("event") == "unsubscribe")
            await fake.wait_client_messages(is_book_subscribe, n=2)
            await fake.wait_subscribed(KEYS)
            await fake.send_channel("book", BTC, [49000.0, 1, 5.0])
            # The new book, checked again: it matches.
            bids = [("50000.0", "1.0"), ("49000.0", "5.0")]
            await fake.send_channel(
                "book", BTC, "cs", reference_checksum(bids, [("50010.0", "-1.0")])
            )
            # info, conf, 3 subscribed, 2 snapshots, 2 cs, unsubscribed, subscribed, the new
            # snapshot, the update and the last cs.
            await wait_until(lambda: received(handle, "bitfinex") >= 14)
            resyncs = handle.metrics.sample(
                "collector_book_resyncs_total", {"exchange": "bitfinex", "reason": "checksum"}
            )
            assert resyncs == 1
            assert (
                handle.metrics.sample(
                    "collector_book_resyncs_total", {"exchange": "bitfinex", "reason": "crossed"}
                )
                == 0
            )
    status = read_rows_us(tmp_path, "bitfinex", "status")
    gaps = [r for r in status if r["event"] == "gap"]
    assert [(r["symbol"], r["data_type"]) for r in gaps] == [(BTC, "orderbook")]
    assert gaps[0]["detail"].startswith(
        f"book checksum mismatch: venue {good + 1}, computed {good}"
    )
    [resync] = [r for r in status if r["event"] == "resync"]
    assert resync["detail"] == "new book snapshot after resubscribing after a checksum mismatch"
    books = read_rows_us(tmp_path, "bitfinex", "orderbook")
    assert [r["kind"] for r in books] == ["snapshot", "snapshot", "delta"]
    assert books[-1]["bids"] == [{"price": 49000.0, "size": 5.0}]
