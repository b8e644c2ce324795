"""OKX adapter without sockets: recorded frames, hand-made edge cases, planning, symbols."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from collector.config import MarketSettings
from collector.events import (
    BookUpdate,
    Event,
    Status,
    Ticker,
    Trade,
    level_pairs,
    levels_from_pairs,
)
from collector.exchanges.base import ConnectionPlan, ParseError, Subscription
from collector.exchanges.okx import (
    MAX_BOOKS_PER_CONNECTION,
    MAX_REQUESTS_PER_SESSION,
    OkxAdapter,
    OkxSession,
)
from tests.fakes.okx import book_frame, error_msg, notice_frame, ticker_frame, trade_frame
from tests.samples import read_f2, read_fixture, require_sample
from tests.session_helpers import asked, discarded, feed

NOW = 1_760_000_000_000_000
T_MS = 1_759_999_999_123


def market(*symbols: str, **kwargs: Any) -> MarketSettings:
    return MarketSettings(exchange="okx", symbols=symbols, **kwargs)


def open_session(*symbols: str, **kwargs: Any) -> OkxSession:
    adapter = OkxAdapter()
    (plan,) = adapter.plan_connections([market(*symbols, **kwargs)])
    return adapter.open_session(plan)


def parse(session: OkxSession, frame: str | bytes, received_us: int = NOW) -> list[Event]:
    return feed(session, frame, received_us)


def status(event: Any, symbol: str, data_type: str | None, **kw: Any) -> Status:
    return Status(
        "okx",
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


def acked(session: OkxSession) -> OkxSession:
    for frame in session.subscribe_frames(NOW):
        request = msgspec.json.decode(frame)
        for arg in request["args"]:
            parse(
                session,
                msgspec.json.encode({"id": request["id"], "event": "subscribe", "arg": arg}),
            )
    return session


# --------------------------------------------------------------------------- recorded traffic


def test_replay_recorded_capture() -> None:
    """cryptofeed's 2022 capture: a future, a swap and spot BTC-USDT (pre-seqId frames)."""
    capture = read_f2(require_sample("cryptofeed-v3/OKX.jsonl.zst"))
    session = open_session("BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT")
    events: list[Event] = []
    for record in capture.received():
        events.extend(feed(session, record.payload, record.received_us))
    assert session.pending_subscriptions == 0
    assert asked(session).send == []
    by_type: dict[type, list[Event]] = {}
    for event in events:
        by_type.setdefault(type(event), []).append(event)
    assert len(by_type[Trade]) == 74
    assert len(by_type[Ticker]) == 28
    books = [e for e in events if isinstance(e, BookUpdate)]
    assert [b.kind for b in books].count("snapshot") == 3
    assert len(books) == 290
    statuses = by_type[Status]
    assert all(isinstance(s, Status) and s.event == "subscribed" for s in statuses)
    assert len(statuses) == 9
    # The first recorded trade, field by field (ts ms -> us; side = taker side).
    first = by_type[Trade][0]
    assert first == Trade(
        "okx",
        "BTC-USD-220527",
        1652459199958000,
        first.timestamp_collector,
        7849,
        "7849",
        30218.8,
        1.0,
        "buy",
    )
    # Trade ids are consecutive per instrument: the recording has no trade gap.
    btc = [t for t in by_type[Trade] if isinstance(t, Trade) and t.symbol == "BTC-USDT"]
    ids = [t.sequence for t in btc]
    assert ids == list(range(338476307, 338476307 + len(btc)))
    first_update = next(b for b in books if isinstance(b, BookUpdate) and b.kind == "delta")
    assert first_update.symbol == "BTC-USD-220527"
    assert level_pairs(first_update.asks)[0] == (30249.4, 0.0)
    assert level_pairs(first_update.bids) == [(30182.6, 452.0)]
    assert first_update.timestamp_exchange == 1652459225464000
    assert first_update.sequence is None  # 2022 frames have no seqId


