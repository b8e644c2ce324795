"""Binance adapter without sockets: recorded traffic replays and table-driven edge cases."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import Any

import msgspec
import pytest

from collector.config import MarketSettings
from collector.events import BookUpdate, Event, Status, Ticker, Trade, levels_from_pairs
from collector.exchanges import binance as binance_module
from collector.exchanges.base import ConnectionPlan, ParseError, Subscription
from collector.exchanges.binance import (
    MAX_STREAMS_PER_CONNECTION,
    MAX_STREAMS_PER_SUBSCRIBE,
    BinanceAdapter,
    BinancePlan,
    BinanceSession,
)
from tests.fakes.binance import (
    book_ticker_frame,
    combined_frame,
    depth20_frame,
    depth_diff_frame,
    server_shutdown_frame,
    trade_frame,
)
from tests.samples import read_f2, read_fixture, require_sample
from tests.session_helpers import asked, discarded, feed

NOW = 1_700_000_000_000_000  # a receive time, microseconds
T_US = 1_699_999_999_123_456  # an exchange time in microseconds
T_MS = 1_699_999_999_123  # the same time in milliseconds


def market(
    *symbols: str,
    feeds: tuple[Any, ...] = ("trades", "orderbook", "ticker"),
    book_mode: Any = None,
    book_depth: int | None = None,
    base_url: str | None = None,
) -> MarketSettings:
    return MarketSettings(
        exchange="binance",
        symbols=symbols,
        feeds=feeds,
        book_mode=book_mode,
        book_depth=book_depth,
        base_url=base_url,
    )


def open_session(*symbols: str, **kwargs: Any) -> BinanceSession:
    adapter = BinanceAdapter()
    (plan,) = adapter.plan_connections([market(*symbols, **kwargs)])
    return adapter.open_session(plan)


def parse(session: BinanceSession, frame: str | bytes, received_us: int = NOW) -> list[Event]:
    return feed(session, frame, received_us)


def gap(symbol: str, data_type: str, expected: int, received: int, count: int | None) -> Status:
    return Status(
        "binance", symbol, None, NOW, None, "gap", data_type, expected, received, count, None
    )


# --------------------------------------------------------------------------- recorded traffic


def test_replay_recorded_spot_depth_and_book_ticker() -> None:
    """cryptofeed's 2021 spot capture: 4 symbols, depth@100ms, bookTicker, aggTrade, kline."""
    capture = read_f2(require_sample("cryptofeed-v3/BINANCE.jsonl.zst"))
    symbols = ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR")
    session = open_session(*symbols, feeds=("orderbook", "ticker"), book_mode="diff")
    events: list[Event] = []
    for record in capture.received():
        events.extend(session.parse(record.payload, record.received_us))

    assert not [e for e in events if isinstance(e, Status)], "no spurious gaps"
    assert discarded(session) == {}
    books = [e for e in events if isinstance(e, BookUpdate)]
    tickers = [e for e in events if isinstance(e, Ticker)]
    # aggTrade and kline_1m streams are not ours: ignored, not errors.
    assert (len(books), len(tickers), len(events)) == (177, 84, 261)

    assert books[0] == BookUpdate(
        exchange="binance",
        symbol="NKNUSDT",
        timestamp_exchange=1633998512068000,  # E was in milliseconds in 2021
        timestamp_collector=1633998512063357,
        sequence=499869752,
        kind="delta",
        first_sequence=499869750,
        prev_sequence=None,
        bids=levels_from_pairs([(0.3513, 6195.0), (0.3475, 5548.0), (0.3464, 6222.0)]),
        asks=levels_from_pairs([]),
    )
    assert tickers[0] == Ticker(
        exchange="binance",
        symbol="NKNUSDT",
        timestamp_exchange=None,  # spot bookTicker has no event time
        timestamp_collector=tickers[0].timestamp_collector,
        sequence=499869768,
        bid_price=0.3521,
        bid_size=672.0,
        ask_price=0.3526,
        ask_size=3199.0,
        last_price=None,
        volume_24h=None,
    )

    # U(next) == u(prev) + 1 holds for every symbol across the whole recording.
    by_symbol: dict[str, list[BookUpdate]] = defaultdict(list)
    for book in books:
        by_symbol[book.symbol].append(book)
    assert set(by_symbol) == set(symbols)
    for updates in by_symbol.values():
        for prev, nxt in itertools.pairwise(updates):
            assert prev.sequence is not None
            assert nxt.first_sequence == prev.sequence + 1
    last = {symbol: updates[-1].sequence for symbol, updates in by_symbol.items()}
    assert last == {
        "NKNUSDT": 499870179,
        "BLZETH": 281916638,
        "LRCBTC": 259345563,
        "RUNEEUR": 15602513,
    }

    # The REST snapshots recorded beside the stream sync with it: the first delta past the
    # snapshot satisfies U <= lastUpdateId + 1 <= u (exchanges.md 1.4, step 4).
    for record in capture.http("api/v3/depth?"):
        assert record.data is not None
        assert record.url is not None
        snapshot_id: int = msgspec.json.decode(record.data)["lastUpdateId"]
        symbol = record.url.split("symbol=")[1].split("&")[0]
        first = next(b for b in by_symbol[symbol] if (b.sequence or 0) > snapshot_id)
        assert first.first_sequence is not None
        assert first.sequence is not None
        assert first.first_sequence <= snapshot_id + 1 <= first.sequence


