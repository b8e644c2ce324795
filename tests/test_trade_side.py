"""Trade ``side`` is the aggressor (taker) on every venue, pinned per venue on recorded frames.

Two kinds of evidence, whichever the samples in ``../shared/samples`` allow:

- a replay of recorded traffic with books (Coinbase, OKX, Bybit, Upbit): the book is rebuilt
  from the adapter's own book events, and a trade printed at or through the best ask took
  liquidity from the asks (a buy aggressor), one at or through the best bid a sell aggressor.
  Every such trade must carry that side; trades inside the spread say nothing and are skipped
  (the book message that explains them came later);
- a single recorded or documented frame whose aggressor follows from the venue's documented
  meaning of its fields (Binance ``m``, Kraken's taker ``ord_type``, Deribit's one-order
  sweep, Bitfinex's signed amount), for venues whose recordings hold no trades beside a book.

A missing sample skips its test, naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

from collector.events import BookUpdate, Side, Trade, level_pairs
from collector.exchanges.base import Session
from tests import (
    test_bitfinex_parse,
    test_bybit_parse,
    test_coinbase_parse,
    test_deribit_parse,
    test_kraken_parse,
    test_okx_parse,
    test_upbit_parse,
)
from tests.fakes.binance import combined_frame
from tests.samples import F2Record, read_f2, read_fixture, require_sample
from tests.session_helpers import feed
from tests.test_binance_parse import open_session as open_binance

NOW = 1_786_309_600_000_000
NAUTILUS = "nautilus_trader/ws_fixtures"

# --------------------------------------------------------------------------- replays with books


class Touch:
    """The best bid and ask per symbol, kept from a session's own book events."""

    def __init__(self) -> None:
        self._books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}

    def apply(self, book: BookUpdate) -> None:
        if book.kind == "snapshot" or book.symbol not in self._books:
            self._books[book.symbol] = ({}, {})
        for side, levels in zip(self._books[book.symbol], (book.bids, book.asks), strict=True):
            for price, size in level_pairs(levels):
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size

    def aggressor(self, trade: Trade) -> Side | None:
        """The side that must have taken liquidity, or None when the book cannot tell."""
        bids, asks = self._books.get(trade.symbol, ({}, {}))
        if not bids or not asks:
            return None
        if trade.price >= min(asks):
            return "buy"
        if trade.price <= max(bids):
            return "sell"
        return None


def replay(session: Session, records: Iterator[F2Record]) -> tuple[int, int]:
    """Feed ``records`` to ``session``: (trades whose side the book tells, those that agree)."""
    touch = Touch()
    told = agree = 0
    for record in records:
        for event in feed(session, record.payload, record.received_us):
            if isinstance(event, BookUpdate):
                touch.apply(event)
            elif isinstance(event, Trade):
                expected = touch.aggressor(event)
                if expected is not None:
                    told += 1
                    agree += event.side == expected
    return told, agree


def coinbase() -> tuple[Session, Iterator[F2Record]]:
    # The venue's ``side`` is the maker's: the adapter records the opposite.
    capture = read_f2(require_sample("cryptofeed-v3/COINBASE.jsonl.zst"))
    return test_coinbase_parse.open_session("BTC-USD", "ETH-USD"), capture.received()


def okx() -> tuple[Session, Iterator[F2Record]]:
    capture = read_f2(require_sample("cryptofeed-v3/OKX.jsonl.zst"))
    session = test_okx_parse.open_session("BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT")
    return session, capture.received()


def bybit(conn: str, category: str, *symbols: str) -> tuple[Session, Iterator[F2Record]]:
    capture = read_f2(require_sample("cryptofeed-v3/BYBIT.jsonl.zst"))
    session = test_bybit_parse.open_session(*symbols, category=category, book_depth=200)
    session.subscribe_frames(0)  # the acks carry no req_id: they answer these in order
    return session, capture.received(conn)


def upbit() -> tuple[Session, Iterator[F2Record]]:
    capture = read_f2(require_sample("cryptofeed-v3/UPBIT.jsonl.zst"))
    session = test_upbit_parse.open_session(
        *test_upbit_parse.RECORDED, feeds=("trades", "orderbook")
    )
    return session, capture.received()


