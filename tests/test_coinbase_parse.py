"""Coinbase Advanced Trade adapter without sockets: recorded replays and table-driven cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from collector.config import MarketSettings
from collector.credentials import make_adapter
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
from collector.exchanges.coinbase import (
    MAX_PRODUCTS_PER_CONNECTION,
    CoinbaseAdapter,
    CoinbaseSession,
    RecentIds,
    rfc3339_us,
)
from tests.fakes.coinbase import (
    envelope,
    error_frame,
    heartbeat_event,
    l2_event,
    subscriptions_event,
    ticker_event,
    trade,
    trades_event,
)
from tests.samples import read_f2, read_fixture, require_sample
from tests.session_helpers import asked, discarded, feed

NOW = 1_786_309_600_000_000
T0 = 1_786_309_548_123_456


def market(*symbols: str, feeds: tuple[Any, ...] = ("trades", "orderbook", "ticker")) -> Any:
    return MarketSettings(exchange="coinbase", symbols=symbols, feeds=feeds)


def open_session(
    *symbols: str, adapter: CoinbaseAdapter | None = None, **kwargs: Any
) -> CoinbaseSession:
    adapter = adapter or CoinbaseAdapter()
    (plan,) = adapter.plan_connections([market(*symbols, **kwargs)])
    return adapter.open_session(plan)


def parse(session: CoinbaseSession, frame: str, received_us: int = NOW) -> list[Event]:
    return feed(session, frame, received_us)


def statuses(events: list[Event], kind: str | None = None) -> list[Status]:
    return [e for e in events if isinstance(e, Status) and (kind is None or e.event == kind)]


def ack(session: CoinbaseSession, subs: dict[str, list[str]], seq: int) -> list[Event]:
    return parse(session, envelope("subscriptions", [subscriptions_event(subs)], seq, T0))


# --------------------------------------------------------------------------- recorded traffic


def test_replay_of_the_2026_recording() -> None:
    """cryptofeed's Advanced Trade capture: BTC-USD and ETH-USD, 1030 frames, seq 0..1029."""
    capture = read_f2(require_sample("cryptofeed-v3/COINBASE.jsonl.zst"))
    session = open_session("BTC-USD", "ETH-USD")
    events: list[Event] = []
    for record in capture.received():
        events.extend(feed(session, record.payload, record.received_us))

    # The recording's sequence_num runs without a hole: no gap; every subscription acked.
    assert [s.event for s in statuses(events)] == ["subscribed"] * 6
    assert session.pending_subscriptions == 0
    assert asked(session).send == []
    books = [e for e in events if isinstance(e, BookUpdate)]
    trades = [e for e in events if isinstance(e, Trade)]
    tickers = [e for e in events if isinstance(e, Ticker)]
    assert (len(books), len(trades), len(tickers)) == (775, 279, 160)
    assert [b.kind for b in books].count("snapshot") == 2
    assert discarded(session) == {}

    btc = books[0]
    assert (
        btc.symbol,
        btc.kind,
        btc.sequence,
        len(level_pairs(btc.bids)),
        len(level_pairs(btc.asks)),
    ) == (
        "BTC-USD",
        "snapshot",
        13,
        18764,
        27236,
    )
    assert level_pairs(btc.bids)[0] == (65083.66, 0.20371215)
    assert btc.timestamp_exchange == 1786309548483587  # the envelope timestamp
    assert books[1].timestamp_exchange == 1786309548210883  # the levels' event_time
    assert level_pairs(books[1].asks) == [(65083.67, 0.15556334)]
    assert trades[0] == Trade(
        "coinbase",
        "BTC-USD",
        1786309542514318,
        trades[0].timestamp_collector,
        1068572090,
        "1068572090",
        65083.67,
        0.002186,
        "buy",  # sent as SELL (the maker); at the following snapshot's best ask: a buyer took
    )
    assert tickers[0] == Ticker(
        "coinbase",
        "BTC-USD",
        1786309548229198,
        tickers[0].timestamp_collector,
        6,
        65083.66,
        0.20371215,
        65083.67,
        0.24290402,
        65086.18,
        2867.54532609,
    )


