"""Upbit adapter without sockets: the recorded SIMPLE capture and table-driven cases."""

from __future__ import annotations

from array import array
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
from collector.exchanges import get_adapter_class
from collector.exchanges.base import ParseError
from collector.exchanges.upbit import (
    KEEPALIVE_SECS,
    MAX_CODES_PER_CONNECTION,
    UpbitAdapter,
    UpbitSession,
)
from tests.fakes.upbit import (
    STATUS_UP,
    error_message,
    orderbook_message,
    ticker_message,
    trade_message,
)
from tests.samples import read_f2, require_sample
from tests.session_helpers import discarded

NOW = 1_786_309_600_000_000
T_MS = 1_786_309_548_123

RECORDED = (
    "BTC-ARK",
    "BTC-FCT2",
    "BTC-STPT",
    "BTC-ITAM",
    "BTC-MARO",
    "KRW-WAVES",
    "BTC-AQT",
    "BTC-XTZ",
    "KRW-LAMB",
    "BTC-PAX",
)


def market(*symbols: str, **options: Any) -> MarketSettings:
    values: dict[str, Any] = {"exchange": "upbit", "symbols": symbols, **options}
    return MarketSettings(**values)


def open_session(
    *symbols: str, adapter: UpbitAdapter | None = None, **options: Any
) -> UpbitSession:
    adapter = adapter or UpbitAdapter()
    (plan,) = adapter.plan_connections([market(*symbols, **options)])
    return adapter.open_session(plan)


def statuses(events: list[Event]) -> list[tuple[str, str, str | None]]:
    return [(e.event, e.symbol, e.data_type) for e in events if isinstance(e, Status)]


# --------------------------------------------------------------------------- recorded traffic


def test_replay_of_the_recorded_simple_format() -> None:
    """cryptofeed's 2021 capture (SIMPLE format, binary frames): 304 trades, 145 books."""
    capture = read_f2(require_sample("cryptofeed-v3/UPBIT.jsonl.zst"))
    session = open_session(*RECORDED, feeds=("trades", "orderbook"))
    events: list[Event] = []
    for record in capture.received():
        assert record.b64 is not None  # every data frame was binary
        events.extend(session.parse(record.payload, record.received_us))

    trades = [e for e in events if isinstance(e, Trade)]
    books = [e for e in events if isinstance(e, BookUpdate)]
    assert (len(trades), len(books)) == (304, 145)
    assert discarded(session) == {}
    # 8 of the 20 subscriptions saw data in those 30 s; the others still wait.
    assert [s[0] for s in statuses(events)] == ["subscribed"] * 8
    assert session.pending_subscriptions == 12
    assert trades[0] == Trade(
        "upbit",
        "KRW-LAMB",
        1618678262000000,
        1618678263010785,
        1618678262000003,
        "1618678262000003",
        127.0,
        46.48838371,
        "buy",
    )
    assert trades[1].side == "sell"
    book = books[0]
    assert (book.symbol, book.kind, book.timestamp_exchange, book.sequence) == (
        "KRW-LAMB",
        "snapshot",
        1618678262640000,
        None,
    )
    assert (len(level_pairs(book.bids)), len(level_pairs(book.asks))) == (15, 15)
    assert level_pairs(book.bids)[0] == (126.0, 688682.44561413)
    assert level_pairs(book.asks)[0] == (127.0, 280460.37885666)
    for b in books:
        assert isinstance(b.bids, array)  # parsing gives flat levels
        assert isinstance(b.asks, array)
        assert level_pairs(b.bids)[0][0] < level_pairs(b.asks)[0][0]
    # sequential_id is unique per code only: 3 ids recur on other codes in the recording,
    # which is why de-duplication keys on (code, sequential_id).
    assert len({(t.symbol, t.trade_id) for t in trades}) == 304
    assert len({t.trade_id for t in trades}) == 301


# --------------------------------------------------------------------------- frames


