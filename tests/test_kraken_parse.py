"""Kraken v2 adapter without sockets: checksum vectors, fixtures, edge cases.

The local book and the checksum code alone are tested in ``test_kraken_book.py``.
"""

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
from collector.exchanges import get_adapter_class
from collector.exchanges.base import ConnectionPlan, ParseError, Subscription
from collector.exchanges.kraken import (
    MAX_CHECKSUM_FAILURES,
    MAX_SUBSCRIPTIONS_PER_CONNECTION,
    MAX_SYMBOLS_PER_SUBSCRIBE,
    PING_REQ_ID_BASE,
    KrakenAdapter,
    KrakenPlan,
    KrakenSession,
)
from collector.exchanges.kraken_book import book_checksum, checksum_digits
from tests.fakes.kraken import (
    book_frame,
    heartbeat_frame,
    kraken_checksum,
    status_frame,
    ticker_frame,
    trade_frame,
)
from tests.samples import read_f2, require_sample
from tests.session_helpers import asked, discarded, feed

NOW = 1_700_000_000_000_000  # a receive time, microseconds
T0 = 1_699_999_999_123_456  # an exchange time, microseconds
FIXTURES = "nautilus_trader/ws_fixtures/kraken/test_data"


def market(
    *symbols: str,
    feeds: tuple[Any, ...] = ("trades", "orderbook", "ticker"),
    book_depth: int | None = None,
    base_url: str | None = None,
    **kwargs: Any,
) -> MarketSettings:
    return MarketSettings(
        exchange="kraken",
        symbols=symbols,
        feeds=feeds,
        book_depth=book_depth,
        base_url=base_url,
        **kwargs,
    )


def open_session(*symbols: str, **kwargs: Any) -> KrakenSession:
    adapter = KrakenAdapter()
    (plan,) = adapter.plan_connections([market(*symbols, **kwargs)])
    return adapter.open_session(plan)


def parse(session: KrakenSession, frame: str | bytes, received_us: int = NOW) -> list[Event]:
    return feed(session, frame, received_us)


def statuses(events: list[Event], event: str | None = None) -> list[Status]:
    return [e for e in events if isinstance(e, Status) and (event is None or e.event == event)]


def snapshot(symbol: str, bids: Any, asks: Any, checksum: int | None = None) -> str:
    if checksum is None:
        checksum = kraken_checksum(bids, asks)
    return book_frame(symbol, bids, asks, checksum=checksum, time_us=T0, type_="snapshot")


def update(symbol: str, bids: Any, asks: Any, checksum: int) -> str:
    return book_frame(symbol, bids, asks, checksum=checksum, time_us=T0)


# --------------------------------------------------------------------------- checksum vectors

# Kraken's checksum guide (docs.kraken.com/api/docs/guides/spot-ws-book-v2): BTC/USD book,
# full-precision numbers (trailing zeros kept), checksum 3310070434. Sent as JSON numbers, as
# on the v2 wire.
GUIDE_BIDS = [
    ("45283.5", "0.10000000"), ("45283.4", "1.54582015"), ("45282.1", "0.10000000"),
    ("45281.0", "0.10000000"), ("45280.3", "1.54592586"), ("45279.0", "0.07990000"),
    ("45277.6", "0.03310103"), ("45277.5", "0.30000000"), ("45277.3", "1.54602737"),
    ("45276.6", "0.15445238"),
]  # fmt: skip
GUIDE_ASKS = [
    ("45285.2", "0.00100000"), ("45286.4", "1.54571953"), ("45286.6", "1.54571109"),
    ("45289.6", "1.54560911"), ("45290.2", "0.15890660"), ("45291.8", "1.54553491"),
    ("45294.7", "0.04454749"), ("45296.1", "0.35380000"), ("45297.5", "0.09945542"),
    ("45299.5", "0.18772827"),
]  # fmt: skip
GUIDE_CHECKSUM = 3310070434