@pytest.mark.parametrize(
    "name",
    [
        "ws_l2_data_snapshot.json",
        "ws_l2_data_update.json",
        "ws_market_trades.json",
        "ws_ticker.json",
        "ws_heartbeats.json",
    ],
)
def test_current_format_fixtures_parse(name: str) -> None:
    fixture = read_fixture(f"nautilus_trader/ws_fixtures/coinbase/test_data/{name}")
    session = open_session("BTC-USD")
    events = session.parse(msgspec.json.encode(fixture), NOW)
    if name == "ws_heartbeats.json":
        assert events == []
    elif name == "ws_l2_data_update.json":
        assert events == [
            BookUpdate(
                "coinbase",
                "BTC-USD",
                1775572201456789,
                NOW,
                1,
                "delta",
                1,
                None,
                levels_from_pairs([(68900.0, 2.0)]),
                levels_from_pairs([(68901.0, 0.0)]),
            )
        ]
    elif name == "ws_market_trades.json":
        assert [(t.trade_id, t.side, t.timestamp_exchange) for t in events] == [  # type: ignore[union-attr]
            ("995098700", "sell", 1775572202789012),  # the venue's BUY is the maker
            ("995098701", "buy", 1775572202800000),
        ]
    else:
        assert len(events) == 1


# --------------------------------------------------------------------------- sequence


def test_a_sequence_gap_is_reported_for_every_symbol_and_resubscribes_level2() -> None:
    session = open_session("BTC-USD", "ETH-USD")
    session.subscribe_frames(NOW)
    parse(session, envelope("heartbeats", [heartbeat_event(1)], 10, T0))
    events = parse(session, envelope("heartbeats", [heartbeat_event(2)], 14, T0), NOW + 1)
    gaps = statuses(events, "gap")
    assert [(g.symbol, g.expected_sequence, g.received_sequence, g.count) for g in gaps] == [
        ("BTC-USD", 11, 14, 3),
        ("ETH-USD", 11, 14, 3),
    ]
    assert gaps[0].data_type is None
    assert [msgspec.json.decode(f) for f in asked(session).send] == [
        {"type": "unsubscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"},
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"},
    ]
    asked(session).send.clear()
    # A second gap before the snapshots: reported, but level2 is not asked for again.
    assert len(statuses(parse(session, envelope("heartbeats", [], 20, T0)), "gap")) == 2
    assert asked(session).send == []
    # The fresh snapshot: a resync row, then the snapshot; the other product still waits.
    snap = l2_event("BTC-USD", [(1.0, 2.0)], [(3.0, 4.0)], T0, kind="snapshot")
    events = parse(session, envelope("l2_data", [snap], 21, T0))
    assert [type(e).__name__ for e in events] == ["Status", "BookUpdate"]
    resync = statuses(events, "resync")[0]
    assert (resync.symbol, resync.data_type, resync.received_sequence) == (
        "BTC-USD",
        "orderbook",
        21,
    )
    assert statuses(parse(session, envelope("heartbeats", [], 22, T0))) == []
    # ETH-USD still resyncing: a new gap resubscribes nothing new for it... but BTC-USD again.
    parse(session, envelope("heartbeats", [], 30, T0))
    assert [msgspec.json.decode(f)["product_ids"] for f in asked(session).send] == [
        ["BTC-USD"],
        ["BTC-USD"],
    ]


def test_duplicate_or_old_sequence_is_a_gap_without_count() -> None:
    session = open_session("BTC-USD", feeds=("trades",))
    parse(session, envelope("heartbeats", [], 5, T0))
    [gap] = statuses(parse(session, envelope("heartbeats", [], 5, T0)), "gap")
    assert (gap.expected_sequence, gap.received_sequence, gap.count) == (6, 5, None)
    assert "duplicate or out-of-order" in (gap.detail or "")
    assert asked(session).send == []  # no book on this connection: nothing to resubscribe
    assert statuses(parse(session, envelope("heartbeats", [], 6, T0))) == []


def test_first_message_sets_the_baseline() -> None:
    session = open_session("BTC-USD")
    assert parse(session, envelope("heartbeats", [], 42, T0)) == []


# --------------------------------------------------------------------------- acks and errors


