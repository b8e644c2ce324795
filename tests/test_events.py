"""Order book levels: one flat form, built by every venue's parser, read back as pairs."""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable

import pytest

from collector.events import (
    BookUpdate,
    Event,
    level_pairs,
    levels_from_pairs,
    levels_from_values,
)
from collector.exchanges.base import SnapshotRequest
from tests import (
    test_binance_parse,
    test_bitfinex_parse,
    test_bybit_parse,
    test_coinbase_parse,
    test_deribit_parse,
    test_kraken_parse,
    test_okx_parse,
    test_upbit_parse,
)
from tests.fakes.binance import depth20_frame
from tests.samples import F2Capture, read_f2, require_sample

NOW = 1_700_000_000_000_000


def test_pairs_and_values_build_the_same_flat_levels() -> None:
    pairs = [(100.5, 2.0), (100.0, 0.0)]
    levels = levels_from_pairs(pairs)
    assert levels == array("d", [100.5, 2.0, 100.0, 0.0])
    assert levels_from_values([100.5, 2.0, 100.0, 0.0]) == levels
    assert level_pairs(levels) == pairs
    assert level_pairs(levels_from_pairs([])) == []


def test_level_pairs_refuses_an_odd_number_of_values() -> None:
    with pytest.raises(ValueError, match="shorter"):  # zip(strict=True): a price without size
        level_pairs(array("d", [1.0, 2.0, 3.0]))


# --------------------------------------------------------------------------- every venue


def replay(capture: F2Capture, parse: Callable[[bytes, int], list[Event]]) -> list[Event]:
    events: list[Event] = []
    for record in capture.received():
        events += parse(record.payload, record.received_us)
    return events


def binance_books() -> list[Event]:
    capture = read_f2(require_sample("cryptofeed-v3/BINANCE.jsonl.zst"))
    symbols = ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR")
    session = test_binance_parse.open_session(*symbols, feeds=("orderbook",), book_mode="diff")
    events = replay(capture, session.parse)  # depth@100ms deltas
    for record in capture.http("depth"):  # REST snapshots
        symbol = (record.url or "").split("symbol=")[1].split("&")[0]
        request = SnapshotRequest(symbol, record.url or "")
        events += session.parse_snapshot(request, record.payload, record.received_us)
    partial = test_binance_parse.open_session("BTCUSDT", feeds=("orderbook",))
    frame = depth20_frame("btcusdt", 7, [(100.5, 2.0)], [(101.0, 1.0)])
    return events + partial.parse(frame.encode(), NOW)  # depth20 partial books


def bitfinex_books() -> list[Event]:
    capture = read_f2(require_sample("cryptofeed-v3/BITFINEX.jsonl.zst"))
    session = test_bitfinex_parse.open_session(*test_bitfinex_parse.RECORDED, book_depth=100)
    return replay(capture, session.parse)


def bybit_books() -> list[Event]:
    capture = read_f2(require_sample("cryptofeed-v3/BYBIT.jsonl.zst"))
    session = test_bybit_parse.open_session(
        "BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT", category="linear", book_depth=200
    )
    session.subscribe_frames(0)
    return [
        event
        for record in capture.received("BYBIT.ws.2")
        for event in session.parse(record.payload, record.received_us)
    ]


def coinbase_books() -> list[Event]:
    capture = read_f2(require_sample("cryptofeed-v3/COINBASE.jsonl.zst"))
    return replay(capture, test_coinbase_parse.open_session("BTC-USD", "ETH-USD").parse)


def deribit_books() -> list[Event]:
    capture = read_f2(require_sample("cryptofeed-v3/DERIBIT.jsonl.zst"))
    instruments = sorted(
        {
            json.loads(r.data or "{}")["params"]["channel"].split(".")[1]
            for r in capture.received()
            if '"subscription"' in (r.data or "")
        }
    )
    return replay(capture, test_deribit_parse.open_session(*instruments).parse)


def kraken_books() -> list[Event]:
    # The recorded Kraken traffic is v1; the v2 book fixtures are single messages.
    session = test_kraken_parse.open_session("BTC/USD", feeds=("orderbook",))
    events: list[Event] = []
    for name in ("ws_book_snapshot.json", "ws_book_update.json"):
        raw = require_sample(f"{test_kraken_parse.FIXTURES}/{name}").read_bytes()
        events += session.parse(raw, NOW)
    return events


def okx_books() -> list[Event]:
    capture = read_f2(require_sample("cryptofeed-v3/OKX.jsonl.zst"))
    session = test_okx_parse.open_session("BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT")
    return replay(capture, session.parse)


def upbit_books() -> list[Event]:
    capture = read_f2(require_sample("cryptofeed-v3/UPBIT.jsonl.zst"))
    session = test_upbit_parse.open_session(
        *test_upbit_parse.RECORDED, feeds=("trades", "orderbook")
    )
    return replay(capture, session.parse)


@pytest.mark.parametrize(
    "parsed",
    [
        binance_books,
        bitfinex_books,
        bybit_books,
        coinbase_books,
        deribit_books,
        kraken_books,
        okx_books,
        upbit_books,
    ],
    ids=lambda f: f.__name__.removesuffix("_books"),
)
def test_every_venue_builds_its_books_with_flat_levels(
    parsed: Callable[[], list[Event]],
) -> None:
    books = [e for e in parsed() if isinstance(e, BookUpdate)]
    assert books
    kinds = set()
    for book in books:
        for levels in (book.bids, book.asks):
            assert type(levels) is array
            assert levels.typecode == "d"
            assert len(levels) % 2 == 0
        kinds.add(book.kind)
    assert any(book.bids or book.asks for book in books)
    assert "snapshot" in kinds
