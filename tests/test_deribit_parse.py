"""Deribit adapter without sockets: recorded traffic replays and table-driven edge cases."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from collector.config import MarketSettings
from collector.events import (
    BookUpdate,
    DerivativeTicker,
    Event,
    Liquidation,
    PositionSide,
    Side,
    Status,
    Ticker,
    Trade,
    level_pairs,
    levels_from_pairs,
)
from collector.exchanges.base import ConnectionPlan, ParseError, Subscription
from collector.exchanges.deribit import (
    HEARTBEAT_INTERVAL_SECS,
    MAX_CHANNELS_PER_CONNECTION,
    MAX_CHANNELS_PER_SUBSCRIBE,
    DeribitAdapter,
    DeribitSession,
)
from tests.fakes.deribit import (
    book_change_frame,
    book_snapshot_frame,
    heartbeat_frame,
    notification,
    option_ticker_frame,
    ticker_frame,
    trades_frame,
)
from tests.samples import read_f2, read_fixture, require_sample
from tests.session_helpers import asked, discarded, feed

NOW = 1_700_000_000_000_000
MS = 1_699_999_999_123
US = MS * 1000
PERP = "BTC-PERPETUAL"


def market(*symbols: str, **kwargs: Any) -> MarketSettings:
    return MarketSettings(exchange="deribit", symbols=symbols, **kwargs)


def open_session(*symbols: str, **kwargs: Any) -> DeribitSession:
    adapter = DeribitAdapter()
    (plan,) = adapter.plan_connections([market(*symbols, **kwargs)])
    return adapter.open_session(plan)


def parse(session: DeribitSession, frame: str | bytes, received_us: int = NOW) -> list[Event]:
    return feed(session, frame, received_us)


def requests(frames: list[str]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in frames]


def ack(session: DeribitSession, frames: list[str] | None = None) -> list[Event]:
    """Answer every subscribe request in ``frames`` (default: the subscribe frames) in full."""
    events: list[Event] = []
    for request in requests(frames if frames is not None else session.subscribe_frames()):
        if request["method"] == "public/subscribe":
            result = request["params"]["channels"]
            reply = {"jsonrpc": "2.0", "id": request["id"], "result": result}
            events += parse(session, json.dumps(reply))
    return events


def statuses(events: list[Event], event: str) -> list[Status]:
    return [e for e in events if isinstance(e, Status) and e.event == event]


# --------------------------------------------------------------------------- recorded traffic


def test_replay_recorded_capture_books_and_tickers() -> None:
    """cryptofeed's 2021 capture: 10 illiquid options, ``.raw`` book and ticker channels."""
    capture = read_f2(require_sample("cryptofeed-v3/DERIBIT.jsonl.zst"))
    instruments = sorted(
        {
            json.loads(r.data or "{}")["params"]["channel"].split(".")[1]
            for r in capture.received()
            if '"subscription"' in (r.data or "")
        }
    )
    assert len(instruments) == 10
    assert "BTC-24SEP21-8000-P" in instruments
    session = open_session(*instruments)
    events: list[Event] = []
    for record in capture.received():
        events += feed(session, record.payload, record.received_us)
    books = [e for e in events if isinstance(e, BookUpdate)]
    tickers = [e for e in events if isinstance(e, Ticker)]
    assert len(tickers) == 89
    assert [b.kind for b in books].count("snapshot") == 10
    assert len(books) == 46
    # Every change continues the previous change_id of its instrument: no gap, no resubscribe.
    assert statuses(events, "gap") == []
    assert asked(session).send == []
    last: dict[str, int] = {}
    for book in books:
        if book.kind == "delta":
            assert book.prev_sequence == last[book.symbol]
        assert book.sequence is not None
        last[book.symbol] = book.sequence
    # The first change of BTC-24SEP21-8000-P: a new ask level, then its delete (size 0).
    option = [b for b in books if b.symbol == "BTC-24SEP21-8000-P"]
    assert option[0].kind == "snapshot"
    assert option[0].sequence == 33195894164
    assert level_pairs(option[0].bids) == [(0.0005, 153.1)]
    assert option[1] == BookUpdate(
        "deribit",
        "BTC-24SEP21-8000-P",
        1626993724318000,
        round(1626993724.283178 * 1e6),
        33195894355,
        "delta",
        33195894355,
        33195894164,
        levels_from_pairs([]),
        levels_from_pairs([(0.001, 2.6)]),
    )
    assert level_pairs(option[2].asks) == [(0.001, 0.0)]
    assert option[2].prev_sequence == 33195894355
    first_ticker = tickers[0]
    assert first_ticker.symbol == "ETH-30JUL21-2800-C"
    assert first_ticker.timestamp_exchange == 1626993723632000
    assert (first_ticker.bid_price, first_ticker.bid_size) == (0.0015, 4714.0)
    assert (first_ticker.ask_price, first_ticker.ask_size) == (0.0025, 873.0)
    assert (first_ticker.last_price, first_ticker.volume_24h) == (0.002, 869.0)


