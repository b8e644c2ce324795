"""Binance USD-M and COIN-M futures without sockets: recorded traffic replayed with its REST
snapshots, generated frames for each rule, plans, settings and symbol lists."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

from collector.config import ConfigError, MarketSettings
from collector.events import BookUpdate, Event, Status, Ticker, Trade, levels_from_pairs
from collector.exchanges.base import ConnectionPlan, SnapshotRequest, Subscription
from collector.exchanges.binance import BinanceAdapter, BinancePlan, BinanceSession
from collector.settings_check import parse_settings
from tests.fakes.binance import (
    agg_trade_frame,
    book_ticker_frame,
    depth_diff_frame,
    futures_partial_depth_frame,
    trade_frame,
)
from tests.samples import F2Record, read_f2, require_sample
from tests.session_helpers import asked, discarded, feed, receive_snapshot, subscribe

NOW = 1_700_000_000_000_000  # a receive time, microseconds
T_MS = 1_699_999_999_123  # an exchange time, milliseconds
REST = "http://127.0.0.1:9"


def market(category: str, *symbols: str, **options: Any) -> MarketSettings:
    return MarketSettings(exchange="binance", category=category, symbols=symbols, **options)


def sessions(settings: MarketSettings) -> tuple[list[ConnectionPlan], dict[str, BinanceSession]]:
    """The plans of one market and a session per stream (the session of its connection)."""
    adapter = BinanceAdapter()
    plans = adapter.plan_connections([settings])
    by_stream: dict[str, BinanceSession] = {}
    for plan in plans:
        assert isinstance(plan, BinancePlan)
        session = adapter.open_session(plan)
        by_stream.update(dict.fromkeys(plan.streams, session))
    return plans, by_stream


def ack_all(session: BinanceSession, received_us: int = NOW) -> list[Event]:
    """Acknowledge every SUBSCRIBE the session sent, as the venue does."""
    events: list[Event] = []
    for frame in subscribe(session):
        events += feed(session, f'{{"result":null,"id":{json.loads(frame)["id"]}}}', received_us)
    return events


def one_session(category: str, *feeds: str, **options: Any) -> BinanceSession:
    """The session of a one-connection market (its feeds share an endpoint)."""
    symbol = "BTCUSD_PERP" if category == "coinm" else "BTCUSDT"
    plans, by_stream = sessions(market(category, symbol, feeds=feeds, **options))
    assert len(plans) == 1
    [session] = set(by_stream.values())
    return session


def gaps(events: list[Event]) -> list[Status]:
    return [e for e in events if isinstance(e, Status) and e.event == "gap"]


# --------------------------------------------------------------------------- recorded traffic


def replay(
    name: str, category: str, symbols: tuple[str, ...]
) -> tuple[list[Event], int, dict[tuple[str, str, str], int]]:
    """Replay a cryptofeed capture of futures traffic through the sessions of one diff-book
    market, handing each recorded REST depth snapshot to the session that asked for it.

    Returns the events and how many snapshots were asked for at the recorded URLs.
    """
    capture = read_f2(require_sample(f"cryptofeed-v3/{name}"))
    settings = market(category, *symbols, book_mode="diff", rest_url=REST)
    _, by_stream = sessions(settings)
    start = next(capture.received()).received_us
    events: list[Event] = []
    requests: dict[str, tuple[BinanceSession, SnapshotRequest]] = {}
    for session in set(by_stream.values()):
        events += ack_all(session, start)
        requests |= {r.symbol: (session, r) for r in asked(session).fetch}
        asked(session).fetch.clear()
    records: list[F2Record] = [*capture.received(), *capture.http("/v1/depth?")]
    matched = 0
    for record in sorted(records, key=lambda r: r.received_us):
        if record.t == "http":
            assert record.url is not None
            assert record.data is not None
            symbol = record.url.split("symbol=")[1].split("&")[0]
            session, request = requests[symbol]
            # The session asks for what the recording fetched (below our REST base).
            matched += request.url.removeprefix(REST) == record.url.split(".com", 1)[1]
            events += receive_snapshot(session, request, record.data.encode(), record.received_us)
            continue
        stream = msgspec.json.decode(record.payload)["stream"]
        if stream in by_stream:  # kline_1m streams are not ours
            events += feed(by_stream[stream], record.payload, record.received_us)
    dropped: dict[tuple[str, str, str], int] = {}
    for session in set(by_stream.values()):
        assert asked(session).fetch == [], "no snapshot asked for again: every one joined"
        dropped |= discarded(session)
    return events, matched, dropped


def test_replay_recorded_usdm_traffic_with_its_rest_snapshots() -> None:
    """cryptofeed's 2021 USD-M capture: aggTrade, depth@100ms with pu, bookTicker and the
    REST snapshots fetched beside them."""
    symbols = ("SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT")
    events, matched, dropped = replay("BINANCE_FUTURES.jsonl.zst", "usdm", symbols)
    assert matched == 4
    # The REST snapshots ran ahead of the stream: the deltas they already held that came
    # after them are dropped (applied after the snapshot they would rewind the book).
    assert {reason for _, _, reason in dropped} == {"stale"}
    stale = sum(dropped.values())
    assert stale == 11

    statuses = [e for e in events if isinstance(e, Status)]
    assert sorted({s.event for s in statuses}) == ["resync", "subscribed"]  # no gap
    assert [s.symbol for s in statuses if s.event == "resync"] == [
        "SUSHIUSDT",
        "AKROUSDT",
        "KEEPUSDT",
        "CTKUSDT",
    ]
    trades = [e for e in events if isinstance(e, Trade)]
    books = [e for e in events if isinstance(e, BookUpdate)]
    tickers = [e for e in events if isinstance(e, Ticker)]
    assert (len(trades), len(books), len(tickers)) == (91, 764 + 4 - stale, 613)
    rows: list[Trade | BookUpdate | Ticker | Status] = [*trades, *books, *tickers, *statuses]
    assert {e.exchange for e in rows} == {"binance-usdm"}

    assert trades[0] == Trade(
        exchange="binance-usdm",
        symbol="CTKUSDT",
        timestamp_exchange=1626992741421000,  # T, the trade time (ms)
        timestamp_collector=trades[0].timestamp_collector,
        sequence=16599292,  # the aggregate trade id a
        trade_id="16599292",
        price=1.011,
        size=10.0,
        side="buy",  # m = false: the buyer took
    )
    assert books[0] == BookUpdate(
        exchange="binance-usdm",
        symbol="SUSHIUSDT",
        timestamp_exchange=1626992741037000,
        timestamp_collector=books[0].timestamp_collector,
        sequence=600859600917,
        kind="delta",
        first_sequence=600859599090,
        prev_sequence=600859598061,
        bids=levels_from_pairs([(7.504, 813.0), (7.609, 0.0), (7.611, 2.0)]),
        asks=levels_from_pairs([(7.615, 1563.0), (7.622, 3284.0)]),
    )
    assert tickers[0] == Ticker(
        exchange="binance-usdm",
        symbol="SUSHIUSDT",
        timestamp_exchange=1626992741017000,
        timestamp_collector=tickers[0].timestamp_collector,
        sequence=600859600576,
        bid_price=7.611,
        bid_size=2.0,
        ask_price=7.612,
        ask_size=297.0,
        last_price=None,
        volume_24h=None,
    )
    snapshots = {b.symbol: b for b in books if b.kind == "snapshot"}
    akro = snapshots["AKROUSDT"]
    assert (akro.sequence, akro.first_sequence, akro.prev_sequence) == (600859605486,) * 2 + (None,)
    assert akro.timestamp_exchange == 1626992741242000  # the snapshot's E
    # The delta that continues AKROUSDT's snapshot starts far past lastUpdateId + 1 (U
    # skips other symbols' ids): its pu names the snapshot. Spot's rule would call it a gap.
    after = next(
        b
        for b in books
        if b.symbol == "AKROUSDT" and b.kind == "delta" and (b.sequence or 0) > 600859605486
    )
    assert after.prev_sequence == 600859605486
    assert (after.first_sequence or 0) > 600859605486 + 1


def test_replay_recorded_coinm_traffic_with_its_rest_snapshots() -> None:
    """cryptofeed's 2021 COIN-M capture: 10 perpetual and dated contracts."""
    symbols = (
        "LINKUSD_211231",
        "LINKUSD_PERP",
        "TRXUSD_PERP",
        "ETCUSD_PERP",
        "BTCUSD_211231",
        "XRPUSD_PERP",
        "EOSUSD_PERP",
        "BCHUSD_PERP",
        "BCHUSD_210924",
        "ETHUSD_210924",
    )
    events, matched, dropped = replay("BINANCE_DELIVERY.jsonl.zst", "coinm", symbols)
    assert matched == 10
    assert {reason for _, _, reason in dropped} <= {"stale"}
    stale = sum(dropped.values())
    statuses = [e for e in events if isinstance(e, Status)]
    assert sorted({s.event for s in statuses}) == ["resync", "subscribed"]
    assert sorted(s.symbol for s in statuses if s.event == "resync") == sorted(symbols)
    trades = [e for e in events if isinstance(e, Trade)]
    books = [e for e in events if isinstance(e, BookUpdate)]
    tickers = [e for e in events if isinstance(e, Ticker)]
    assert (len(trades), len(books), len(tickers)) == (51, 2047 + 10 - stale, 2240)
    assert trades[0] == Trade(
        exchange="binance-coinm",
        symbol="BCHUSD_PERP",
        timestamp_exchange=1626916403852000,
        timestamp_collector=trades[0].timestamp_collector,
        sequence=11285749,
        trade_id="11285749",
        price=427.91,
        size=3.0,  # contracts
        side="sell",  # m = true: the seller took
    )
    assert tickers[0] == Ticker(
        exchange="binance-coinm",
        symbol="BCHUSD_PERP",
        timestamp_exchange=1626916403871000,
        timestamp_collector=tickers[0].timestamp_collector,
        sequence=167006084895,
        bid_price=427.84,
        bid_size=24.0,
        ask_price=427.9,
        ask_size=669.0,
        last_price=None,
        volume_24h=None,
    )
    snapshot = next(b for b in books if b.kind == "snapshot")
    assert (snapshot.exchange, snapshot.symbol, snapshot.sequence) == (
        "binance-coinm",
        "BCHUSD_PERP",
        167006089178,
    )
    assert snapshot.timestamp_exchange == 1626916404580000


