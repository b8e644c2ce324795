"""REST book snapshots for venues whose book sync needs them (Binance diff depth).

The adapter session asks for a snapshot in a result (``Actions.fetch``); the connection task
queues the request here. This task only fetches: each one over HTTP in a worker thread,
paced to the venue's request budget (a pacer shared by every connection of that budget), and sends the body back to the connection task, the
session's one owner, which hands it to the session. It runs in the connection's nursery, so
a reconnect starts afresh.
"""

from __future__ import annotations

import logging

import attrs
import trio

from collector.backoff import Backoff
from collector.clock import WallClock
from collector.exchanges.base import SnapshotRequest
from collector.ingest.pacer import Pacer
from collector.rest import HTTP_GEO_BLOCKED, RestError, fetch

log = logging.getLogger(__name__)


@attrs.frozen
class FetchedSnapshot:
    """The body of a snapshot fetched for ``request``, and when it arrived (wall clock, µs)."""

    request: SnapshotRequest
    body: bytes
    received_us: int


async def get(url: str) -> bytes:
    """GET ``url`` in a worker thread (:func:`collector.rest.fetch`); raises RestError."""
    return await trio.to_thread.run_sync(fetch, url, abandon_on_cancel=True)


async def run_snapshot_fetcher(
    requests: trio.MemoryReceiveChannel[SnapshotRequest],
    bodies: trio.MemorySendChannel[FetchedSnapshot],
    exchange: str,
    wall_clock: WallClock,
    pacer: Pacer,
    *,
    initial_retry_secs: float = 1.0,
    max_retry_secs: float = 60.0,
    geo_block_advice: str | None = None,
) -> None:
    """Fetch every requested snapshot, in order, each at its turn of ``pacer`` (shared by
    every connection spending the same REST budget, :mod:`collector.ingest.pacer`), and send
    each body on ``bodies``.

    A failed fetch is retried with capped backoff until it succeeds or the connection ends
    (cancellation); the venue's ``Retry-After`` (HTTP 429/418) holds the whole ``pacer``
    that long, so every connection of the budget waits, not only this one; an HTTP 451
    (the venue refuses this location) is logged with ``geo_block_advice``, the venue's
    other hosts. Owns ``requests`` and ``bodies`` (closes both). Waits on ``bodies`` when the connection has not taken the last
    body yet, so memory holds a bounded number of bodies.
    """
    with requests, bodies:
        async for request in requests:
            backoff = Backoff(initial_retry_secs, max_retry_secs)
            while True:
                await pacer.wait_turn()
                try:
                    body = await get(request.url)
                    break
                except RestError as exc:
                    delay = exc.retry_after or backoff.next_delay()
                    reason = str(exc)
                    if exc.status == HTTP_GEO_BLOCKED and geo_block_advice:
                        reason = f"{reason}; {geo_block_advice}"
                    log.warning(
                        "book snapshot failed, retrying in %.1fs: %s",
                        delay,
                        reason,
                        extra={"exchange": exchange, "symbol": request.symbol},
                    )
                    if exc.retry_after:
                        pacer.hold(exc.retry_after)  # the venue's budget: everyone waits
                    else:
                        await trio.sleep(delay)  # this request's own trouble
            await bodies.send(FetchedSnapshot(request, body, wall_clock()))