def test_recorded_symbol_list_parses() -> None:
    capture = read_f2(require_sample("cryptofeed-v3/DERIBIT.jsonl.zst"))
    record = next(capture.http("currency=BTC"))
    symbols = DeribitAdapter.parse_symbols(record.payload)
    assert "BTC-24SEP21-40000-P" in symbols
    assert all(DeribitAdapter.normalize_symbol(s) == s for s in symbols)


def test_nautilus_fixtures_trades_book_ticker() -> None:
    session = open_session(PERP)
    base = "nautilus_trader/ws_fixtures/deribit/test_data/"

    def replay(name: str) -> list[Event]:
        return parse(session, msgspec.json.encode(read_fixture(base + name)))

    [first, second] = replay("ws_trades.json")
    assert first == Trade(
        "deribit", PERP, 1765531356452000, NOW, 271252854, "403691824", 92294.5, 10.0, "sell"
    )
    assert isinstance(second, Trade)
    assert second.sequence == 271252855
    assert second.size == 750.0
    [snapshot] = replay("ws_book_snapshot.json")
    assert isinstance(snapshot, BookUpdate)
    assert snapshot.kind == "snapshot"
    assert snapshot.sequence == 123456789
    assert snapshot.prev_sequence is None
    assert level_pairs(snapshot.bids)[0] == (42500.0, 1000.0)
    assert len(level_pairs(snapshot.asks)) == 5
    [delta] = replay("ws_book_delta.json")
    assert delta == BookUpdate(
        "deribit",
        PERP,
        1699999999500000,
        NOW,
        123456790,
        "delta",
        123456790,
        123456789,
        levels_from_pairs([(42500.0, 950.0), (42498.5, 300.0)]),
        levels_from_pairs([(42501.0, 0.0), (42501.5, 700.0)]),
    )
    [ticker] = replay("ws_ticker.json")
    assert ticker == Ticker(
        "deribit", PERP, 1765541474086000, NOW, None, 92283.5, 117660.0, 92284.0, 186520.0,
        92283.5, 11897.27640428,
    )  # fmt: skip


# --------------------------------------------------------------------------- derivatives


def test_replay_recorded_option_tickers_as_derivative_rows() -> None:
    """The 2021 capture's option tickers: IVs in percent become fractions, greeks kept."""
    capture = read_f2(require_sample("cryptofeed-v3/DERIBIT.jsonl.zst"))
    instruments = sorted(
        {
            json.loads(r.data or "{}")["params"]["channel"].split(".")[1]
            for r in capture.received()
            if '"subscription"' in (r.data or "")
        }
    )
    session = open_session(*instruments, feeds=("ticker", "derivatives"))
    events: list[Event] = []
    for record in capture.received():
        events += feed(session, record.payload, record.received_us)
    rows = [e for e in events if isinstance(e, DerivativeTicker)]
    assert len(rows) == len([e for e in events if isinstance(e, Ticker)]) == 89
    assert rows[0] == DerivativeTicker(
        "deribit",
        "ETH-30JUL21-2800-C",
        1626993723632000,
        round(1626993723.804855 * 1e6),
        None,
        "ticker",
        last_price=0.002,
        mark_price=0.001972,
        index_price=2006.72,
        open_interest=12685.0,
        open_interest_unit="base",  # options: the base coin
        estimated_settlement_price=2006.72,
        settlement_price=0.0,
        mark_iv=120.74 / 100,  # sent in percent
        bid_iv=115.62 / 100,
        ask_iv=125.63 / 100,
        delta=0.03127,
        gamma=0.0002,
        vega=0.20072,
        theta=-1.64029,
        rho=0.01188,
        underlying_price=2003.61,
        underlying_index="ETH-30JUL21",
    )
    # every option row carries its IVs as fractions (below 10 = 1000 %) and its greeks
    assert all(r.mark_iv is not None and 0 < r.mark_iv < 10 for r in rows)
    assert all(r.delta is not None and r.funding_rate is None for r in rows)


