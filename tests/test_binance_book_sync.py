"""Binance diff-depth book sync (sans-IO): REST snapshots asked for, checked and recorded."""

from __future__ import annotations

import pytest

from collector.config import MarketSettings
from collector.events import BookUpdate, Event, Status, levels_from_pairs
from collector.exchanges.base import ParseError, SnapshotRequest
from collector.exchanges.binance import BinanceAdapter, BinanceSession
from tests.fakes.binance import depth_diff_frame
from tests.session_helpers import asked, discarded, feed, receive_snapshot

T0 = 1_700_000_000_000_000


def diff_session(rest_url: str | None = "http://127.0.0.1:9/") -> BinanceSession:
    market = MarketSettings(
        exchange="binance",
        symbols=("btcusdt",),
        feeds=("orderbook",),
        book_mode="diff",
        rest_url=rest_url,
    )
    [plan] = BinanceAdapter().plan_connections([market])
    session = BinanceAdapter().open_session(plan)
    assert isinstance(session, BinanceSession)
    return session


def ack_all(session: BinanceSession) -> list[Event]:
    events: list[Event] = []
    for request_id in range(1, len(session.subscribe_frames()) + 1):
        events += feed(session, f'{{"result":null,"id":{request_id}}}', T0)
    return events


def delta(session: BinanceSession, first: int, last: int) -> list[Event]:
    frame = depth_diff_frame("btcusdt", first, last, [(100.0, 1.0)], [(101.0, 2.0)], T0)
    return feed(session, frame, T0)


def snapshot_body(last_update_id: int) -> bytes:
    return (
        f'{{"lastUpdateId":{last_update_id},"bids":[["100.0","5.0"],["99.5","1.5"]],'
        f'"asks":[["101.0","2.0"]]}}'
    ).encode()


def take_requests(session: BinanceSession) -> list[SnapshotRequest]:
    requests = list(asked(session).fetch)
    asked(session).fetch.clear()
    return requests


def gaps(events: list[Event]) -> list[Status]:
    return [e for e in events if isinstance(e, Status) and e.event == "gap"]


def test_ack_of_a_diff_stream_asks_for_a_snapshot_at_the_rest_url() -> None:
    session = diff_session("http://127.0.0.1:9/")
    ack_all(session)
    assert take_requests(session) == [
        SnapshotRequest("BTCUSDT", "http://127.0.0.1:9/api/v3/depth?symbol=BTCUSDT&limit=1000")
    ]


def test_snapshot_mode_asks_for_no_snapshot() -> None:
    market = MarketSettings(exchange="binance", symbols=("btcusdt",), feeds=("orderbook",))
    [plan] = BinanceAdapter().plan_connections([market])
    session = BinanceAdapter().open_session(plan)
    ack_all(session)
    assert asked(session).fetch == []


def test_snapshot_is_recorded_with_a_resync_row() -> None:
    session = diff_session()
    ack_all(session)
    [request] = take_requests(session)
    delta(session, 95, 100)
    delta(session, 101, 110)
    events = receive_snapshot(session, request, snapshot_body(105), T0 + 5)
    [status, book] = events
    assert isinstance(status, Status)
    assert (status.event, status.data_type, status.received_sequence) == (
        "resync",
        "orderbook",
        105,
    )
    # Delta 101..110 was recorded before it and is not in it (u 110 > 105): a reader
    # applies rows in the order received, so the row is the snapshot with that delta
    # applied (bid 100.0 -> 1.0), as of update 110; first_sequence keeps lastUpdateId.
    assert book == BookUpdate(
        "binance",
        "BTCUSDT",
        None,
        T0 + 5,
        110,
        "snapshot",
        105,
        None,
        levels_from_pairs([(100.0, 1.0), (99.5, 1.5)]),
        levels_from_pairs([(101.0, 2.0)]),
    )
    # Recorded deltas 95..110 cover 106: synced, nothing more to ask.
    assert asked(session).fetch == []


def test_snapshot_older_than_the_recorded_deltas_is_fetched_again() -> None:
    session = diff_session()
    ack_all(session)
    [request] = take_requests(session)
    delta(session, 200, 210)
    # 151..199 would be missing: not written (a reader would apply it), asked for again.
    assert receive_snapshot(session, request, snapshot_body(150), T0) == []
    assert [r.symbol for r in take_requests(session)] == ["BTCUSDT"]
    delta(session, 211, 220)
    [_, book] = receive_snapshot(session, request, snapshot_body(205), T0 + 1)
    assert isinstance(book, BookUpdate)
    assert (book.sequence, book.first_sequence) == (220, 205)  # both deltas joined


def test_a_snapshot_older_than_a_gap_while_it_was_on_its_way_is_not_joined() -> None:
    """The deltas before a gap cannot carry a snapshot across it: one older than the gap
    (16..19 in neither) is not written; one past the gap is joined to the deltas after it."""
    session = diff_session()
    ack_all(session)
    [request] = take_requests(session)
    delta(session, 1, 10)
    assert gaps(delta(session, 20, 30)) != []  # 11..19 missing; a snapshot is on its way
    assert take_requests(session) == []
    assert receive_snapshot(session, request, snapshot_body(15), T0) == []
    [again] = take_requests(session)
    [_, book] = receive_snapshot(session, again, snapshot_body(25), T0 + 1)
    assert isinstance(book, BookUpdate)
    assert (book.first_sequence, book.sequence) == (25, 30)


