"""OKX derivatives without sockets: the merged ``derivative_ticker`` state from its channels,
``liquidation-orders`` filtered to the configured instruments, the args a subscription
needs and how their answers resolve it, the spot refusal, and ``symbols`` by type.

Frames are built like the venue's docs examples (D3 of exchanges-derivatives.md); the
opt-summary values are those of a real BTC-USD option summary.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from collector.config import MarketSettings
from collector.events import DerivativeTicker, Event, Liquidation, Ticker
from collector.exchanges.okx import (
    OkxAdapter,
    OkxSession,
    instrument_type,
    subscription_args,
)
from tests.fakes.okx import (
    error_msg,
    funding_rate_frame,
    index_ticker_frame,
    liquidation_frame,
    mark_price_frame,
    open_interest_frame,
    opt_summary_frame,
    ticker_frame,
)
from tests.session_helpers import feed as feed_at

NOW = 1_760_000_000_000_000
T_MS = 1_759_999_999_123
SWAP = "BTC-USDT-SWAP"
FUTURE = "BTC-USD-250926"
OPTION = "BTC-USD-250926-100000-C"


def market(*symbols: str, **kwargs: Any) -> MarketSettings:
    return MarketSettings(exchange="okx", symbols=symbols, **kwargs)


def open_session(*symbols: str, feeds: tuple[str, ...] = ("derivatives",)) -> OkxSession:
    adapter = OkxAdapter()
    settings = market(*symbols, feeds=feeds)
    adapter.check_market(settings)
    (plan,) = adapter.plan_connections([settings])
    return adapter.open_session(plan)


def args_of(session: OkxSession) -> list[dict[str, str]]:
    return [a for f in session.subscribe_frames(NOW) for a in msgspec.json.decode(f)["args"]]


def ack(session: OkxSession, arg: dict[str, str], request_id: str = "1") -> list[Event]:
    return feed(session, msgspec.json.encode({"id": request_id, "event": "subscribe", "arg": arg}))


def feed(session: OkxSession, frame: str | bytes) -> list[Event]:
    return feed_at(session, frame, NOW)


def row(symbol: str, source: str, ts_ms: int, **values: Any) -> DerivativeTicker:
    return DerivativeTicker("okx", symbol, ts_ms * 1000, NOW, None, source, **values)


# --------------------------------------------------------------------------- types and args


@pytest.mark.parametrize(
    ("symbol", "kind"),
    [("BTC-USDT", "SPOT"), (SWAP, "SWAP"), ("BTC-USD-SWAP", "SWAP"), (FUTURE, "FUTURES"),
     (OPTION, "OPTION"), ("ETH-USD-250926-2500.5-P", "OPTION")],
)  # fmt: skip
def test_the_instrument_id_says_its_type(symbol: str, kind: str) -> None:
    assert instrument_type(symbol) == kind


def test_the_args_of_each_instrument_type() -> None:
    assert subscription_args(SWAP, "derivatives", "mark-price") == (
        ("mark-price", SWAP),
        ("funding-rate", SWAP),
        ("index-tickers", "BTC-USDT"),
        ("open-interest", SWAP),
        ("tickers", SWAP),
    )
    # a dated future has no funding
    assert subscription_args(FUTURE, "derivatives", "mark-price") == (
        ("mark-price", FUTURE),
        ("index-tickers", "BTC-USD"),
        ("open-interest", FUTURE),
        ("tickers", FUTURE),
    )
    assert subscription_args(OPTION, "derivatives", "mark-price")[-1] == ("opt-summary", "BTC-USD")
    assert subscription_args(OPTION, "liquidations", "liquidation-orders") == (
        ("liquidation-orders", "OPTION"),
    )


def test_shared_args_are_subscribed_once_in_the_venue_spelling() -> None:
    """Two instruments of one index share its arg; ticker and derivatives share tickers;
    liquidations are one arg per instrument type."""
    session = open_session(
        "BTC-USD-SWAP", FUTURE, OPTION, feeds=("ticker", "derivatives", "liquidations")
    )
    args = args_of(session)
    assert len(args) == len({msgspec.json.encode(a) for a in args})
    assert args.count({"channel": "index-tickers", "instId": "BTC-USD"}) == 1
    assert {"channel": "tickers", "instId": FUTURE} in args
    assert [a for a in args if a["channel"] == "liquidation-orders"] == [
        {"channel": "liquidation-orders", "instType": "SWAP"},
        {"channel": "liquidation-orders", "instType": "FUTURES"},
        {"channel": "liquidation-orders", "instType": "OPTION"},
    ]
    assert {"channel": "opt-summary", "instFamily": "BTC-USD"} in args
    assert [a for a in args if a["channel"] == "funding-rate"] == [
        {"channel": "funding-rate", "instId": "BTC-USD-SWAP"}
    ]


# --------------------------------------------------------------------------- merged state


def test_every_channel_merges_into_one_state_per_instrument() -> None:
    session = open_session(SWAP)
    assert feed(session, mark_price_frame(SWAP, 61000.5, T_MS)) == [
        row(SWAP, "mark-price", T_MS, mark_price=61000.5)
    ]
    assert feed(
        session, funding_rate_frame(SWAP, 0.0001875, 1_700_726_400_000, 1_700_755_200_000, T_MS + 1)
    ) == [
        row(SWAP, "funding-rate", T_MS + 1, mark_price=61000.5, funding_rate=0.0001875,
            funding_timestamp=1_700_726_400_000_000, next_funding_timestamp=1_700_755_200_000_000,
            funding_interval_h=8.0)
    ]  # fmt: skip
    funding = {
        "funding_rate": 0.0001875,
        "funding_timestamp": 1_700_726_400_000_000,
        "next_funding_timestamp": 1_700_755_200_000_000,
        "funding_interval_h": 8.0,
    }
    assert feed(session, index_ticker_frame("BTC-USDT", 60990.1, T_MS + 2)) == [
        row(SWAP, "index-tickers", T_MS + 2, mark_price=61000.5, index_price=60990.1, **funding)
    ]
    state: dict[str, Any] = {"mark_price": 61000.5, "index_price": 60990.1, **funding}
    assert feed(
        session, open_interest_frame(SWAP, 2216113.01, 22161.1301, 1939251795.55, T_MS + 3)
    ) == [
        row(SWAP, "open-interest", T_MS + 3, **state, open_interest=2216113.01,
            open_interest_unit="contracts", open_interest_value=1939251795.55)
    ]  # fmt: skip
    state |= {
        "open_interest": 2216113.01,
        "open_interest_unit": "contracts",
        "open_interest_value": 1939251795.55,
    }
    ticker: dict[str, Any] = dict(
        bid=61000, bid_size=3, ask=61001, ask_size=4, vol24h=9, inst_type="SWAP"
    )
    assert feed(session, ticker_frame(SWAP, last=61000.7, ts_ms=T_MS + 4, **ticker)) == [
        row(SWAP, "tickers", T_MS + 4, **state, last_price=61000.7)
    ]
    # a ticker whose last price did not change writes no derivative row, nor a ticker row
    # (only derivatives was asked for)
    assert feed(session, ticker_frame(SWAP, last=61000.7, ts_ms=T_MS + 5, **ticker)) == []
    # a later mark price replaces the earlier one, the rest stays
    assert feed(session, mark_price_frame(SWAP, 61002, T_MS + 6)) == [
        row(SWAP, "mark-price", T_MS + 6, **{**state, "mark_price": 61002.0}, last_price=61000.7)
    ]


def test_a_predicted_rate_is_kept_only_when_the_venue_sends_one() -> None:
    session = open_session("ETH-USDT-SWAP")
    frame = funding_rate_frame("ETH-USDT-SWAP", -0.00002, 3_600_000, 7_200_000, T_MS,
                               next_rate="0.00001")  # fmt: skip
    (event,) = feed(session, frame)
    assert isinstance(event, DerivativeTicker)
    assert (event.predicted_funding_rate, event.funding_interval_h) == (0.00001, 1.0)


def test_an_index_push_writes_a_row_for_every_instrument_of_the_index() -> None:
    session = open_session("BTC-USD-SWAP", FUTURE, "ETH-USD-SWAP")
    events = feed(session, index_ticker_frame("BTC-USD", 60000, T_MS))
    assert events == [
        row(FUTURE, "index-tickers", T_MS, index_price=60000.0),
        row("BTC-USD-SWAP", "index-tickers", T_MS, index_price=60000.0),
    ]


def test_option_summary_rows_for_the_configured_options_only() -> None:
    session = open_session(OPTION)
    frame = opt_summary_frame(
        "BTC-USD",
        [{"instId": "BTC-USD-250926-90000-P"}, {"instId": OPTION}],
        T_MS,
    )
    assert feed(session, frame) == [
        row(OPTION, "opt-summary", T_MS, mark_iv=0.4336, bid_iv=0.43, ask_iv=0.44, delta=0.71,
            gamma=0.0000106, vega=255.23, theta=-42.78, underlying_price=112782.12,
            underlying_index="BTC-USD")
    ]  # fmt: skip


def test_the_ticker_feed_alone_writes_no_derivative_rows_and_both_write_both() -> None:
    ticker: dict[str, Any] = dict(bid=1, bid_size=1, ask=2, ask_size=1, vol24h=5, inst_type="SWAP")
    alone = open_session(SWAP, feeds=("ticker",))
    assert [type(e) for e in feed(alone, ticker_frame(SWAP, last=1.5, ts_ms=T_MS, **ticker))] == [
        Ticker
    ]
    both = open_session(SWAP, feeds=("ticker", "derivatives"))
    events = feed(both, ticker_frame(SWAP, last=1.5, ts_ms=T_MS, **ticker))
    assert [type(e) for e in events] == [Ticker, DerivativeTicker]


def test_pushes_for_instruments_not_configured_are_skipped() -> None:
    session = open_session(SWAP)
    assert feed(session, mark_price_frame("ETH-USDT-SWAP", 1, T_MS)) == []
    assert feed(session, open_interest_frame("ETH-USDT-SWAP", 1, 1, 1, T_MS)) == []
    assert feed(session, index_ticker_frame("ETH-USDT", 1, T_MS)) == []


# --------------------------------------------------------------------------- liquidations


def test_liquidations_are_filtered_to_the_configured_instruments() -> None:
    session = open_session(SWAP, "ETH-USDT-SWAP", feeds=("liquidations",))
    frame = liquidation_frame(
        "SWAP",
        [
            ("IOST-USDT-SWAP", [{"bkLoss": "0", "bkPx": "0.007831", "posSide": "short",
                                 "side": "buy", "sz": "13", "ts": "1692266434010"}]),
            (SWAP, [{"bkLoss": "1.5", "bkPx": "60000.1", "posSide": "long", "side": "sell",
                     "sz": "2", "ts": str(T_MS)},
                    {"bkLoss": "0", "bkPx": "60100", "posSide": "net", "side": "buy",
                     "sz": "0.5", "ts": str(T_MS + 1)}]),
        ],
    )  # fmt: skip
    assert feed(session, frame) == [
        Liquidation("okx", SWAP, T_MS * 1000, NOW, None, None, "sell", "long", 60000.1,
                    "bankruptcy", 2.0, "contracts", loss=1.5),
        # one-way mode ("net"): a buy closes a short
        Liquidation("okx", SWAP, (T_MS + 1) * 1000, NOW, None, None, "buy", "short", 60100.0,
                    "bankruptcy", 0.5, "contracts", loss=0.0),
    ]  # fmt: skip


def test_liquidation_subscriptions_resolve_on_the_one_type_ack() -> None:
    session = open_session(SWAP, "ETH-USDT-SWAP", feeds=("liquidations",))
    assert args_of(session) == [{"channel": "liquidation-orders", "instType": "SWAP"}]
    events = ack(session, {"channel": "liquidation-orders", "instType": "SWAP"})
    assert sorted((e.symbol, e.event, e.data_type) for e in events) == [  # type: ignore[union-attr]
        ("BTC-USDT-SWAP", "subscribed", "liquidations"),
        ("ETH-USDT-SWAP", "subscribed", "liquidations"),
    ]
    assert session.pending_subscriptions == 0


# --------------------------------------------------------------------------- answers


def test_derivatives_is_subscribed_once_every_arg_is_acknowledged() -> None:
    session = open_session(SWAP)
    args = args_of(session)
    assert len(args) == 5
    for arg in args[:-1]:
        assert ack(session, arg) == []
        assert session.pending_subscriptions == 1
    (event,) = ack(session, args[-1])
    assert (event.event, event.symbol, event.data_type) == (  # type: ignore[union-attr]
        "subscribed",
        SWAP,
        "derivative_ticker",
    )
    assert session.pending_subscriptions == 0


def test_a_refused_index_is_an_error_row_and_the_other_channels_keep_flowing() -> None:
    session = open_session("BTC-USDC-SWAP")
    args = args_of(session)
    events: list[Event] = []
    for arg in args:
        if arg["channel"] == "index-tickers":
            error = {"id": "1", "event": "error", "code": "60018",
                     "msg": error_msg("index-tickers", arg["instId"])}  # fmt: skip
            events += feed(session, msgspec.json.encode(error))
        else:
            events += ack(session, arg)
    assert [(e.event, e.data_type) for e in events] == [  # type: ignore[union-attr]
        ("subscribe_error", "derivative_ticker")
    ]
    assert events[0].detail.startswith(  # type: ignore[union-attr]
        "index-tickers:BTC-USDC: Wrong URL or channel:index-tickers,instId:BTC-USDC"
    )
    assert session.pending_subscriptions == 0
    assert feed(session, mark_price_frame("BTC-USDC-SWAP", 5, T_MS)) == [
        row("BTC-USDC-SWAP", "mark-price", T_MS, mark_price=5.0)
    ]


# --------------------------------------------------------------------------- settings, symbols


@pytest.mark.parametrize("feeds", [("derivatives",), ("trades", "liquidations")])
def test_spot_pairs_are_refused_the_derivative_feeds(feeds: tuple[str, ...]) -> None:
    wanted = " or ".join(f for f in feeds if f != "trades")
    with pytest.raises(
        ValueError,
        match=f"^okx spot pairs have no {wanted} feed: BTC-USDT, ETH-USDT \\(put them in a "
        "market without it; swaps, futures and options have it, e.g. BTC-USDT-SWAP\\)$",
    ):
        OkxAdapter.check_market(market("BTC-USDT", SWAP, "eth-usdt", feeds=feeds))
    OkxAdapter.check_market(market(SWAP, FUTURE, OPTION, feeds=feeds))


@pytest.mark.parametrize(
    ("category", "query"),
    [(None, "instType=SPOT"), ("SPOT", "instType=SPOT"), ("swap", "instType=SWAP"),
     ("FUTURES", "instType=FUTURES"), ("OPTION:BTC-USD", "instType=OPTION&instFamily=BTC-USD"),
     ("option:eth-usd", "instType=OPTION&instFamily=ETH-USD")],
)  # fmt: skip
def test_symbols_url_by_instrument_type(category: str | None, query: str) -> None:
    assert OkxAdapter.symbols_url(None, category) == (
        f"https://www.okx.com/api/v5/public/instruments?{query}"
    )


@pytest.mark.parametrize(
    ("category", "message"),
    [("MARGIN", "okx category must be an instrument type, 'SPOT', 'SWAP', 'FUTURES' or "
                "'OPTION' (got 'MARGIN')"),
     ("OPTION", "okx lists options per instrument family: category 'OPTION:BTC-USD'"),
     ("SWAP:BTC-USD", "okx takes an instrument family only with OPTION (got 'SWAP:BTC-USD')")],
)  # fmt: skip
def test_symbols_url_refuses_what_okx_cannot_list(category: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        OkxAdapter.symbols_url(None, category)