def test_perpetual_ticker_fixture_as_a_derivative_row() -> None:
    session = open_session(PERP, feeds=("derivatives",))
    fixture = read_fixture("nautilus_trader/ws_fixtures/deribit/test_data/ws_ticker.json")
    assert parse(session, msgspec.json.encode(fixture)) == [
        DerivativeTicker(
            "deribit",
            PERP,
            1765541474086000,
            NOW,
            None,
            "ticker",
            last_price=92283.5,
            mark_price=92281.78,
            index_price=92263.55,
            funding_rate=0.0,
            funding_8h=0.00001742,
            open_interest=1132329370.0,
            open_interest_unit="usd",  # inverse perpetual: USD
            estimated_settlement_price=92263.55,
            settlement_price=92464.66,
        )
    ]


def test_ticker_and_derivatives_share_one_channel() -> None:
    session = open_session("ETH-30JUL21-2800-C", feeds=("ticker", "derivatives"))
    frames = requests(session.subscribe_frames())
    assert frames[1]["params"]["channels"] == ["ticker.ETH-30JUL21-2800-C.100ms"]
    acked = ack(session, [json.dumps(f) for f in frames])
    assert [(e.event, e.data_type) for e in acked if isinstance(e, Status)] == [
        ("subscribed", "ticker"),
        ("subscribed", "derivative_ticker"),
    ]
    assert session.pending_subscriptions == 0
    ticker, row = parse(session, option_ticker_frame("ETH-30JUL21-2800-C", MS, 80.0, -0.4))
    assert isinstance(ticker, Ticker)
    assert isinstance(row, DerivativeTicker)
    assert (row.mark_iv, row.bid_iv, row.ask_iv, row.delta) == (80 / 100, 75 / 100, 85 / 100, -0.4)


def liquidation(
    seq: int, side: Side, position: PositionSide, price: float, amount: float
) -> Liquidation:
    return Liquidation(
        "deribit", PERP, US, NOW, seq, str(seq + 400_000_000), side, position, price, "trade",
        amount, "usd",
    )  # fmt: skip


def test_liquidation_flags_on_trades_give_liquidation_rows() -> None:
    """``T``: the taker's own side; ``M``: the maker's, the opposite; ``MT``: both rows."""
    session = open_session(PERP, feeds=("trades", "liquidations"))
    frame = trades_frame(
        PERP,
        [(1, 100.0, 10.0, "sell", MS), (2, 99.0, 20.0, "buy", MS), (3, 98.0, 30.0, "buy", MS),
         (4, 97.0, 40.0, "sell", MS)],
        liquidations={1: "T", 2: "M", 3: "MT"},
    )  # fmt: skip
    events = parse(session, frame)
    assert [e for e in events if isinstance(e, Liquidation)] == [
        liquidation(1, "sell", "long", 100.0, 10.0),  # a long sold out as the taker
        liquidation(2, "sell", "long", 99.0, 20.0),  # the maker sold: a long liquidated
        liquidation(3, "buy", "short", 98.0, 30.0),  # the taker bought: a short
        liquidation(3, "sell", "long", 98.0, 30.0),  # and the maker sold: a long
    ]
    # every trade, flagged or not, is a trade row too
    assert [e.sequence for e in events if isinstance(e, Trade)] == [1, 2, 3, 4]


def test_liquidations_alone_take_the_trades_channel_but_write_no_trades() -> None:
    session = open_session(PERP, feeds=("liquidations",))
    frames = requests(session.subscribe_frames())
    assert frames[1]["params"]["channels"] == [f"trades.{PERP}.100ms"]
    acked = ack(session, [json.dumps(f) for f in frames])
    assert [(e.event, e.data_type) for e in acked if isinstance(e, Status)] == [
        ("subscribed", "liquidations")
    ]
    trades = [(10, 100.0, 10.0, "sell", MS), (11, 99.0, 20.0, "buy", MS)]
    assert parse(session, trades_frame(PERP, trades, liquidations={11: "T"})) == [
        liquidation(11, "buy", "short", 99.0, 20.0)
    ]
    # trade_seq still checked: the gap and the repeat name the liquidations stream
    events = parse(
        session, trades_frame(PERP, [(11, 1.0, 1.0, "buy", MS), (13, 1.0, 1.0, "buy", MS)])
    )
    [gap] = statuses(events, "gap")
    assert (gap.data_type, gap.expected_sequence, gap.received_sequence) == (
        "liquidations",
        12,
        13,
    )
    assert discarded(session) == {(PERP, "liquidations", "duplicate"): 1}