# --------------------------------------------------------------------------- plans


def test_usdm_routes_book_streams_to_public_and_trades_to_market() -> None:
    plans, _ = sessions(market("usdm", "btcusdt", "ethusdt", book_mode="diff"))
    assert [(p.name, p.exchange, p.url) for p in plans] == [
        ("binance-usdm-0", "binance-usdm", "wss://fstream.binance.com/market/stream"),
        ("binance-usdm-1", "binance-usdm", "wss://fstream.binance.com/public/stream"),
    ]
    trades, books = plans
    assert isinstance(trades, BinancePlan)
    assert isinstance(books, BinancePlan)
    assert trades.streams == ("btcusdt@aggTrade", "ethusdt@aggTrade")
    assert books.streams == (
        "btcusdt@depth@100ms",
        "btcusdt@bookTicker",
        "ethusdt@depth@100ms",
        "ethusdt@bookTicker",
    )
    assert (books.category, books.rest_url) == ("usdm", "https://fapi.binance.com")
    assert BinanceAdapter().snapshot_rate(books) == 0.5


def test_coinm_has_one_endpoint_and_spells_contracts() -> None:
    plans, _ = sessions(market("coinm", "btcusd_perp", "ETHUSD_250926", book_depth=10))
    [plan] = plans
    assert isinstance(plan, BinancePlan)
    assert (plan.name, plan.exchange, plan.url) == (
        "binance-coinm-0",
        "binance-coinm",
        "wss://dstream.binance.com/stream",
    )
    assert plan.streams[:3] == (
        "btcusd_perp@aggTrade",
        "btcusd_perp@depth10@100ms",
        "btcusd_perp@bookTicker",
    )
    assert plan.symbols == ("BTCUSD_PERP", "ETHUSD_250926")
    assert plan.rest_url == "https://dapi.binance.com"