def test_snapshot_ahead_of_the_deltas_waits_for_a_covering_delta() -> None:
    session = diff_session()
    ack_all(session)
    [request] = take_requests(session)
    delta(session, 90, 100)
    receive_snapshot(session, request, snapshot_body(120), T0)
    # Already in the snapshot: applied after it, it would rewind the book. Not written.
    assert delta(session, 101, 110) == []
    assert discarded(session) == {("BTCUSDT", "orderbook", "stale"): 1}
    events = delta(session, 111, 125)  # covers 121: synced
    assert gaps(events) == []
    assert [e.sequence for e in events if isinstance(e, BookUpdate)] == [125]
    assert asked(session).fetch == []


def test_first_delta_after_the_snapshot_that_skips_it_is_a_gap() -> None:
    session = diff_session()
    ack_all(session)
    [request] = take_requests(session)
    receive_snapshot(session, request, snapshot_body(120), T0)  # no delta seen yet
    events = delta(session, 130, 140)
    [gap] = gaps(events)
    assert (gap.expected_sequence, gap.received_sequence, gap.count) == (121, 130, 9)
    assert [r.symbol for r in take_requests(session)] == ["BTCUSDT"]


def test_delta_gap_asks_for_a_new_snapshot_once() -> None:
    session = diff_session()
    ack_all(session)
    [request] = take_requests(session)
    delta(session, 1, 10)
    receive_snapshot(session, request, snapshot_body(5), T0)
    assert gaps(delta(session, 20, 30)) != []
    assert gaps(delta(session, 40, 50)) != []
    # One request outstanding per symbol, however many gaps come before it is answered.
    assert len(take_requests(session)) == 1


def test_unreadable_snapshot_is_asked_for_again() -> None:
    session = diff_session()
    ack_all(session)
    [request] = take_requests(session)
    with pytest.raises(ParseError):
        receive_snapshot(session, request, b"<html>rate limited</html>", T0)
    assert len(take_requests(session)) == 1


def test_a_crossed_book_fetches_a_new_snapshot_of_that_symbol() -> None:
    session = diff_session()
    ack_all(session)
    [request] = take_requests(session)
    delta(session, 95, 100)  # before the snapshot: recorded, never applied to it
    receive_snapshot(session, request, snapshot_body(105), T0)
    # Covers the snapshot (the same levels again): fine.
    assert not gaps(delta(session, 101, 110))
    # A bid above the best ask (101.0): crossed after the whole update.
    frame = depth_diff_frame("btcusdt", 111, 112, [(101.5, 1.0)], [(102.0, 1.0)], T0)
    events = feed(session, frame, T0)
    assert isinstance(events[0], BookUpdate)  # every update is written
    [gap] = gaps(events)
    assert (gap.symbol, gap.data_type) == ("BTCUSDT", "orderbook")
    assert gap.detail == (
        "crossed book: best bid 101.5 >= best ask 101.0; fetching a new REST snapshot"
    )
    assert [(r.symbol, r.reason) for r in asked(session).resyncs] == [("BTCUSDT", "crossed")]
    [again] = take_requests(session)
    assert again == request
    # Deltas until then are written, unchecked (and ask for nothing more).
    crossed_again = depth_diff_frame("btcusdt", 113, 114, [(103.0, 1.0)], [], T0)
    assert not gaps(feed(session, crossed_again, T0))
    assert take_requests(session) == []
    events = receive_snapshot(session, again, snapshot_body(114), T0)
    resync = events[0]
    assert isinstance(resync, Status)
    assert resync.detail == "REST depth snapshot lastUpdateId=114 after a crossed book"
    assert not gaps(delta(session, 115, 120))
    assert len(asked(session).resyncs) == 1


def test_a_crossed_snapshot_is_fetched_again() -> None:
    session = diff_session()
    ack_all(session)
    [request] = take_requests(session)
    body = b'{"lastUpdateId":105,"bids":[["101.0","1.0"]],"asks":[["100.0","1.0"]]}'
    events = receive_snapshot(session, request, body, T0)
    [gap] = gaps(events)
    assert gap.detail == (
        "crossed book: best bid 101.0 >= best ask 100.0 in the snapshot; "
        "fetching a new REST snapshot"
    )
    assert take_requests(session) == [request]


def test_a_snapshot_joined_to_earlier_deltas_is_checked_for_a_crossed_book() -> None:
    """The crossed-book check starts from the row written (the snapshot with the deltas
    before it applied), so the deltas after it are checked at once."""
    session = diff_session()
    ack_all(session)
    [request] = take_requests(session)
    delta(session, 101, 110)  # bid 100.0, ask 101.0
    [_, book] = receive_snapshot(session, request, snapshot_body(105), T0)
    assert isinstance(book, BookUpdate)
    assert book.sequence == 110
    crossing = depth_diff_frame("btcusdt", 111, 120, [(101.5, 1.0)], [], T0)
    [gap] = gaps(feed(session, crossing, T0))
    assert gap.detail is not None
    assert "crossed" in gap.detail
    assert [r.symbol for r in take_requests(session)] == ["BTCUSDT"]