def test_spot_pairs_have_no_derivatives_or_liquidations() -> None:
    with pytest.raises(
        ValueError,
        match="^deribit spot pairs have no derivatives or liquidations feed: BTC_USDC "
        r"\(put them in a market without it\)$",
    ):
        DeribitAdapter.check_market(
            market(PERP, "btc_usdc", feeds=("trades", "derivatives", "liquidations"))
        )
    DeribitAdapter.check_market(market("BTC_USDC-PERPETUAL", feeds=("derivatives",)))
    DeribitAdapter.check_market(market("BTC_USDC", feeds=("trades", "ticker")))


@pytest.mark.parametrize(
    ("instrument", "unit"),
    [(PERP, "usd"), ("BTC-27DEC24", "usd"), ("BTC-27DEC24-100000-C", "base"),
     ("BTC_USDC-PERPETUAL", "base"), ("XRP_USDC-30AUG24-0d625-P", "base")],
)  # fmt: skip
def test_open_interest_unit_by_instrument(instrument: str, unit: str) -> None:
    session = open_session(instrument, feeds=("derivatives",))
    (row,) = parse(session, ticker_frame(PERP, MS, 1, 1, 2, 1, 1.5, 1).replace(PERP, instrument))
    assert isinstance(row, DerivativeTicker)
    assert row.open_interest_unit == unit


# --------------------------------------------------------------------------- trades


def test_trade_side_is_the_taker_direction_and_ids_are_strings() -> None:
    session = open_session(PERP)
    events = parse(
        session, trades_frame(PERP, [(1, 100.0, 10.0, "buy", MS), (2, 99.5, 20.0, "sell", MS)])
    )
    assert [(e.side, e.trade_id, e.timestamp_exchange) for e in events if isinstance(e, Trade)] == [
        ("buy", "400000001", US),
        ("sell", "400000002", US),
    ]


def test_trade_seq_gap_and_duplicates() -> None:
    session = open_session(PERP)
    parse(session, trades_frame(PERP, [(10, 1.0, 1.0, "buy", MS)]))
    events = parse(
        session, trades_frame(PERP, [(10, 1.0, 1.0, "buy", MS), (14, 2.0, 1.0, "sell", MS)])
    )
    [gap] = statuses(events, "gap")
    assert (gap.data_type, gap.expected_sequence, gap.received_sequence, gap.count) == (
        "trades",
        11,
        14,
        3,
    )
    assert [e.sequence for e in events if isinstance(e, Trade)] == [14]
    assert discarded(session) == {(PERP, "trades", "duplicate"): 1}


# --------------------------------------------------------------------------- book


def snapshot(session: DeribitSession, change_id: int = 100) -> list[Event]:
    return parse(session, book_snapshot_frame(PERP, change_id, [(100.0, 5.0)], [(101.0, 6.0)], MS))


def change(session: DeribitSession, prev: int, cid: int) -> list[Event]:
    return parse(
        session,
        book_change_frame(PERP, prev, cid, [("change", 100.0, 4.0)], [("delete", 101.0, 0.0)], MS),
    )


def test_book_snapshot_then_continuous_changes() -> None:
    session = open_session(PERP)
    [snap] = snapshot(session)
    assert isinstance(snap, BookUpdate)
    assert snap.kind == "snapshot"
    assert snap.sequence == 100
    [delta] = change(session, 100, 105)
    assert isinstance(delta, BookUpdate)
    assert (delta.kind, delta.sequence, delta.prev_sequence) == ("delta", 105, 100)
    assert (level_pairs(delta.bids), level_pairs(delta.asks)) == ([(100.0, 4.0)], [(101.0, 0.0)])
    assert asked(session).send == []


