"""REST requests a connection repeats on a timer, for data a venue streams nowhere.

Binance has no open interest stream: the adapter declares a :class:`~collector.exchanges.
base.Polling` for a connection (:meth:`~collector.exchanges.base.ExchangeAdapter.polling`)
and :func:`run_poller`, a task of that connection, fetches its requests round after round.
It only fetches: each body goes into the connection's :class:`PollInbox`, and the receive
loop, the session's one owner, hands it to the session at its next read (the connection
carries that venue stream, so reads keep coming). It runs in the connection's nursery, so a
reconnect starts afresh, and during a planned handover both connections poll.

A failed request never ends the connection: it is logged, counted
(``collector_rest_poll_errors_total``) and written as a ``poll_error`` status row, and the
next round asks again.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from collector.clock import WallClock
from collector.events import Event, Status
from collector.exchanges.base import Polling, SnapshotRequest
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


async def run_poller(
    polling: Polling,
    inbox: PollInbox,
    rows: RowSink,
    exchange: str,
    wall_clock: WallClock,
    metrics: Metrics,
    *,
    geo_block_advice: str | None = None,
) -> None:
    """Fetch ``polling``'s requests in rounds until cancelled, putting each body in ``inbox``.

    A round starts every ``interval_secs`` (Trio time; a round that takes longer is followed
    at once by the next), its requests spaced at least ``1/per_second`` apart, each over
    HTTP in a worker thread. A failure (HTTP error, network, timeout) writes a
    ``poll_error`` row for the request's symbol through ``rows``, counts it and logs it
    (with ``geo_block_advice`` for an HTTP 451); a ``Retry-After`` from the venue delays the
    next request that long. Never raises but for cancellation.
    """
    spacing = 1.0 / polling.per_second
    next_at = trio.current_time()
    errors = metrics.rest_poll_errors.labels(exchange)
    while True:
        round_start = trio.current_time()
        for request in polling.requests:
            await trio.sleep_until(next_at)
            next_at = trio.current_time() + spacing
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
                if exc.retry_after:
                    next_at = max(next_at, trio.current_time() + exc.retry_after)
                continue
            inbox.put(request, body, wall_clock())
        await trio.sleep_until(max(next_at, round_start + polling.interval_secs))