def test_base_url_is_the_host_below_the_category_paths() -> None:
    adapter = BinanceAdapter()
    host = "ws://127.0.0.1:9999/"
    usdm = market("usdm", "BTCUSDT", feeds=("trades", "ticker"), base_url=host)
    assert [p.url for p in adapter.plan_connections([usdm])] == [
        "ws://127.0.0.1:9999/market/stream",
        "ws://127.0.0.1:9999/public/stream",
    ]
    coinm = market("coinm", "BTCUSD_PERP", base_url=host)
    assert adapter.connection_url(coinm) == "ws://127.0.0.1:9999/stream"
    spot = market("spot", "BTCUSDT", base_url=host)
    assert adapter.connection_url(spot) == "ws://127.0.0.1:9999/stream?timeUnit=MICROSECOND"


def test_a_spot_and_a_futures_market_of_one_symbol_are_kept_apart() -> None:
    settings = parse_settings(
        {
            "markets": [
                {"exchange": "binance", "symbols": ["BTCUSDT"], "feeds": ["trades"]},
                {
                    "exchange": "binance",
                    "category": "usdm",
                    "symbols": ["BTCUSDT"],
                    "feeds": ["trades"],
                },
                {
                    "exchange": "binance",
                    "category": "coinm",
                    "symbols": ["BTCUSD_PERP"],
                    "feeds": ["trades"],
                },
            ]
        }
    )
    plans = BinanceAdapter().plan_connections(settings.markets)
    assert [(p.name, p.exchange, p.symbols) for p in plans] == [
        ("binance-0", "binance", ("BTCUSDT",)),
        ("binance-usdm-1", "binance-usdm", ("BTCUSDT",)),
        ("binance-coinm-2", "binance-coinm", ("BTCUSD_PERP",)),
    ]
    assert [BinanceAdapter().snapshot_rate(p) for p in plans] == [1.0, 0.5, 0.5]
    # The same symbol twice in one category is still one market too many.
    with pytest.raises(ConfigError, match="duplicate market binance-usdm BTCUSDT"):
        parse_settings(
            {
                "markets": [
                    {"exchange": "binance", "category": "usdm", "symbols": ["BTCUSDT"]},
                    {"exchange": "binance", "category": "usdm", "symbols": ["btcusdt"]},
                ]
            }
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"category": "inverse"},
            "binance category must be 'spot', 'usdm' or 'coinm' (got 'inverse')",
        ),
        ({"category": "coinm"}, "binance coinm symbol 'BTCUSDT' must name its contract"),
        (
            {"symbols": ["BTCUSD_PERP"]},
            "binance spot symbol 'BTCUSD_PERP' names a futures contract",
        ),
        (
            {"category": "usdm", "book_mode": "diff", "book_depth": 5},
            "binance book_depth applies only to book_mode 'snapshot'",
        ),
    ],
)
def test_settings_refuse_what_the_category_cannot_be(options: dict[str, Any], message: str) -> None:
    raw = {"exchange": "binance", "symbols": ["BTCUSDT"], **options}
    with pytest.raises(ConfigError, match=re.escape(f"markets[0]: {message}")):
        parse_settings({"markets": [raw]})


