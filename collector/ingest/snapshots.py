"""REST book snapshots for venues whose book sync needs them (Binance diff depth).

The adapter session asks for a snapshot in a result (``Actions.fetch``); the connection task
queues the request here. This task only fetches: each one over HTTP in a worker thread,
paced to the venue's request budget, and sends the body back to the connection task, the
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
from collector.rest import HTTP_GEO_BLOCKED, RestError, fetch

log = logging.getLogger(__name__)


@attrs.frozen
class FetchedSnapshot:
    """The body of a snapshot fetched for ``request``, and when it arrived (wall clock, µs)."""

    request: SnapshotRequest
    body: bytes
    received_us: int


async def run_snapshot_fetcher(
    requests: trio.MemoryReceiveChannel[SnapshotRequest],
    bodies: trio.MemorySendChannel[FetchedSnapshot],
    exchange: str,
    wall_clock: WallClock,
    per_second: float,
    *,
    initial_retry_secs: float = 1.0,
    max_retry_secs: float = 60.0,
    geo_block_advice: str | None = None,
) -> None:
    """Fetch every requested snapshot, in order, at most ``per_second`` requests a second,
    and send each body on ``bodies``.

    A failed fetch is retried with capped backoff (or after the venue's ``Retry-After``)
    until it succeeds or the connection ends (cancellation); an HTTP 451 (the venue refuses
    this location) is logged with ``geo_block_advice``, the venue's other hosts. Owns ``requests`` and
    ``bodies`` (closes both). Waits on ``bodies`` when the connection has not taken the last
    body yet, so memory holds a bounded number of bodies.
    """
    interval = 1.0 / per_second
    next_at = trio.current_time()
    with requests, bodies:
        async for request in requests:
            backoff = Backoff(initial_retry_secs, max_retry_secs)
            while True:
                await trio.sleep_until(next_at)
                next_at = trio.current_time() + interval
                try:
                    body = await trio.to_thread.run_sync(fetch, request.url, abandon_on_cancel=True)
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
                    next_at = max(next_at, trio.current_time() + delay)
            await bodies.send(FetchedSnapshot(request, body, wall_clock()))
