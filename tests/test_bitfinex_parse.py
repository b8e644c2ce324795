"""Bitfinex adapter without sockets: recorded traffic replays and table-driven edge cases."""

from __future__ import annotations

import json
import zlib
from typing import Any

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
from collector.exchanges.bitfinex import (
    CONF_FLAGS,
    MAX_CHANNELS_PER_CONNECTION,
    BitfinexAdapter,
    BitfinexPlan,
    BitfinexSession,
)
from tests.samples import read_f2, require_sample
from tests.session_helpers import asked, discarded, feed

NOW = 1_700_000_000_000_000
MS = 1_699_999_999_123
BTC = "tBTCUSD"
RECORDED = ["tBFTUSD", "tIOTETH", "tDOGUSD", "tMNABTC", "tODEUSD", "tTESTBTC:TESTUSD", "tSNGUSD"]


def market(*symbols: str, **kwargs: Any) -> MarketSettings:
    return MarketSettings(exchange="bitfinex", symbols=symbols, **kwargs)


def open_session(*symbols: str, **kwargs: Any) -> BitfinexSession:
    adapter = BitfinexAdapter()
    (plan,) = adapter.plan_connections([market(*symbols, **kwargs)])
    session = adapter.open_session(plan)
    session.subscribe_frames()
    return session


def parse(session: BitfinexSession, frame: Any, received_us: int = NOW) -> list[Event]:
    text = frame if isinstance(frame, str) else json.dumps(frame)
    return feed(session, text, received_us)


def subscribed(session: BitfinexSession, channel: str, symbol: str, chan_id: int) -> list[Event]:
    return parse(
        session,
        {
            "event": "subscribed",
            "channel": channel,
            "chanId": chan_id,
            "symbol": symbol,
            "pair": symbol[1:],
        },
    )


def statuses(events: list[Event], event: str) -> list[Status]:
    return [e for e in events if isinstance(e, Status) and e.event == event]


class Seq:
    """Appends SEQ (and MTS) like the venue with conf flags TIMESTAMP | SEQ_ALL."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, *parts: Any, skip: int = 0) -> list[Any]:
        self.n += 1 + skip
        return [*parts, self.n, MS]


def btc_session(
    feeds: tuple[Any, ...] = ("trades", "orderbook", "ticker"),
) -> tuple[BitfinexSession, Seq]:
    session = open_session(BTC, feeds=feeds)
    for chan_id, kind in enumerate(feeds, start=10):
        subscribed(
            session,
            {"trades": "trades", "orderbook": "book", "ticker": "ticker"}[kind],
            BTC,
            chan_id,
        )
    return session, Seq()


# --------------------------------------------------------------------------- recorded traffic


def test_replay_recorded_capture() -> None:
    """cryptofeed's 2021 capture: 7 pairs, conf SEQ_ALL, book P0/100, trades and ticker."""
    capture = read_f2(require_sample("cryptofeed-v3/BITFINEX.jsonl.zst"))
    session = open_session(*RECORDED, book_depth=100)
    events: list[Event] = []
    for record in capture.received():
        events += session.parse(record.payload, record.received_us)
    assert session.pending_subscriptions == 0
    assert len(statuses(events, "subscribed")) == 21
    # The SEQ_ALL counter runs 1..1670 without a hole (42 of those frames are heartbeats).
    assert statuses(events, "gap") == []
    assert discarded(session) == {}
    books = [e for e in events if isinstance(e, BookUpdate)]
    assert [b.kind for b in books].count("snapshot") == 7
    assert len(books) == 1600
    sequences = [b.sequence or 0 for b in books]
    assert sequences == sorted(sequences)
    # Trade snapshots are not recorded; the window has no live te/tu.
    assert [e for e in events if isinstance(e, Trade)] == []
    tickers = [e for e in events if isinstance(e, Ticker)]
    assert len(tickers) == 21
    assert tickers[0] == Ticker(
        "bitfinex", "tBFTUSD", None, round(1618677543.9512289 * 1e6), 1,
        0.068965, 60157.36709703, 0.0774, 48578.50804052, 0.076989, 101459.39453471,
    )  # fmt: skip
    # [225206,[215350,0,1],18]: count 0 on the bid side deletes the level.
    doge = [b for b in books if b.symbol == "tDOGUSD"]
    assert doge[0].kind == "snapshot"
    assert doge[0].sequence == 16
    assert level_pairs(doge[0].bids)[0] == (277520.0, 0.00383141)
    assert level_pairs(doge[0].asks)[-1] == (400000.0, 0.293614)
    assert (
        doge[1].kind,
        doge[1].sequence,
        level_pairs(doge[1].bids),
        level_pairs(doge[1].asks),
    ) == (
        "delta",
        18,
        [(215350.0, 0.0)],
        [],
    )
    assert level_pairs(doge[2].bids) == [(279380.0, 0.0089)]


