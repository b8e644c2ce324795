"""Bybit adapter without sockets: recorded frames, hand-made edge cases, planning, symbols."""

from __future__ import annotations

import zipfile
from typing import Any

import msgspec
import pytest

from collector.config import MarketSettings
from collector.events import (
    BookUpdate,
    DerivativeTicker,
    Event,
    Liquidation,
    Status,
    Ticker,
    Trade,
    level_pairs,
    levels_from_pairs,
)
from collector.exchanges.base import ConnectionPlan, ParseError, Subscription
from collector.exchanges.bybit import BybitAdapter, BybitSession
from tests.fakes.bybit import (
    book_frame,
    liquidation_frame,
    option_ticker_frame,
    option_trade_frame,
    ticker_frame,
    trade_frame,
)
from tests.samples import read_f2, read_fixture, require_sample
from tests.session_helpers import asked, discarded, feed

NOW = 1_760_000_000_000_000
T_MS = 1_759_999_999_123


# The exchange of a linear market's rows (tests default to linear): BTCUSDT is also spot.
LINEAR = "bybit-linear"


def market(*symbols: str, category: str | None = "linear", **kwargs: Any) -> MarketSettings:
    return MarketSettings(exchange="bybit", symbols=symbols, category=category, **kwargs)


def open_session(*symbols: str, **kwargs: Any) -> BybitSession:
    adapter = BybitAdapter()
    (plan,) = adapter.plan_connections([market(*symbols, **kwargs)])
    return adapter.open_session(plan)


def parse(session: BybitSession, frame: str | bytes | dict[str, Any]) -> list[Event]:
    if isinstance(frame, dict):
        frame = msgspec.json.encode(frame)
    return feed(session, frame, NOW)


def status(event: Any, symbol: str, data_type: str | None, **kw: Any) -> Status:
    return Status(
        LINEAR,
        symbol,
        None,
        NOW,
        None,
        event,
        data_type,
        kw.get("expected"),
        kw.get("received"),
        kw.get("count"),
        kw.get("detail"),
    )


def answer(req_id: str, ok: bool, msg: str = "", op: str = "subscribe") -> dict[str, Any]:
    return {"success": ok, "ret_msg": msg, "conn_id": "c", "req_id": req_id, "op": op}


# --------------------------------------------------------------------------- recorded traffic


