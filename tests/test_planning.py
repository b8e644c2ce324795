"""Planning across exchanges: one adapter per configured exchange, in settings order, and
every connection it opens."""

from __future__ import annotations

from collector.planning import describe_connections, plan_service
from collector.settings_check import parse_settings

SETTINGS = parse_settings(
    {
        "markets": [
            {"exchange": "okx", "symbols": ["BTC-USDT"], "feeds": ["trades", "ticker"]},
            {"exchange": "binance", "symbols": ["btcusdt", "ethusdt"], "feeds": ["trades"]},
            {"exchange": "okx", "symbols": ["ETH-USDT"], "feeds": ["trades"]},
        ]
    }
)


def test_one_adapter_per_exchange_in_settings_order() -> None:
    plan = plan_service(SETTINGS)
    assert plan.settings is SETTINGS
    assert [e.adapter.name for e in plan.exchanges] == ["okx", "binance"]
    okx, binance = plan.exchanges
    # Both okx markets share the exchange's connections.
    assert [c.symbols for c in okx.connections] == [("BTC-USDT", "ETH-USDT")]
    assert [c.symbols for c in binance.connections] == [("BTCUSDT", "ETHUSDT")]
    assert plan.connections == (*okx.connections, *binance.connections)


def test_describe_connections_lists_every_planned_connection() -> None:
    assert describe_connections(plan_service(SETTINGS)) == [
        {
            "name": "okx-0",
            "exchange": "okx",
            "url": "wss://ws.okx.com:8443/ws/v5/public",
            "subscriptions": 3,
            "symbols": ["BTC-USDT", "ETH-USDT"],
            "raw": False,
        },
        {
            "name": "binance-0",
            "exchange": "binance",
            "url": "wss://stream.binance.com:9443/stream?timeUnit=MICROSECOND",
            "subscriptions": 2,
            "symbols": ["BTCUSDT", "ETHUSDT"],
            "raw": False,
        },
    ]


def test_the_plan_maps_each_pair_as_the_rows_spell_it_to_its_market() -> None:
    """The files' metadata finds a stream's market options by the rows' own exchange and
    symbol: Bybit's linear market writes ``bybit-linear``, symbols are the venue's spelling."""
    settings = parse_settings(
        {
            "markets": [
                {"exchange": "bybit", "symbols": ["btcusdt"], "category": "linear"},
                {"exchange": "bybit", "symbols": ["BTCUSDT"], "category": "spot"},
                {"exchange": "binance", "symbols": ["ethusdt"], "book_depth": 10},
            ]
        }
    )
    plan = plan_service(settings)
    linear, spot, binance = settings.markets
    assert plan.markets_by_pair() == {
        ("bybit-linear", "BTCUSDT"): linear,
        ("bybit", "BTCUSDT"): spot,
        ("binance", "ETHUSDT"): binance,
    }
    # Not sharded: every pair, as shard 0 of 1.
    assert str(plan.assignment.shard) == "0/1"
    assert plan.assignment.pairs == tuple(sorted(plan.markets_by_pair()))
    assert plan.assignment.configured == 3


def test_open_files_counts_every_stream_and_status_file_of_the_plan() -> None:
    """The writer keeps room for this many retired files: every file of an hourly
    rotation at once (docs/design.md)."""
    from collector.service import open_files

    settings = parse_settings(
        {
            "markets": [
                {
                    "exchange": "binance",
                    "symbols": [f"S{i:04d}USDT" for i in range(400)],
                    "feeds": ["trades", "ticker", "orderbook"],
                    "book_mode": "diff",
                }
            ]
        }
    )
    plan = plan_service(settings)
    assert len(plan.connections) == 2  # 1,200 streams: more than one connection takes
    assert open_files(plan) == 400 * 3 + 400
