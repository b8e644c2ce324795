"""Bitfinex derivative status and liquidations without sockets: the venue's documented
frames (no recording of these channels exists in the samples), whole rows asserted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from collector.config import MarketSettings
from collector.events import DerivativeTicker, Event, Liquidation, Status
from collector.exchanges.base import ParseError
from collector.exchanges.bitfinex import BitfinexAdapter, BitfinexSession, is_perpetual
from tests.session_helpers import discarded, feed

NOW = 1_700_000_000_000_000
PERP = "tBTCF0:USTF0"
ETH_PERP = "tETHF0:USTF0"
# The docs' status example, with SEQ and MTS appended as conf TIMESTAMP | SEQ_ALL does.
DOC_STATUS = [
    1596124822000, None, 0.896, 0.771995, None, 1396531.67460709, None, 1596153600000,
    0.0001056, 6, None, -0.01381344, None, None, 0.7664, None, None, 246502.09001551,
    None, None, None, None, 0.3,
]  # fmt: skip
# The docs' liquidation item, with its symbol replaced by a configured perpetual.
DOC_LIQ = [
    "pos", 142397657, 1574697680828.2002, None, PERP, -2.62932, 91.583875238719, None, 1, 1,
    None, 112.27,
]  # fmt: skip


def open_session(*symbols: str, feeds: tuple[Any, ...]) -> BitfinexSession:
    adapter = BitfinexAdapter()
    settings = MarketSettings(exchange="bitfinex", symbols=symbols, feeds=feeds)
    adapter.check_market(settings)
    (plan,) = adapter.plan_connections([settings])
    return adapter.open_session(plan)


def parse(session: BitfinexSession, frame: Any) -> list[Event]:
    return feed(session, json.dumps(frame), NOW)


def test_subscribe_frames_use_status_keys_and_one_liquidation_channel() -> None:
    session = open_session(PERP, ETH_PERP, feeds=("derivatives", "liquidations"))
    frames = [json.loads(f) for f in session.subscribe_frames()]
    assert frames[1:] == [
        {"event": "subscribe", "channel": "status", "key": "deriv:tBTCF0:USTF0"},
        {"event": "subscribe", "channel": "status", "key": "liq:global"},
        {"event": "subscribe", "channel": "status", "key": "deriv:tETHF0:USTF0"},
    ]
    assert session.pending_subscriptions == 4
    events = parse(
        session,
        {"event": "subscribed", "channel": "status", "chanId": 91684, "key": "liq:global"},
    )
    # One answer resolves the liquidations subscription of both symbols.
    assert [(e.symbol, e.event, e.data_type) for e in events if isinstance(e, Status)] == [
        (PERP, "subscribed", "liquidations"),
        (ETH_PERP, "subscribed", "liquidations"),
    ]
    assert session.pending_subscriptions == 2


def test_status_array_becomes_a_derivative_ticker_row() -> None:
    session = open_session(PERP, feeds=("derivatives",))
    session.subscribe_frames()
    parse(
        session,
        {"event": "subscribed", "channel": "status", "chanId": 335856, "key": f"deriv:{PERP}"},
    )
    assert session.pending_subscriptions == 0
    assert parse(session, [335856, DOC_STATUS, 7, 1596124822500]) == [
        DerivativeTicker(
            "bitfinex",
            PERP,
            1596124822000_000,
            NOW,
            7,
            "status",
            last_price=0.896,
            mark_price=0.7664,
            index_price=0.771995,
            funding_rate=-0.01381344,
            funding_timestamp=1596153600000_000,
            funding_interval_h=8.0,
            predicted_funding_rate=0.0001056,
            open_interest=246502.09001551,
            open_interest_unit="base",
        )
    ]
    # Appended fields are ignored; a heartbeat writes nothing.
    longer = parse(session, [335856, [*DOC_STATUS, 1.5, "new"], 8, 1596124823000])
    assert len(longer) == 1
    assert parse(session, [335856, "hb", 9, 1596124824000]) == []
    # An array too short to hold open interest is refused, not half read.
    with pytest.raises(ParseError, match="18"):
        parse(session, [335856, DOC_STATUS[:10], 10, 1596124825000])


def test_liquidations_keep_configured_symbols_with_both_prices() -> None:
    session = open_session(PERP, ETH_PERP, feeds=("liquidations",))
    session.subscribe_frames()
    parse(session, {"event": "subscribed", "channel": "status", "chanId": 5, "key": "liq:global"})
    other = ["pos", 1, 1574697680000, None, "tBSVUSD", -1.0, 90.0, None, 0, 0, None, 91.0]
    trigger = ["pos", 142397658, 1574697681000, None, ETH_PERP, 3.5, 150.0, None, 0, 0, None, None]
    events = parse(session, [5, [DOC_LIQ, other, trigger], 3, 1574697681500])
    assert events == [
        Liquidation(
            "bitfinex",
            PERP,
            1574697680828200,
            NOW,
            3,
            "142397657",
            "buy",  # AMOUNT < 0: a short position, closed by a buy
            "short",
            112.27,
            "acquired",
            2.62932,
            "base",
            entry_price=91.583875238719,
            status="execution",
        ),
        Liquidation(
            "bitfinex",
            ETH_PERP,
            1574697681000000,
            NOW,
            3,
            "142397658",
            "sell",
            "long",
            150.0,  # no acquired price: the entry price, said so in price_kind
            "entry",
            3.5,
            "base",
            entry_price=150.0,
            status="trigger",
        ),
    ]
    # A repeated SEQ on the shared channel is counted for the connection's symbols.
    assert parse(session, [5, [DOC_LIQ], 3, 1574697681600]) == []
    assert discarded(session) == {
        (PERP, "liquidations", "duplicate"): 1,
        (ETH_PERP, "liquidations", "duplicate"): 1,
    }


def test_refused_status_key_is_a_subscribe_error_for_its_symbol() -> None:
    session = open_session(PERP, feeds=("derivatives", "trades"))
    session.subscribe_frames()
    events = parse(
        session,
        {
            "event": "error",
            "msg": "key: invalid",
            "code": 10300,
            "channel": "status",
            "key": f"deriv:{PERP}",
        },
    )
    assert events == [
        Status(
            "bitfinex",
            PERP,
            None,
            NOW,
            None,
            "subscribe_error",
            "derivative_ticker",
            detail=f"status deriv:{PERP}: key: invalid (code 10300)",
        )
    ]
    assert session.pending_subscriptions == 1


@pytest.mark.parametrize(
    ("symbol", "perpetual"),
    [
        ("tBTCF0:USTF0", True),
        ("tTESTBTCF0:TESTUSDTF0", True),
        ("tBTCUSD", False),
        ("tTESTBTC:TESTUSD", False),
    ],
)
def test_perpetuals_are_told_by_their_f0_codes(symbol: str, perpetual: bool) -> None:
    assert is_perpetual(symbol) is perpetual


def test_derivative_feeds_on_a_spot_pair_are_refused_at_start() -> None:
    settings = MarketSettings(
        exchange="bitfinex", symbols=("tBTCUSD", PERP), feeds=("trades", "liquidations")
    )
    with pytest.raises(ValueError, match="perpetuals") as refused:
        BitfinexAdapter.check_market(settings)
    assert str(refused.value) == (
        "bitfinex liquidations feeds are for perpetuals such as 'tBTCF0:USTF0', not tBTCUSD "
        "(put spot pairs in a market without them)"
    )