@pytest.mark.parametrize(
    ("conn", "category", "symbols", "counts"),
    [
        ("BYBIT.ws.2", "linear", ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"), (1598, 758, 327)),
        ("BYBIT.ws.3", "spot", ("BTCUSDT", "ETHUSDT"), (550, 81, 20)),
    ],
)
def test_replay_recorded_capture(
    conn: str, category: str, symbols: tuple[str, ...], counts: tuple[int, int, int]
) -> None:
    """cryptofeed's 2026 v5 capture: orderbook.200, publicTrade, tickers (+ kline, ignored)."""
    capture = read_f2(require_sample("cryptofeed-v3/BYBIT.jsonl.zst"))
    session = open_session(*symbols, category=category, book_depth=200)
    session.subscribe_frames(0)
    events: list[Event] = []
    for record in capture.received(conn):
        events.extend(feed(session, record.payload, record.received_us))
    assert session.pending_subscriptions == 0  # acks without req_id matched in order
    assert asked(session).send == []  # every delta's u follows the previous one: no gap
    assert discarded(session) == {}
    books = [e for e in events if isinstance(e, BookUpdate)]
    tickers = [e for e in events if isinstance(e, Ticker)]
    trades = [e for e in events if isinstance(e, Trade)]
    assert (len(books), len(tickers), len(trades)) == counts
    assert [e.event for e in events if isinstance(e, Status)] == ["subscribed"] * len(symbols) * 3
    assert all(t.side in ("buy", "sell") for t in trades)
    for symbol in symbols:
        us = [b.sequence or 0 for b in books if b.symbol == symbol]
        assert us == list(range(us[0], us[0] + len(us)))
    if category == "linear":
        # the first recorded linear trade, field by field (T ms -> us, S = taker side)
        assert trades[0] == Trade(
            "bybit-linear",  # the linear category's own exchange name: BTCUSDT is also spot
            "BTCUSDT",
            1786310819680000,
            trades[0].timestamp_collector,
            753843954913,
            "a9188a0a-82bc-50de-be60-03eedbe3cdd7",
            65114.2,
            0.004,
            "sell",
        )
        # the second BTC ticker is a delta of bid/ask only: merged onto the snapshot
        btc = [t for t in tickers if t.symbol == "BTCUSDT"]
        assert (btc[0].bid_size, btc[0].last_price, btc[0].volume_24h) == (
            5.954,
            65114.3,
            17573.912,
        )
        assert (btc[1].bid_size, btc[1].ask_size) == (6.054, 10.486)
        assert (btc[1].last_price, btc[1].volume_24h) == (65114.3, 17573.912)
        assert btc[1].sequence == 753843907770
        assert btc[1].timestamp_exchange == 1786310817883000
        assert all(t.bid_price is not None and t.volume_24h is not None for t in tickers)
    else:
        # spot tickers carry no best bid/ask
        assert all(t.bid_price is None and t.last_price is not None for t in tickers)
        first_delta = next(b for b in books if b.kind == "delta")
        assert first_delta == BookUpdate(
            "bybit",
            "BTCUSDT",
            1786310816585000,
            first_delta.timestamp_collector,
            62505425,
            "delta",
            62505425,
            None,
            levels_from_pairs([(65140.4, 0.875077)]),
            levels_from_pairs(
                [(65154.6, 0.09948), (65154.7, 0.123013), (65239.0, 0.155135), (65239.1, 0.0)]
            ),
        )


def test_replay_ob500_dump_is_continuous() -> None:
    """nautilus' orderbook.500 XRPUSDT dump: 1 snapshot then 49 consecutive deltas."""
    path = require_sample("nautilus_trader/bybit/xrpusdt-ob500.data.zip")
    with zipfile.ZipFile(path) as archive:
        lines = archive.read(archive.namelist()[0]).splitlines()
    plan = ConnectionPlan("bybit", "bybit-x", "ws://h", (Subscription("XRPUSDT", "orderbook"),))
    session = BybitAdapter().open_session(plan)
    events = [e for line in lines if line.strip() for e in feed(session, line, NOW)]
    assert [type(e) for e in events] == [BookUpdate] * 50
    assert asked(session).send == []
    first = events[0]
    assert isinstance(first, BookUpdate)
    assert (
        first.kind,
        first.sequence,
        len(level_pairs(first.bids)),
        len(level_pairs(first.asks)),
    ) == (
        "snapshot",
        20254869,
        500,
        500,
    )


def test_recorded_fixtures() -> None:
    session = open_session("BTCUSDT", book_depth=1)
    snap = read_fixture("nautilus_trader/ws_fixtures/bybit/test_data/ws_orderbook_snapshot.json")
    assert parse(session, snap) == [
        BookUpdate(
            LINEAR,
            "BTCUSDT",
            1709891679000000,
            NOW,
            123456789,
            "snapshot",
            123456789,
            None,
            levels_from_pairs([(27450.0, 0.5), (27449.5, 1.0)]),
            levels_from_pairs([(27451.0, 0.75), (27451.5, 0.9)]),
        )
    ]


def test_parse_symbols_from_the_recorded_answers() -> None:
    capture = read_f2(require_sample("cryptofeed-v3/BYBIT.jsonl.zst"))
    spot = BybitAdapter.parse_symbols(next(capture.http("category=spot")).payload)
    linear = BybitAdapter.parse_symbols(next(capture.http("category=linear")).payload)
    assert "BTCUSDT" in spot
    assert "BTCUSDT" in linear
    assert spot == sorted(spot)
    assert all(BybitAdapter.normalize_symbol(s) == s for s in spot)
    assert BybitAdapter.symbols_url() == (
        "https://api.bybit.com/v5/market/instruments-info?category=spot"
    )
    with pytest.raises(ParseError, match="retCode 10001"):
        BybitAdapter.parse_symbols(b'{"retCode":10001,"retMsg":"bad","result":{}}')
    with pytest.raises(ParseError):
        BybitAdapter.parse_symbols(b"nope")


# --------------------------------------------------------------------------- message types


def test_trade_fields_and_side() -> None:
    session = open_session("BTCUSDT")
    assert parse(session, trade_frame("BTCUSDT", "id-1", "65114.20", "0.004", "Buy", T_MS, 9)) == [
        Trade(LINEAR, "BTCUSDT", T_MS * 1000, NOW, 9, "id-1", 65114.2, 0.004, "buy")
    ]


def test_book_continuity_stale_gap_and_resync() -> None:
    session = open_session("BTCUSDT", feeds=("orderbook",))
    session.subscribe_frames(NOW)
    assert len(parse(session, answer("1", True))) == 1
    (snap,) = parse(session, book_frame("BTCUSDT", "snapshot", [(1, 2)], [(3, 4)], 100, T_MS))
    assert snap == BookUpdate(
        LINEAR,
        "BTCUSDT",
        (T_MS - 2) * 1000,
        NOW,
        100,
        "snapshot",
        100,
        None,
        levels_from_pairs([(1.0, 2.0)]),
        levels_from_pairs([(3.0, 4.0)]),
    )
    assert len(parse(session, book_frame("BTCUSDT", "delta", [(1, 0)], [], 101, T_MS))) == 1
    # stale / duplicate u: dropped
    assert parse(session, book_frame("BTCUSDT", "delta", [(1, 5)], [], 101, T_MS)) == []
    assert parse(session, book_frame("BTCUSDT", "delta", [(1, 5)], [], 90, T_MS)) == []
    assert discarded(session) == {("BTCUSDT", "orderbook", "stale"): 2}
    # a gap: row, delta still written, resubscription
    events = parse(session, book_frame("BTCUSDT", "delta", [(2, 1)], [], 105, T_MS))
    assert events[0] == status(
        "gap", "BTCUSDT", "orderbook", expected=102, received=105, count=3,
        detail="u is not the previous u + 1",
    )  # fmt: skip
    assert isinstance(events[1], BookUpdate)
    requests = [msgspec.json.decode(f) for f in asked(session).send]
    assert [(r["op"], r["args"]) for r in requests] == [
        ("unsubscribe", ["orderbook.50.BTCUSDT"]),
        ("subscribe", ["orderbook.50.BTCUSDT"]),
    ]
    asked(session).send.clear()
    # deltas while waiting: written, no more gap rows
    assert len(parse(session, book_frame("BTCUSDT", "delta", [], [], 110, T_MS))) == 1
    assert parse(session, answer(requests[0]["req_id"], True, op="unsubscribe")) == []
    assert parse(session, answer(requests[1]["req_id"], True)) == []
    events = parse(session, book_frame("BTCUSDT", "snapshot", [(5, 5)], [], 200, T_MS))
    assert events[0] == status(
        "resync", "BTCUSDT", "orderbook", received=200,
        detail="fresh snapshot after resubscribing, u=200",
    )  # fmt: skip
    assert len(parse(session, book_frame("BTCUSDT", "delta", [], [], 201, T_MS))) == 1
    # an unasked snapshot replaces the book (u=1: the venue restarted)
    events = parse(session, book_frame("BTCUSDT", "snapshot", [(6, 6)], [], 1, T_MS))
    assert events[0] == status(
        "resync", "BTCUSDT", "orderbook", expected=201, received=1,
        detail="snapshot with u=1: the venue restarted",
    )  # fmt: skip
    assert len(parse(session, book_frame("BTCUSDT", "delta", [], [], 2, T_MS))) == 1
    assert asked(session).send == []


def test_delta_before_snapshot_and_u_1_delta_are_gaps() -> None:
    session = open_session("BTCUSDT", feeds=("orderbook",))
    events = parse(session, book_frame("BTCUSDT", "delta", [], [], 7, T_MS))
    assert events[0] == status(
        "gap", "BTCUSDT", "orderbook", received=7, detail="delta before any snapshot"
    )
    session = open_session("BTCUSDT", feeds=("orderbook",))
    parse(session, book_frame("BTCUSDT", "snapshot", [], [], 50, T_MS))
    events = parse(session, book_frame("BTCUSDT", "delta", [], [], 1, T_MS))
    assert events[0] == status(
        "gap", "BTCUSDT", "orderbook", expected=51, received=1,
        detail="delta with u=1: the venue restarted",
    )  # fmt: skip


def test_depth_1_is_snapshots_only_without_resync_rows() -> None:
    session = open_session("BTCUSDT", feeds=("orderbook",), book_depth=1)
    for u in (5, 5, 6):
        (event,) = parse(session, book_frame("BTCUSDT", "snapshot", [], [], u, T_MS, depth=1))
        assert isinstance(event, BookUpdate)
        assert event.kind == "snapshot"


def test_ticker_delta_merges_onto_the_last_full_ticker() -> None:
    session = open_session("BTCUSDT", feeds=("ticker",))
    full = {
        "lastPrice": "100.5",
        "bid1Price": "100.4",
        "bid1Size": "1",
        "ask1Price": "100.6",
        "ask1Size": "2",
        "volume24h": "999",
        "markPrice": "100.5",
    }
    assert parse(session, ticker_frame("BTCUSDT", "snapshot", full, T_MS, 7)) == [
        Ticker(LINEAR, "BTCUSDT", T_MS * 1000, NOW, 7, 100.4, 1.0, 100.6, 2.0, 100.5, 999.0)
    ]
    delta = {"bid1Size": "3", "markPrice": "1"}
    assert parse(session, ticker_frame("BTCUSDT", "delta", delta, T_MS + 1, 8)) == [
        Ticker(LINEAR, "BTCUSDT", (T_MS + 1) * 1000, NOW, 8, 100.4, 3.0, 100.6, 2.0, 100.5, 999.0)
    ]
    # a new snapshot replaces everything
    assert parse(session, ticker_frame("BTCUSDT", "snapshot", {"lastPrice": "1"}, T_MS, 9)) == [
        Ticker(LINEAR, "BTCUSDT", T_MS * 1000, NOW, 9, None, None, None, None, 1.0, None)
    ]


def test_ticker_delta_before_any_snapshot_is_a_gap_and_the_topic_resubscribed() -> None:
    """The fields a first delta lacks are unknown, not null: no row until a snapshot."""
    session = open_session("ETHUSDT", feeds=("ticker", "derivatives"))
    session.subscribe_frames(0)
    assert parse(session, ticker_frame("ETHUSDT", "delta", {"ask1Price": "5"}, T_MS, 1)) == [
        Status(
            LINEAR,
            "ETHUSDT",
            T_MS * 1000,
            NOW,
            None,
            "gap",
            data_type,
            detail="tickers delta before any snapshot: resubscribing for one",
        )
        for data_type in ("ticker", "derivative_ticker")
    ]
    assert [(m["op"], m["args"]) for m in map(msgspec.json.decode, asked(session).send)] == [
        ("unsubscribe", ["tickers.ETHUSDT"]),
        ("subscribe", ["tickers.ETHUSDT"]),
    ]
    # more deltas before the snapshot: dropped and counted, not asked again
    assert parse(session, ticker_frame("ETHUSDT", "delta", {"markPrice": "6"}, T_MS, 2)) == []
    assert discarded(session) == {
        ("ETHUSDT", "ticker", "while_resyncing"): 1,
        ("ETHUSDT", "derivative_ticker", "while_resyncing"): 1,
    }
    assert len(asked(session).send) == 2
    snapshot = {"lastPrice": "7", "markPrice": "7.1"}
    rows = parse(session, ticker_frame("ETHUSDT", "snapshot", snapshot, T_MS + 5, 3))
    assert [type(row) for row in rows] == [Ticker, DerivativeTicker]
    assert [type(row) for row in parse(
        session, ticker_frame("ETHUSDT", "delta", {"markPrice": "8"}, T_MS + 6, 4)
    )] == [Ticker, DerivativeTicker]  # fmt: skip


# --------------------------------------------------------------------------- derivatives


def derivative(exchange: str, ts_ms: int, cs: int, **values: Any) -> DerivativeTicker:
    return DerivativeTicker(exchange, "BTCUSDT", ts_ms * 1000, NOW, cs, "tickers", **values)


def test_replay_recorded_linear_tickers_as_derivative_rows() -> None:
    """The 2026 linear capture: a row per message carrying a derivative field, merged."""
    capture = read_f2(require_sample("cryptofeed-v3/BYBIT.jsonl.zst"))
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")
    session = open_session(*symbols, feeds=("derivatives",))
    session.subscribe_frames(0)
    events: list[Event] = []
    for record in capture.received("BYBIT.ws.2"):
        events.extend(feed(session, record.payload, record.received_us))
    rows = [e for e in events if isinstance(e, DerivativeTicker)]
    assert len(rows) == 192  # of 758 tickers messages: most are bid/ask-only deltas
    assert [e for e in events if isinstance(e, Ticker)] == []
    assert asked(session).send == []
    btc = [r for r in rows if r.symbol == "BTCUSDT"]
    first = derivative(
        LINEAR,
        1786310817583,
        753843900397,
        last_price=65114.3,
        mark_price=65117.44,
        index_price=65137.76,
        funding_rate=0.0001,
        funding_timestamp=1786320000000000,
        funding_interval_h=8.0,
        open_interest=59891.732,
        open_interest_unit="base",
        open_interest_value=3899996265.01,
    )
    assert btc[0] == msgspec.structs.replace(first, timestamp_collector=btc[0].timestamp_collector)
    # the next row is a delta of markPrice and openInterestValue (its bid/ask-only delta
    # before it wrote none): the rest is the snapshot's
    assert btc[1] == msgspec.structs.replace(
        first,
        timestamp_exchange=1786310818183000,
        timestamp_collector=btc[1].timestamp_collector,
        sequence=753843915209,
        mark_price=65117.43,
        open_interest_value=3899995666.09,
    )
    assert all(r.mark_price and r.index_price and r.open_interest for r in rows)


def test_derivative_rows_merge_deltas_and_a_snapshot_replaces_the_state() -> None:
    session = open_session("BTCUSDT", feeds=("derivatives",))
    full = {"lastPrice": "100", "markPrice": "100.5", "indexPrice": "100.4",
            "fundingRate": "-0.0002", "nextFundingTime": "1760342400000",
            "fundingIntervalHour": "4", "openInterest": "12.5", "openInterestValue": "1256.25",
            "bid1Price": "99.9"}  # fmt: skip
    values: dict[str, Any] = {
        "last_price": 100.0,
        "mark_price": 100.5,
        "index_price": 100.4,
        "funding_rate": -0.0002,
        "funding_timestamp": 1760342400000000,
        "funding_interval_h": 4.0,
        "open_interest": 12.5,
        "open_interest_unit": "base",
        "open_interest_value": 1256.25,
    }
    assert parse(session, ticker_frame("BTCUSDT", "snapshot", full, T_MS, 1)) == [
        derivative(LINEAR, T_MS, 1, **values)
    ]
    assert parse(session, ticker_frame("BTCUSDT", "delta", {"bid1Price": "99"}, T_MS, 2)) == []
    delta = {"openInterest": "13", "fundingRate": "0.0001"}
    assert parse(session, ticker_frame("BTCUSDT", "delta", delta, T_MS + 1, 3)) == [
        derivative(LINEAR, T_MS + 1, 3, **{**values, "open_interest": 13.0,
                                            "funding_rate": 0.0001})
    ]  # fmt: skip
    # a dated future: funding fields empty, a predicted delivery price
    future = {"markPrice": "101", "fundingRate": "", "nextFundingTime": "",
              "predictedDeliveryPrice": "100.9"}  # fmt: skip
    assert parse(session, ticker_frame("BTCUSDT", "snapshot", future, T_MS + 2, 4)) == [
        derivative(LINEAR, T_MS + 2, 4, mark_price=101.0, estimated_settlement_price=100.9)
    ]


def test_inverse_open_interest_and_liquidations_are_in_usd() -> None:
    session = open_session("BTCUSD", category="inverse", feeds=("derivatives", "liquidations"))
    assert session.plan.exchange == "bybit-inverse"
    assert session.plan.url == "wss://stream.bybit.com/v5/public/inverse"
    fields = {"markPrice": "65000", "openInterest": "450000000", "openInterestValue": "6923.08"}
    (row,) = parse(session, ticker_frame("BTCUSD", "snapshot", fields, T_MS, 5))
    assert row == DerivativeTicker(
        "bybit-inverse",
        "BTCUSD",
        T_MS * 1000,
        NOW,
        5,
        "tickers",
        mark_price=65000.0,
        open_interest=450000000.0,
        open_interest_unit="usd",
        open_interest_value=6923.08,
    )
    frame = liquidation_frame("BTCUSD", [(T_MS, "Sell", "15000", "64000.5")])
    assert parse(session, frame) == [
        Liquidation("bybit-inverse", "BTCUSD", T_MS * 1000, NOW, None, None, "buy", "short",
                    64000.5, "bankruptcy", 15000.0, "usd")
    ]  # fmt: skip


def test_liquidations_invert_the_position_side() -> None:
    """``S`` = the liquidated position: ``Buy`` is a long, closed by a sell order."""
    session = open_session("ROSEUSDT", feeds=("liquidations",))
    frame = liquidation_frame(
        "ROSEUSDT", [(T_MS, "Buy", "20000", "0.04499"), (T_MS + 3, "Sell", "10", "0.05")]
    )
    assert parse(session, frame) == [
        Liquidation(LINEAR, "ROSEUSDT", T_MS * 1000, NOW, None, None, "sell", "long", 0.04499,
                    "bankruptcy", 20000.0, "base"),
        Liquidation(LINEAR, "ROSEUSDT", (T_MS + 3) * 1000, NOW, None, None, "buy", "short",
                    0.05, "bankruptcy", 10.0, "base"),
    ]  # fmt: skip


def test_ticker_and_derivatives_share_one_topic() -> None:
    session = open_session("BTCUSDT", feeds=("ticker", "derivatives", "liquidations"))
    (frame,) = session.subscribe_frames(0)
    assert msgspec.json.decode(frame)["args"] == ["tickers.BTCUSDT", "allLiquidation.BTCUSDT"]
    assert session.pending_subscriptions == 3
    acked = parse(session, answer("1", True))
    assert [(s.event, s.data_type) for s in acked if isinstance(s, Status)] == [
        ("subscribed", "ticker"),
        ("subscribed", "derivative_ticker"),
        ("subscribed", "liquidations"),
    ]
    assert session.pending_subscriptions == 0
    snapshot = {"lastPrice": "1", "bid1Price": "0.9", "markPrice": "1.1"}
    ticker, row = parse(session, ticker_frame("BTCUSDT", "snapshot", snapshot, T_MS, 1))
    assert ticker == Ticker(LINEAR, "BTCUSDT", T_MS * 1000, NOW, 1, 0.9, None, None, None, 1.0,
                            None)  # fmt: skip
    assert row == derivative(LINEAR, T_MS, 1, last_price=1.0, mark_price=1.1)
    # a bid/ask delta: a ticker row only
    (only,) = parse(session, ticker_frame("BTCUSDT", "delta", {"bid1Price": "0.8"}, T_MS, 2))
    assert isinstance(only, Ticker)


def test_a_refused_tickers_topic_refuses_both_of_its_feeds() -> None:
    session = open_session("BTCUSDT", feeds=("ticker", "derivatives"))
    session.subscribe_frames(0)
    message = "error:handler not found,topic:tickers.BTCUSDT"
    refused = parse(session, answer("1", False, message))
    assert [(s.event, s.data_type) for s in refused if isinstance(s, Status)] == [
        ("subscribe_error", "ticker"),
        ("subscribe_error", "derivative_ticker"),
    ]
    assert session.pending_subscriptions == 0


# --------------------------------------------------------------------------- control frames


def test_keepalive_ping_and_pongs() -> None:
    session = open_session("BTCUSDT")
    assert BybitAdapter.keepalive_interval_secs == 20.0
    session.subscribe_frames(NOW)
    pings = [msgspec.json.decode(BybitAdapter().keepalive_frame(n)) for n in (1, 2)]
    # A fresh id each, never a request id (those are bare numbers: "1", "2", ...).
    assert pings == [{"req_id": "ping-1", "op": "ping"}, {"req_id": "ping-2", "op": "ping"}]
    spot_pong = {"success": True, "ret_msg": "pong", "conn_id": "c", "op": "ping"}
    assert parse(session, spot_pong) == []
    linear_pong = {**spot_pong, "ret_msg": "", "req_id": "ping-1"}
    assert parse(session, linear_pong) == []
    assert parse(session, {"args": ["1672916271846"], "op": "pong"}) == []
    assert asked(session).send == []


def test_subscribe_frames_hold_at_most_10_args() -> None:
    session = open_session(*[f"C{i}USDT" for i in range(7)])
    frames = [msgspec.json.decode(f) for f in session.subscribe_frames(NOW)]
    assert [len(f["args"]) for f in frames] == [10, 10, 1]
    assert frames[0]["args"][:3] == ["publicTrade.C0USDT", "orderbook.50.C0USDT", "tickers.C0USDT"]
    assert [f["req_id"] for f in frames] == ["1", "2", "3"]
    assert session.pending_subscriptions == 21


def test_acks_with_and_without_req_id() -> None:
    session = open_session("BTCUSDT", "ETHUSDT", feeds=("trades",))
    session.subscribe_frames(NOW)
    # spot's ack has no req_id when none was sent: answered in order
    events = parse(
        session, {"success": True, "ret_msg": "subscribe", "conn_id": "c", "op": "subscribe"}
    )
    assert events == [
        status("subscribed", "BTCUSDT", "trades"),
        status("subscribed", "ETHUSDT", "trades"),
    ]
    assert session.pending_subscriptions == 0


def test_refusal_naming_a_topic_resends_the_others() -> None:
    session = open_session("BTCUSDT", "NOPEUSDT", feeds=("trades",))
    session.subscribe_frames(NOW)
    msg = "error:handler not found,topic:publicTrade.NOPEUSDT"
    assert parse(session, answer("1", False, msg)) == [
        status("subscribe_error", "NOPEUSDT", "trades", detail=f"publicTrade.NOPEUSDT: {msg}")
    ]
    (resend,) = [msgspec.json.decode(f) for f in asked(session).send]
    assert resend["args"] == ["publicTrade.BTCUSDT"]
    assert session.pending_subscriptions == 1
    # had the venue subscribed it after all, it says so: still a success
    already = "error:already subscribed,topic:publicTrade.BTCUSDT"
    assert parse(session, answer(resend["req_id"], False, already)) == [
        status("subscribed", "BTCUSDT", "trades")
    ]
    assert session.pending_subscriptions == 0
    assert session.rejected == [Subscription("NOPEUSDT", "trades")]


def test_refusal_naming_nothing_is_bisected() -> None:
    session = open_session("AUSDT", "BUSDT", "CUSDT", feeds=("trades",))
    session.subscribe_frames(NOW)
    assert parse(session, answer("1", False, "error:unknown")) == []
    halves = [msgspec.json.decode(f) for f in asked(session).send]
    assert [h["args"] for h in halves] == [
        ["publicTrade.AUSDT"],
        ["publicTrade.BUSDT", "publicTrade.CUSDT"],
    ]
    asked(session).send.clear()
    assert parse(session, answer(halves[0]["req_id"], False, "error:unknown")) == [
        status("subscribe_error", "AUSDT", "trades", detail="publicTrade.AUSDT: error:unknown")
    ]
    assert len(parse(session, answer(halves[1]["req_id"], True))) == 2
    assert session.pending_subscriptions == 0


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"[]", b'{"foo":1}', b'{"topic":"publicTrade.BTCUSDT","type":"snapshot"}',
     b'{"topic":"publicTrade.BTCUSDT","data":[{"T":"x"}]}',
     b'{"topic":"orderbook.50.BTCUSDT","type":"delta","data":{"s":"BTCUSDT","b":[],"a":[]}}'],
)  # fmt: skip
def test_garbage_raises_parse_error(payload: bytes) -> None:
    with pytest.raises(ParseError):
        open_session("BTCUSDT").parse(payload, NOW)