# Kraken's v2 book page example (docs.kraken.com/api/docs/websocket-v2/book): MATIC/USD, the
# numbers printed trimmed (18097.1547, 0.566); checksum 2439117997, then an update -> 2114181697.
DOCS_BOOK_SNAPSHOT = b"""{"channel":"book","type":"snapshot","data":[{"symbol":"MATIC/USD",
"bids":[{"price":0.5666,"qty":4831.75496356},{"price":0.5665,"qty":6658.22734739},
{"price":0.5664,"qty":18724.91513344},{"price":0.5663,"qty":11563.92544914},
{"price":0.5662,"qty":14006.65365711},{"price":0.5661,"qty":17454.85679807},
{"price":0.566,"qty":18097.1547},{"price":0.5659,"qty":33644.89175666},
{"price":0.5658,"qty":148.3464},{"price":0.5657,"qty":606.70854372}],
"asks":[{"price":0.5668,"qty":4410.79769741},{"price":0.5669,"qty":4655.40412487},
{"price":0.567,"qty":49844.89424998},{"price":0.5671,"qty":24306.41678},
{"price":0.5672,"qty":29783.25223475},{"price":0.5673,"qty":57234.71239278},
{"price":0.5674,"qty":45065.04744},{"price":0.5675,"qty":5912.76380354},
{"price":0.5676,"qty":42514.92434778},{"price":0.5677,"qty":36304.0847022}],
"checksum":2439117997,"timestamp":"2023-10-06T17:35:55.440295Z"}]}"""
DOCS_BOOK_UPDATE = b"""{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD",
"bids":[{"price":0.5657,"qty":1098.3947558}],"asks":[],"checksum":2114181697,
"timestamp":"2023-10-06T17:35:55.440295Z"}]}"""


def test_checksum_of_krakens_guide_example_as_wire_numbers() -> None:
    session = open_session("BTC/USD", feeds=("orderbook",))
    frame = snapshot("BTC/USD", GUIDE_BIDS, GUIDE_ASKS, checksum=GUIDE_CHECKSUM)
    assert '"qty":0.10000000' in frame  # JSON numbers with the trailing zeros kept
    events = parse(session, frame)
    assert statuses(events) == []
    assert session.checksum_failures == 0
    (book,) = events
    assert isinstance(book, BookUpdate)
    assert book.kind == "snapshot"
    assert level_pairs(book.bids)[0] == (45283.5, 0.1)
    assert level_pairs(book.asks)[0] == (45285.2, 0.001)
    # The fake's independent (Decimal-based) implementation agrees.
    assert kraken_checksum(GUIDE_BIDS, GUIDE_ASKS) == GUIDE_CHECKSUM


def test_checksum_of_krakens_book_page_example_with_trimmed_numbers() -> None:
    """The docs' numbers lack trailing zeros; padding to the precision seen restores them."""
    session = open_session("MATIC/USD", feeds=("orderbook",))
    events = parse(session, DOCS_BOOK_SNAPSHOT) + parse(session, DOCS_BOOK_UPDATE)
    assert statuses(events) == []
    assert [e.kind for e in events if isinstance(e, BookUpdate)] == ["snapshot", "delta"]
    assert events[1] == BookUpdate(
        "kraken", "MATIC/USD", 1696613755440295, NOW, None, "delta", None, None,
        levels_from_pairs([(0.5657, 1098.3947558)]), levels_from_pairs([]),
    )  # fmt: skip
    # The wire text as is (no padding) would not match: the padding is what makes it work.
    item = msgspec.json.Decoder(float_hook=str).decode(DOCS_BOOK_SNAPSHOT)["data"][0]
    asks = [(a["price"].encode(), a["qty"].encode()) for a in item["asks"]]
    bids = [(b["price"].encode(), b["qty"].encode()) for b in item["bids"]]
    assert (b"0.566", b"18097.1547") in bids
    assert book_checksum(asks, bids) != 2439117997
    assert book_checksum(asks, bids, 4, 8) == 2439117997
    assert checksum_digits(b"0.566", 4) == b"5660"
    assert checksum_digits(b"18097.1547", 8) == b"1809715470000"


# --------------------------------------------------------------------------- v2 fixtures