def test_book_gap_resubscribes_and_new_snapshot_is_a_resync() -> None:
    session = open_session(PERP, feeds=("orderbook",))
    ack(session)
    snapshot(session)
    change(session, 100, 105)
    events = change(session, 107, 110)  # 105 -> 107: a change was missed
    [gap] = statuses(events, "gap")
    assert (gap.data_type, gap.expected_sequence, gap.received_sequence) == ("orderbook", 105, 107)
    assert not [e for e in events if isinstance(e, BookUpdate)]
    unsubscribe, subscribe = requests(asked(session).send)
    assert unsubscribe["method"] == "public/unsubscribe"
    assert unsubscribe["params"] == {"channels": ["book.BTC-PERPETUAL.100ms"]}
    assert subscribe["method"] == "public/subscribe"
    assert subscribe["params"] == {"channels": ["book.BTC-PERPETUAL.100ms"]}
    frames = list(asked(session).send)
    asked(session).send.clear()
    # Changes in flight until the new snapshot are dropped; no second resubscribe.
    assert change(session, 110, 111) == []
    assert asked(session).send == []
    assert discarded(session) == {(PERP, "orderbook", "while_resyncing"): 2}
    # The venue answers both requests; the resubscribe is not a new "subscribed" row.
    assert ack(session, frames) == []
    assert session.pending_subscriptions == 0
    events = snapshot(session, 500)
    [resync] = statuses(events, "resync")
    assert (resync.data_type, resync.received_sequence) == ("orderbook", 500)
    assert isinstance(events[-1], BookUpdate)
    assert events[-1].kind == "snapshot"
    [delta] = change(session, 500, 501)
    assert isinstance(delta, BookUpdate)
    assert delta.sequence == 501


def test_stale_book_change_is_dropped() -> None:
    session = open_session(PERP)
    snapshot(session)
    change(session, 100, 105)
    assert change(session, 100, 105) == []
    assert discarded(session) == {(PERP, "orderbook", "stale"): 1}


def test_book_change_before_any_snapshot_is_a_gap() -> None:
    session = open_session(PERP)
    [gap] = statuses(change(session, 100, 105), "gap")
    assert gap.expected_sequence is None
    assert gap.received_sequence == 100
    assert len(asked(session).send) == 2


# --------------------------------------------------------------------------- ticker


def test_ticker() -> None:
    session = open_session(PERP)
    [ticker] = parse(session, ticker_frame(PERP, MS, 100.0, 5.0, 100.5, 7.0, 100.2, 1234.5))
    assert ticker == Ticker("deribit", PERP, US, NOW, None, 100.0, 5.0, 100.5, 7.0, 100.2, 1234.5)


# --------------------------------------------------------------------------- protocol


def test_subscribe_frames_start_with_set_heartbeat_and_cover_the_plan() -> None:
    symbols = [f"BTC-{i}DEC24-{i}000-C" for i in range(1, 41)]  # 120 channels
    session = open_session(*symbols)
    frames = requests(session.subscribe_frames())
    assert frames[0] == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "public/set_heartbeat",
        "params": {"interval": HEARTBEAT_INTERVAL_SECS},
    }
    channels = [c for f in frames[1:] for c in f["params"]["channels"]]
    assert all(len(f["params"]["channels"]) <= MAX_CHANNELS_PER_SUBSCRIBE for f in frames[1:])
    assert len(channels) == 120
    assert len(set(channels)) == 120
    assert "trades.BTC-1DEC24-1000-C.100ms" in channels
    assert "book.BTC-1DEC24-1000-C.100ms" in channels
    assert "ticker.BTC-1DEC24-1000-C.100ms" in channels
    assert len({f["id"] for f in frames}) == len(frames)


def test_test_request_is_answered_with_public_test() -> None:
    session = open_session(PERP)
    session.subscribe_frames()
    assert parse(session, heartbeat_frame("heartbeat")) == []
    assert asked(session).send == []
    assert parse(session, heartbeat_frame("test_request")) == []
    [reply] = requests(asked(session).send)
    assert reply["method"] == "public/test"
    assert reply["params"] == {}
    # Its answer, and the set_heartbeat answer, are not subscription answers.
    assert (
        parse(
            session, json.dumps({"jsonrpc": "2.0", "id": reply["id"], "result": {"version": "1"}})
        )
        == []
    )
    assert parse(session, '{"jsonrpc":"2.0","id":1,"result":"ok"}') == []
    assert session.test_requests_answered == 1