def test_unknown_topics_are_ignored() -> None:
    frame = b'{"topic":"kline.1.BTCUSDT","type":"snapshot","ts":1,"data":[{"start":1}]}'
    assert open_session("BTCUSDT").parse(frame, NOW) == []


# --------------------------------------------------------------------------- adapter


@pytest.mark.parametrize(
    ("given", "expected"),
    [("BTCUSDT", "BTCUSDT"), ("btcusdt", "BTCUSDT"), ("1000PEPEUSDT", "1000PEPEUSDT"),
     ("BTC-26DEC25", "BTC-26DEC25"), ("btc-27dec24-100000-c", "BTC-27DEC24-100000-C"),
     ("BTC-25DEC26-60000-C-USDT", "BTC-25DEC26-60000-C-USDT"),
     ("XRP-3JAN26-2.5-P-USDT", "XRP-3JAN26-2.5-P-USDT")],
)  # fmt: skip
def test_normalize_symbol(given: str, expected: str) -> None:
    assert BybitAdapter.normalize_symbol(given) == expected


@pytest.mark.parametrize(
    "bad", ["BTC-USDT", "BTC/USDT", "B", "", "BTC_USDT", "BTC-27DEC24-100000-X", "BTC-27DEC24-C"]
)
def test_normalize_symbol_rejects_other_formats(bad: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 'BTCUSDT'"):
        BybitAdapter.normalize_symbol(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"category": None},
      "needs category 'spot', 'linear', 'inverse' or 'option' \\(got nothing\\)"),
     ({"category": "spread"}, "got 'spread'"), ({"book_mode": "diff"}, "no book_mode"),
     ({"category": "spot", "feeds": ("trades", "derivatives")},
      "^bybit category 'spot' has no derivatives feed \\(mark/index price, funding, open "
      "interest, option greeks\\); category 'linear', 'inverse' or 'option' has$"),
     ({"category": "spot", "feeds": ("liquidations",)},
      "^bybit category 'spot' has no liquidations feed"),
     ({"category": "option", "feeds": ("liquidations",)},
      "^bybit category 'option' has no liquidations feed .*; category 'linear' or 'inverse' has$"),
     ({"category": "option", "book_depth": 50},
      "^bybit category 'option' book_depth must be 25 or 100 \\(got 50\\)$"),
     ({"category": "option", "book_mode": "diff"}, "no book_mode"),
     ({"book_depth": 25}, "1, 50, 200 or 1000"), ({"rest_url": "ftp://x"}, "rest_url must start with http")],
)  # fmt: skip
def test_check_market_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BybitAdapter.check_market(market("BTCUSDT", **kwargs))


