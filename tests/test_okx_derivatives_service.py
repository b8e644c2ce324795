"""OKX swaps and options end to end: the whole service against the fake OKX server, the
derivative channels merged into ``derivative_ticker`` rows and ``liquidation-orders``
filtered into ``liquidations`` rows, read back from Parquet.

Runs on Trio's real clock (the writer uses worker threads) and waits on the fake's events
and the service's metrics; every wait is bounded with ``trio.fail_after``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import trio

from collector.service import EXIT_OK
from collector.settings_check import parse_settings
from tests.fakes.base import abort
from tests.fakes.okx import (
    FakeOkx,
    funding_rate_frame,
    index_ticker_frame,
    liquidation_frame,
    mark_price_frame,
    open_interest_frame,
    opt_summary_frame,
    trade_frame,
)
from tests.venue_helpers import read_rows, read_rows_us, run_until_stopped, wait_received

TIMEOUT = 15.0
TS_MS = 1_760_000_000_000
SWAP = "BTC-USDT-SWAP"
OPTION = "BTC-USD-251226-100000-C"


async def test_swap_and_option_derivatives_and_liquidations_reach_parquet(
    tmp_path: Path,
) -> None:
    """Rows hold the merged state; a reconnect starts the state afresh (nothing carried
    over the hole); liquidations of other instruments are not written; spot trades share
    the connection under the same exchange name."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeOkx()
            await nursery.start(fake.run)
            settings = parse_settings(
                {
                    "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
                    "storage": {"data_dir": str(tmp_path)},
                    "markets": [
                        {"exchange": "okx", "symbols": ["btc-usdt-swap", OPTION],
                         "feeds": ["derivatives", "liquidations"], "base_url": fake.url},
                        {"exchange": "okx", "symbols": ["BTC-USDT"], "feeds": ["trades"],
                         "base_url": fake.url},
                    ],
                }
            )  # fmt: skip
            handle, stop = await run_until_stopped(nursery, settings)
            wanted = [
                ("mark-price", SWAP),
                ("funding-rate", SWAP),
                ("index-tickers", "BTC-USDT"),
                ("open-interest", SWAP),
                ("tickers", SWAP),
                ("mark-price", OPTION),
                ("index-tickers", "BTC-USD"),
                ("open-interest", OPTION),
                ("tickers", OPTION),
                ("opt-summary", "BTC-USD"),
                ("liquidation-orders", "SWAP"),
                ("liquidation-orders", "OPTION"),
                ("trades", "BTC-USDT"),
            ]
            await fake.wait_subscribed(wanted)
            frames = [
                mark_price_frame(SWAP, 61000.5, TS_MS + 1),
                funding_rate_frame(SWAP, 0.0001, TS_MS + 3_600_000, TS_MS + 7_200_000, TS_MS + 2),
                index_ticker_frame("BTC-USDT", 60990, TS_MS + 3),
                open_interest_frame(SWAP, 2000, 20, 1_220_000, TS_MS + 4),
                opt_summary_frame(
                    "BTC-USD", [{"instId": OPTION}, {"instId": "BTC-USD-251226-90000-P"}], TS_MS + 5
                ),
                liquidation_frame(
                    "SWAP",
                    [("ETH-USDT-SWAP", [{"side": "buy", "posSide": "short", "bkPx": "2500",
                                         "sz": "1", "bkLoss": "0", "ts": str(TS_MS + 6)}]),
                     (SWAP, [{"side": "sell", "posSide": "long", "bkPx": "60100.5", "sz": "3",
                              "bkLoss": "0.25", "ts": str(TS_MS + 7)}])],
                ),
                trade_frame("BTC-USDT", 9, 61001, 0.5, "buy", TS_MS + 8),
            ]  # fmt: skip
            for frame in frames:
                assert await fake.send(frame) == 1
            await wait_received(handle, len(wanted) + len(frames), "okx")
            # A hole: the connection drops; after it the state starts again from nothing.
            (client,) = fake.clients
            await abort(client.conn)
            await fake.wait_connected(2)
            await fake.wait_subscribed(wanted)
            assert await fake.send(mark_price_frame(SWAP, 61005, TS_MS + 20)) == 1
            await wait_received(handle, 2 * len(wanted) + len(frames) + 1, "okx")
            assert await stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    columns = ("symbol", "timestamp_exchange", "sequence", "source", "mark_price", "index_price",
               "funding_rate", "funding_timestamp", "next_funding_timestamp",
               "funding_interval_h", "open_interest", "open_interest_unit",
               "open_interest_value")  # fmt: skip
    funding = (
        0.0001,
        datetime.fromtimestamp((TS_MS + 3_600_000) / 1000, UTC),
        datetime.fromtimestamp((TS_MS + 7_200_000) / 1000, UTC),
        1.0,
    )
    swap = read_rows_us(tmp_path, "okx", "derivative_ticker")
    assert [tuple(r[c] for c in columns) for r in swap if r["symbol"] == SWAP] == [
        (SWAP, (TS_MS + 1) * 1000, None, "mark-price", 61000.5, None, None, None, None, None,
         None, None, None),
        (SWAP, (TS_MS + 2) * 1000, None, "funding-rate", 61000.5, None, *funding, None, None,
         None),
        (SWAP, (TS_MS + 3) * 1000, None, "index-tickers", 61000.5, 60990.0, *funding, None,
         None, None),
        (SWAP, (TS_MS + 4) * 1000, None, "open-interest", 61000.5, 60990.0, *funding, 2000.0,
         "contracts", 1_220_000.0),
        # after the reconnect: the new mark price alone
        (SWAP, (TS_MS + 20) * 1000, None, "mark-price", 61005.0, None, None, None, None, None,
         None, None, None),
    ]  # fmt: skip
    greeks = ("source", "mark_iv", "bid_iv", "ask_iv", "delta", "gamma", "vega", "theta",
              "underlying_price", "underlying_index")  # fmt: skip
    option = read_rows(tmp_path, "okx", OPTION, "derivative_ticker")
    assert [tuple(r[c] for c in greeks) for r in option] == [
        ("opt-summary", 0.4336, 0.43, 0.44, 0.71, 0.0000106, 255.23, -42.78, 112782.12, "BTC-USD")
    ]
    liquidation_columns = ("symbol", "timestamp_exchange", "liquidation_id", "side",
                           "position_side", "price", "price_kind", "size", "size_unit",
                           "loss")  # fmt: skip
    liquidations = read_rows_us(tmp_path, "okx", "liquidations")
    assert [tuple(r[c] for c in liquidation_columns) for r in liquidations] == [
        (SWAP, (TS_MS + 7) * 1000, None, "sell", "long", 60100.5, "bankruptcy", 3.0,
         "contracts", 0.25)
    ]  # fmt: skip
    assert [t["trade_id"] for t in read_rows(tmp_path, "okx", "BTC-USDT", "trades")] == ["9"]
    status = read_rows(tmp_path, "okx", SWAP, "status")
    assert [(s["event"], s["data_type"]) for s in status] == [
        ("connected", None),
        ("subscribed", "derivative_ticker"),
        ("subscribed", "liquidations"),
        ("disconnected", None),
        ("connected", None),
        ("subscribed", "derivative_ticker"),
        ("subscribed", "liquidations"),
        ("disconnected", None),
    ]