def test_recorded_fixtures_current_format() -> None:
    session = open_session("BTC-USDT", "BTC-USD")
    snapshot = read_fixture("nautilus_trader/ws_fixtures/okx/test_data/ws_books_snapshot.json")
    # OKX's docs example (which this fixture copies) carries an illustrative checksum that
    # does not match its levels: the book is resubscribed at once.
    book, invalid = parse(session, msgspec.json.encode(snapshot))
    assert isinstance(invalid, Status)
    assert invalid.event == "gap"
    assert invalid.detail is not None
    assert invalid.detail.startswith("book checksum mismatch on the snapshot: venue -855196043")
    assert [r.reason for r in asked(session).resyncs] == ["checksum"]
    assert isinstance(book, BookUpdate)
    assert book.kind == "snapshot"
    assert book.sequence == 123456
    assert book.prev_sequence is None
    assert level_pairs(book.asks)[:2] == [(8476.98, 415.0), (8477.0, 7.0)]
    assert book.timestamp_exchange == 1597026383085000
    ticker = read_fixture("nautilus_trader/ws_fixtures/okx/test_data/ws_tickers.json")
    assert parse(session, msgspec.json.encode(ticker)) == [
        Ticker(
            "okx",
            "BTC-USDT",
            1597026383085000,
            NOW,
            None,
            8888.88,
            5.0,
            9999.99,
            11.0,
            9999.99,
            2222.0,
        )
    ]
    trades = read_fixture("nautilus_trader/ws_fixtures/okx/test_data/ws_trades.json")
    assert parse(session, msgspec.json.encode(trades)) == [
        Trade(
            "okx",
            "BTC-USD",
            1630048897897000,
            NOW,
            130639474,
            "130639474",
            42219.9,
            0.12060306,
            "buy",
        )
    ]


def test_parse_symbols_from_the_recorded_instruments_answer() -> None:
    capture = read_f2(require_sample("cryptofeed-v3/OKX.jsonl.zst"))
    body = next(capture.http("instType=SPOT")).payload
    symbols = OkxAdapter.parse_symbols(body)
    assert "BTC-USDT" in symbols
    assert "ETH-USDT" in symbols
    assert symbols == sorted(symbols)
    assert all(OkxAdapter.normalize_symbol(s) == s for s in symbols)
    assert OkxAdapter.symbols_url() == "https://www.okx.com/api/v5/public/instruments?instType=SPOT"
    assert OkxAdapter.symbols_url("http://127.0.0.1:9/") == (
        "http://127.0.0.1:9/api/v5/public/instruments?instType=SPOT"
    )
    with pytest.raises(ParseError):
        OkxAdapter.parse_symbols(b'{"code":"50011","msg":"Too Many Requests","data":[]}')
    with pytest.raises(ParseError):
        OkxAdapter.parse_symbols(b"<html>")


# --------------------------------------------------------------------------- message types


def test_trades_side_timestamp_and_aggregated_ids() -> None:
    session = open_session("BTC-USDT")
    assert parse(session, trade_frame("BTC-USDT", 100, "42219.9", "0.5", "sell", T_MS)) == [
        Trade("okx", "BTC-USDT", T_MS * 1000, NOW, 100, "100", 42219.9, 0.5, "sell")
    ]
    # tradeId 103 with count 3 = fills 101..103: no gap
    (trade,) = parse(session, trade_frame("BTC-USDT", 103, 1, 1, "buy", T_MS, count=3))
    assert isinstance(trade, Trade)
    assert trade.side == "buy"
    assert trade.sequence == 103


def test_trade_id_gap_is_reported_and_never_drops_a_trade() -> None:
    session = open_session("BTC-USDT")
    parse(session, trade_frame("BTC-USDT", 100, 1, 1, "buy", T_MS))
    events = parse(session, trade_frame("BTC-USDT", 110, 1, 1, "buy", T_MS, count=2))
    assert events[0] == status("gap", "BTC-USDT", "trades", expected=101, received=109, count=8)
    assert isinstance(events[1], Trade)
    # an older id (ELP aggregation may reorder) is still written
    (older,) = parse(session, trade_frame("BTC-USDT", 105, 1, 1, "buy", T_MS))
    assert isinstance(older, Trade)
    assert older.trade_id == "105"