def test_plan_one_category_per_connection_and_split_at_200_topics() -> None:
    adapter = BybitAdapter()
    symbols = [f"C{i}USDT" for i in range(70)]
    plans = adapter.plan_connections(
        [market(*symbols, category="linear"), market("BTCUSDT", category="spot", book_depth=200)]
    )
    assert [(p.name, p.url, len(p.subscriptions)) for p in plans] == [
        ("bybit-linear-0", "wss://stream.bybit.com/v5/public/linear", 198),
        ("bybit-linear-1", "wss://stream.bybit.com/v5/public/linear", 12),
        ("bybit-spot-2", "wss://stream.bybit.com/v5/public/spot", 3),
    ]
    (frame,) = adapter.open_session(plans[2]).subscribe_frames(NOW)
    assert "orderbook.200.BTCUSDT" in msgspec.json.decode(frame)["args"]
    (local,) = adapter.plan_connections([market("BTCUSDT", base_url="ws://127.0.0.1:1/")])
    assert local.url == "ws://127.0.0.1:1/v5/public/linear"


def test_a_crossed_book_resubscribes_its_topic() -> None:
    session = open_session("BTCUSDT", feeds=("orderbook",))
    session.subscribe_frames(NOW)
    parse(session, answer("1", True))
    parse(session, book_frame("BTCUSDT", "snapshot", [(100, 1)], [(101, 1)], 100, T_MS))
    assert len(parse(session, book_frame("BTCUSDT", "delta", [(100.5, 1)], [], 101, T_MS))) == 1
    events = parse(session, book_frame("BTCUSDT", "delta", [(101, 2)], [], 102, T_MS))
    assert isinstance(events[0], BookUpdate)
    assert events[1] == status(
        "gap",
        "BTCUSDT",
        "orderbook",
        detail="crossed book: best bid 101.0 >= best ask 101.0; resubscribing for a new snapshot",
    )
    assert [(r.symbol, r.reason) for r in asked(session).resyncs] == [("BTCUSDT", "crossed")]
    requests = [msgspec.json.decode(f) for f in asked(session).send]
    assert [(r["op"], r["args"]) for r in requests] == [
        ("unsubscribe", ["orderbook.50.BTCUSDT"]),
        ("subscribe", ["orderbook.50.BTCUSDT"]),
    ]
    events = parse(session, book_frame("BTCUSDT", "snapshot", [(100, 1)], [(101, 1)], 200, T_MS))
    resync = events[0]
    assert isinstance(resync, Status)
    assert resync.detail == "fresh snapshot after resubscribing, u=200 after a crossed book"
    assert len(parse(session, book_frame("BTCUSDT", "delta", [(99, 1)], [], 201, T_MS))) == 1
    assert len(asked(session).resyncs) == 1