def test_recorded_symbol_list_parses() -> None:
    capture = read_f2(require_sample("cryptofeed-v3/BITFINEX.jsonl.zst"))
    symbols = BitfinexAdapter.parse_symbols(next(capture.http("pub:list:pair:exchange")).payload)
    assert "tBTCUSD" in symbols
    assert "tAAVE:USD" in symbols
    assert all(BitfinexAdapter.normalize_symbol(s) == s for s in symbols)


# --------------------------------------------------------------------------- trades


def test_te_then_tu_records_the_trade_once_with_the_taker_side() -> None:
    session, seq = btc_session(("trades",))
    assert parse(session, [10, [[5, MS - 1000, 0.1, 99.0]], 1]) == []  # snapshot: not recorded
    seq.n = 1
    [buy] = parse(session, [10, *seq("te", [401, MS, 0.25, 100.5])])
    assert buy == Trade("bitfinex", BTC, MS * 1000, NOW, 2, "401", 100.5, 0.25, "buy")
    assert parse(session, [10, *seq("tu", [401, MS, 0.25, 100.5])]) == []
    [sell] = parse(session, [10, *seq("tu", [402, MS, -0.5, 100.0])])  # te missed: tu counts
    assert isinstance(sell, Trade)
    assert (sell.side, sell.size, sell.trade_id) == ("sell", 0.5, "402")
    assert parse(session, [10, *seq("te", [402, MS, -0.5, 100.0])]) == []


# --------------------------------------------------------------------------- book


def test_book_snapshot_sides_and_deltas() -> None:
    session, seq = btc_session(("orderbook",))
    [snap] = parse(session, [10, *seq([[100.0, 2, 1.5], [99.0, 1, 0.5], [101.0, 3, -2.0]])])
    assert snap == BookUpdate(
        "bitfinex",
        BTC,
        MS * 1000,
        NOW,
        1,
        "snapshot",
        1,
        None,
        levels_from_pairs([(100.0, 1.5), (99.0, 0.5)]),
        levels_from_pairs([(101.0, 2.0)]),
    )
    [update] = parse(session, [10, *seq([101.0, 2, -1.25])])
    assert isinstance(update, BookUpdate)
    assert (update.kind, update.sequence, level_pairs(update.bids), level_pairs(update.asks)) == (
        "delta",
        2,
        [],
        [(101.0, 1.25)],
    )
    [delete_bid] = parse(session, [10, *seq([100.0, 0, 1])])
    assert isinstance(delete_bid, BookUpdate)
    assert (level_pairs(delete_bid.bids), level_pairs(delete_bid.asks)) == ([(100.0, 0.0)], [])
    [delete_ask] = parse(session, [10, *seq([101.0, 0, -1])])
    assert isinstance(delete_ask, BookUpdate)
    assert (level_pairs(delete_ask.bids), level_pairs(delete_ask.asks)) == ([], [(101.0, 0.0)])