def test_subscribe_ack_reports_each_subscription_and_missing_channels_are_errors() -> None:
    session = open_session(PERP, "BTC-27DEC24")
    [_, request] = requests(session.subscribe_frames())
    channels = [c for c in request["params"]["channels"] if "27DEC24" not in c]
    events = parse(session, json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": channels}))
    assert {(s.symbol, s.data_type) for s in statuses(events, "subscribed")} == {
        (PERP, "trades"),
        (PERP, "orderbook"),
        (PERP, "ticker"),
    }
    errors = statuses(events, "subscribe_error")
    assert {e.data_type for e in errors} == {"trades", "orderbook", "ticker"}
    assert all(
        e.symbol == "BTC-27DEC24" and "not in the public/subscribe result" in (e.detail or "")
        for e in errors
    )
    assert session.pending_subscriptions == 0


def test_error_answer_is_bisected_until_the_bad_channel_stands_alone() -> None:
    session = open_session(PERP, "ETH-PERPETUAL", feeds=("trades",))
    [_, request] = requests(session.subscribe_frames())
    error = {
        "jsonrpc": "2.0",
        "id": request["id"],
        "error": {"code": 10028, "message": "too_many_requests"},
    }
    assert parse(session, json.dumps(error)) == []
    left, right = requests(asked(session).send)
    asked(session).send.clear()
    assert left["params"]["channels"] == ["trades.BTC-PERPETUAL.100ms"]
    assert right["params"]["channels"] == ["trades.ETH-PERPETUAL.100ms"]
    [ok] = parse(
        session,
        json.dumps({"jsonrpc": "2.0", "id": left["id"], "result": left["params"]["channels"]}),
    )
    assert isinstance(ok, Status)
    assert ok.event == "subscribed"
    error["id"] = right["id"]
    [refused] = parse(session, json.dumps(error))
    assert isinstance(refused, Status)
    assert refused.event == "subscribe_error"
    assert refused.symbol == "ETH-PERPETUAL"
    assert refused.detail == "trades.ETH-PERPETUAL.100ms: too_many_requests (code 10028)"
    assert session.pending_subscriptions == 0
    assert session.rejected == [Subscription("ETH-PERPETUAL", "trades")]


def test_unsubscribed_channels_and_other_instruments_are_ignored() -> None:
    session = open_session(PERP, feeds=("trades",))
    assert parse(session, ticker_frame(PERP, MS, 1.0, 1.0, 2.0, 1.0, 1.5, 1.0)) == []
    assert parse(session, trades_frame("ETH-PERPETUAL", [(1, 1.0, 1.0, "buy", MS)])) == []
    assert parse(session, notification("platform_state", {"locked": False})) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.BTC-PERPETUAL.100ms"',
        b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.BTC-PERPETUAL.100ms","data":[{"price":1}]}}',
        b'{"jsonrpc":"2.0","method":"subscription","params":{"data":[]}}',
        b"[1,2,3]",
    ],
)
def test_garbage_raises_parse_error(payload: bytes) -> None:
    with pytest.raises(ParseError):
        open_session(PERP).parse(payload, NOW)


# --------------------------------------------------------------------------- adapter


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("BTC-PERPETUAL", "BTC-PERPETUAL"),
        ("btc-perpetual", "BTC-PERPETUAL"),
        ("BTC-27DEC24", "BTC-27DEC24"),
        ("btc-27dec24-100000-c", "BTC-27DEC24-100000-C"),
        ("BTC_USDC", "BTC_USDC"),
        ("BTC_USDC-PERPETUAL", "BTC_USDC-PERPETUAL"),
        ("XRP_USDC-30AUG24-0d625-C", "XRP_USDC-30AUG24-0d625-C"),
        ("ETH-FS-27DEC24_PERP", "ETH-FS-27DEC24_PERP"),
    ],
)
def test_normalize_symbol(given: str, expected: str) -> None:
    assert DeribitAdapter.normalize_symbol(given) == expected


@pytest.mark.parametrize(
    "bad", ["", "BTC PERPETUAL", "BTC.PERPETUAL", "B", "BTC-PERPETUAL/", "BTC--X"]
)
def test_normalize_symbol_rejects_other_formats(bad: str) -> None:
    with pytest.raises(ValueError, match="expected a Deribit instrument name"):
        DeribitAdapter.normalize_symbol(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"book_depth": 10}, "no book_mode/book_depth"),
        ({"book_mode": "diff"}, "no book_mode/book_depth"),
        ({"category": "option"}, "no category"),
    ],
)
def test_check_market_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeribitAdapter.check_market(market(PERP, **kwargs))