# --------------------------------------------------------------------------- options

CALL = "BTC-27DEC24-100000-C"
PUT = "BTC-27DEC24-90000-P-USDT"
OPTION = "bybit-option"


def test_option_plan_subscribes_trades_once_per_base_coin() -> None:
    """Two BTC options and an ETH one: ``publicTrade.BTC`` once, books at depth 25."""
    adapter = BybitAdapter()
    eth = "ETH-27DEC24-4000-C"
    options = market(CALL, PUT, eth, category="option")
    BybitAdapter.check_market(options)
    (plan,) = adapter.plan_connections([options])
    assert (plan.exchange, plan.name, plan.url) == (
        OPTION,
        "bybit-option-0",
        "wss://stream.bybit.com/v5/public/option",
    )
    session = adapter.open_session(plan)
    args = [a for f in session.subscribe_frames(NOW) for a in msgspec.json.decode(f)["args"]]
    assert args == [
        "publicTrade.BTC", f"orderbook.25.{CALL}", f"tickers.{CALL}", f"orderbook.25.{PUT}",
        f"tickers.{PUT}", "publicTrade.ETH", f"orderbook.25.{eth}", f"tickers.{eth}",
    ]  # fmt: skip
    assert session.pending_subscriptions == 9
    acked = [e for f in ("1",) for e in parse(session, answer(f, True)) if isinstance(e, Status)]
    assert [(s.symbol, s.event, s.data_type) for s in acked][:3] == [
        (CALL, "subscribed", "trades"),
        (PUT, "subscribed", "trades"),
        (CALL, "subscribed", "orderbook"),
    ]
    (deep,) = adapter.plan_connections([market(CALL, category="option", book_depth=100)])
    assert "orderbook.100." + CALL in deep.topics  # type: ignore[attr-defined]