def test_book_chain_keepalive_reset_duplicate_and_gap() -> None:
    session = acked(open_session("BTC-USDT", feeds=("orderbook",)))
    snap = parse(session, book_frame("BTC-USDT", "snapshot", [(100, 1)], [(101, 2)], T_MS, 10, -1))
    assert snap == [
        BookUpdate(
            "okx",
            "BTC-USDT",
            T_MS * 1000,
            NOW,
            10,
            "snapshot",
            10,
            None,
            levels_from_pairs([(100.0, 1.0)]),
            levels_from_pairs([(101.0, 2.0)]),
        )
    ]
    (delta,) = parse(session, book_frame("BTC-USDT", "update", [(100, 0)], [], T_MS, 15, 10))
    assert delta == BookUpdate(
        "okx",
        "BTC-USDT",
        T_MS * 1000,
        NOW,
        15,
        "delta",
        15,
        10,
        levels_from_pairs([(100.0, 0.0)]),
        levels_from_pairs([]),
    )
    # the venue's no-change keepalive: consumed, nothing written
    assert parse(session, book_frame("BTC-USDT", "update", [], [], T_MS, 15, 15)) == []
    # maintenance reset: seqId below prevSeqId, chained on prevSeqId
    (reset,) = parse(session, book_frame("BTC-USDT", "update", [(99, 1)], [], T_MS, 3, 15))
    assert isinstance(reset, BookUpdate)
    assert reset.sequence == 3
    assert len(parse(session, book_frame("BTC-USDT", "update", [(98, 1)], [], T_MS, 5, 3))) == 1
    # the same seqId again with another prevSeqId: a duplicate, dropped
    assert parse(session, book_frame("BTC-USDT", "update", [(98, 1)], [], T_MS, 5, 4)) == []
    assert discarded(session) == {("BTC-USDT", "orderbook", "duplicate"): 1}
    assert asked(session).send == []
    # a gap: row, the update still written, and a resubscription
    events = parse(session, book_frame("BTC-USDT", "update", [(97, 1)], [], T_MS, 9, 7))
    assert events[0] == status(
        "gap", "BTC-USDT", "orderbook", expected=5, received=7,
        detail="prevSeqId is not the previous seqId",
    )  # fmt: skip
    assert isinstance(events[1], BookUpdate)
    ops = [msgspec.json.decode(f) for f in asked(session).send]
    assert [(o["op"], o["args"]) for o in ops] == [
        ("unsubscribe", [{"channel": "books", "instId": "BTC-USDT"}]),
        ("subscribe", [{"channel": "books", "instId": "BTC-USDT"}]),
    ]
    asked(session).send.clear()
    # updates while waiting are written without checks; acks of the resubscription are quiet
    assert len(parse(session, book_frame("BTC-USDT", "update", [], [(1, 1)], T_MS, 30, 20))) == 1
    unsub = {"id": ops[0]["id"], "event": "unsubscribe", "arg": ops[0]["args"][0]}
    sub = {"id": ops[1]["id"], "event": "subscribe", "arg": ops[1]["args"][0]}
    assert parse(session, msgspec.json.encode(unsub)) == []
    assert parse(session, msgspec.json.encode(sub)) == []
    events = parse(session, book_frame("BTC-USDT", "snapshot", [(96, 1)], [], T_MS, 50, -1))
    assert events[0] == status(
        "resync", "BTC-USDT", "orderbook", received=50, detail="fresh books snapshot seqId=50"
    )
    assert isinstance(events[1], BookUpdate)
    assert events[1].kind == "snapshot"
    assert len(parse(session, book_frame("BTC-USDT", "update", [], [], T_MS, 51, 50))) == 1