@pytest.mark.parametrize(
    ("recording", "told"),
    [
        pytest.param(coinbase, 71, id="coinbase"),
        pytest.param(okx, 71, id="okx"),
        pytest.param(
            lambda: bybit("BYBIT.ws.2", "linear", "BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"),
            327,
            id="bybit-linear",
        ),
        pytest.param(
            lambda: bybit("BYBIT.ws.3", "spot", "BTCUSDT", "ETHUSDT"), 20, id="bybit-spot"
        ),
        pytest.param(upbit, 303, id="upbit"),
    ],
)
def test_recorded_trades_at_the_touch_carry_the_aggressor(
    recording: Callable[[], tuple[Session, Iterator[F2Record]]], told: int
) -> None:
    session, records = recording()
    assert replay(session, records) == (told, told)


# --------------------------------------------------------------------------- single frames


def test_binance_buyer_maker_is_a_sell_aggressor() -> None:
    """``m`` is "is the buyer the market maker?": true means the seller took liquidity."""
    fixture = read_fixture(
        f"{NAUTILUS}/binance/test_data/futures/market_data_json/trade_stream.json"
    )
    assert fixture["m"] is True
    session = open_binance("BTCUSDT")
    [trade] = feed(session, combined_frame("btcusdt@trade", fixture), NOW)
    assert isinstance(trade, Trade)
    assert trade.side == "sell"


def test_kraken_market_order_trade_carries_its_side() -> None:
    """``ord_type`` is the taker order's type; a market order always takes, so it is the
    aggressor, and the recorded side must be its side."""
    raw = require_sample(f"{NAUTILUS}/kraken/test_data/ws_trade_update.json").read_bytes()
    wire = msgspec.json.decode(raw)["data"]
    session = test_kraken_parse.open_session("BTC/USD", feeds=("trades",))
    trades = [e for e in feed(session, raw, NOW) if isinstance(e, Trade)]
    by_id = {t.trade_id: t.side for t in trades}
    market = [(str(t["trade_id"]), t["side"]) for t in wire if t["ord_type"] == "market"]
    assert market == [("10218209", "sell")]
    assert [(i, by_id[i]) for i, _ in market] == market


def test_deribit_one_order_sweeping_the_bids_is_a_sell() -> None:
    """Two fills of one match (same time, consecutive ``trade_seq``) at falling prices: only a
    sell order walks down the bids, and both fills say ``direction: sell``."""
    fixture: dict[str, Any] = read_fixture(f"{NAUTILUS}/deribit/test_data/ws_trades.json")
    fills = fixture["params"]["data"]
    assert len({f["timestamp"] for f in fills}) == 1
    assert [f["trade_seq"] for f in fills] == [271252854, 271252855]
    assert fills[0]["price"] > fills[1]["price"]
    session = test_deribit_parse.open_session(test_deribit_parse.PERP)
    trades = [e for e in feed(session, msgspec.json.encode(fixture), NOW) if isinstance(e, Trade)]
    assert [t.side for t in trades] == ["sell", "sell"]


def test_bitfinex_amount_sign_is_the_aggressor() -> None:
    """Bitfinex's docs: AMOUNT is how much was bought (positive) or sold (negative), and "the
    order that causes the trade determines if it is a buy or a sell". The frames are the
    documented ``te`` shape ``[CHANNEL_ID, "te", [ID, MTS, AMOUNT, PRICE]]`` (with SEQ, MTS)."""
    session, seq = test_bitfinex_parse.btc_session(("trades",))
    bought = test_bitfinex_parse.parse(
        session, [10, *seq("te", [401597393, 1574694475039, 0.005, 7244.9])]
    )
    sold = test_bitfinex_parse.parse(
        session, [10, *seq("te", [401597394, 1574694475040, -0.005, 7244.8])]
    )
    assert [(t.side, t.size) for t in bought + sold if isinstance(t, Trade)] == [
        ("buy", 0.005),
        ("sell", 0.005),
    ]