def test_option_trades_keep_the_subscribed_options_under_their_own_symbols() -> None:
    session = open_session(CALL, PUT, category="option", feeds=("trades",))
    frame = option_trade_frame(
        "BTC",
        [(CALL, "t-1", 410, 0.5, "Buy", T_MS), ("BTC-27DEC24-80000-C", "t-2", 900, 1, "Sell",
          T_MS + 1), (PUT, "t-3", 55.5, 0.01, "Sell", T_MS + 2)],
        T_MS + 3,
    )  # fmt: skip
    assert parse(session, frame) == [
        Trade(OPTION, CALL, T_MS * 1000, NOW, None, "t-1", 410.0, 0.5, "buy"),
        Trade(OPTION, PUT, (T_MS + 2) * 1000, NOW, None, "t-3", 55.5, 0.01, "sell"),
    ]
    assert discarded(session) == {}


def test_option_ticker_is_a_ticker_and_a_derivative_row_with_greeks() -> None:
    """The venue's docs example: the best quote without the "1", IVs as fractions."""
    session = open_session(CALL, category="option", feeds=("ticker", "derivatives"))
    fields = {"bidPrice": "360", "bidSize": "36.7", "bidIv": "0.7828", "askPrice": "380",
              "askSize": "0.7", "askIv": "0.8005", "lastPrice": "160", "highPrice24h": "0",
              "lowPrice24h": "0", "markPrice": "412.017195", "indexPrice": "23479.75",
              "markPriceIv": "0.8283", "underlyingPrice": "23494.15", "openInterest": "305.89",
              "turnover24h": "0", "volume24h": "12.5", "totalVolume": "2884",
              "totalTurnover": "12808823", "delta": "0.24076634", "gamma": "0.00010067",
              "vega": "11.63078846", "theta": "-52.22100976", "predictedDeliveryPrice": "0",
              "change24h": "0"}  # fmt: skip
    ticker, row = parse(session, option_ticker_frame(CALL, fields, T_MS))
    assert ticker == Ticker(OPTION, CALL, T_MS * 1000, NOW, None, 360.0, 36.7, 380.0, 0.7,
                            160.0, 12.5)  # fmt: skip
    assert row == DerivativeTicker(
        OPTION, CALL, T_MS * 1000, NOW, None, "tickers",
        last_price=160.0, mark_price=412.017195, index_price=23479.75,
        open_interest=305.89, open_interest_unit="base",
        mark_iv=0.8283, bid_iv=0.7828, ask_iv=0.8005,
        delta=0.24076634, gamma=0.00010067, vega=11.63078846, theta=-52.22100976,
        underlying_price=23494.15,
    )  # fmt: skip
    # a next snapshot replaces everything; a real predicted delivery price is kept
    later = {"markPrice": "415", "predictedDeliveryPrice": "23500.5"}
    assert parse(session, option_ticker_frame(CALL, later, T_MS + 100)) == [
        Ticker(OPTION, CALL, (T_MS + 100) * 1000, NOW, None, None, None, None, None, None,
               None),
        DerivativeTicker(OPTION, CALL, (T_MS + 100) * 1000, NOW, None, "tickers",
                         mark_price=415.0, estimated_settlement_price=23500.5),
    ]  # fmt: skip


def test_option_instrument_requests_name_the_base_coin() -> None:
    adapter = BybitAdapter()
    (request,) = adapter.instruments_requests(
        market("eth-27dec24-4000-c", category="option", feeds=("instruments",))
    )
    assert (request.exchange, request.url, request.symbols, request.category) == (
        OPTION,
        "https://api.bybit.com/v5/market/instruments-info?category=option"
        "&symbol=ETH-27DEC24-4000-C&baseCoin=ETH",
        ("ETH-27DEC24-4000-C",),
        "option",
    )