FIXTURES = "nautilus_trader/ws_fixtures/binance/test_data/futures/market_data_json"


def test_recorded_futures_fixtures() -> None:
    """Single USD-M messages: millisecond times, ``pu`` on depth, ``E`` on bookTicker."""
    session = open_session("BTCUSDT", "BNBUSDT", book_mode="diff")

    def wrapped(stream: str, name: str) -> bytes:
        return combined_frame(stream, read_fixture(f"{FIXTURES}/{name}")).encode()

    assert session.parse(wrapped("btcusdt@trade", "trade_stream.json"), NOW) == [
        Trade("binance", "BTCUSDT", 123456785000, NOW, 5933014, "5933014", 0.001, 100.0, "sell")
    ]
    assert session.parse(wrapped("btcusdt@depth@100ms", "depth_update_stream.json"), NOW) == [
        BookUpdate(
            exchange="binance",
            symbol="BTCUSDT",
            timestamp_exchange=123456789000,
            timestamp_collector=NOW,
            sequence=160,
            kind="delta",
            first_sequence=157,
            prev_sequence=149,  # futures frames carry pu
            bids=levels_from_pairs([(0.0024, 10.0)]),
            asks=levels_from_pairs([(0.0026, 100.0)]),
        )
    ]
    assert session.parse(wrapped("bnbusdt@bookTicker", "book_ticker_stream.json"), NOW) == [
        Ticker(
            exchange="binance",
            symbol="BNBUSDT",
            timestamp_exchange=1568014460893000,  # futures bookTicker has E
            timestamp_collector=NOW,
            sequence=400900217,
            bid_price=25.3519,
            bid_size=31.21,
            ask_price=25.3652,
            ask_size=40.66,
            last_price=None,
            volume_24h=None,
        )
    ]
    assert session.parse(wrapped("btcusdt@aggTrade", "agg_trade_stream.json"), NOW) == []


# --------------------------------------------------------------------------- message types


@pytest.mark.parametrize(
    ("time", "expected"),
    [(T_US, T_US), (T_MS, T_MS * 1000), (99_999_999_999_999, 99_999_999_999_999_000)],
    ids=["microseconds", "milliseconds", "just-below-the-ms-limit"],
)
def test_trade_timestamps_in_either_unit(time: int, expected: int) -> None:
    session = open_session("BTCUSDT")
    events = parse(session, trade_frame("BTCUSDT", 17, "64000.10", "0.002", time, False))
    assert events == [Trade("binance", "BTCUSDT", expected, NOW, 17, "17", 64000.10, 0.002, "buy")]