@pytest.mark.parametrize("feed", ["derivatives", "liquidations"])
def test_spot_has_no_derivative_feeds(feed: str) -> None:
    with pytest.raises(
        ValueError, match=f"^binance category 'spot' has no {feed} feed .*'usdm' or 'coinm' has"
    ):
        BinanceAdapter.check_market(market("spot", "BTCUSDT", feeds=("trades", feed)))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"category": "usdm", "feeds": ["trades"], "open_interest_interval_secs": 30},
            "binance open_interest_interval_secs applies only to a market with the "
            "derivatives feed",
        ),
        (
            {"open_interest_interval_secs": 30},
            "binance open_interest_interval_secs applies only to a market with the "
            "derivatives feed",
        ),
        (
            {"category": "usdm", "feeds": ["derivatives"], "open_interest_interval_secs": 1},
            "binance open_interest_interval_secs must be at least 5 (got 1)",
        ),
        (
            {"category": "usdm", "feeds": ["derivatives"], "open_interest_interval_secs": -1},
            "open_interest_interval_secs",
        ),
    ],
)
def test_open_interest_interval_is_checked(options: dict[str, Any], message: str) -> None:
    raw = {"exchange": "binance", "symbols": ["BTCUSDT"], **options}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_settings({"markets": [raw]})