def test_sequence_gap_marks_every_symbol_and_resubscribes_books() -> None:
    session = open_session(BTC, "tETHUSD", feeds=("trades", "orderbook"))
    subscribed(session, "trades", BTC, 10)
    subscribed(session, "book", BTC, 11)
    subscribed(session, "trades", "tETHUSD", 12)
    subscribed(session, "book", "tETHUSD", 13)
    seq = Seq()
    parse(session, [11, *seq([[100.0, 1, 1.0]])])
    parse(session, [13, *seq([[10.0, 1, 1.0]])])
    events = parse(session, [11, *seq([100.0, 1, 2.0], skip=2)])  # 3 and 4 are missing
    gaps = statuses(events, "gap")
    assert [
        (g.symbol, g.data_type, g.expected_sequence, g.received_sequence, g.count) for g in gaps
    ] == [
        (BTC, None, 3, 5, 2),
        ("tETHUSD", None, 3, 5, 2),
    ]
    assert not [e for e in events if isinstance(e, BookUpdate)]  # the book is being resynced
    assert [json.loads(f) for f in asked(session).send] == [
        {"event": "unsubscribe", "chanId": 11},
        {"event": "unsubscribe", "chanId": 13},
    ]
    asked(session).send.clear()
    # Trades keep flowing; books are dropped until their new snapshot.
    assert len(parse(session, [10, *seq("te", [1, MS, 1.0, 100.0])])) == 1
    assert parse(session, [13, *seq([10.0, 1, 2.0])]) == []
    assert discarded(session) == {
        (BTC, "orderbook", "while_resyncing"): 1,  # the frame that showed the gap
        ("tETHUSD", "orderbook", "while_resyncing"): 1,
    }
    assert parse(session, {"event": "unsubscribed", "status": "OK", "chanId": 11}) == []
    [resubscribe] = [json.loads(f) for f in asked(session).send]
    assert resubscribe == {
        "event": "subscribe",
        "channel": "book",
        "symbol": BTC,
        "prec": "P0",
        "freq": "F0",
        "len": "25",
    }
    assert subscribed(session, "book", BTC, 21) == []  # not a new "subscribed" row
    assert session.pending_subscriptions == 0
    events = parse(session, [21, *seq([[100.5, 1, 3.0]])])
    [resync] = statuses(events, "resync")
    assert (resync.symbol, resync.data_type, resync.received_sequence) == (BTC, "orderbook", 8)
    assert isinstance(events[-1], BookUpdate)
    assert events[-1].kind == "snapshot"


def test_duplicate_sequence_is_dropped() -> None:
    session, seq = btc_session(("orderbook",))
    parse(session, [10, *seq([[100.0, 1, 1.0]])])
    assert parse(session, [10, [100.0, 1, 2.0], 1, MS]) == []
    assert discarded(session) == {(BTC, "orderbook", "duplicate"): 1}


def test_a_repeated_heartbeat_and_the_second_message_of_a_trade_are_not_discards() -> None:
    """Only data counts as discarded: a heartbeat carries none, and ``tu`` after ``te`` is
    how the venue sends every trade (one row, nothing lost)."""
    session, seq = btc_session(("trades",))
    parse(session, [10, *seq("hb")])
    assert parse(session, [10, "hb", seq.n, MS]) == []  # the same SEQ again
    assert len(parse(session, [10, *seq("te", [401, MS, 0.25, 100.5])])) == 1
    assert parse(session, [10, *seq("tu", [401, MS, 0.25, 100.5])]) == []
    assert discarded(session) == {}
    assert parse(session, [10, "te", [402, MS, 0.25, 100.5], seq.n, MS]) == []  # a SEQ seen
    assert discarded(session) == {(BTC, "trades", "duplicate"): 1}


def test_heartbeats_count_in_the_sequence_and_make_no_events() -> None:
    session, seq = btc_session(("ticker",))
    assert parse(session, [10, *seq("hb")]) == []
    assert parse(session, [999, *seq("hb")]) == []  # a channel not (yet) known
    assert parse(session, [10, *seq("cs", -12345)]) == []
    events = parse(session, [10, *seq([1.0, 2.0, 3.0, 4.0, 0.1, 0.01, 2.5, 1000.0, 3.0, 1.0])])
    assert statuses(events, "gap") == []
    assert events == [Ticker("bitfinex", BTC, MS * 1000, NOW, 4, 1.0, 2.0, 3.0, 4.0, 2.5, 1000.0)]


def test_refused_conf_turns_sequence_checks_off() -> None:
    session, _ = btc_session(("ticker",))
    parse(session, {"event": "conf", "status": "FAILED", "flags": CONF_FLAGS})
    [ticker] = parse(session, [10, [1.0, 2.0, 3.0, 4.0, 0.1, 0.01, 2.5, 1000.0, 3.0, 1.0]])
    assert isinstance(ticker, Ticker)
    assert ticker.sequence is None
    assert ticker.timestamp_exchange is None


# --------------------------------------------------------------------------- events