def test_trade_side_is_the_aggressor() -> None:
    session = open_session("BTCUSDT")
    (sell,) = parse(session, trade_frame("btcusdt", 1, 1.0, 1.0, T_US, buyer_maker=True))
    (buy,) = parse(session, trade_frame("btcusdt", 2, 1.0, 1.0, T_US, buyer_maker=False))
    assert isinstance(sell, Trade)
    assert sell.side == "sell"
    assert isinstance(buy, Trade)
    assert buy.side == "buy"


# Connections of trade and diff-depth streams only decode each frame in one pass; any other
# stream (here the ticker's bookTicker) makes the session decode envelope, then data.
BOTH_PATHS = pytest.mark.parametrize(
    "feeds",
    [("trades", "orderbook"), ("trades", "orderbook", "ticker")],
    ids=["one-pass", "general"],
)


@BOTH_PATHS
def test_trade_id_gap_and_duplicates(feeds: tuple[str, ...]) -> None:
    session = open_session("BTCUSDT", "ETHUSDT", feeds=feeds, book_mode="diff")
    ids = {"BTCUSDT": [1, 2, 5, 5, 3, 6], "ETHUSDT": [100, 101]}
    out: dict[str, list[Event]] = {}
    for symbol, trade_ids in ids.items():
        out[symbol] = []
        for trade_id in trade_ids:
            frame = trade_frame(symbol, trade_id, 1.0, 1.0, T_US, False)
            out[symbol].extend(parse(session, frame))
    shape = [(type(e).__name__, e.sequence) for e in out["BTCUSDT"]]
    assert shape == [("Trade", 1), ("Trade", 2), ("Status", None), ("Trade", 5), ("Trade", 6)]
    assert out["BTCUSDT"][2] == gap("BTCUSDT", "trades", 3, 5, 2)
    assert [e.sequence for e in out["ETHUSDT"]] == [100, 101]  # per-symbol state
    assert discarded(session) == {("BTCUSDT", "trades", "duplicate"): 2}  # the second 5, and 3


@BOTH_PATHS
def test_a_batch_gives_what_its_frames_give_one_by_one(feeds: tuple[str, ...]) -> None:
    """``parse_batch`` (what the connection calls for each read) keeps frame order, skips
    a bad frame with its error in order, and builds the rows ``parse`` builds: the hot
    loop for the next trade id, the general code for firsts, gaps and duplicates."""
    frames: list[str | bytes] = [
        trade_frame("BTCUSDT", 10, "64000.1", "0.5", T_US, False),  # first of a symbol
        trade_frame("BTCUSDT", 11, "64000.2", "0.25", T_MS, True),  # next id, ms time
        b"not json",
        trade_frame("ETHUSDT", 500, "3000", "1", T_US, True),
        trade_frame("BTCUSDT", 14, "64000.3", "1", T_US, False),  # a gap
        trade_frame("BTCUSDT", 14, "64000.3", "1", T_US, False),  # a duplicate
        depth_diff_frame("BTCUSDT", 100, 102, [(1.0, 2.0)], [(3.0, 0.0)], T_US),
        b'{"stream":"btcusdt@trade"}',  # no data
        depth_diff_frame("BTCUSDT", 105, 106, [], [(3.5, 1.0)], T_US),  # a gap
        combined_frame("btcusdt@aggTrade", {"e": "aggTrade"}),  # not ours: nothing
        trade_frame("BTCUSDT", 15, "64000.4", "2", T_US, False),
    ]
    payloads = [f.encode() if isinstance(f, str) else f for f in frames]

    one_by_one = open_session("BTCUSDT", "ETHUSDT", feeds=feeds, book_mode="diff")
    expected: list[Event] = []
    expected_errors: list[str] = []
    for payload in payloads:
        try:
            expected.extend(one_by_one.parse(payload, NOW))
        except ParseError as exc:
            expected_errors.append(str(exc))

    batched = open_session("BTCUSDT", "ETHUSDT", feeds=feeds, book_mode="diff")
    events: list[Event] = [Trade("x", "y", None, 0, None, "0", 1.0, 1.0, None)]  # kept
    errors = batched.parse_batch(payloads, NOW, events)

    assert events[1:] == expected
    assert [str(e) for e in errors] == expected_errors
    assert len(errors) == 2
    assert isinstance(errors[0].__cause__, msgspec.DecodeError)  # b"not json"
    assert "has no data" in str(errors[1])
    trades = [e for e in expected if isinstance(e, Trade)]
    assert [(t.symbol, t.sequence, t.trade_id, t.side) for t in trades] == [
        ("BTCUSDT", 10, "10", "buy"),
        ("BTCUSDT", 11, "11", "sell"),
        ("ETHUSDT", 500, "500", "sell"),
        ("BTCUSDT", 14, "14", "buy"),
        ("BTCUSDT", 15, "15", "buy"),
    ]
    assert trades[1].timestamp_exchange == T_MS * 1000
    assert [(e.event, e.data_type) for e in expected if isinstance(e, Status)] == [
        ("gap", "trades"),
        ("gap", "orderbook"),
    ]
    only_the_duplicate = {("BTCUSDT", "trades", "duplicate"): 1}
    assert discarded(batched) == discarded(one_by_one) == only_the_duplicate