def test_subscriptions_answers_mark_each_subscription_once() -> None:
    session = open_session("BTC-USD", "ETH-USD")
    frames = [msgspec.json.decode(f) for f in session.subscribe_frames(NOW)]
    assert [(f["channel"], f["product_ids"]) for f in frames] == [
        ("market_trades", ["BTC-USD", "ETH-USD"]),
        ("level2", ["BTC-USD", "ETH-USD"]),
        ("ticker", ["BTC-USD", "ETH-USD"]),
        ("heartbeats", ["BTC-USD", "ETH-USD"]),
    ]
    assert all("jwt" not in f for f in frames)
    assert session.pending_subscriptions == 6
    events = ack(session, {"market_trades": ["BTC-USD", "ETH-USD"]}, 0)
    assert [(s.symbol, s.data_type) for s in statuses(events, "subscribed")] == [
        ("BTC-USD", "trades"),
        ("ETH-USD", "trades"),
    ]
    subs = {"market_trades": ["BTC-USD", "ETH-USD"], "level2": ["BTC-USD", "ETH-USD"]}
    assert len(statuses(ack(session, subs, 1), "subscribed")) == 2
    subs["ticker"] = ["ETH-USD", "BTC-USD"]
    ack(session, subs, 2)
    subs["heartbeats"] = ["heartbeats"]
    assert ack(session, subs, 3) == []
    assert session.pending_subscriptions == 0


def test_a_product_left_out_of_its_answer_is_a_subscribe_error() -> None:
    session = open_session("BTC-USD", "XYZ-USD", feeds=("ticker",))
    session.subscribe_frames(NOW)
    events = ack(session, {"ticker": ["BTC-USD"]}, 0)
    assert [(s.event, s.symbol) for s in statuses(events)] == [
        ("subscribed", "BTC-USD"),
        ("subscribe_error", "XYZ-USD"),
    ]
    assert session.pending_subscriptions == 0


def test_an_error_splits_the_request_until_the_bad_product_stands_alone() -> None:
    session = open_session("BTC-USD", "ETH-USD", "BAD-USD", feeds=("trades",))
    session.subscribe_frames(NOW)
    bad = error_frame("Failed to subscribe", "BAD-USD is not a valid product")
    assert parse(session, bad) == []
    halves = [msgspec.json.decode(f)["product_ids"] for f in asked(session).send]
    assert halves == [["BTC-USD"], ["ETH-USD", "BAD-USD"]]
    asked(session).send.clear()
    ack(session, {"heartbeats": ["heartbeats"]}, 0)  # answers come in request order
    ack(session, {"market_trades": ["BTC-USD"]}, 1)
    assert parse(session, bad) == []
    assert [msgspec.json.decode(f)["product_ids"] for f in asked(session).send] == [
        ["ETH-USD"],
        ["BAD-USD"],
    ]
    ack(session, {"market_trades": ["BTC-USD", "ETH-USD"]}, 2)
    [error] = parse(session, bad)
    assert isinstance(error, Status)
    assert (error.event, error.symbol, error.data_type, error.detail) == (
        "subscribe_error",
        "BAD-USD",
        "trades",
        "market_trades BAD-USD: Failed to subscribe: BAD-USD is not a valid product",
    )
    assert session.pending_subscriptions == 0
    assert session.rejected[0].symbol == "BAD-USD"


def test_an_error_nothing_explains_is_kept_not_raised() -> None:
    session = open_session("BTC-USD", feeds=("ticker",))
    assert parse(session, error_frame("Failed to parse", "invalid JSON")) == []
    assert session.errors == ["Failed to parse: invalid JSON"]


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"foo": 1}',
        '{"channel":"l2_data","sequence_num":1,"events":[{"type":"update"}]}',
        envelope(
            "l2_data",
            [
                {
                    "type": "update",
                    "product_id": "X-Y",
                    "updates": [{"side": "up", "price_level": "1", "new_quantity": "1"}],
                }
            ],
            1,
            T0,
        ),
        envelope(
            "market_trades",
            [
                trades_event(
                    [
                        {
                            "product_id": "X-Y",
                            "trade_id": "1",
                            "price": "x",
                            "size": "1",
                            "time": "2026-01-01T00:00:00Z",
                        }
                    ]
                )
            ],
            1,
            T0,
        ),
        envelope(
            "market_trades",
            [
                trades_event(
                    [
                        {
                            "product_id": "X-Y",
                            "trade_id": "1",
                            "price": "1",
                            "size": "1",
                            "time": "yesterday",
                        }
                    ]
                )
            ],
            1,
            T0,
        ),
    ],
)
def test_garbage_is_a_parse_error(frame: str) -> None:
    with pytest.raises(ParseError):
        parse(open_session("BTC-USD"), frame)


def test_other_channels_are_ignored() -> None:
    session = open_session("BTC-USD")
    candles = '{"type":"update","candles":[{"start":"1786309500","product_id":"BTC-USD"}]}'
    frame = f'{{"channel":"candles","timestamp":"2026-08-09T21:05:51Z","sequence_num":0,"events":[{candles}]}}'
    assert parse(session, frame) == []