def test_update_before_any_snapshot_is_a_gap() -> None:
    session = open_session("BTC-USDT", feeds=("orderbook",))
    events = parse(session, book_frame("BTC-USDT", "update", [(1, 1)], [], T_MS, 9, 7))
    assert events[0] == status(
        "gap", "BTC-USDT", "orderbook", received=7, detail="update before any snapshot"
    )
    assert len(asked(session).send) == 2


def test_resubscribing_stops_at_the_request_budget() -> None:
    session = acked(open_session("BTC-USDT", feeds=("orderbook",)))
    session.requests_sent = MAX_REQUESTS_PER_SESSION - 1
    parse(session, book_frame("BTC-USDT", "snapshot", [], [], T_MS, 10, -1))
    parse(session, book_frame("BTC-USDT", "update", [], [(1, 1)], T_MS, 12, 11))
    assert asked(session).send == []
    reason = asked(session).reconnect
    assert reason is not None
    assert "480" in reason


def test_books5_is_a_snapshot_per_message() -> None:
    session = open_session("BTC-USDT", feeds=("orderbook",), book_depth=5)
    frame = book_frame("BTC-USDT", "", [(1, 2)], [(3, 4)], T_MS, 7, 6, channel="books5")
    assert parse(session, frame) == [
        BookUpdate(
            "okx",
            "BTC-USDT",
            T_MS * 1000,
            NOW,
            7,
            "snapshot",
            7,
            None,
            levels_from_pairs([(1.0, 2.0)]),
            levels_from_pairs([(3.0, 4.0)]),
        )
    ]


def test_ticker_with_empty_book_side() -> None:
    session = open_session("BTC-USDT-SWAP")
    frame = ticker_frame(
        "BTC-USDT-SWAP", last=1, bid=2, bid_size=3, ask="", ask_size="", vol24h=5, ts_ms=T_MS
    )
    assert parse(session, frame) == [
        Ticker("okx", "BTC-USDT-SWAP", T_MS * 1000, NOW, None, 2.0, 3.0, None, None, 1.0, 5.0)
    ]


# --------------------------------------------------------------------------- control frames


def test_keepalive_pings_and_pongs() -> None:
    session = open_session("BTC-USDT")
    assert OkxAdapter.keepalive_interval_secs is not None
    assert OkxAdapter.keepalive_interval_secs < 30
    assert [OkxAdapter().keepalive_frame(n) for n in (1, 2)] == ["ping", "ping"]
    assert parse(session, "pong") == []
    assert asked(session).send == []
    assert parse(session, "ping") == []
    assert asked(session).send == ["pong"]


def test_subscribe_frames_and_acks() -> None:
    session = open_session("BTC-USDT", "ETH-USDT")
    (frame,) = session.subscribe_frames(NOW)
    request = msgspec.json.decode(frame)
    assert request["op"] == "subscribe"
    assert request["id"] == "1"
    assert request["args"][:3] == [
        {"channel": "trades", "instId": "BTC-USDT"},
        {"channel": "books", "instId": "BTC-USDT"},
        {"channel": "tickers", "instId": "BTC-USDT"},
    ]
    assert session.pending_subscriptions == 6
    ack = {
        "id": "1",
        "event": "subscribe",
        "arg": {"channel": "books", "instId": "ETH-USDT"},
        "connId": "a",
    }
    assert parse(session, msgspec.json.encode(ack)) == [
        status("subscribed", "ETH-USDT", "orderbook")
    ]
    assert session.pending_subscriptions == 5
    assert parse(session, msgspec.json.encode(ack)) == []  # a repeated ack counts once
    assert session.pending_subscriptions == 5


def test_subscribe_error_naming_the_arg() -> None:
    session = open_session("BTC-USDT", "NOPE-USDT", feeds=("trades",))
    session.subscribe_frames(NOW)
    msg = error_msg("trades", "NOPE-USDT")
    error = {"id": "1", "event": "error", "code": "60018", "msg": msg, "connId": "a"}
    assert parse(session, msgspec.json.encode(error)) == [
        status(
            "subscribe_error", "NOPE-USDT", "trades",
            detail=f"trades:NOPE-USDT: {msg} (code 60018)",
        )
    ]  # fmt: skip
    assert session.pending_subscriptions == 1
    assert session.rejected == [Subscription("NOPE-USDT", "trades")]
    ack = {"id": "1", "event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT"}}
    assert parse(session, msgspec.json.encode(ack)) == [status("subscribed", "BTC-USDT", "trades")]
    assert session.pending_subscriptions == 0