def test_check_market_accepts_urls() -> None:
    DeribitAdapter.check_market(
        market(PERP, base_url="wss://test.deribit.com", rest_url="https://test.deribit.com")
    )


def test_plan_splits_by_channel_limit_keeping_instruments_together() -> None:
    symbols = [f"BTC-{i}DEC24-{i}000-P" for i in range(150)]  # 450 channels
    plans = DeribitAdapter().plan_connections([market(*symbols)])
    assert [len(p.subscriptions) for p in plans] == [MAX_CHANNELS_PER_CONNECTION, 150]
    assert [p.name for p in plans] == ["deribit-0", "deribit-1"]
    assert plans[0].url == "wss://www.deribit.com/ws/api/v2"
    assert not set(plans[0].symbols) & set(plans[1].symbols)


def test_plan_base_url_and_raw_make_their_own_connections() -> None:
    plans = DeribitAdapter().plan_connections(
        [
            market(PERP),
            market("ETH-PERPETUAL", feeds=("trades", "raw")),
            market("SOL_USDC", base_url="ws://127.0.0.1:1/"),
        ]
    )
    assert [(p.url, p.raw, p.symbols) for p in plans] == [
        ("wss://www.deribit.com/ws/api/v2", False, (PERP,)),
        ("wss://www.deribit.com/ws/api/v2", True, ("ETH-PERPETUAL",)),
        ("ws://127.0.0.1:1/ws/api/v2", False, ("SOL_USDC",)),
    ]


def test_a_plain_connection_plan_works() -> None:
    plan = ConnectionPlan("deribit", "d-0", "ws://x/ws/api/v2", (Subscription(PERP, "ticker"),))
    session = DeribitAdapter().open_session(plan)
    assert requests(session.subscribe_frames())[1]["params"]["channels"] == [
        "ticker.BTC-PERPETUAL.100ms"
    ]


def test_symbols_url_and_parse_symbols() -> None:
    assert DeribitAdapter.symbols_url() == (
        "https://www.deribit.com/api/v2/public/get_instruments?currency=any&expired=false"
    )
    assert DeribitAdapter.symbols_url("http://127.0.0.1:9/").startswith(
        "http://127.0.0.1:9/api/v2/"
    )
    body = b'{"jsonrpc":"2.0","result":[{"instrument_name":"BTC-PERPETUAL","is_active":true},' \
        b'{"instrument_name":"BTC-1JAN20","is_active":false},{"instrument_name":"BTC_USDC"}]}'  # fmt: skip
    assert DeribitAdapter.parse_symbols(body) == ["BTC-PERPETUAL", "BTC_USDC"]
    with pytest.raises(ParseError):
        DeribitAdapter.parse_symbols(b'{"error":{"code":1}}')


def test_adapter_limits() -> None:
    assert DeribitAdapter.name == "deribit"
    assert DeribitAdapter.keepalive_interval_secs is None
    assert DeribitAdapter.client_messages_per_second <= 5
    assert 10 <= HEARTBEAT_INTERVAL_SECS < 30


def test_a_crossed_book_resubscribes_it() -> None:
    session = open_session(PERP, feeds=("orderbook",))
    ack(session)
    snapshot(session)
    frame = book_change_frame(PERP, 100, 101, [("new", 101.0, 1.0)], [], MS)
    events = parse(session, frame)
    assert isinstance(events[0], BookUpdate)
    [gap] = statuses(events, "gap")
    assert gap.detail == (
        "crossed book: best bid 101.0 >= best ask 101.0; resubscribing for a new snapshot"
    )
    assert [(r.symbol, r.reason) for r in asked(session).resyncs] == [(PERP, "crossed")]
    unsubscribe, subscribe = requests(asked(session).send)
    assert unsubscribe["params"] == {"channels": ["book.BTC-PERPETUAL.100ms"]}
    assert subscribe["params"] == {"channels": ["book.BTC-PERPETUAL.100ms"]}
    frames = list(asked(session).send)
    assert change(session, 101, 102) == []  # dropped until the new snapshot
    ack(session, frames)
    events = snapshot(session, 500)
    [resync] = statuses(events, "resync")
    assert resync.detail == "new book snapshot change_id=500 after a crossed book"
    [delta] = change(session, 500, 501)
    assert isinstance(delta, BookUpdate)