def test_subscribe_frames_conf_first_then_one_per_channel() -> None:
    adapter = BitfinexAdapter()
    (plan,) = adapter.plan_connections([market(BTC, book_depth=100)])
    frames = [json.loads(f) for f in adapter.open_session(plan).subscribe_frames()]
    assert frames == [
        {"event": "conf", "flags": 229376},
        {"event": "subscribe", "channel": "trades", "symbol": BTC},
        {
            "event": "subscribe",
            "channel": "book",
            "symbol": BTC,
            "prec": "P0",
            "freq": "F0",
            "len": "100",
        },
        {"event": "subscribe", "channel": "ticker", "symbol": BTC},
    ]


def test_subscribe_error_is_matched_by_channel_and_symbol() -> None:
    session = open_session(BTC, "tFOOBAR", feeds=("trades",))
    error = {
        "channel": "trades",
        "symbol": "tFOOBAR",
        "event": "error",
        "msg": "symbol: invalid",
        "code": 10300,
        "pair": "FOOBAR",
    }
    [refused] = parse(session, error)
    assert isinstance(refused, Status)
    assert refused.event == "subscribe_error"
    assert (refused.symbol, refused.data_type) == ("tFOOBAR", "trades")
    assert refused.detail == "trades tFOOBAR: symbol: invalid (code 10300)"
    [ok] = subscribed(session, "trades", BTC, 7)
    assert isinstance(ok, Status)
    assert ok.event == "subscribed"
    assert session.pending_subscriptions == 0
    assert session.rejected == [Subscription("tFOOBAR", "trades")]


def test_error_without_echo_blames_the_oldest_pending_subscription() -> None:
    session = open_session(BTC, feeds=("trades", "ticker"))
    [refused] = parse(session, {"event": "error", "msg": "subscribe: limit", "code": 10305})
    assert isinstance(refused, Status)
    assert (refused.symbol, refused.data_type) == (BTC, "trades")
    assert session.pending_subscriptions == 1


@pytest.mark.parametrize(
    ("code", "reconnect", "maintenance"),
    [(20051, True, False), (20060, False, True), (20061, True, False), (99999, False, False)],
)
def test_info_codes(code: int, reconnect: bool, maintenance: bool) -> None:
    session = open_session(BTC)
    assert parse(session, {"event": "info", "code": code, "msg": "x"}) == []
    assert (asked(session).reconnect is not None) == reconnect
    assert session.maintenance == maintenance


def test_info_with_platform_status_0_marks_maintenance() -> None:
    session = open_session(BTC)
    parse(session, {"event": "info", "version": 2, "platform": {"status": 0}})
    assert session.maintenance
    assert asked(session).reconnect is None


def test_keepalive_ping_and_pong() -> None:
    session = open_session(BTC)
    assert [json.loads(BitfinexAdapter().keepalive_frame(n)) for n in (1, 2)] == [
        {"event": "ping", "cid": 1},
        {"event": "ping", "cid": 2},
    ]
    assert parse(session, {"event": "pong", "ts": MS, "cid": 1}) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"garbage",
        b"[1]",
        b'["x","hb"]',
        b"[10,[1,2",
        b'{"no_event":1}',
        b'{"event":"subscribed","chanId":1}',
    ],
)
def test_garbage_raises_parse_error(payload: bytes) -> None:
    with pytest.raises(ParseError):
        open_session(BTC).parse(payload, NOW)


def test_malformed_channel_bodies_raise_parse_error() -> None:
    session, _ = btc_session()
    for frame in ([10, "te", [1, 2]], [11, ["x", 1, 1]], [12, [1.0, 2.0]]):
        with pytest.raises(ParseError):
            parse(session, frame)


# --------------------------------------------------------------------------- adapter


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("tBTCUSD", "tBTCUSD"),
        ("BTCUSD", "tBTCUSD"),
        ("tbtcusd", "tBTCUSD"),
        ("btcusd", "tBTCUSD"),
        ("trxusd", "tTRXUSD"),
        ("tTESTBTC:TESTUSD", "tTESTBTC:TESTUSD"),
        ("AAVE:USD", "tAAVE:USD"),
        ("tBTCF0:USTF0", "tBTCF0:USTF0"),
    ],
)
def test_normalize_symbol(given: str, expected: str) -> None:
    assert BitfinexAdapter.normalize_symbol(given) == expected


@pytest.mark.parametrize("bad", ["", "BTC-USD", "tBTC", "BTCUSDT", "t:USD", "BTC/USD"])
def test_normalize_symbol_rejects_other_formats(bad: str) -> None:
    with pytest.raises(ValueError, match="expected a trading pair such as 'tBTCUSD'"):
        BitfinexAdapter.normalize_symbol(bad)