def test_nautilus_book_fixtures_carry_a_checksum_copied_from_the_docs() -> None:
    """The nautilus v2 book fixtures are synthetic: their ``checksum`` values are those of
    Kraken's MATIC/USD docs example (2439117997, 2114181697), not of their own levels. The
    session must therefore flag a mismatch and resubscribe; the fake's independent checksum
    agrees with what the session computed."""
    session = open_session("BTC/USD", feeds=("orderbook",))
    raw = require_sample(f"{FIXTURES}/ws_book_snapshot.json").read_bytes()
    fixture = msgspec.json.decode(raw)["data"][0]
    assert fixture["checksum"] == 2439117997
    events = parse(session, raw)
    book, gap = events
    assert book == BookUpdate(
        "kraken", "BTC/USD", 1696613755440295, NOW, None, "snapshot", None, None,
        levels_from_pairs([(105944.2, 0.136), (105935.4, 0.024), (105920.1, 0.052)]),
        levels_from_pairs([(105944.3, 0.136), (105946.9, 0.095), (105955.8, 0.003)]),
    )  # fmt: skip
    independent = kraken_checksum(
        [("105944.20", "0.136"), ("105935.40", "0.024"), ("105920.10", "0.052")],
        [("105944.30", "0.136"), ("105946.90", "0.095"), ("105955.80", "0.003")],
    )
    assert isinstance(gap, Status)
    assert gap.event == "gap"
    assert gap.data_type == "orderbook"
    assert gap.detail is not None
    assert gap.detail.startswith(
        f"book checksum mismatch: venue 2439117997, computed {independent}"
    )
    assert [msgspec.json.decode(f)["method"] for f in asked(session).send] == [
        "unsubscribe",
        "subscribe",
    ]
    # The update fixture then applies to no book (resync pending): written, not checked.
    update_raw = require_sample(f"{FIXTURES}/ws_book_update.json").read_bytes()
    (delta,) = parse(session, update_raw)
    assert isinstance(delta, BookUpdate)
    assert (delta.kind, level_pairs(delta.bids), level_pairs(delta.asks)) == (
        "delta",
        [(105944.2, 0.25)],
        [],
    )


def test_trade_fixture() -> None:
    session = open_session("BTC/USD", feeds=("trades",))
    raw = require_sample(f"{FIXTURES}/ws_trade_update.json").read_bytes()
    assert parse(session, raw) == [
        Trade("kraken", "BTC/USD", 1696613755440295, NOW, 10218208, "10218208",
              105944.2, 0.00027625, "buy"),
        Trade("kraken", "BTC/USD", 1696613756123456, NOW, 10218209, "10218209",
              105910.5, 0.0001246, "sell"),
    ]  # fmt: skip


def test_ticker_fixture() -> None:
    session = open_session("BTC/USD", feeds=("ticker",))
    raw = require_sample(f"{FIXTURES}/ws_ticker_snapshot.json").read_bytes()
    assert parse(session, raw) == [
        Ticker("kraken", "BTC/USD", 1671960659123456, NOW, None,
               105944.2, 2.5, 105944.3, 3.2, 105899.4, 163.28908096),
    ]  # fmt: skip


# --------------------------------------------------------------------------- recorded asset pairs


def test_recorded_asset_pairs_give_v2_symbols() -> None:
    capture = read_f2(require_sample("cryptofeed-v3/KRAKEN.jsonl.zst"))
    (record,) = capture.http("AssetPairs")
    symbols = KrakenAdapter.parse_symbols(record.payload)
    assert "BTC/USD" in symbols  # wsname XBT/USD
    assert "DOGE/USD" in symbols  # wsname XDG/USD
    assert "ETH/BTC" in symbols
    assert not [s for s in symbols if "XBT" in s.split("/") or "XDG" in s.split("/")]
    assert symbols == sorted(symbols)
    for symbol in symbols:
        assert KrakenAdapter.normalize_symbol(symbol) == symbol


# --------------------------------------------------------------------------- trades


def test_trade_gap_and_duplicates() -> None:
    session = open_session("BTC/USD", feeds=("trades",))

    def trades(*ids: int) -> list[Event]:
        return parse(
            session,
            trade_frame("BTC/USD", [(i, "100.5", "0.25000000", "buy", T0 + i) for i in ids]),
        )

    assert [e.trade_id for e in trades(10, 11) if isinstance(e, Trade)] == ["10", "11"]
    events = trades(14)
    assert events[0] == Status(
        "kraken", "BTC/USD", None, NOW, None, "gap", "trades", 12, 14, 2, None
    )
    assert isinstance(events[1], Trade)
    assert events[1].sequence == 14
    assert trades(13, 14) == []  # late and repeated: dropped
    assert discarded(session) == {("BTC/USD", "trades", "duplicate"): 2}
    assert [e.trade_id for e in trades(14, 15) if isinstance(e, Trade)] == ["15"]


def test_trade_gaps_are_per_symbol_and_side_is_the_taker() -> None:
    session = open_session("BTC/USD", "ETH/USD", feeds=("trades",))
    events = parse(session, trade_frame("BTC/USD", [(5, 1, 1, "sell", T0)]))
    events += parse(session, trade_frame("ETH/USD", [(900, 2, 2, "buy", T0)]))
    events += parse(session, trade_frame("BTC/USD", [(6, 1, 1, "sell", T0)], ord_type="market"))
    assert statuses(events) == []
    assert [(e.symbol, e.side) for e in events if isinstance(e, Trade)] == [
        ("BTC/USD", "sell"),
        ("ETH/USD", "buy"),
        ("BTC/USD", "sell"),
    ]