def test_subscribe_error_without_the_arg_resolves_the_unanswered_args() -> None:
    session = open_session("BTC-USDT", "ETH-USDT", feeds=("trades",))
    session.subscribe_frames(NOW)
    ack = {"id": "1", "event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT"}}
    parse(session, msgspec.json.encode(ack))
    error = {"event": "error", "code": "60012", "msg": "Invalid request"}
    events = parse(session, msgspec.json.encode(error))
    assert events == [
        status(
            "subscribe_error", "ETH-USDT", "trades",
            detail="trades:ETH-USDT: Invalid request (code 60012)",
        )
    ]  # fmt: skip
    assert session.pending_subscriptions == 0
    # if the venue acknowledges it after all, that is recorded too (pending stays 0)
    late = {"id": "1", "event": "subscribe", "arg": {"channel": "trades", "instId": "ETH-USDT"}}
    assert parse(session, msgspec.json.encode(late)) == [status("subscribed", "ETH-USDT", "trades")]
    assert session.pending_subscriptions == 0
    # an error nobody is waiting for is ignored
    assert parse(session, msgspec.json.encode(error)) == []


def test_upgrade_notice_asks_for_a_reconnect() -> None:
    session = open_session("BTC-USDT")
    assert parse(session, notice_frame()) == []
    reason = asked(session).reconnect
    assert reason is not None
    assert "64008" in reason


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"[1,2]", b'{"arg":{"channel":"trades","instId":"BTC-USDT"}}', b'{"foo":1}',
     b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"px":"x"}]}',
     b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":"no"}]}'],
)  # fmt: skip
def test_garbage_raises_parse_error(payload: bytes) -> None:
    with pytest.raises(ParseError):
        open_session("BTC-USDT").parse(payload, NOW)


def test_a_batch_skips_a_bad_frame_and_keeps_the_others() -> None:
    """The adapter contract's own ``parse_batch`` (OKX has no faster one): the frames of one
    read in order, a bad frame's error returned instead of raised."""
    session = open_session("BTC-USDT")
    events: list[Event] = []
    errors = session.parse_batch(
        [
            trade_frame("BTC-USDT", 100, 1, 1, "buy", T_MS).encode(),
            b"{",
            trade_frame("BTC-USDT", 101, 2, 1, "sell", T_MS).encode(),
        ],
        NOW,
        events,
    )
    assert [(type(e).__name__, e.sequence) for e in events] == [("Trade", 100), ("Trade", 101)]
    assert len(errors) == 1
    assert isinstance(errors[0], ParseError)


def test_unknown_channels_are_ignored() -> None:
    frame = b'{"arg":{"channel":"candle1m","instId":"BTC-USDT"},"data":[["1","2"]]}'
    assert open_session("BTC-USDT").parse(frame, NOW) == []


# --------------------------------------------------------------------------- adapter


@pytest.mark.parametrize(
    ("given", "expected"),
    [("BTC-USDT", "BTC-USDT"), ("btc-usdt-swap", "BTC-USDT-SWAP"),
     ("BTC-USD-250627", "BTC-USD-250627"), ("BTC-USD-250627-100000-C", "BTC-USD-250627-100000-C")],
)  # fmt: skip
def test_normalize_symbol(given: str, expected: str) -> None:
    assert OkxAdapter.normalize_symbol(given) == expected


