"""What a reload applies: the difference of two settings, and the plans it reduces."""

from __future__ import annotations

from typing import Any

from collector.control.changes import diff_settings
from collector.control.controller import _fresh_name, reduce_plan
from collector.exchanges.binance import BinanceAdapter, BinancePlan
from collector.exchanges.bybit import BybitAdapter
from collector.settings_check import parse_settings


def settings(*markets: dict[str, Any], **sections: Any) -> Any:
    return parse_settings({**sections, "markets": list(markets)})


def test_added_and_removed_pairs_by_market() -> None:
    old = settings(
        {"exchange": "binance", "symbols": ["btcusdt", "ethusdt"]},
        {"exchange": "bybit", "category": "linear", "symbols": ["BTCUSDT"]},
    )
    new = settings(
        {"exchange": "binance", "symbols": ["ETHUSDT", "solusdt"]},  # a respelling is no change
        {"exchange": "okx", "symbols": ["BTC-USDT"]},  # a new market, the bybit one gone
    )
    change = diff_settings(old, new)
    assert change.removed == (("binance", "BTCUSDT"), ("bybit-linear", "BTCUSDT"))
    assert [(m.exchange, m.symbols) for m in change.added] == [
        ("binance", ("solusdt",)),
        ("okx", ("BTC-USDT",)),
    ]
    assert change.added_pairs == (("binance", "SOLUSDT"), ("okx", "BTC-USDT"))
    assert change.restart == ()
    assert diff_settings(new, new).applies_nothing


def test_a_pair_whose_market_options_change_is_removed_and_added() -> None:
    old = settings({"exchange": "binance", "symbols": ["btcusdt", "ethusdt"], "feeds": ["trades"]})
    new = settings(
        {"exchange": "binance", "symbols": ["btcusdt"], "feeds": ["trades"]},
        {"exchange": "binance", "symbols": ["ethusdt"], "feeds": ["trades", "ticker"]},
    )
    change = diff_settings(old, new)
    assert change.removed == (("binance", "ETHUSDT"),)
    assert [(m.symbols, m.feeds) for m in change.added] == [(("ethusdt",), ("trades", "ticker"))]


def test_a_per_symbol_large_trade_size_changes_only_its_pair() -> None:
    base = {"exchange": "binance", "symbols": ["btcusdt", "ethusdt"]}
    old = settings({**base, "large_trade_size": {"btcusdt": 1.0, "ethusdt": 10.0}})
    new = settings({**base, "large_trade_size": {"btcusdt": 2.0, "ethusdt": 10.0}})
    change = diff_settings(old, new)
    assert change.removed == (("binance", "BTCUSDT"),)
    assert change.added_pairs == (("binance", "BTCUSDT"),)


def test_other_sections_need_a_restart() -> None:
    market = {"exchange": "binance", "symbols": ["btcusdt"]}
    old = settings(market)
    new = settings(
        market,
        collector={"metrics_port": 9100, "log_level": "debug"},
        storage={"flush_interval_secs": 2.0},
    )
    change = diff_settings(old, new)
    assert change.restart == (
        "collector.log_level",
        "collector.metrics_port",
        "storage.flush_interval_secs",
    )
    assert change.applies_nothing


def test_reduce_plan_keeps_the_streams_of_the_kept_subscriptions() -> None:
    adapter = BinanceAdapter()
    market = settings({"exchange": "binance", "symbols": ["btcusdt", "ethusdt"]}).markets[0]
    [plan] = adapter.plan_connections([market])
    assert isinstance(plan, BinancePlan)
    kept = tuple(s for s in plan.subscriptions if s.symbol == "ETHUSDT")
    reduced = reduce_plan(plan, kept, adapter.wire_names_field)
    assert isinstance(reduced, BinancePlan)
    assert reduced.symbols == ("ETHUSDT",)
    assert reduced.streams == tuple(s for s in plan.streams if s.startswith("ethusdt@"))
    assert (reduced.name, reduced.url, reduced.rest_url) == (plan.name, plan.url, plan.rest_url)


def test_fresh_names_continue_the_runs_numbering() -> None:
    taken = {"binance-0", "binance-1", "binance-usdm-0", "bybit-linear-4"}
    assert _fresh_name("binance-0", taken) == "binance-2"
    assert _fresh_name("binance-usdm-0", taken) == "binance-usdm-1"
    assert _fresh_name("bybit-linear-0", taken) == "bybit-linear-0"
    assert _fresh_name("bybit-linear-4", taken) == "bybit-linear-5"


def test_a_binance_session_changes_its_streams_live() -> None:
    adapter = BinanceAdapter()
    old = settings({"exchange": "binance", "symbols": ["btcusdt", "ethusdt"], "feeds": ["trades"]})
    new = settings({"exchange": "binance", "symbols": ["btcusdt", "solusdt"], "feeds": ["trades"]})
    [plan] = adapter.plan_connections(old.markets)
    [changed] = adapter.plan_connections(new.markets)
    session = adapter.open_session(plan)
    assert session.subscribe(0).send == (
        '{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@trade"],"id":1}',
    )
    events: list[Any] = []
    assert session.receive([b'{"result":null,"id":1}'], 1, events).subscribed

    actions = session.change_plan(changed, 2)
    assert actions.send == (
        '{"method":"UNSUBSCRIBE","params":["ethusdt@trade"],"id":2}',
        '{"method":"SUBSCRIBE","params":["solusdt@trade"],"id":3}',
    )
    assert not actions.subscribed  # SOLUSDT waits for its answer
    assert session.plan is changed
    events = []
    actions = session.receive([b'{"result":null,"id":2}'], 3, events)
    assert events == []
    assert not actions.subscribed
    actions = session.receive([b'{"result":null,"id":3}'], 4, events)
    assert actions.subscribed
    assert [(e.event, e.symbol) for e in events] == [("subscribed", "SOLUSDT")]


def test_a_bybit_session_changes_its_topics_live() -> None:
    adapter = BybitAdapter()
    market = {"exchange": "bybit", "category": "linear", "feeds": ["trades", "ticker"]}
    old = settings({**market, "symbols": ["BTCUSDT", "ETHUSDT"]})
    new = settings({**market, "symbols": ["BTCUSDT", "SOLUSDT"]})
    [plan] = adapter.plan_connections(old.markets)
    [changed] = adapter.plan_connections(new.markets)
    session = adapter.open_session(plan)
    session.subscribe(0)
    events: list[Any] = []
    ack = b'{"success":true,"ret_msg":"","conn_id":"c","req_id":"1","op":"subscribe"}'
    assert session.receive([ack], 1, events).subscribed
    actions = session.change_plan(changed, 2)
    assert actions.send == (
        '{"req_id":"2","op":"unsubscribe","args":["publicTrade.ETHUSDT","tickers.ETHUSDT"]}',
        '{"req_id":"3","op":"subscribe","args":["publicTrade.SOLUSDT","tickers.SOLUSDT"]}',
    )
    events = []
    unsub = b'{"success":true,"ret_msg":"","conn_id":"c","req_id":"2","op":"unsubscribe"}'
    assert not session.receive([unsub], 3, events).subscribed
    sub = b'{"success":true,"ret_msg":"","conn_id":"c","req_id":"3","op":"subscribe"}'
    assert session.receive([sub], 4, events).subscribed
    assert sorted((e.event, e.symbol, e.data_type) for e in events) == [
        ("subscribed", "SOLUSDT", "ticker"),
        ("subscribed", "SOLUSDT", "trades"),
    ]