# --------------------------------------------------------------------------- book


def levels(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    return list(pairs)


def test_book_updates_apply_delete_and_verify() -> None:
    session = open_session("ETH/EUR", feeds=("orderbook",))
    bids = levels(("2000.10", "1.00000000"), ("2000.00", "2.50000000"))
    asks = levels(("2000.20", "0.50000000"), ("2000.30", "3.00000000"))
    assert statuses(parse(session, snapshot("ETH/EUR", bids, asks))) == []
    # Change a bid, delete an ask, insert an ask.
    bids2 = levels(("2000.10", "1.20000000"), ("2000.00", "2.50000000"))
    asks2 = levels(("2000.25", "0.10000000"), ("2000.30", "3.00000000"))
    frame = update(
        "ETH/EUR",
        [("2000.10", "1.20000000")],
        [("2000.20", "0.00000000"), ("2000.25", "0.10000000")],
        kraken_checksum(bids2, asks2),
    )
    events = parse(session, frame)
    assert statuses(events) == []
    (delta,) = events
    assert isinstance(delta, BookUpdate)
    assert delta == BookUpdate(
        "kraken", "ETH/EUR", T0, NOW, None, "delta", None, None,
        levels_from_pairs([(2000.1, 1.2)]), levels_from_pairs([(2000.2, 0.0), (2000.25, 0.1)]),
    )  # fmt: skip


def test_book_is_truncated_to_the_subscribed_depth() -> None:
    """Depth 10: an insert at the top pushes the 10th bid out without a delete from the venue."""
    session = open_session("BTC/USD", feeds=("orderbook",))
    bids = [(f"{100 - i}.0", "1.00000000") for i in range(10)]
    asks = [(f"{101 + i}.0", "1.00000000") for i in range(10)]
    parse(session, snapshot("BTC/USD", bids, asks))
    new_bids = [("100.5", "2.00000000"), *bids[:9]]  # 91.0 falls out of range
    events = parse(
        session, update("BTC/USD", [("100.5", "2.00000000")], [], kraken_checksum(new_bids, asks))
    )
    assert statuses(events) == []
    # Deleting the best bid now leaves 9 levels: 91.0 must not come back.
    events = parse(
        session,
        update("BTC/USD", [("100.5", "0.00000000")], [], kraken_checksum(bids[:9], asks)),
    )
    assert statuses(events) == []


def test_deeper_subscriptions_check_only_the_top_ten() -> None:
    session = open_session("BTC/USD", feeds=("orderbook",), book_depth=25)
    bids = [(f"{100 - i}.0", "1.00000000") for i in range(25)]
    asks = [(f"{101 + i}.0", "1.00000000") for i in range(25)]
    assert statuses(parse(session, snapshot("BTC/USD", bids, asks))) == []
    # A change at level 20 changes nothing in the checksum.
    frame = update("BTC/USD", [("80.0", "5.00000000")], [], kraken_checksum(bids, asks))
    assert statuses(parse(session, frame)) == []


def test_checksum_mismatch_resubscribes_and_the_new_snapshot_is_a_resync() -> None:
    session = open_session("BTC/USD", "ETH/USD", feeds=("orderbook",), book_depth=100)
    session.subscribe_frames()
    bids = levels(("100.0", "1.00000000"))
    asks = levels(("101.0", "1.00000000"))
    parse(session, snapshot("BTC/USD", bids, asks))
    parse(session, snapshot("ETH/USD", bids, asks))
    events = parse(session, update("BTC/USD", [("100.0", "2.00000000")], [], checksum=12345))
    delta, gap = events
    assert isinstance(delta, BookUpdate)
    right = kraken_checksum([("100.0", "2.00000000")], asks)
    assert gap == Status(
        "kraken", "BTC/USD", None, NOW, None, "gap", "orderbook", None, None, None,
        f"book checksum mismatch: venue 12345, computed {right}; "
        "resubscribing for a new snapshot",
    )  # fmt: skip
    unsubscribe, subscribe = (msgspec.json.decode(f) for f in asked(session).send)
    assert unsubscribe["method"] == "unsubscribe"
    assert unsubscribe["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 100}
    assert subscribe["method"] == "subscribe"
    assert subscribe["params"] == {
        "channel": "book", "symbol": ["BTC/USD"], "depth": 100, "snapshot": True,
    }  # fmt: skip
    assert unsubscribe["req_id"] != subscribe["req_id"]
    # In between: more updates are written but not checked; ETH/USD is unaffected.
    assert statuses(parse(session, update("BTC/USD", bids, [], checksum=1))) == []
    eth = update("ETH/USD", [("100.0", "3.00000000")], [], checksum=7)
    assert [s.symbol for s in statuses(parse(session, eth), "gap")] == ["ETH/USD"]
    # The venue answers the unsubscribe and the subscribe: no rows, readiness unchanged.
    pending = session.pending_subscriptions
    unsub_ack = {"method": "unsubscribe", "result": {"channel": "book", "symbol": "BTC/USD"},
                 "success": True, "req_id": unsubscribe["req_id"]}  # fmt: skip
    sub_ack = {"method": "subscribe", "result": {"channel": "book", "symbol": "BTC/USD",
               "depth": 100, "snapshot": True}, "success": True, "req_id": subscribe["req_id"]}  # fmt: skip
    assert parse(session, msgspec.json.encode(unsub_ack)) == []
    assert parse(session, msgspec.json.encode(sub_ack)) == []
    assert session.pending_subscriptions == pending
    # The new snapshot: a resync row, then the snapshot; checking resumes.
    resync, book = parse(session, snapshot("BTC/USD", levels(("99.0", "1.00000000")), asks))
    assert resync == Status(
        "kraken", "BTC/USD", None, NOW, None, "resync", "orderbook", None, None, None,
        "new book snapshot after a checksum mismatch",
    )  # fmt: skip
    assert isinstance(book, BookUpdate)
    assert book.kind == "snapshot"
    ok = update("BTC/USD", [("98.0", "1.00000000")], [], kraken_checksum(
        [("99.0", "1.00000000"), ("98.0", "1.00000000")], asks))  # fmt: skip
    assert statuses(parse(session, ok)) == []
    assert session.checksum_failures == 2


def test_repeated_mismatches_stop_checking_instead_of_resubscribing_forever() -> None:
    session = open_session("BTC/USD", feeds=("orderbook",))
    bids, asks = levels(("100.0", "1.0")), levels(("101.0", "1.0"))
    details = []
    for _ in range(MAX_CHECKSUM_FAILURES):
        asked(session).send.clear()
        events = parse(session, snapshot("BTC/USD", bids, asks, checksum=999))
        details.append(statuses(events, "gap")[0].detail or "")
    assert all("resubscribing" in d for d in details[:-1])
    assert details[-1].endswith(
        "3 in a row: the book of BTC/USD is no longer checked on this connection"
    )
    assert asked(session).send == []
    assert session.unverified == {"BTC/USD"}
    assert statuses(parse(session, snapshot("BTC/USD", bids, asks, checksum=1))) == []


def test_a_verified_snapshot_resets_the_failure_count() -> None:
    session = open_session("BTC/USD", feeds=("orderbook",))
    bids, asks = levels(("100.0", "1.0")), levels(("101.0", "1.0"))
    for _ in range(MAX_CHECKSUM_FAILURES * 2):
        parse(session, snapshot("BTC/USD", bids, asks, checksum=999))
        parse(session, snapshot("BTC/USD", bids, asks))
    assert session.unverified == set()


def test_refused_resubscription_asks_for_a_reconnect() -> None:
    session = open_session("BTC/USD", feeds=("orderbook",))
    session.subscribe_frames()
    parse(session, snapshot("BTC/USD", [("1.0", "1.0")], [("2.0", "1.0")], checksum=5))
    subscribe = msgspec.json.decode(asked(session).send[1])
    error = {"error": "Already subscribed", "method": "subscribe", "success": False,
             "symbol": "BTC/USD", "req_id": subscribe["req_id"]}  # fmt: skip
    (row,) = statuses(parse(session, msgspec.json.encode(error)))
    assert (row.event, row.detail) == ("subscribe_error", "book BTC/USD: Already subscribed")
    assert asked(session).reconnect == (
        "kraken book resubscription refused: book BTC/USD: Already subscribed"
    )


def test_update_before_any_snapshot_is_written_unchecked() -> None:
    session = open_session("BTC/USD", feeds=("orderbook",))
    (delta,) = parse(session, update("BTC/USD", [("1.0", "1.0")], [], checksum=0))
    assert isinstance(delta, BookUpdate)
    assert delta.kind == "delta"


# --------------------------------------------------------------------------- ticker


def test_ticker_without_timestamp() -> None:
    session = open_session("ETH/USD", feeds=("ticker",))
    frame = ticker_frame("ETH/USD", "2000.1", "1.5", "2000.2", "0.5", "2000.15", "12345.678")
    assert parse(session, frame) == [
        Ticker("kraken", "ETH/USD", None, NOW, None, 2000.1, 1.5, 2000.2, 0.5, 2000.15, 12345.678)
    ]


# --------------------------------------------------------------------------- subscribing


def test_subscribe_frames() -> None:
    session = open_session("BTC/USD", "ETH/USD", book_depth=25)
    frames = [msgspec.json.decode(f) for f in session.subscribe_frames()]
    assert frames == [
        {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"],
         "snapshot": False}, "req_id": 1},
        {"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD", "ETH/USD"],
         "depth": 25, "snapshot": True}, "req_id": 2},
        {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD", "ETH/USD"],
         "event_trigger": "bbo"}, "req_id": 3},
    ]  # fmt: skip
    assert session.pending_subscriptions == 6