@pytest.mark.parametrize("bad", ["BTCUSDT", "BTC/USDT", "BTC-USDT-PERP", "BTC_USDT", "-USDT", ""])
def test_normalize_symbol_rejects_other_formats(bad: str) -> None:
    with pytest.raises(ValueError, match="expected an OKX instrument id such as 'BTC-USDT'"):
        OkxAdapter.normalize_symbol(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"category": "spot"}, "no category"), ({"rest_url": "ftp://x"}, "rest_url must start with http"),
     ({"book_depth": 50}, "book_depth must be 400"),
     ({"book_mode": "snapshot", "book_depth": 400}, "contradicts")],
)  # fmt: skip
def test_check_market_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OkxAdapter.check_market(market("BTC-USDT", **kwargs))


def test_check_market_accepts_book_options() -> None:
    for kwargs in ({}, {"book_depth": 400}, {"book_mode": "diff"}, {"book_mode": "snapshot"}):
        OkxAdapter.check_market(market("BTC-USDT", **kwargs))


def test_plan_urls_and_splitting_by_deep_books() -> None:
    adapter = OkxAdapter()
    symbols = [f"C{i}-USDT" for i in range(MAX_BOOKS_PER_CONNECTION * 2 + 1)]
    plans = adapter.plan_connections([market(*symbols)])
    assert [len(p.symbols) for p in plans] == [25, 25, 1]
    assert all(p.url == "wss://ws.okx.com:8443/ws/v5/public" for p in plans)
    assert [p.name for p in plans] == ["okx-0", "okx-1", "okx-2"]
    # trades-only symbols are not limited by the book rule
    (plan,) = adapter.plan_connections([market(*symbols, feeds=("trades",))])
    assert len(plan.subscriptions) == len(symbols)
    (local,) = adapter.plan_connections([market("BTC-USDT", base_url="ws://127.0.0.1:1")])
    assert local.url == "ws://127.0.0.1:1/ws/v5/public"
    (full,) = adapter.plan_connections([market("BTC-USDT", base_url="wss://h/ws/v5/public")])
    assert full.url == "wss://h/ws/v5/public"
    raw_plans = adapter.plan_connections(
        [market("BTC-USDT"), market("ETH-USDT", feeds=("trades", "raw"))]
    )
    assert [(p.symbols, p.raw) for p in raw_plans] == [
        (("BTC-USDT",), False),
        (("ETH-USDT",), True),
    ]


def test_a_plain_connection_plan_gets_default_channels() -> None:
    plan = ConnectionPlan("okx", "okx-x", "ws://h", (Subscription("BTC-USDT", "orderbook"),))
    (frame,) = OkxAdapter().open_session(plan).subscribe_frames(NOW)
    assert msgspec.json.decode(frame)["args"] == [{"channel": "books", "instId": "BTC-USDT"}]


# --------------------------------------------------------------------------- book checks


def _recorded_books(symbol: str) -> list[tuple[bytes, int]]:
    capture = read_f2(require_sample("cryptofeed-v3/OKX.jsonl.zst"))
    return [
        (r.payload, r.received_us)
        for r in capture.received()
        if b'"books"' in r.payload and symbol.encode() in r.payload and b'"data"' in r.payload
    ]