# --------------------------------------------------------------------------- trades


def test_trades_are_deduplicated_across_reconnects_by_the_adapter() -> None:
    adapter = CoinbaseAdapter()
    snapshot = trades_event(
        [trade("BTC-USD", 2, 10.0, 1.0, T0, "BUY"), trade("BTC-USD", 1, 9.0, 1.0, T0, "SELL")],
        kind="snapshot",
    )
    first = open_session("BTC-USD", adapter=adapter)
    assert [t.trade_id for t in parse(first, envelope("market_trades", [snapshot], 0, T0))] == [  # type: ignore[union-attr]
        "2",
        "1",
    ]
    second = open_session("BTC-USD", adapter=adapter)  # a reconnect: new session
    update = trades_event([trade("BTC-USD", 3, 11.0, 1.0, T0, "BUY")])
    assert parse(second, envelope("market_trades", [snapshot], 0, T0)) == []
    assert discarded(second) == {("BTC-USD", "trades", "duplicate"): 2}
    assert [t.trade_id for t in parse(second, envelope("market_trades", [update], 1, T0))] == ["3"]  # type: ignore[union-attr]


def test_recent_ids_forget_the_oldest() -> None:
    ids = RecentIds(limit=2)
    assert ids.add("A", "1")
    assert ids.add("A", "2")
    assert ids.add("B", "1")
    assert not ids.add("A", "1")
    assert ids.add("A", "3")  # forgets "1"
    assert ids.add("A", "1")