def test_subscribe_frames_are_chunked() -> None:
    symbols = [f"A{i}/USD" for i in range(MAX_SYMBOLS_PER_SUBSCRIBE + 1)]
    session = open_session(*symbols, feeds=("trades",))
    frames = [msgspec.json.decode(f) for f in session.subscribe_frames()]
    assert [len(f["params"]["symbol"]) for f in frames] == [MAX_SYMBOLS_PER_SUBSCRIBE, 1]


def ack(channel: str, symbol: str, req_id: int | None) -> bytes:
    body: dict[str, Any] = {
        "method": "subscribe",
        "result": {"channel": channel, "symbol": symbol},
        "success": True,
        "time_in": "2023-10-06T17:35:55.219022Z",
        "time_out": "2023-10-06T17:35:55.219067Z",
    }
    if req_id is not None:
        body["req_id"] = req_id
    return msgspec.json.encode(body)


def test_acks_are_per_symbol() -> None:
    session = open_session("BTC/USD", "ETH/USD", feeds=("trades", "ticker"))
    session.subscribe_frames()
    assert session.pending_subscriptions == 4
    events = parse(session, ack("trade", "BTC/USD", 1))
    assert events == [
        Status("kraken", "BTC/USD", None, NOW, None, "subscribed", "trades", None, None, None, None)
    ]
    parse(session, ack("trade", "ETH/USD", 1))
    parse(session, ack("ticker", "ETH/USD", None))  # matched by channel and symbol
    assert parse(session, ack("trade", "ETH/USD", 1)) == []  # already answered
    assert session.pending_subscriptions == 1
    parse(session, ack("ticker", "BTC/USD", 2))
    assert session.pending_subscriptions == 0


