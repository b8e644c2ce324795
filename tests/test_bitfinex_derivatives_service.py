"""The whole service against a fake Bitfinex: status and liquidation frames in, Parquet
``derivative_ticker`` and ``liquidations`` rows out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import trio

from tests.fakes.bitfinex import EPOCH_MS, FakeBitfinex
from tests.venue_helpers import read_rows_us, received, running_service, venue_settings, wait_until

PERP = "tBTCF0:USTF0"
ETH_PERP = "tETHF0:USTF0"
NEXT_FUNDING = datetime.fromtimestamp((EPOCH_MS + 3_600_000) / 1000, UTC)


def status_array(time_ms: int, mark: float, open_interest: float) -> list[object]:
    """A ``deriv:`` status array in the venue's positions (placeholders null)."""
    values: list[object] = [None] * 23
    values[0] = time_ms
    values[2] = mark + 1.0  # DERIV_PRICE
    values[3] = mark - 1.0  # SPOT_PRICE
    values[7] = EPOCH_MS + 3_600_000
    values[8] = 0.0001
    values[11] = 0.0002
    values[14] = mark
    values[17] = open_interest
    return values


async def test_status_and_liquidations_become_rows(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeBitfinex(unknown_symbols=[ETH_PERP])
    await nursery.start(fake.run)
    settings = venue_settings(
        "bitfinex",
        fake.url,
        tmp_path,
        [PERP, ETH_PERP],
        log_level="warning",
        feeds=["derivatives", "liquidations"],
    )
    liq = "liq:global"
    async with running_service(settings) as handle:
        with trio.fail_after(10):
            await fake.wait_subscribed([("status", f"deriv:{PERP}"), ("status", liq)])
            # ETH's deriv key is refused; its liquidations ride on the one liq:global.
            await wait_until(lambda: handle.health.ready)
            await fake.send_channel("status", f"deriv:{PERP}", status_array(EPOCH_MS, 100.0, 5.0))
            await fake.send_channel(
                "status", f"deriv:{PERP}", status_array(EPOCH_MS + 1000, 101.0, 6.0)
            )
            items = [
                ["pos", 11, EPOCH_MS + 5, None, PERP, 0.5, 99.0, None, 0, 0, None, 98.0],
                ["pos", 12, EPOCH_MS + 6, None, "tBTCUSD", -3.0, 99.0, None, 0, 0, None, 98.0],
                ["pos", 13, EPOCH_MS + 7, None, ETH_PERP, -2.0, 20.0, None, 1, 1, None, 21.0],
            ]
            await fake.send_channel("status", liq, items)
            # info, conf, 2 subscribed, 1 error, 3 data frames.
            await wait_until(lambda: received(handle, "bitfinex") >= 8)
    tickers = read_rows_us(tmp_path, "bitfinex", "derivative_ticker")
    assert [
        (
            r["symbol"],
            r["timestamp_exchange"],
            r["source"],
            r["mark_price"],
            r["last_price"],
            r["index_price"],
            r["funding_rate"],
            r["predicted_funding_rate"],
            r["funding_timestamp"],
            r["funding_interval_h"],
            r["open_interest"],
            r["open_interest_unit"],
        )
        for r in tickers
    ] == [
        (PERP, EPOCH_MS * 1000, "status", 100.0, 101.0, 99.0, 0.0002, 0.0001,
         NEXT_FUNDING, 8.0, 5.0, "base"),
        (PERP, (EPOCH_MS + 1000) * 1000, "status", 101.0, 102.0, 100.0, 0.0002, 0.0001,
         NEXT_FUNDING, 8.0, 6.0, "base"),
    ]  # fmt: skip
    assert all(r["sequence"] is not None for r in tickers)
    liquidations = read_rows_us(tmp_path, "bitfinex", "liquidations")
    assert sorted(
        (
            r["symbol"],
            r["timestamp_exchange"],
            r["liquidation_id"],
            r["side"],
            r["position_side"],
            r["price"],
            r["price_kind"],
            r["size"],
            r["size_unit"],
            r["entry_price"],
            r["status"],
        )
        for r in liquidations
    ) == [
        (PERP, (EPOCH_MS + 5) * 1000, "11", "sell", "long", 98.0, "acquired", 0.5, "base",
         99.0, "trigger"),
        (ETH_PERP, (EPOCH_MS + 7) * 1000, "13", "buy", "short", 21.0, "acquired", 2.0, "base",
         20.0, "execution"),
    ]  # fmt: skip
    status = read_rows_us(tmp_path, "bitfinex", "status")
    assert {(r["symbol"], r["event"], r["data_type"]) for r in status} >= {
        (PERP, "subscribed", "derivative_ticker"),
        (PERP, "subscribed", "liquidations"),
        (ETH_PERP, "subscribed", "liquidations"),
        (ETH_PERP, "subscribe_error", "derivative_ticker"),
    }
    assert [m for m in fake.client_messages if '"status"' in m] == [
        f'{{"event":"subscribe","channel":"status","key":"deriv:{PERP}"}}',
        '{"event":"subscribe","channel":"status","key":"liq:global"}',
        f'{{"event":"subscribe","channel":"status","key":"deriv:{ETH_PERP}"}}',
    ]