def test_first_trade_of_a_session_has_no_gap() -> None:
    session = open_session("BTCUSDT")
    assert [type(e) for e in parse(session, trade_frame("BTCUSDT", 999, 1, 1, T_US, False))] == [
        Trade
    ]


def test_trades_and_book_deltas_are_decoded_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a trades + diff-depth connection the general envelope decoder is not needed for
    data frames; it still answers everything else (here: a subscribe ack)."""
    session = open_session("BTCUSDT", feeds=("trades", "orderbook"), book_mode="diff")
    general_decodes = 0
    real = binance_module._ENVELOPE

    class CountingDecoder:
        def decode(self, payload: bytes) -> Any:
            nonlocal general_decodes
            general_decodes += 1
            return real.decode(payload)

    monkeypatch.setattr(binance_module, "_ENVELOPE", CountingDecoder())
    (trade,) = parse(session, trade_frame("btcusdt", 7, 1.5, 2.0, T_US, buyer_maker=False))
    (book,) = parse(session, depth_diff_frame("BTCUSDT", 10, 12, [(1.0, 2.0)], [], T_US))
    assert trade == Trade("binance", "BTCUSDT", T_US, NOW, 7, "7", 1.5, 2.0, "buy")
    assert book == BookUpdate("binance", "BTCUSDT", T_US, NOW, 12, "delta", 10, None,
                              levels_from_pairs([(1.0, 2.0)]), levels_from_pairs([]))  # fmt: skip
    assert general_decodes == 0
    session.subscribe_frames()
    acks = parse(session, '{"result":null,"id":1}')
    assert [e.event for e in acks if isinstance(e, Status)] == ["subscribed", "subscribed"]
    assert general_decodes == 1


def test_recorded_depth_deltas_are_the_same_on_both_paths() -> None:
    """The 2021 spot capture's depth@100ms frames through a one-pass session (orderbook only)
    and a general one (orderbook and ticker): the same book rows."""
    capture = read_f2(require_sample("cryptofeed-v3/BINANCE.jsonl.zst"))
    symbols = ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR")
    one_pass = open_session(*symbols, feeds=("orderbook",), book_mode="diff")
    general = open_session(*symbols, feeds=("orderbook", "ticker"), book_mode="diff")
    got: dict[str, list[Event]] = {"one_pass": [], "general": []}
    for record in capture.received():
        for name, session in (("one_pass", one_pass), ("general", general)):
            events = session.parse(record.payload, record.received_us)
            got[name].extend(e for e in events if isinstance(e, BookUpdate))
    assert len(got["one_pass"]) == 177
    assert got["one_pass"] == got["general"]


@BOTH_PATHS
def test_depth_diff_continuity_gap_overlap_and_stale(feeds: tuple[str, ...]) -> None:
    session = open_session("BTCUSDT", book_mode="diff", feeds=feeds)

    def diff(first: int, last: int) -> list[Event]:
        frame = depth_diff_frame("BTCUSDT", first, last, [(10.0, 1.0)], [(11.0, 0.0)], T_US)
        return parse(session, frame)

    (first,) = diff(100, 105)  # no predecessor: no gap
    assert first == BookUpdate(
        "binance",
        "BTCUSDT",
        T_US,
        NOW,
        105,
        "delta",
        100,
        None,
        levels_from_pairs([(10.0, 1.0)]),
        levels_from_pairs([(11.0, 0.0)]),
    )
    assert [e.sequence for e in diff(106, 110)] == [110]  # U == u + 1
    assert diff(111, 120)[0].sequence == 120
    assert diff(118, 119) == []  # stale (u <= last u): dropped
    assert diff(115, 120) == []  # duplicate: dropped
    assert [e.sequence for e in diff(119, 125)] == [125]  # overlaps, extends: kept, no gap
    events = diff(130, 131)
    assert events[0] == gap("BTCUSDT", "orderbook", 126, 130, 4)
    assert isinstance(events[1], BookUpdate)
    assert events[1].sequence == 131
    assert discarded(session) == {("BTCUSDT", "orderbook", "stale"): 2}


@BOTH_PATHS
def test_depth_diff_with_pu_uses_it_for_continuity(feeds: tuple[str, ...]) -> None:
    session = open_session("BTCUSDT", book_mode="diff", feeds=feeds)

    def diff(first: int, last: int, pu: int) -> list[Event]:
        data = {"e": "depthUpdate", "E": T_MS, "s": "BTCUSDT", "U": first, "u": last, "pu": pu}
        return parse(session, combined_frame("btcusdt@depth@100ms", {**data, "b": [], "a": []}))

    (book,) = diff(10, 20, 5)
    assert isinstance(book, BookUpdate)
    assert book.prev_sequence == 5
    assert book.timestamp_exchange == T_MS * 1000
    assert len(diff(30, 40, 20)) == 1  # pu == previous u, although U jumps (futures)
    events = diff(50, 60, 45)
    assert events[0] == Status(
        exchange="binance",
        symbol="BTCUSDT",
        timestamp_exchange=None,
        timestamp_collector=NOW,
        sequence=None,
        event="gap",
        data_type="orderbook",
        expected_sequence=40,
        received_sequence=45,
        detail="pu is not the previous u",
    )


@pytest.mark.parametrize("depth", [5, 10, 20])
def test_partial_depth_is_a_snapshot(depth: int) -> None:
    session = open_session("ETHBTC", book_depth=depth)
    frame = depth20_frame("ETHBTC", 777, [("0.05", "1"), ("0.04", "2")], [], depth=depth)
    assert json.loads(frame)["stream"] == f"ethbtc@depth{depth}@100ms"
    assert parse(session, frame) == [
        BookUpdate(
            exchange="binance",
            symbol="ETHBTC",
            timestamp_exchange=None,
            timestamp_collector=NOW,
            sequence=777,
            kind="snapshot",
            first_sequence=777,
            prev_sequence=None,
            bids=levels_from_pairs([(0.05, 1.0), (0.04, 2.0)]),
            asks=levels_from_pairs([]),
        )
    ]
    # Snapshots are not sequence-checked: the same id again is kept.
    assert len(parse(session, frame)) == 1


def test_book_ticker_with_and_without_event_time() -> None:
    session = open_session("BTCUSDT")
    frame = book_ticker_frame("BTCUSDT", 55, "1.5", "2", "1.6", "3")
    assert parse(session, frame) == [
        Ticker("binance", "BTCUSDT", None, NOW, 55, 1.5, 2.0, 1.6, 3.0, None, None)
    ]
    data = json.loads(frame)["data"] | {"E": T_MS}
    (ticker,) = parse(session, combined_frame("btcusdt@bookTicker", data))
    assert isinstance(ticker, Ticker)
    assert ticker.timestamp_exchange == T_MS * 1000


@BOTH_PATHS
@pytest.mark.parametrize("wrapped", [True, False])
def test_server_shutdown_asks_for_a_reconnect(wrapped: bool, feeds: tuple[str, ...]) -> None:
    session = open_session("BTCUSDT", feeds=feeds, book_mode="diff")
    before = asked(session).reconnect
    assert parse(session, server_shutdown_frame(T_US, wrapped=wrapped)) == []
    assert before is None
    assert asked(session).reconnect == "binance serverShutdown notice"


@pytest.mark.parametrize(
    "stream",
    ["btcusdt@aggTrade", "btcusdt@kline_1m", "btcusdt@ticker", "btcusdt@avgPrice", "weird"],
)
@BOTH_PATHS
def test_unknown_streams_are_ignored(stream: str, feeds: tuple[str, ...]) -> None:
    session = open_session("BTCUSDT", feeds=feeds, book_mode="diff")
    assert parse(session, combined_frame(stream, {"e": "whatever", "x": [1, 2]})) == []
    # Even with data shaped like one of ours: the stream name decides.
    assert parse(session, combined_frame(stream, {"e": "trade", "t": 1, "p": "1", "q": "1",
                                                   "T": 1, "m": True})) == []  # fmt: skip


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b'{"stream":"btcusdt@trade","data":{"e":',
        b"[1,2,3]",
        b'{"stream":"btcusdt@trade"}',
        b'{"stream":"btcusdt@trade","data":null}',
        b'{"stream":"btcusdt@trade","data":{"t":1,"p":"1","q":"1","m":true}}',
        b'{"stream":"btcusdt@trade","data":{"t":1,"p":"abc","q":"1","T":1,"m":true}}',
        b'{"stream":"btcusdt@depth@100ms","data":{"E":1,"U":1,"u":2,"b":[["1"]],"a":[]}}',
        b'{"stream":"btcusdt@depth20@100ms","data":{"bids":[],"asks":[]}}',
        b'{"stream":"btcusdt@bookTicker","data":{"u":1,"b":"1","B":"1","a":"1"}}',
        b'{"stream":7,"data":{}}',
    ],
)
@BOTH_PATHS
def test_garbage_raises_parse_error(payload: bytes, feeds: tuple[str, ...]) -> None:
    session = open_session("BTCUSDT", book_mode="diff", feeds=feeds)
    with pytest.raises(ParseError):
        session.parse(payload, NOW)


# --------------------------------------------------------------------------- subscribing


def test_subscribe_ack_reports_each_subscription() -> None:
    session = open_session("BTCUSDT", "ETHUSDT", feeds=("trades", "ticker"))
    (frame,) = session.subscribe_frames()
    assert json.loads(frame) == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@trade", "btcusdt@bookTicker", "ethusdt@trade", "ethusdt@bookTicker"],
        "id": 1,
    }
    assert session.pending_subscriptions == 4
    events = parse(session, '{"result":null,"id":1}')
    assert [(e.symbol, e.event, e.data_type) for e in events if isinstance(e, Status)] == [
        ("BTCUSDT", "subscribed", "trades"),
        ("BTCUSDT", "subscribed", "ticker"),
        ("ETHUSDT", "subscribed", "trades"),
        ("ETHUSDT", "subscribed", "ticker"),
    ]
    assert session.pending_subscriptions == 0
    # An answer to nobody's request (or a repeated one) changes nothing.
    assert parse(session, '{"result":null,"id":1}') == []
    assert parse(session, '{"result":["btcusdt@trade"],"id":99}') == []
    assert session.pending_subscriptions == 0


@pytest.mark.parametrize(
    "error",
    [
        '{"code":2,"msg":"Invalid request: invalid stream","id":1}',
        '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}',
        '{"code":2,"msg":"Invalid request: invalid stream"}',  # no id (ccxt, 2023)
    ],
    ids=["flat", "nested", "without-id"],
)
def test_subscribe_error_on_one_stream(error: str) -> None:
    session = open_session("BTCUSDT")
    assert len(session.subscribe_frames()) == 1
    assert parse(session, error) == []  # 3 streams: split and retried
    first, second = (json.loads(f) for f in asked(session).send)
    asked(session).send.clear()
    assert (first["params"], first["id"]) == (["btcusdt@trade"], 2)
    assert (second["params"], second["id"]) == (["btcusdt@depth20@100ms", "btcusdt@bookTicker"], 3)
    (acked,) = parse(session, '{"result":null,"id":2}')
    assert isinstance(acked, Status)
    assert (acked.event, acked.data_type) == ("subscribed", "trades")
    assert parse(session, error.replace('"id":1', '"id":3')) == []
    third, fourth = (json.loads(f) for f in asked(session).send)
    asked(session).send.clear()
    (acked,) = parse(session, f'{{"result":null,"id":{third["id"]}}}')
    assert isinstance(acked, Status)
    assert (acked.event, acked.data_type) == ("subscribed", "orderbook")
    rejected = parse(session, error.replace('"id":1', f'"id":{fourth["id"]}'))
    assert rejected == [
        Status(
            exchange="binance",
            symbol="BTCUSDT",
            timestamp_exchange=None,
            timestamp_collector=NOW,
            sequence=None,
            event="subscribe_error",
            data_type="ticker",
            detail="btcusdt@bookTicker: Invalid request: invalid stream (code 2)",
        )
    ]
    # Resolved: readiness does not wait for a subscription the venue refused.
    assert session.pending_subscriptions == 0
    assert session.rejected == [Subscription("BTCUSDT", "ticker")]
    assert asked(session).send == []


def test_bisecting_a_large_rejected_request_keeps_the_other_symbols() -> None:
    symbols = [f"S{i:03d}USDT" for i in range(100)]
    session = open_session(*symbols, feeds=("trades", "ticker"))
    bad = "s042usdt@bookTicker"
    queue = session.subscribe_frames()
    assert [len(json.loads(f)["params"]) for f in queue] == [200]
    subscribed: list[Status] = []
    errors: list[Status] = []
    while queue:
        request = json.loads(queue.pop(0))
        if bad in request["params"]:
            reply = {"code": 2, "msg": "Invalid request: invalid stream", "id": request["id"]}
        else:
            reply = {"result": None, "id": request["id"]}
        for event in parse(session, json.dumps(reply)):
            assert isinstance(event, Status)
            (subscribed if event.event == "subscribed" else errors).append(event)
        queue.extend(asked(session).send)
        asked(session).send.clear()
    assert len(subscribed) == 199
    assert [(e.symbol, e.data_type, e.event) for e in errors] == [
        ("S042USDT", "ticker", "subscribe_error")
    ]
    assert session.pending_subscriptions == 0


def test_subscribe_frames_are_small_and_cover_the_plan() -> None:
    symbols = [f"COIN{i:04d}USDT" for i in range(341)]  # 1023 streams: one connection
    adapter = BinanceAdapter()
    (plan,) = adapter.plan_connections([market(*symbols)])
    session = adapter.open_session(plan)
    frames = session.subscribe_frames()
    requests = [json.loads(f) for f in frames]
    assert [r["id"] for r in requests] == [1, 2, 3, 4, 5, 6]
    assert [len(r["params"]) for r in requests] == [200, 200, 200, 200, 200, 23]
    assert all(len(r["params"]) <= MAX_STREAMS_PER_SUBSCRIBE for r in requests)
    assert max(len(f) for f in frames) < 6 * 1024
    assert isinstance(plan, BinancePlan)
    assert [p for r in requests for p in r["params"]] == list(plan.streams)
    assert session.pending_subscriptions == 1023


def test_a_plain_connection_plan_gets_default_streams() -> None:
    plan = ConnectionPlan(
        "binance", "binance-9", "ws://x/stream", (Subscription("BTCUSDT", "orderbook"),)
    )
    (frame,) = BinanceAdapter().open_session(plan).subscribe_frames()
    assert json.loads(frame)["params"] == ["btcusdt@depth20@100ms"]


# --------------------------------------------------------------------------- settings, plans


@pytest.mark.parametrize(
    ("given", "expected"),
    [("btcusdt", "BTCUSDT"), ("BTCUSDT", "BTCUSDT"), ("1000SATSUSDT", "1000SATSUSDT")],
)
def test_normalize_symbol(given: str, expected: str) -> None:
    assert BinanceAdapter.normalize_symbol(given) == expected


@pytest.mark.parametrize(
    "bad", ["BTC-USDT", "BTC/USDT", "btc usdt", "", "B", "X" * 21, "btcusdt@trade", "ÄBC"]
)
def test_normalize_symbol_rejects_other_formats(bad: str) -> None:
    with pytest.raises(ValueError, match="letters and digits") as info:
        BinanceAdapter.normalize_symbol(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "stream"),
    [
        ({}, "btcusdt@depth20@100ms"),
        ({"book_mode": "snapshot"}, "btcusdt@depth20@100ms"),
        ({"book_mode": "snapshot", "book_depth": 5}, "btcusdt@depth5@100ms"),
        ({"book_depth": 10}, "btcusdt@depth10@100ms"),
        ({"book_mode": "diff"}, "btcusdt@depth@100ms"),
    ],
)
def test_check_market_accepts_book_options(kwargs: dict[str, Any], stream: str) -> None:
    settings = market("btcusdt", feeds=("orderbook",), **kwargs)
    BinanceAdapter.check_market(settings)
    (plan,) = BinanceAdapter().plan_connections([settings])
    assert isinstance(plan, BinancePlan)
    assert plan.streams == (stream,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"book_depth": 50}, "book_depth must be 5, 10 or 20"),
        ({"book_mode": "diff", "book_depth": 20}, "book_depth applies only"),
    ],
)
def test_check_market_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BinanceAdapter.check_market(market("btcusdt", **kwargs))


def test_plan_splits_at_1024_streams_keeping_symbols_together() -> None:
    symbols = [f"C{i:04d}USDT" for i in range(700)]  # 2100 streams
    plans = BinanceAdapter().plan_connections([market(*symbols)])
    assert [p.name for p in plans] == ["binance-0", "binance-1", "binance-2"]
    assert [len(p.subscriptions) for p in plans] == [1023, 1023, 54]
    assert all(len(p.subscriptions) <= MAX_STREAMS_PER_CONNECTION for p in plans)
    assert all(p.url == "wss://stream.binance.com:9443/stream?timeUnit=MICROSECOND" for p in plans)
    seen: list[str] = []
    for plan in plans:
        seen.extend(plan.symbols)
    assert seen == symbols  # each symbol on exactly one connection, order kept
    assert plans[0].subscriptions[:3] == (
        Subscription("C0000USDT", "trades"),
        Subscription("C0000USDT", "orderbook"),
        Subscription("C0000USDT", "ticker"),
    )


def test_plan_exactly_1024_streams_fits_one_connection() -> None:
    symbols = [f"C{i:04d}USDT" for i in range(512)]
    plans = BinanceAdapter().plan_connections([market(*symbols, feeds=("trades", "ticker"))])
    assert [len(p.subscriptions) for p in plans] == [1024]


def test_plan_base_url_and_raw_make_their_own_connections() -> None:
    plans = BinanceAdapter().plan_connections(
        [
            market("btcusdt", feeds=("trades", "raw")),
            market("ethusdt", feeds=("trades",), base_url="ws://127.0.0.1:9999/"),
            market("bnbusdt", feeds=("ticker",)),
        ]
    )
    default = "wss://stream.binance.com:9443/stream?timeUnit=MICROSECOND"
    assert [(p.name, p.url, p.raw, p.symbols) for p in plans] == [
        ("binance-0", default, True, ("BTCUSDT",)),
        ("binance-1", "ws://127.0.0.1:9999/stream?timeUnit=MICROSECOND", False, ("ETHUSDT",)),
        ("binance-2", default, False, ("BNBUSDT",)),
    ]
    assert plans[0].subscriptions == (Subscription("BTCUSDT", "trades"),)  # raw is no stream


def test_adapter_limits() -> None:
    assert BinanceAdapter.name == "binance"
    assert BinanceAdapter.client_messages_per_second < 5
    assert BinanceAdapter.keepalive_interval_secs is None
    assert BinanceAdapter().keepalive_frame(1) is None