def test_refused_symbol_gets_a_row_and_the_others_flow() -> None:
    session = open_session("BTC/USD", "FOO/BAR", feeds=("trades",))
    session.subscribe_frames()
    error = {
        "error": "Currency pair not supported FOO/BAR",
        "method": "subscribe",
        "success": False,
        "symbol": "FOO/BAR",
        "time_in": "2023-10-06T17:35:55.219022Z",
        "time_out": "2023-10-06T17:35:55.219067Z",
        "req_id": 1,
    }
    (row,) = parse(session, msgspec.json.encode(error))
    assert row == Status(
        "kraken", "FOO/BAR", None, NOW, None, "subscribe_error", "trades", None, None, None,
        "trade FOO/BAR: Currency pair not supported FOO/BAR",
    )  # fmt: skip
    assert session.rejected == [Subscription("FOO/BAR", "trades")]
    assert statuses(parse(session, ack("trade", "BTC/USD", 1)), "subscribed")
    assert session.pending_subscriptions == 0


def test_error_naming_no_symbol_refuses_the_whole_request() -> None:
    session = open_session("BTC/USD", "ETH/USD", feeds=("orderbook",))
    session.subscribe_frames()
    error = {"error": "Invalid depth", "method": "subscribe", "success": False, "req_id": 1}
    rows = parse(session, msgspec.json.encode(error))
    assert [(r.symbol, r.event, r.data_type) for r in statuses(rows)] == [
        ("BTC/USD", "subscribe_error", "orderbook"),
        ("ETH/USD", "subscribe_error", "orderbook"),
    ]
    assert session.pending_subscriptions == 0


