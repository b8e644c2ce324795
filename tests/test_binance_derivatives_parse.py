"""Binance USD-M and COIN-M derivative data without sockets: ``@markPrice@1s`` and polled
open interest merged into ``derivative_ticker`` rows, ``@forceOrder`` into ``liquidations``
rows, their streams, routes and polling plan. Frames are generated (the recorded samples
hold no mark price or liquidation traffic: shared/samples/INDEX.md)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from collector.config import MarketSettings
from collector.events import DerivativeTicker, Event, Liquidation, SizeUnit
from collector.exchanges.base import ParseError, Polling, SnapshotRequest, Subscription
from collector.exchanges.binance import BinanceAdapter, BinancePlan, BinanceSession
from tests.fakes.binance import (
    agg_trade_frame,
    book_ticker_frame,
    force_order_frame,
    mark_price_frame,
)
from tests.session_helpers import discarded, feed, receive_polled

NOW = 1_700_000_000_000_000  # a receive time, microseconds
E_MS = 1_700_000_000_000  # a mark price event time, milliseconds
FUNDING_MS = 1_700_006_400_000
REST = "http://127.0.0.1:9"
USDM, COINM = "binance-usdm", "binance-coinm"


def market(category: str, *symbols: str, **options: Any) -> MarketSettings:
    return MarketSettings(exchange="binance", category=category, symbols=symbols, **options)


def plans(settings: MarketSettings) -> list[BinancePlan]:
    found = BinanceAdapter().plan_connections([settings])
    assert all(isinstance(p, BinancePlan) for p in found)
    return [p for p in found if isinstance(p, BinancePlan)]


def session_of(category: str, *feeds: str, symbol: str | None = None) -> BinanceSession:
    symbol = symbol or ("BTCUSD_PERP" if category == "coinm" else "BTCUSDT")
    [plan] = plans(market(category, symbol, feeds=feeds, rest_url=REST))
    return BinanceAdapter().open_session(plan)


def open_interest_body(symbol: str, value: str, time_ms: int, *, coinm: bool = False) -> bytes:
    doc: dict[str, Any] = {"symbol": symbol, "openInterest": value, "time": time_ms}
    if coinm:
        doc |= {"pair": symbol.split("_")[0], "contractType": "PERPETUAL"}
    return msgspec.json.encode(doc)


def oi_request(symbol: str, category: str = "usdm") -> SnapshotRequest:
    path = "/fapi/v1/openInterest" if category == "usdm" else "/dapi/v1/openInterest"
    return SnapshotRequest(symbol, f"{REST}{path}?symbol={symbol}")


# --------------------------------------------------------------------------- mark price


def test_a_mark_price_is_a_whole_derivative_ticker_row() -> None:
    session = session_of("usdm", "derivatives")
    frame = mark_price_frame(
        "BTCUSDT", E_MS, "65010.5", "65000.25", "64999.75", "0.0001", FUNDING_MS
    )
    assert feed(session, frame, NOW) == [
        DerivativeTicker(
            USDM,
            "BTCUSDT",
            E_MS * 1000,
            NOW,
            E_MS,
            "markPrice",
            mark_price=65010.5,
            index_price=65000.25,
            funding_rate=0.0001,
            funding_timestamp=FUNDING_MS * 1000,
            estimated_settlement_price=64999.75,
        )
    ]


def test_a_coinm_delivery_contract_has_no_funding() -> None:
    """COIN-M sends ``"r":""`` and ``"T":0`` for a dated contract: null, not 0."""
    session = session_of("coinm", "derivatives", symbol="BTCUSD_250926")
    frame = mark_price_frame("BTCUSD_250926", E_MS, "66000", "65000", "65990", None, 0)
    assert feed(session, frame, NOW) == [
        DerivativeTicker(
            COINM,
            "BTCUSD_250926",
            E_MS * 1000,
            NOW,
            E_MS,
            "markPrice",
            mark_price=66000.0,
            index_price=65000.0,
            estimated_settlement_price=65990.0,
        )
    ]


def test_a_repeated_mark_price_is_dropped_and_counted() -> None:
    session = session_of("usdm", "derivatives")
    first = mark_price_frame("BTCUSDT", E_MS, 1, 1, 1, "0.0001", FUNDING_MS)
    later = mark_price_frame("BTCUSDT", E_MS + 1000, 2, 2, 2, "0.0001", FUNDING_MS)
    assert len(feed(session, first, NOW)) == 1
    assert len(feed(session, later, NOW)) == 1
    assert feed(session, first, NOW) == []  # older: already had a newer one
    assert feed(session, later, NOW) == []  # the same E again
    assert discarded(session) == {("BTCUSDT", "derivative_ticker", "duplicate"): 2}


# --------------------------------------------------------------------------- open interest


@pytest.mark.parametrize(
    ("category", "symbol", "unit"),
    [("usdm", "BTCUSDT", "base"), ("coinm", "BTCUSD_PERP", "contracts")],
)
def test_open_interest_and_mark_prices_merge_into_rows_that_stand_alone(
    category: str, symbol: str, unit: SizeUnit
) -> None:
    session = session_of(category, "derivatives")
    exchange = f"binance-{category}"
    request = oi_request(symbol, category)
    coinm = category == "coinm"
    # Polled before the first mark price: no row of its own, the first markPrice row has it.
    body = open_interest_body(symbol, "10659.509", E_MS - 500, coinm=coinm)
    assert receive_polled(session, request, body, NOW - 400) == []
    frame = mark_price_frame(symbol, E_MS, "65010.5", "65000", "65001", "0.0001", FUNDING_MS)
    mark: dict[str, Any] = {
        "mark_price": 65010.5,
        "index_price": 65000.0,
        "funding_rate": 0.0001,
        "funding_timestamp": FUNDING_MS * 1000,
        "estimated_settlement_price": 65001.0,
    }
    assert feed(session, frame, NOW) == [
        DerivativeTicker(
            exchange,
            symbol,
            E_MS * 1000,
            NOW,
            E_MS,
            "markPrice",
            open_interest=10659.509,
            open_interest_unit=unit,
            **mark,
        )
    ]
    # The next poll: a row of the new open interest with the state's mark price; its
    # sequence is the E of that state, its exchange time the REST answer's.
    body = open_interest_body(symbol, "10700", E_MS + 400, coinm=coinm)
    assert receive_polled(session, request, body, NOW + 500_000) == [
        DerivativeTicker(
            exchange,
            symbol,
            (E_MS + 400) * 1000,
            NOW + 500_000,
            E_MS,
            "openInterest",
            open_interest=10700.0,
            open_interest_unit=unit,
            **mark,
        )
    ]
    # An answer older than the one applied (a slow request) changes nothing.
    stale = open_interest_body(symbol, "1", E_MS + 100, coinm=coinm)
    assert receive_polled(session, request, stale, NOW + 600_000) == []
    assert discarded(session) == {(symbol, "derivative_ticker", "stale"): 1}
    [row] = feed(
        session,
        mark_price_frame(symbol, E_MS + 1000, "65020", "65000", "65001", "0.0001", FUNDING_MS),
        NOW + 1_000_000,
    )
    assert isinstance(row, DerivativeTicker)
    assert (row.sequence, row.mark_price, row.open_interest) == (E_MS + 1000, 65020.0, 10700.0)


def test_an_unreadable_open_interest_body_is_a_parse_error() -> None:
    session = session_of("usdm", "derivatives")
    with pytest.raises(ParseError, match="binance open interest"):
        receive_polled(session, oi_request("BTCUSDT"), b'{"code":-1121}', NOW)


# --------------------------------------------------------------------------- liquidations


@pytest.mark.parametrize(
    ("category", "symbol", "unit"),
    [("usdm", "BTCUSDT", "base"), ("coinm", "BTCUSD_PERP", "contracts")],
)
def test_force_orders_are_liquidation_rows(category: str, symbol: str, unit: SizeUnit) -> None:
    session = session_of(category, "liquidations")
    exchange = f"binance-{category}"
    sell = force_order_frame(symbol, "SELL", "9910", "0.014", E_MS, avg_price="9905.5")
    buy = force_order_frame(
        symbol, "BUY", "9990", "2", E_MS + 7, status="PARTIALLY_FILLED", filled="1.5"
    )
    assert feed(session, sell, NOW) == [
        Liquidation(
            exchange,
            symbol,
            E_MS * 1000,
            NOW,
            None,
            None,
            "sell",  # the order sold: a long position was liquidated
            "long",
            9910.0,
            "order",
            0.014,
            unit,
            avg_price=9905.5,
            status="FILLED",
        )
    ]
    assert feed(session, buy, NOW + 1) == [
        Liquidation(
            exchange,
            symbol,
            (E_MS + 7) * 1000,
            NOW + 1,
            None,
            None,
            "buy",
            "short",
            9990.0,
            "order",
            1.5,  # the filled quantity z, not the order's q
            unit,
            avg_price=9990.0,
            status="PARTIALLY_FILLED",
        )
    ]


def test_a_force_order_of_an_unknown_side_is_a_parse_error() -> None:
    session = session_of("usdm", "liquidations")
    with pytest.raises(ParseError, match="unknown side"):
        feed(session, force_order_frame("BTCUSDT", "HOLD", 1, 1, E_MS), NOW)


# --------------------------------------------------------------------------- both paths


def test_derivative_frames_read_alone_and_among_other_streams_give_the_same_rows() -> None:
    """A connection of tagged streams only (trades, mark prices, liquidations) decodes each
    frame in one pass; beside a book ticker the same frames take the general path."""
    frames = [
        agg_trade_frame("BTCUSDT", 7, "65000", "0.1", E_MS, False),
        mark_price_frame("BTCUSDT", E_MS, "65010.5", "65000", "65001", "0.0001", FUNDING_MS),
        force_order_frame("BTCUSDT", "SELL", "64000", "0.5", E_MS + 5),
        mark_price_frame("BTCUSDT", E_MS + 1000, "65011", "65001", "65002", "-0.0002", 0),
    ]
    fast = session_of("usdm", "trades", "derivatives", "liquidations")
    feeds = ("trades", "derivatives", "liquidations", "ticker")
    streams = ("btcusdt@aggTrade", "btcusdt@markPrice@1s", "btcusdt@forceOrder")
    general = BinanceSession(
        BinancePlan(
            USDM,
            "binance-usdm-0",
            "ws://127.0.0.1:9/market/stream",
            tuple(Subscription("BTCUSDT", f) for f in feeds),
            streams=(*streams, "btcusdt@bookTicker"),
            rest_url=REST,
            category="usdm",
        )
    )
    rows_fast: list[Event] = []
    rows_general: list[Event] = []
    for frame in frames:
        rows_fast += feed(fast, frame, NOW)
        rows_general += feed(general, frame, NOW)
    rows_general += feed(general, book_ticker_frame("BTCUSDT", 1, 1, 1, 2, 1, time_ms=E_MS), NOW)
    assert rows_general[:-1] == rows_fast
    assert [type(r).__name__ for r in rows_fast] == [
        "Trade",
        "DerivativeTicker",
        "Liquidation",
        "DerivativeTicker",
    ]
    last = rows_fast[-1]
    assert isinstance(last, DerivativeTicker)
    assert (last.funding_rate, last.funding_timestamp) == (-0.0002, None)


# --------------------------------------------------------------------------- plans


def test_usdm_derivative_streams_go_on_the_market_path_with_trades() -> None:
    found = plans(
        market(
            "usdm",
            "BTCUSDT",
            feeds=("trades", "orderbook", "derivatives", "liquidations"),
            book_mode="diff",
        )
    )
    by_path = {p.url.rsplit("/", 2)[-2]: p.streams for p in found}
    assert by_path == {
        "market": ("btcusdt@aggTrade", "btcusdt@markPrice@1s", "btcusdt@forceOrder"),
        "public": ("btcusdt@depth@100ms",),
    }


def test_coinm_derivative_streams_share_the_one_endpoint() -> None:
    [plan] = plans(market("coinm", "BTCUSD_PERP", feeds=("derivatives", "liquidations")))
    assert plan.url == "wss://dstream.binance.com/stream"
    assert plan.streams == ("btcusd_perp@markPrice@1s", "btcusd_perp@forceOrder")


@pytest.mark.parametrize(
    ("category", "symbols", "path"),
    [
        ("usdm", ("BTCUSDT", "ETHUSDT"), "https://fapi.binance.com/fapi/v1/openInterest"),
        ("coinm", ("BTCUSD_PERP", "ETHUSD_PERP"), "https://dapi.binance.com/dapi/v1/openInterest"),
    ],
)
def test_open_interest_is_polled_for_each_derivatives_symbol(
    category: str, symbols: tuple[str, ...], path: str
) -> None:
    adapter = BinanceAdapter()
    [plan] = plans(market(category, *symbols, feeds=("derivatives",)))
    assert adapter.polling(plan) == Polling(
        tuple(SnapshotRequest(s, f"{path}?symbol={s}") for s in symbols),
        60.0,
        2.0,
        "derivative_ticker",
    )
    [plan] = plans(
        market(category, *symbols, feeds=("derivatives",), open_interest_interval_secs=15)
    )
    polling = adapter.polling(plan)
    assert polling is not None
    assert polling.interval_secs == 15.0


def test_no_polling_without_the_derivatives_feed() -> None:
    adapter = BinanceAdapter()
    for plan in plans(market("usdm", "BTCUSDT", feeds=("trades", "liquidations", "orderbook"))):
        assert adapter.polling(plan) is None
    [spot] = plans(market("spot", "BTCUSDT", feeds=("trades",)))
    assert adapter.polling(spot) is None


def test_markets_of_different_intervals_get_their_own_connections() -> None:
    adapter = BinanceAdapter()
    found = adapter.plan_connections(
        [
            market("usdm", "BTCUSDT", feeds=("derivatives",)),
            market("usdm", "ETHUSDT", feeds=("derivatives",), open_interest_interval_secs=10),
        ]
    )
    intervals = {
        p.symbols: p.open_interest_interval_secs for p in found if isinstance(p, BinancePlan)
    }
    assert intervals == {("BTCUSDT",): 60.0, ("ETHUSDT",): 10.0}