def test_subscribe_request_and_keepalive() -> None:
    session = open_session("KRW-BTC", "btc-eth", book_depth=5)
    request, listing = (msgspec.json.decode(f) for f in session.subscribe_frames(NOW))
    assert request == [
        {"ticket": f"collector-upbit-0-{NOW}"},
        {"type": "trade", "codes": ["KRW-BTC", "BTC-ETH"]},
        {"type": "orderbook", "codes": ["KRW-BTC.5", "BTC-ETH.5"]},
        {"type": "ticker", "codes": ["KRW-BTC", "BTC-ETH"]},
        {"format": "DEFAULT"},
    ]
    assert listing == [
        {"ticket": f"collector-upbit-0-{NOW}"},
        {"method": "LIST_SUBSCRIPTIONS"},
        {"format": "DEFAULT"},
    ]
    assert [UpbitAdapter().keepalive_frame(n) for n in (1, 2)] == ["PING", "PING"]
    assert UpbitAdapter.keepalive_interval_secs == KEEPALIVE_SECS == 20.0
    assert session.parse(STATUS_UP, NOW) == []
    assert session.parse(b'{"status":"UP"}', NOW) == []  # text or binary, same bytes
    assert session.pongs == 2


# --------------------------------------------------------------------------- messages


def test_default_format_messages() -> None:
    session = open_session("KRW-BTC")
    events = session.parse(
        trade_message("KRW-BTC", 77, 95_000_000.0, 0.5, T_MS, "ASK", stream_type="SNAPSHOT"),
        NOW,
    )
    assert events == [
        Status("upbit", "KRW-BTC", None, NOW, None, "subscribed", "trades"),
        Trade("upbit", "KRW-BTC", T_MS * 1000, NOW, 77, "77", 95_000_000.0, 0.5, "sell"),
    ]
    events = session.parse(orderbook_message("KRW-BTC", [(1.0, 2.0)], [(3.0, 4.0)], T_MS), NOW)
    assert events[1:] == [
        BookUpdate(
            "upbit",
            "KRW-BTC",
            T_MS * 1000,
            NOW,
            None,
            "snapshot",
            None,
            None,
            levels_from_pairs([(1.0, 2.0)]),
            levels_from_pairs([(3.0, 4.0)]),
        )
    ]
    events = session.parse(ticker_message("KRW-BTC", 5.0, 6.0, T_MS), NOW)
    assert events[1:] == [
        Ticker("upbit", "KRW-BTC", T_MS * 1000, NOW, None, None, None, None, None, 5.0, 6.0)
    ]
    assert session.pending_subscriptions == 0
    # Later messages: no more status rows.
    assert len(session.parse(ticker_message("KRW-BTC", 5.0, 6.0, T_MS), NOW)) == 1


def test_repeated_trades_are_dropped_across_sessions_of_one_adapter() -> None:
    adapter = UpbitAdapter()
    frame = trade_message("KRW-BTC", 5, 1.0, 1.0, T_MS, "BID")
    first = open_session("KRW-BTC", adapter=adapter)
    assert len(first.parse(frame, NOW)) == 2
    assert first.parse(frame, NOW) == []
    assert discarded(first) == {("KRW-BTC", "trades", "duplicate"): 1}
    again = open_session("KRW-BTC", adapter=adapter)  # a reconnect
    assert statuses(again.parse(frame, NOW)) == [("subscribed", "KRW-BTC", "trades")]
    assert discarded(again) == {("KRW-BTC", "trades", "duplicate"): 1}


def test_list_subscriptions_resolves_every_subscription() -> None:
    session = open_session("KRW-BTC", "KRW-NOPE", feeds=("trades", "orderbook"))
    answer = {
        "method": "LIST_SUBSCRIPTIONS",
        "result": [
            {"type": "trade", "codes": ["KRW-BTC"]},
            {"type": "orderbook", "codes": ["KRW-BTC.15"], "level": 0},
        ],
        "ticket": "t",
    }
    events = session.parse(msgspec.json.encode(answer), NOW)
    assert statuses(events) == [
        ("subscribed", "KRW-BTC", "orderbook"),
        ("subscribe_error", "KRW-NOPE", "orderbook"),
        ("subscribed", "KRW-BTC", "trades"),
        ("subscribe_error", "KRW-NOPE", "trades"),
    ]
    assert [e.detail for e in events if isinstance(e, Status)][1] == (
        "orderbook KRW-NOPE: not in LIST_SUBSCRIPTIONS"
    )
    assert session.pending_subscriptions == 0
    assert session.parse(msgspec.json.encode(answer), NOW) == []  # nothing left to resolve


def test_list_subscriptions_in_simple_format() -> None:
    session = open_session("KRW-BTC", feeds=("trades",))
    frame = b'{"mthd":"LIST_SUBSCRIPTIONS","rslt":[{"ty":"trade","cds":["KRW-BTC"]}],"tckt":"t"}'
    assert statuses(session.parse(frame, NOW)) == [("subscribed", "KRW-BTC", "trades")]


