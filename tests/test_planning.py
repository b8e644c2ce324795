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