def test_other_venues_refuse_an_open_interest_interval() -> None:
    raw = {
        "exchange": "bybit",
        "category": "linear",
        "symbols": ["BTCUSDT"],
        "feeds": ["derivatives"],
        "open_interest_interval_secs": 30,
    }
    with pytest.raises(ConfigError, match="bybit has no open_interest_interval_secs option"):
        parse_settings({"markets": [raw]})


# --------------------------------------------------------------------------- trades


@pytest.mark.parametrize("category", ["usdm", "coinm"])
def test_agg_trade_is_a_trade_row_checked_by_its_id(category: str) -> None:
    session = one_session(category, "trades")
    symbol = "BTCUSDT" if category == "usdm" else "BTCUSD_PERP"
    exchange = f"binance-{category}"

    def trade(agg_id: int, buyer_maker: bool = False) -> list[Event]:
        frame = agg_trade_frame(symbol, agg_id, "65000.5", "0.25", T_MS, buyer_maker, trades=3)
        return feed(session, frame, NOW)

    assert trade(100, buyer_maker=True) == [
        Trade(exchange, symbol, T_MS * 1000, NOW, 100, "100", 65000.5, 0.25, "sell")
    ]
    assert trade(101) == [
        Trade(exchange, symbol, T_MS * 1000, NOW, 101, "101", 65000.5, 0.25, "buy")
    ]
    assert trade(101) == []  # the same aggregate again: a duplicate
    events = trade(105)
    assert events[0] == Status(
        exchange, symbol, None, NOW, None, "gap", "trades", 102, 105, 3, None
    )
    assert [e.sequence for e in events[1:]] == [105]
    assert discarded(session) == {(symbol, "trades", "duplicate"): 1}


def test_agg_trades_read_alone_and_among_other_streams_give_the_same_rows() -> None:
    """A trades-only connection decodes in one pass; the same frames beside a ticker stream
    take the general path."""
    frames = [agg_trade_frame("BTCUSDT", i, 100 + i, 1, T_MS + i, i % 2 == 0) for i in (1, 2, 4)]
    fast = one_session("usdm", "trades")
    subs = (Subscription("BTCUSDT", "trades"), Subscription("BTCUSDT", "ticker"))
    plan = BinancePlan(
        "binance-usdm",
        "binance-usdm-9",
        "ws://x/market/stream",
        subs,
        streams=("btcusdt@aggTrade", "btcusdt@bookTicker"),
        category="usdm",
    )
    general = BinanceAdapter().open_session(plan)
    fast_events: list[Event] = []
    general_events: list[Event] = []
    fast.receive([f.encode() for f in frames], NOW, fast_events)
    for frame in frames:
        general_events += feed(general, frame, NOW)
    assert fast_events == general_events
    assert [type(e).__name__ for e in fast_events] == ["Trade", "Trade", "Status", "Trade"]


def test_each_category_reads_only_its_own_trade_stream() -> None:
    futures = one_session("usdm", "trades")
    assert feed(futures, trade_frame("BTCUSDT", 7, "1", "1", T_MS, True), NOW) == []
    spot = one_session("spot", "trades")
    assert feed(spot, agg_trade_frame("BTCUSDT", 7, "1", "1", T_MS, True), NOW) == []


# --------------------------------------------------------------------------- books, tickers


def test_futures_partial_depth_is_a_snapshot_that_keeps_its_ids() -> None:
    session = one_session("usdm", "orderbook", book_depth=5)
    frame = futures_partial_depth_frame(
        "BTCUSDT", 200, 210, 195, [("65000.1", "2")], [("65000.2", "0.5")], T_MS, depth=5
    )
    assert json.loads(frame)["stream"] == "btcusdt@depth5@100ms"
    assert feed(session, frame, NOW) == [
        BookUpdate(
            exchange="binance-usdm",
            symbol="BTCUSDT",
            timestamp_exchange=T_MS * 1000,
            timestamp_collector=NOW,
            sequence=210,
            kind="snapshot",
            first_sequence=200,
            prev_sequence=195,
            bids=levels_from_pairs([(65000.1, 2.0)]),
            asks=levels_from_pairs([(65000.2, 0.5)]),
        )
    ]