@pytest.mark.parametrize(
    "frame",
    [
        heartbeat_frame(),
        status_frame(7),
        '{"method":"pong","req_id":101,"time_in":"2023-09-24T14:10:23.799685Z",'
        '"time_out":"2023-09-24T14:10:23.799703Z"}',
        '{"method":"unsubscribe","result":{"channel":"book","symbol":"BTC/USD"},"success":true}',
        '{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[]}}',
        '{"error":"Exceeded msg rate","method":"ping","success":false}',
        '{"method":"subscribe","result":{"channel":"trade","symbol":"X/Y"},"success":true,'
        '"req_id":999}',
    ],
)
def test_frames_without_events(frame: str) -> None:
    session = open_session("BTC/USD")
    session.subscribe_frames()
    assert parse(session, frame) == []
    assert session.pending_subscriptions == 3


def test_keepalive_is_the_application_ping() -> None:
    session = open_session("BTC/USD")
    requests = [msgspec.json.decode(f)["req_id"] for f in session.subscribe_frames()]
    adapter = KrakenAdapter()
    pings = [msgspec.json.decode(adapter.keepalive_frame(n)) for n in (1, 2)]
    # A fresh integer id each, in a range of its own: never one of the session's request ids.
    assert pings == [
        {"method": "ping", "req_id": PING_REQ_ID_BASE + 1},
        {"method": "ping", "req_id": PING_REQ_ID_BASE + 2},
    ]
    assert requests == [1, 2, 3]
    assert PING_REQ_ID_BASE + 2 < 2**31
    assert KrakenAdapter.keepalive_interval_secs == 30.0
    # The pong echoes the id; the session skips it by its method.
    pong = {"method": "pong", "req_id": PING_REQ_ID_BASE + 1, "time_in": "t", "time_out": "t"}
    assert parse(session, msgspec.json.encode(pong)) == []
    assert asked(session).send == []


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b"{}",
        b'{"channel":"book","type":"partial","data":[]}',
        b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD"}]}',
        b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",'
        b'"price":1,"qty":1,"trade_id":1,"timestamp":"yesterday"}]}',
        b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD",'
        b'"bids":[{"price":"abc","qty":1}],"asks":[],"checksum":1}]}',
        b'{"channel":"ticker","type":"update","data":{"symbol":"BTC/USD"}}',
    ],
)
def test_garbage_raises_parse_error(payload: bytes) -> None:
    session = open_session("BTC/USD")
    with pytest.raises(ParseError):
        session.parse(payload, NOW)


# --------------------------------------------------------------------------- adapter


@pytest.mark.parametrize(
    ("given", "expected"),
    [("BTC/USD", "BTC/USD"), ("eth/eur", "ETH/EUR"), ("ETH2.S/ETH", "ETH2.S/ETH")],
)
def test_normalize_symbol(given: str, expected: str) -> None:
    assert KrakenAdapter.normalize_symbol(given) == expected


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("BTCUSD", "expected the v2 spelling BASE/QUOTE"),
        ("BTC-USD", "expected the v2 spelling BASE/QUOTE"),
        ("BTC/USD/X", "expected the v2 spelling BASE/QUOTE"),
        ("", "expected the v2 spelling BASE/QUOTE"),
        ("XBT/USD", "XBT is the v1 name; WebSocket v2 spells it BTC"),
        ("XDG/EUR", "XDG is the v1 name; WebSocket v2 spells it DOGE"),
    ],
)
def test_normalize_symbol_rejects(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KrakenAdapter.normalize_symbol(bad)


@pytest.mark.parametrize("depth", [None, 10, 25, 100, 500, 1000])
def test_check_market_accepts_depths(depth: int | None) -> None:
    KrakenAdapter.check_market(market("BTC/USD", book_depth=depth))
    (plan,) = KrakenAdapter().plan_connections([market("BTC/USD", book_depth=depth)])
    assert isinstance(plan, KrakenPlan)
    assert plan.book_depth == (depth or 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"book_depth": 20}, "book_depth must be one of 10, 25, 100, 500, 1000"),
        ({"book_mode": "snapshot"}, "no book_mode option"),
        ({"book_mode": "diff"}, "no book_mode option"),
        ({"rest_url": "ftp://api.kraken.com"}, "rest_url must start with http"),
        ({"category": "spot"}, "no category option"),
    ],
)
def test_check_market_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KrakenAdapter.check_market(market("BTC/USD", **kwargs))


