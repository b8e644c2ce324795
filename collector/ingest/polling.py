"""REST requests a connection repeats on a timer, for data a venue streams nowhere.

Binance has no open interest stream: the adapter declares a :class:`~collector.exchanges.
base.Polling` for a connection (:meth:`~collector.exchanges.base.ExchangeAdapter.polling`)
and :func:`run_poller`, a task of that connection, fetches its requests round after round.
It only fetches: each body goes into the connection's :class:`PollInbox`, and the receive
loop, the session's one owner, hands it to the session at its next read (the connection
carries that venue stream, so reads keep coming). It runs in the connection's nursery, so a
reconnect starts afresh, and during a planned handover both connections poll. What it polls
follows the connection's plan when symbols join or leave it at run time
(:class:`PollSchedule`): a joined symbol is fetched at once, a removed one no more.

A failed request never ends the connection: it is logged, counted
(``collector_rest_poll_errors_total``) and written as a ``poll_error`` status row, and the
next round asks again.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio
from prometheus_client import Counter

from collector.clock import WallClock
from collector.events import Event, Status
from collector.exchanges.base import Polling, SnapshotRequest
from collector.ingest.pacer import Pacer
from collector.metrics import Metrics
from collector.rest import HTTP_GEO_BLOCKED, RestError, fetch

log = logging.getLogger(__name__)


class RowSink(Protocol):
    """Where the poller writes its failure rows (a connection's lane)."""

    async def send(self, batch: list[Event], now_us: int) -> None: ...


class PollInbox:
    """The bodies fetched and not yet handed to the session: at most one per request (a
    newer body replaces an older one not taken yet, so memory stays bounded by the number
    of requests even while the receive loop waits). Trio-only, no locks: the poller puts,
    the receive loop takes, both on one thread."""

    __slots__ = ("bodies",)

    def __init__(self) -> None:
        # request -> (body, wall-clock µs it arrived), in arrival order.
        self.bodies: dict[SnapshotRequest, tuple[bytes, int]] = {}

    def put(self, request: SnapshotRequest, body: bytes, received_us: int) -> None:
        self.bodies.pop(request, None)
        self.bodies[request] = (body, received_us)

    def take(self) -> list[tuple[SnapshotRequest, bytes, int]]:
        """Every waiting body, oldest first, and forget them."""
        taken = [(request, body, at) for request, (body, at) in self.bodies.items()]
        self.bodies.clear()
        return taken


class PollSchedule:
    """What a connection polls now (``polling``; None: nothing, until a change), changed by
    the receive loop when the connection's plan changes at run time, read by the poller
    before each request. Trio-only, no locks."""

    __slots__ = ("_changed", "polling", "wanted")

    def __init__(self, polling: Polling | None) -> None:
        self.polling = polling
        self.wanted = frozenset(self.requests())
        self._changed = trio.Event()

    def update(self, polling: Polling | None) -> None:
        """Poll ``polling`` from now on (the whole new set), and wake the poller."""
        self.polling = polling
        self.wanted = frozenset(self.requests())
        self._changed.set()

    def requests(self) -> tuple[SnapshotRequest, ...]:
        return self.polling.requests if self.polling is not None else ()

    async def wait_changed(self, deadline: float) -> None:
        """Until :meth:`update` was called since the last wait, or ``deadline`` (Trio time)."""
        with trio.move_on_at(deadline):
            await self._changed.wait()
        if self._changed.is_set():
            self._changed = trio.Event()


async def run_poller(
    schedule: PollSchedule,
    inbox: PollInbox,
    rows: RowSink,
    exchange: str,
    wall_clock: WallClock,
    metrics: Metrics,
    *,
    pacer: Pacer,
    budget: Pacer | None = None,
    geo_block_advice: str | None = None,
) -> None:
    """Fetch ``schedule``'s requests in rounds until cancelled, putting each body in ``inbox``.

    A round starts every ``interval_secs`` (Trio time; a round that takes longer is followed
    at once by the next), each request at its turn of ``pacer``, each over HTTP in a worker
    thread. ``pacer`` paces ``per_second`` over every connection polling against one REST
    budget (:class:`~collector.ingest.pacer.RestPacers`: the venue limits per IP, not per
    connection), and no request starts while ``budget`` (the budget's snapshot pacer) is
    held. A request added to the schedule (a symbol that joined the
    connection) is fetched at once, not at the next round, and then with every round; one
    taken off is not fetched again. A failure (HTTP error, network, timeout) writes a
    ``poll_error`` row for the request's symbol through ``rows``, counts it and logs it
    (with ``geo_block_advice`` for an HTTP 451); a ``Retry-After`` from the venue holds
    ``pacer`` and ``budget`` that long (every connection's polls and snapshots of the
    budget wait). Never raises but for cancellation.
    """
    errors = metrics.rest_poll_errors.labels(exchange)
    while True:
        round_start = trio.current_time()
        polling = schedule.polling
        interval = polling.interval_secs if polling is not None else float("inf")
        fetched: set[SnapshotRequest] = set()
        # This round's requests, then (until the next round is due) those added meanwhile.
        while True:
            todo = [r for r in schedule.requests() if r not in fetched]
            if not todo:
                await schedule.wait_changed(round_start + interval)
                if trio.current_time() >= round_start + interval:
                    break
                continue
            if interval == float("inf"):  # the first requests of a schedule that had none
                round_start = trio.current_time()
                interval = schedule.polling.interval_secs if schedule.polling else interval
            for request in todo:
                fetched.add(request)
                if budget is not None and budget.held_until > trio.current_time():
                    await trio.sleep_until(budget.held_until)  # the snapshots' Retry-After
                await pacer.wait_turn()
                polling = schedule.polling
                if polling is None or request not in schedule.wanted:
                    continue  # taken off while waiting for its turn
                retry_after = await _fetch_one(
                    request, polling, inbox, rows, exchange, wall_clock, errors, geo_block_advice
                )
                if retry_after:
                    pacer.hold(retry_after)  # the venue's budget: everyone waits
                    if budget is not None:
                        budget.hold(retry_after)


async def _fetch_one(
    request: SnapshotRequest,
    polling: Polling,
    inbox: PollInbox,
    rows: RowSink,
    exchange: str,
    wall_clock: WallClock,
    errors: Counter,
    geo_block_advice: str | None,
) -> float | None:
    """One request: its body into ``inbox``, or its failure written, counted and logged.
    Returns the venue's ``Retry-After`` of a failure (None: none)."""
    try:
        body = await trio.to_thread.run_sync(fetch, request.url, abandon_on_cancel=True)
    except RestError as exc:
        reason = str(exc)
        if exc.status == HTTP_GEO_BLOCKED and geo_block_advice:
            reason = f"{reason}; {geo_block_advice}"
        errors.inc()
        log.warning(
            "polled request failed, asking again next round: %s",
            reason,
            extra={"exchange": exchange, "symbol": request.symbol},
        )
        now_us = wall_clock()
        row = Status(
            exchange,
            request.symbol,
            None,
            now_us,
            None,
            "poll_error",
            data_type=polling.data_type,
            detail=reason,
        )
        await rows.send([row], now_us)
        return exc.retry_after
    inbox.put(request, body, wall_clock())
    return None