def test_recorded_checksums_match_and_a_changed_level_is_caught() -> None:
    """The 2022 recording's books carry OKX's checksum: every one of the 290 matches the
    local book (the formula is right); a level changed by hand fails it, and the book is
    resubscribed; its fresh snapshot carries a resync row naming the reason."""
    frames = _recorded_books("BTC-USDT")
    assert len(frames) > 50
    session = acked(open_session("BTC-USDT", feeds=("orderbook",)))
    for payload, received_us in frames[:40]:
        feed(session, payload, received_us)
    assert asked(session).statuses == []
    assert asked(session).resyncs == []
    # The next update with one size changed in its text: the checksum no longer matches.
    payload, received_us = frames[40]
    body = msgspec.json.decode(payload)
    item = body["data"][0]
    side = "bids" if item["bids"] else "asks"
    item[side][0][1] = str(float(item[side][0][1]) + 1)
    events = parse(session, msgspec.json.encode(body), received_us)
    assert isinstance(events[0], BookUpdate)  # written, as every update
    gap = events[1]
    assert isinstance(gap, Status)
    assert (gap.event, gap.data_type) == ("gap", "orderbook")
    assert gap.detail is not None
    assert gap.detail.startswith(f"book checksum mismatch: venue {item['checksum']}, computed ")
    assert [(r.symbol, r.reason) for r in asked(session).resyncs] == [("BTC-USDT", "checksum")]
    ops = [msgspec.json.decode(f) for f in asked(session).send]
    assert [(o["op"], o["args"]) for o in ops] == [
        ("unsubscribe", [{"channel": "books", "instId": "BTC-USDT"}]),
        ("subscribe", [{"channel": "books", "instId": "BTC-USDT"}]),
    ]
    # Updates until the fresh snapshot are written, unchecked.
    for payload, received_us in frames[41:45]:
        (update,) = feed(session, payload, received_us)
        assert isinstance(update, BookUpdate)
    snapshot, snapshot_us = frames[0]
    resync, fresh = feed(session, snapshot, snapshot_us)
    assert isinstance(resync, Status)
    assert resync.event == "resync"
    assert resync.detail == "fresh books snapshot seqId=None after a checksum mismatch"
    assert isinstance(fresh, BookUpdate)
    assert fresh.kind == "snapshot"
    # Checked again from the fresh snapshot: its own following updates match.
    for payload, received_us in frames[1:30]:
        feed(session, payload, received_us)
    assert len(asked(session).resyncs) == 1


def test_checksum_zero_is_not_checked() -> None:
    """OKX sends checksum 0 since 2026-06-23: nothing to compare, only the crossed check."""
    session = acked(open_session("BTC-USDT", feeds=("orderbook",)))
    parse(session, book_frame("BTC-USDT", "snapshot", [(100, 1)], [(101, 2)], T_MS, 10, -1))
    assert len(parse(session, book_frame("BTC-USDT", "update", [(99, 3)], [], T_MS, 11, 10))) == 1
    assert asked(session).resyncs == []


def test_a_crossed_book_resubscribes_that_instrument_alone() -> None:
    session = acked(open_session("BTC-USDT", "ETH-USDT", feeds=("orderbook",)))
    for symbol in ("BTC-USDT", "ETH-USDT"):
        parse(
            session, book_frame(symbol, "snapshot", [(100, 1), (99, 1)], [(101, 2)], T_MS, 10, -1)
        )
    # Removing the best ask and raising the best bid: not crossed.
    update = book_frame("BTC-USDT", "update", [(100.5, 1)], [(101, 0), (102, 1)], T_MS, 11, 10)
    assert len(parse(session, update)) == 1
    # A bid at the best ask: crossed after the whole update.
    events = parse(session, book_frame("BTC-USDT", "update", [(102, 1)], [], T_MS, 12, 11))
    assert isinstance(events[0], BookUpdate)
    assert events[1] == status(
        "gap",
        "BTC-USDT",
        "orderbook",
        detail="crossed book: best bid 102.0 >= best ask 102.0; resubscribing for a new snapshot",
    )
    assert [(r.symbol, r.reason) for r in asked(session).resyncs] == [("BTC-USDT", "crossed")]
    ops = [msgspec.json.decode(f) for f in asked(session).send]
    assert [o["args"] for o in ops] == [[{"channel": "books", "instId": "BTC-USDT"}]] * 2
    # ETH-USDT is untouched; an update that crosses and uncrosses within itself is fine.
    eth = book_frame("ETH-USDT", "update", [(101.5, 1)], [(101, 0), (103, 1)], T_MS, 11, 10)
    assert len(parse(session, eth)) == 1
    events = parse(
        session, book_frame("BTC-USDT", "snapshot", [(101, 1)], [(102, 1)], T_MS, 20, -1)
    )
    assert events[0] == status(
        "resync",
        "BTC-USDT",
        "orderbook",
        received=20,
        detail="fresh books snapshot seqId=20 after a crossed book",
    )
    assert len(parse(session, book_frame("BTC-USDT", "update", [(101, 2)], [], T_MS, 21, 20))) == 1
    assert len(asked(session).resyncs) == 1