def test_ticker_event() -> None:
    session = open_session("BTC-USD")
    frame = envelope("ticker", [ticker_event("BTC-USD", 5.0, 4.0, 1.0, 6.0, 2.0, 100.0)], 0, T0)
    assert parse(session, frame) == [
        Ticker("coinbase", "BTC-USD", T0, NOW, 0, 4.0, 1.0, 6.0, 2.0, 5.0, 100.0)
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-08-09T21:05:48.228568804Z", 1786309548228568),
        ("2026-08-09T21:05:48.5Z", 1786309548500000),
        ("2026-08-09T21:05:48Z", 1786309548000000),
        ("2026-08-09T21:05:48.123456+00:00", 1786309548123456),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_rfc3339(text: str, expected: int) -> None:
    assert rfc3339_us(text) == expected


@pytest.mark.parametrize(
    "text", ["2026-08-09", "2026-08-09T21:05:48+01:00", "2026-08-09T21:05:48.Z"]
)
def test_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|UTC|fraction"):
        rfc3339_us(text)


# --------------------------------------------------------------------------- auth


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "key"
    path.write_text(text)
    return str(path)


def test_es256_jwt_on_every_subscribe(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    name = "organizations/org/apiKeys/key"
    env = {"COINBASE_API_KEY": name, "COINBASE_API_SECRET_FILE": _write(tmp_path, pem)}
    adapter = make_adapter("coinbase", env)
    assert isinstance(adapter, CoinbaseAdapter)
    assert adapter.credentials is not None
    assert "PRIVATE" not in repr(adapter.credentials)
    session = open_session("BTC-USD", adapter=adapter, feeds=("orderbook",))
    frames = [msgspec.json.decode(f) for f in session.subscribe_frames(NOW)]
    tokens = [f["jwt"] for f in frames]
    assert len(set(tokens)) == 2  # fresh per frame (new nonce)
    header = jwt.get_unverified_header(tokens[0])
    assert (header["alg"], header["kid"], header["typ"]) == ("ES256", name, "JWT")
    assert len(header["nonce"]) == 64
    claims = jwt.decode(
        tokens[0],
        key.public_key(),
        algorithms=["ES256"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims == {"iss": "cdp", "sub": name, "nbf": NOW // 10**6, "exp": NOW // 10**6 + 120}
    # Resubscribes after a gap are signed with the time of the frame that showed it.
    parse(session, envelope("heartbeats", [], 0, T0))
    parse(session, envelope("heartbeats", [], 5, T0), NOW + 7_000_000)
    later = jwt.decode(
        msgspec.json.decode(asked(session).send[1])["jwt"],
        key.public_key(),
        algorithms=["ES256"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert later["nbf"] == NOW // 10**6 + 7


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("given", "canonical"), [("BTC-USD", "BTC-USD"), ("eth-usdc", "ETH-USDC")])
def test_symbols(given: str, canonical: str) -> None:
    assert CoinbaseAdapter.normalize_symbol(given) == canonical


@pytest.mark.parametrize("bad", ["BTCUSD", "BTC/USD", "BTC-", "-USD", "BTC-USD-X"])
def test_bad_symbols_name_the_format(bad: str) -> None:
    with pytest.raises(ValueError, match=r"expected BASE-QUOTE with a dash, e\.g\. 'BTC-USD'"):
        CoinbaseAdapter.normalize_symbol(bad)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"book_mode": "diff"}, "no book_mode/book_depth"),
        ({"book_depth": 10}, "no book_mode/book_depth"),
        ({"category": "spot"}, "no category"),
        ({"rest_url": "ftp://x"}, "rest_url must start with http"),
    ],
)
def test_check_market_rejects(options: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"exchange": "coinbase", "symbols": ("BTC-USD",), **options}
    with pytest.raises(ValueError, match=message):
        CoinbaseAdapter.check_market(MarketSettings(**values))


def test_planning_splits_products_and_keeps_raw_apart() -> None:
    adapter = CoinbaseAdapter()
    symbols = tuple(f"C{i}-USD" for i in range(MAX_PRODUCTS_PER_CONNECTION + 3))
    plans = adapter.plan_connections(
        [
            market(*symbols),
            MarketSettings(exchange="coinbase", symbols=("BTC-EUR",), feeds=("trades", "raw")),
        ]
    )
    assert [(p.name, len(p.symbols), p.raw, p.url) for p in plans] == [
        ("coinbase-0", 10, False, "wss://advanced-trade-ws.coinbase.com"),
        ("coinbase-1", 3, False, "wss://advanced-trade-ws.coinbase.com"),
        ("coinbase-2", 1, True, "wss://advanced-trade-ws.coinbase.com"),
    ]
    assert len(plans[0].subscriptions) == 30
    assert get_adapter_class("coinbase") is CoinbaseAdapter


def test_parse_symbols_from_the_recorded_products_listing() -> None:
    capture = read_f2(require_sample("cryptofeed-v3/COINBASE.jsonl.zst"))
    [record] = capture.http("market/products")
    symbols = CoinbaseAdapter.parse_symbols(record.payload)
    assert len(symbols) == 912  # 920 listed, 8 delisted
    assert "BTC-USD" in symbols
    assert (
        CoinbaseAdapter.symbols_url() == "https://api.coinbase.com/api/v3/brokerage/market/products"
    )
    with pytest.raises(ParseError):
        CoinbaseAdapter.parse_symbols(b"<html>")


def test_a_crossed_book_resubscribes_level2_of_that_product_alone() -> None:
    session = open_session("BTC-USD", "ETH-USD")
    session.subscribe_frames(NOW)
    for seq, product in enumerate(("BTC-USD", "ETH-USD"), start=1):
        snap = l2_event(product, [(100.0, 1.0)], [(101.0, 1.0)], T0, kind="snapshot")
        parse(session, envelope("l2_data", [snap], seq, T0))
    crossed = l2_event("BTC-USD", [(101.0, 2.0)], [], T0, kind="update")
    events = parse(session, envelope("l2_data", [crossed], 3, T0))
    assert isinstance(events[0], BookUpdate)
    [gap] = statuses(events, "gap")
    assert (gap.symbol, gap.data_type) == ("BTC-USD", "orderbook")
    assert gap.detail == (
        "crossed book: best bid 101.0 >= best ask 101.0; level2 resubscribed for a fresh snapshot"
    )
    assert [(r.symbol, r.reason) for r in asked(session).resyncs] == [("BTC-USD", "crossed")]
    assert [msgspec.json.decode(f) for f in asked(session).send] == [
        {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channel": "level2"},
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"},
    ]
    # ETH-USD is still checked; BTC-USD's updates are written, unchecked, until its snapshot.
    eth = l2_event("ETH-USD", [(100.5, 1.0)], [], T0, kind="update")
    assert statuses(parse(session, envelope("l2_data", [eth], 4, T0))) == []
    more = l2_event("BTC-USD", [(102.0, 2.0)], [], T0, kind="update")
    assert statuses(parse(session, envelope("l2_data", [more], 5, T0))) == []
    snap = l2_event("BTC-USD", [(100.0, 1.0)], [(101.0, 1.0)], T0, kind="snapshot")
    [resync] = statuses(parse(session, envelope("l2_data", [snap], 6, T0)), "resync")
    assert resync.detail == "fresh level2 snapshot after a crossed book"
    assert len(asked(session).resyncs) == 1