def test_funding_symbols_are_refused() -> None:
    with pytest.raises(ValueError, match="funding"):
        BitfinexAdapter.normalize_symbol("fUSD")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"book_depth": 10}, "1, 25, 100 or 250"),
        ({"book_mode": "diff"}, "no book_mode"),
        ({"category": "spot"}, "no category"),
    ],
)
def test_check_market_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BitfinexAdapter.check_market(market(BTC, **kwargs))


@pytest.mark.parametrize("depth", [1, 25, 100, 250])
def test_check_market_accepts_book_lengths(depth: int) -> None:
    BitfinexAdapter.check_market(market(BTC, book_depth=depth))


def test_plan_splits_at_25_channels_keeping_symbols_together() -> None:
    symbols = [f"t{chr(65 + i)}{chr(65 + i)}CUSD" for i in range(20)]  # 60 channels
    plans = BitfinexAdapter().plan_connections([market(*symbols)])
    assert [len(p.subscriptions) for p in plans] == [24, 24, 12]
    assert all(len(p.subscriptions) <= MAX_CHANNELS_PER_CONNECTION for p in plans)
    assert [p.name for p in plans] == ["bitfinex-0", "bitfinex-1", "bitfinex-2"]
    assert plans[0].url == "wss://api-pub.bitfinex.com/ws/2"


def test_plan_base_url_raw_and_book_length_make_their_own_connections() -> None:
    plans = BitfinexAdapter().plan_connections(
        [
            market(BTC),
            market("tETHUSD", book_depth=100),
            market("tLTCUSD", feeds=("trades", "raw")),
            market("tXRPUSD", base_url="ws://127.0.0.1:1"),
        ]
    )
    assert [
        (p.url, p.raw, p.symbols, p.book_len) for p in plans if isinstance(p, BitfinexPlan)
    ] == [
        ("wss://api-pub.bitfinex.com/ws/2", False, (BTC,), 25),
        ("wss://api-pub.bitfinex.com/ws/2", False, ("tETHUSD",), 100),
        ("wss://api-pub.bitfinex.com/ws/2", True, ("tLTCUSD",), 25),
        ("ws://127.0.0.1:1/ws/2", False, ("tXRPUSD",), 25),
    ]


def test_a_plain_connection_plan_works() -> None:
    plan = ConnectionPlan("bitfinex", "b-0", "ws://x/ws/2", (Subscription(BTC, "orderbook"),))
    frames = [json.loads(f) for f in BitfinexAdapter().open_session(plan).subscribe_frames()]
    assert frames[1]["len"] == "25"


def test_symbols_url_and_parse_symbols() -> None:
    assert (
        BitfinexAdapter.symbols_url()
        == "https://api-pub.bitfinex.com/v2/conf/pub:list:pair:exchange"
    )
    assert (
        BitfinexAdapter.symbols_url("http://127.0.0.1:9/")
        == "http://127.0.0.1:9/v2/conf/pub:list:pair:exchange"
    )
    assert BitfinexAdapter.parse_symbols(b'[["BTCUSD","TESTBTC:TESTUSD"]]') == [
        "tBTCUSD",
        "tTESTBTC:TESTUSD",
    ]
    for body in (b"{}", b"[]", b"nope"):
        with pytest.raises(ParseError):
            BitfinexAdapter.parse_symbols(body)


def test_adapter_limits() -> None:
    assert BitfinexAdapter.name == "bitfinex"
    assert BitfinexAdapter.keepalive_interval_secs == 15.0
    assert BitfinexAdapter.connections_per_second * 60 == 20
    assert MAX_CHANNELS_PER_CONNECTION == 25


# --------------------------------------------------------------------------- book checks


def reference_checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """Bitfinex's WS checksum guide, written out: best 25 bids (high first) and asks (low
    first) interleaved ``price:amount`` with ask amounts negative as sent, ``:``-joined,
    CRC32 as a signed 32-bit integer."""
    bids = sorted(bids, key=lambda level: -float(level[0]))[:25]
    asks = sorted(asks, key=lambda level: float(level[0]))[:25]
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    value = zlib.crc32(":".join(parts).encode())
    return value - 2**32 if value >= 2**31 else value


