"""The session contract (sans-IO): each call of its one owner returns what it wants done.

Driven with the real Binance session; what is asserted here is the base contract that the
connection task relies on (``Session.subscribe``/``receive``/``receive_snapshot`` and
``Actions``), not Binance's own rules (see test_binance_parse and test_binance_book_sync).
"""

from __future__ import annotations

import json

import pytest

from collector.config import MarketSettings
from collector.events import Event, Status, Trade
from collector.exchanges.base import Actions, Discarded, ParseError, Session, SnapshotRequest
from collector.exchanges.binance import BinanceAdapter
from tests.fakes.binance import depth_diff_frame, server_shutdown_frame, trade_frame

NOW = 1_700_000_000_000_000
ACK = b'{"result":null,"id":1}'


def open_session(*symbols: str, **options: object) -> Session:
    market = MarketSettings(exchange="binance", symbols=symbols, **options)  # type: ignore[arg-type]
    [plan] = BinanceAdapter().plan_connections([market])
    return BinanceAdapter().open_session(plan)


def trade(trade_id: int) -> bytes:
    return trade_frame("btcusdt", trade_id, 100.0, 1.0, NOW, False).encode()


def test_subscribe_returns_the_subscribe_frames() -> None:
    session = open_session("btcusdt", feeds=("trades", "ticker"))
    actions = session.subscribe(NOW)
    assert [json.loads(f)["params"] for f in actions.send] == [
        ["btcusdt@trade", "btcusdt@bookTicker"]
    ]
    assert (actions.errors, actions.fetch, actions.reconnect) == ((), (), None)
    assert not actions.subscribed
    assert session.pending_subscriptions == 2


def test_a_read_returns_what_it_asked_for_once() -> None:
    session = open_session("btcusdt", feeds=("trades",))
    session.subscribe(NOW)
    events: list[Event] = []
    quiet = session.receive([trade(1)], NOW, events)
    assert quiet == Actions()  # data only: nothing to do, not subscribed yet
    acked = session.receive([ACK], NOW, events)
    assert acked == Actions(subscribed=True)  # a "subscribed" row is nothing to act on
    # A gap among good frames: its row is in the events and in ``statuses``, once.
    gap = session.receive([trade(2), trade(5), b"not json"], NOW, events)
    assert [type(e) for e in events] == [Trade, Status, Trade, Status, Trade]
    assert gap.statuses == (events[3],)
    assert isinstance(events[3], Status)
    assert events[3].event == "gap"
    assert [type(e) for e in gap.errors] == [ParseError]
    assert gap.subscribed
    assert session.receive([trade(6)], NOW, events) == Actions(subscribed=True)


def test_frames_to_send_and_a_reconnect_come_with_the_read_that_asked() -> None:
    session = open_session("btcusdt")  # three streams in one request
    session.subscribe(NOW)
    refused = b'{"code":2,"msg":"Invalid request: invalid stream","id":1}'
    actions = session.receive([refused], NOW, [])
    assert [json.loads(f)["id"] for f in actions.send] == [2, 3]  # bisected, sent again
    assert session.receive([trade(1)], NOW, []).send == ()
    shutdown = session.receive([server_shutdown_frame(NOW).encode()], NOW, [])
    assert shutdown.reconnect == "binance serverShutdown notice"


def test_snapshot_requests_and_bodies_go_through_results() -> None:
    session = open_session("btcusdt", feeds=("orderbook",), book_mode="diff")
    session.subscribe(NOW)
    (request,) = session.receive([ACK], NOW, []).fetch
    assert isinstance(request, SnapshotRequest)
    assert request.symbol == "BTCUSDT"
    events: list[Event] = []
    unreadable = session.receive_snapshot(request, b"<html>busy</html>", NOW + 1, events)
    assert events == []
    assert [type(e) for e in unreadable.errors] == [ParseError]
    assert unreadable.fetch == (request,)  # asked for again
    body = b'{"lastUpdateId":105,"bids":[["100.0","5.0"]],"asks":[]}'
    applied = session.receive_snapshot(request, body, NOW + 2, events)
    assert applied == Actions(subscribed=True)
    assert [e.timestamp_collector for e in events] == [NOW + 2, NOW + 2]  # the body's time
    frame = depth_diff_frame("btcusdt", 106, 110, [], [], NOW).encode()
    assert session.receive([frame], NOW + 3, events) == Actions(subscribed=True)


def test_discards_come_with_the_read_that_made_them_once() -> None:
    session = open_session("btcusdt", feeds=("trades", "orderbook"), book_mode="diff")
    session.subscribe(NOW)
    events: list[Event] = []
    depth = depth_diff_frame("btcusdt", 100, 110, [], [], NOW).encode()
    assert session.receive([trade(1), trade(2), depth], NOW, events) == Actions()
    late = depth_diff_frame("btcusdt", 105, 108, [], [], NOW).encode()  # u below 110
    actions = session.receive([trade(2), trade(1), late, trade(3)], NOW, events)
    assert actions == Actions(
        discarded=(
            Discarded("BTCUSDT", "trades", "duplicate", 2),
            Discarded("BTCUSDT", "orderbook", "stale", 1),
        )
    )
    assert [e.sequence for e in events if isinstance(e, Trade)] == [1, 2, 3]
    # Handed over once: the next quiet read is the shared constant again.
    assert session.receive([trade(4)], NOW, events) is session.receive([trade(5)], NOW, events)
    assert session.receive([trade(6)], NOW, events).discarded == ()


def test_no_public_state_for_the_caller_to_poll_or_clear() -> None:
    session = open_session("btcusdt")
    for name in (
        "outgoing",
        "snapshot_requests",
        "reconnect_reason",
        "status_rows",
        "duplicates_dropped",
        "discarded",
    ):
        assert not hasattr(session, name)
    with pytest.raises(AttributeError):
        session.pending_subscriptions = 0  # type: ignore[misc]