def test_an_error_refuses_what_is_still_waiting() -> None:
    session = open_session("KRW-BTC", "KRW-ETH", feeds=("trades",))
    session.parse(trade_message("KRW-BTC", 1, 1.0, 1.0, T_MS, "BID"), NOW)
    events = session.parse(error_message("INVALID_PARAM", "잘못된 코드입니다"), NOW)
    assert [(e.event, e.symbol, e.detail) for e in events if isinstance(e, Status)] == [
        ("subscribe_error", "KRW-ETH", "trade KRW-ETH: INVALID_PARAM: 잘못된 코드입니다")
    ]
    assert session.pending_subscriptions == 0
    assert session.parse(error_message("WRONG_FORMAT", "x"), NOW) == []
    assert session.errors == ["WRONG_FORMAT: x"]


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"type":"trade","trade_price":1.0}',
        b'{"type":"trade","code":"KRW-BTC","trade_price":"x","trade_volume":1,"sequential_id":1}',
        b'{"type":"trade","code":"KRW-BTC","trade_volume":1,"sequential_id":1}',
        b'{"type":"orderbook","code":"KRW-BTC","timestamp":1}',
        b'{"ty":"orderbook","cd":"KRW-BTC","obu":[{"ap":1}]}',
    ],
)
def test_garbage_is_a_parse_error(frame: bytes) -> None:
    with pytest.raises(ParseError):
        open_session("KRW-BTC").parse(frame, NOW)


def test_other_types_are_ignored() -> None:
    frame = b'{"type":"candle.1s","code":"KRW-BTC","timestamp":1}'
    assert open_session("KRW-BTC").parse(frame, NOW) == []


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("KRW-BTC", "KRW-BTC"), ("usdt-btc", "USDT-BTC"), ("BTC-FCT2", "BTC-FCT2")],
)
def test_symbols(given: str, canonical: str) -> None:
    assert UpbitAdapter.normalize_symbol(given) == canonical


@pytest.mark.parametrize("bad", ["BTCKRW", "KRW/BTC", "KRW-", "KRW-BTC-X", "KRW-BTC.15"])
def test_bad_symbols_name_the_format(bad: str) -> None:
    with pytest.raises(ValueError, match=r"expected QUOTE-BASE with a dash, quote first"):
        UpbitAdapter.normalize_symbol(bad)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"book_mode": "diff"}, "book_mode can only be 'snapshot'"),
        ({"book_depth": 10}, "book_depth must be 1, 5, 15 or 30"),
        ({"category": "spot"}, "no category"),
        ({"rest_url": "ftp://x"}, "rest_url must start with http"),
    ],
)
def test_check_market_rejects(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UpbitAdapter.check_market(market("KRW-BTC", **options))


def test_check_market_accepts_the_supported_options() -> None:
    UpbitAdapter.check_market(market("KRW-BTC", book_mode="snapshot", book_depth=15))


def test_planning_splits_codes_and_keeps_depths_apart() -> None:
    adapter = UpbitAdapter()
    many = tuple(f"KRW-C{i}" for i in range(MAX_CODES_PER_CONNECTION + 1))
    plans = adapter.plan_connections(
        [market(*many), market("BTC-ETH", book_depth=5, feeds=("orderbook",))]
    )
    assert [(p.name, len(p.symbols), p.url) for p in plans] == [
        ("upbit-0", 100, "wss://api.upbit.com/websocket/v1"),
        ("upbit-1", 1, "wss://api.upbit.com/websocket/v1"),
        ("upbit-2", 1, "wss://api.upbit.com/websocket/v1"),
    ]
    assert len(plans[0].subscriptions) == 300
    assert get_adapter_class("upbit") is UpbitAdapter


def test_parse_symbols_from_the_recorded_market_listing() -> None:
    capture = read_f2(require_sample("cryptofeed-v3/UPBIT.jsonl.zst"))
    [record] = capture.http()
    symbols = UpbitAdapter.parse_symbols(record.payload)
    assert "KRW-BTC" in symbols
    assert "BTC-ETH" in symbols
    assert all(UpbitAdapter.normalize_symbol(s) == s for s in symbols)
    assert UpbitAdapter.symbols_url() == "https://api.upbit.com/v1/market/all"
    with pytest.raises(ParseError):
        UpbitAdapter.parse_symbols(b'{"error":{}}')