def test_plan_urls_raw_and_depth_groups() -> None:
    adapter = KrakenAdapter()
    plans = adapter.plan_connections(
        [
            market("BTC/USD", "ETH/USD"),
            market("SOL/USD", feeds=("trades", "raw")),
            market("ADA/USD", book_depth=100),
            market("DOT/USD", base_url="ws://127.0.0.1:9/"),
            market("LTC/USD", base_url="ws://127.0.0.1:9/v2"),
        ]
    )
    summary = [
        (p.name, p.url, p.raw, p.book_depth if isinstance(p, KrakenPlan) else None, p.symbols)
        for p in plans
    ]
    assert summary == [
        ("kraken-0", "wss://ws.kraken.com/v2", False, 10, ("BTC/USD", "ETH/USD")),
        ("kraken-1", "wss://ws.kraken.com/v2", True, 10, ("SOL/USD",)),
        ("kraken-2", "wss://ws.kraken.com/v2", False, 100, ("ADA/USD",)),
        ("kraken-3", "ws://127.0.0.1:9/v2", False, 10, ("DOT/USD", "LTC/USD")),
    ]
    assert plans[1].subscriptions == (Subscription("SOL/USD", "trades"),)


def test_plan_splits_keeping_the_feeds_of_a_symbol_together() -> None:
    per_symbol = 3
    count = MAX_SUBSCRIPTIONS_PER_CONNECTION // per_symbol + 1
    symbols = [f"S{i}/USD" for i in range(count)]
    plans = KrakenAdapter().plan_connections([market(*symbols)])
    assert [len(p.subscriptions) for p in plans] == [MAX_SUBSCRIPTIONS_PER_CONNECTION, per_symbol]
    assert plans[1].symbols == (symbols[-1],)


def test_a_plain_connection_plan_gets_depth_ten() -> None:
    plan = ConnectionPlan("kraken", "k", "ws://x/v2", (Subscription("BTC/USD", "orderbook"),))
    session = KrakenAdapter().open_session(plan)
    (frame,) = session.subscribe_frames()
    assert msgspec.json.decode(frame)["params"]["depth"] == 10


def test_adapter_is_discovered_with_its_limits_and_urls() -> None:
    assert get_adapter_class("kraken") is KrakenAdapter
    assert KrakenAdapter.default_url == "wss://ws.kraken.com"
    assert KrakenAdapter.symbols_url() == "https://api.kraken.com/0/public/AssetPairs"
    assert (
        KrakenAdapter.symbols_url("http://127.0.0.1:1/") == "http://127.0.0.1:1/0/public/AssetPairs"
    )
    assert KrakenAdapter.client_messages_per_second <= 5


def test_parse_symbols_skips_dark_pools_and_offline_pairs() -> None:
    body = msgspec.json.encode(
        {
            "error": [],
            "result": {
                "XXBTZUSD": {"altname": "XBTUSD", "wsname": "XBT/USD", "status": "online"},
                "XETHXXBT.d": {"altname": "ETHXBT.d"},
                "XXDGZEUR": {"wsname": "XDG/EUR", "status": "online"},
                "OLDUSD": {"wsname": "OLD/USD", "status": "delisted"},
                "SOLUSD": {"wsname": "SOL/USD"},
            },
        }
    )
    assert KrakenAdapter.parse_symbols(body) == ["BTC/USD", "DOGE/EUR", "SOL/USD"]


@pytest.mark.parametrize(
    "body", [b"<html>", b'{"error":["EGeneral:Internal error"],"result":{}}', b"[]"]
)
def test_parse_symbols_rejects_other_bodies(body: bytes) -> None:
    with pytest.raises(ParseError):
        KrakenAdapter.parse_symbols(body)


def test_a_crossed_book_resubscribes_and_the_new_snapshot_names_why() -> None:
    session = open_session("ETH/EUR", feeds=("orderbook",))
    bids = levels(("2000.10", "1.00000000"))
    asks = levels(("2000.20", "0.50000000"))
    parse(session, snapshot("ETH/EUR", bids, asks))
    # The update's checksum is that of the crossed book, so it matches: the crossed check
    # catches what the checksum does not.
    crossed_bids = levels(("2000.20", "1.00000000"), ("2000.10", "1.00000000"))
    frame = update("ETH/EUR", [("2000.20", "1.00000000")], [], kraken_checksum(crossed_bids, asks))
    events = parse(session, frame)
    [gap] = statuses(events, "gap")
    assert gap.detail == (
        "crossed book: best bid 2000.2 >= best ask 2000.2; resubscribing for a new snapshot"
    )
    assert [(r.symbol, r.reason) for r in asked(session).resyncs] == [("ETH/EUR", "crossed")]
    assert len(asked(session).send) == 2  # unsubscribe + subscribe
    events = parse(session, snapshot("ETH/EUR", bids, asks))
    [resync] = statuses(events, "resync")
    assert resync.detail == "new book snapshot after a crossed book"