def book_session() -> tuple[BitfinexSession, Seq]:
    session, seq = btc_session(("orderbook",))
    snapshot = f"[10,[[50000.5,2,1.25],[49999,1,0.5],[50001,1,-0.75],[50002.25,3,-2]],1,{MS}]"
    seq.n = 1
    parse(session, snapshot)
    return session, seq


def test_checksum_frames_are_checked_against_the_local_book() -> None:
    session, seq = book_session()
    bids = [("50000.5", "1.25"), ("49999", "0.5")]
    asks = [("50001", "-0.75"), ("50002.25", "-2")]
    assert parse(session, seq(10, "cs", reference_checksum(bids, asks))) == []
    # Updates: a bid resized (to a tiny amount, whose text is used as sent: a float's repr
    # would be 1e-05), an ask removed (COUNT 0, AMOUNT -1), a new ask.
    assert len(parse(session, f"[10,[49999,2,0.00001],{seq.n + 1},{MS}]")) == 1
    assert len(parse(session, f"[10,[50001,0,-1],{seq.n + 2},{MS}]")) == 1
    assert len(parse(session, f"[10,[50003,1,-0.1],{seq.n + 3},{MS}]")) == 1
    seq.n += 3
    bids = [("50000.5", "1.25"), ("49999", "0.00001")]
    asks = [("50002.25", "-2"), ("50003", "-0.1")]
    assert parse(session, seq(10, "cs", reference_checksum(bids, asks))) == []
    assert asked(session).resyncs == []
    assert asked(session).send == []


def test_a_checksum_mismatch_resubscribes_that_book_alone() -> None:
    session = open_session(BTC, "tETHUSD", feeds=("orderbook", "trades"))
    for chan_id, (channel, symbol) in enumerate(
        [("book", BTC), ("trades", BTC), ("book", "tETHUSD"), ("trades", "tETHUSD")], start=10
    ):
        subscribed(session, channel, symbol, chan_id)
    seq = Seq()
    parse(session, seq(10, [[50000, 1, 1.0], [50001, 1, -1.0]]))
    parse(session, seq(12, [[3000, 1, 1.0], [3001, 1, -1.0]]))
    events = parse(session, seq(10, "cs", 12345))
    [gap] = statuses(events, "gap")
    assert (gap.symbol, gap.data_type) == (BTC, "orderbook")
    assert gap.detail is not None
    assert gap.detail.startswith("book checksum mismatch: venue 12345, computed ")
    assert gap.detail.endswith("; resubscribing for a new snapshot")
    assert [(r.symbol, r.reason) for r in asked(session).resyncs] == [(BTC, "checksum")]
    assert [json.loads(f) for f in asked(session).send] == [{"event": "unsubscribe", "chanId": 10}]
    # The other book is untouched; BTC's frames until its new snapshot are dropped, counted.
    assert len(parse(session, seq(12, [3000, 1, 2.0]))) == 1
    assert parse(session, seq(10, [50000, 1, 2.0])) == []
    assert discarded(session) == {(BTC, "orderbook", "while_resyncing"): 1}
    parse(session, {"event": "unsubscribed", "status": "OK", "chanId": 10})
    assert json.loads(asked(session).send[-1])["channel"] == "book"
    subscribed(session, "book", BTC, 20)
    events = parse(session, seq(20, [[50000, 1, 3.0], [50001, 1, -1.0]]))
    [resync] = statuses(events, "resync")
    assert resync.detail == "new book snapshot after resubscribing after a checksum mismatch"
    assert isinstance(events[-1], BookUpdate)
    # Checked again: the venue's checksum of the new book matches.
    good = reference_checksum([("50000", "3.0")], [("50001", "-1.0")])
    assert parse(session, seq(20, "cs", good)) == []
    assert len(asked(session).resyncs) == 1


def test_a_crossed_update_resubscribes_the_book() -> None:
    session, seq = book_session()
    # A bid at the best ask's price: crossed.
    events = parse(session, seq(10, [50001, 1, 0.3]))
    assert isinstance(events[0], BookUpdate)
    [gap] = statuses(events, "gap")
    assert gap.detail == (
        "crossed book: best bid 50001.0 >= best ask 50001.0; resubscribing for a new snapshot"
    )
    assert [r.reason for r in asked(session).resyncs] == ["crossed"]
    assert [json.loads(f) for f in asked(session).send] == [{"event": "unsubscribe", "chanId": 10}]