def test_futures_book_ticker_row() -> None:
    session = one_session("coinm", "ticker")
    frame = book_ticker_frame("BTCUSD_PERP", 77, "64999.9", "120", "65000.0", "80", time_ms=T_MS)
    assert feed(session, frame, NOW) == [
        Ticker(
            "binance-coinm",
            "BTCUSD_PERP",
            T_MS * 1000,
            NOW,
            77,
            64999.9,
            120.0,
            65000.0,
            80.0,
            None,
            None,
        )
    ]


# --------------------------------------------------------------------------- book sync


def diff_session(category: str = "usdm", rest_url: str | None = None) -> BinanceSession:
    session = one_session(category, "orderbook", book_mode="diff", rest_url=rest_url)
    ack_all(session)
    return session


def delta(session: BinanceSession, first: int, last: int, pu: int) -> list[Event]:
    frame = depth_diff_frame("BTCUSDT", first, last, [(100.0, 1.0)], [], T_MS, prev_id=pu)
    return feed(session, frame, NOW)


def snapshot(session: BinanceSession, last_update_id: int) -> list[Event]:
    [request] = asked(session).fetch
    asked(session).fetch.clear()
    body = f'{{"lastUpdateId":{last_update_id},"E":{T_MS},"T":{T_MS},"bids":[],"asks":[]}}'
    return receive_snapshot(session, request, body.encode(), NOW)


@pytest.mark.parametrize(
    ("category", "rest_url", "url"),
    [
        ("usdm", None, "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000"),
        ("coinm", None, "https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP&limit=1000"),
        ("usdm", "http://127.0.0.1:9/", "http://127.0.0.1:9/fapi/v1/depth?symbol=BTCUSDT&limit=1000"),
    ],
)  # fmt: skip
def test_snapshots_come_from_the_category_depth_endpoint(
    category: str, rest_url: str | None, url: str
) -> None:
    session = diff_session(category, rest_url)
    assert [r.url for r in asked(session).fetch] == [url]


def test_a_delta_whose_pu_is_the_snapshot_joins_it() -> None:
    session = diff_session()
    delta(session, 90, 95, 80)
    assert [e.sequence for e in snapshot(session, 100) if isinstance(e, BookUpdate)] == [100]
    delta(session, 97, 100, 95)  # u == lastUpdateId: in the snapshot already
    # U skips to 120 (other symbols' ids): pu == lastUpdateId joins it all the same.
    assert gaps(delta(session, 120, 130, 100)) == []
    assert asked(session).fetch == []


def test_a_delta_spanning_the_snapshot_joins_it() -> None:
    session = diff_session()
    snapshot(session, 100)
    assert gaps(delta(session, 95, 110, 90)) == []  # U <= lastUpdateId <= u
    assert gaps(delta(session, 115, 120, 110)) == []
    assert asked(session).fetch == []


def test_a_first_delta_past_the_snapshot_that_does_not_join_it_is_a_gap() -> None:
    session = diff_session()
    snapshot(session, 100)
    events = delta(session, 120, 130, 110)  # 101..110 went by unseen
    assert events[0] == Status(
        exchange="binance-usdm",
        symbol="BTCUSDT",
        timestamp_exchange=None,
        timestamp_collector=NOW,
        sequence=None,
        event="gap",
        data_type="orderbook",
        expected_sequence=100,
        received_sequence=110,
        detail="first delta after the REST snapshot does not cover it",
    )
    assert isinstance(events[1], BookUpdate)
    assert [r.symbol for r in asked(session).fetch] == ["BTCUSDT"]


def test_a_snapshot_older_than_the_deltas_since_the_request_is_fetched_again() -> None:
    session = diff_session()
    delta(session, 160, 170, 150)
    snapshot(session, 140)  # 141..150 would be missing between them
    assert [r.symbol for r in asked(session).fetch] == ["BTCUSDT"]
    delta(session, 175, 180, 170)
    snapshot(session, 170)  # the first delta since the new request continues it (pu 170)
    assert asked(session).fetch == []


def test_a_broken_pu_chain_is_a_gap_and_a_new_snapshot() -> None:
    session = diff_session()
    snapshot(session, 100)
    delta(session, 95, 110, 90)
    [gap] = gaps(delta(session, 130, 140, 120))
    assert (gap.expected_sequence, gap.received_sequence, gap.detail) == (
        110,
        120,
        "pu is not the previous u",
    )
    assert [r.symbol for r in asked(session).fetch] == ["BTCUSDT"]
