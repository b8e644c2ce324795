"""REST book snapshots for venues whose book sync needs them (Binance diff depth).

The adapter session asks (``Session.snapshot_requests``); this task fetches each one over
HTTP in a worker thread, paced to the venue's request budget, and hands the body back to
the session. It runs in the connection's nursery, so a reconnect starts afresh.
"""

from __future__ import annotations

import logging

import trio

from collector.clock import WallClock
from collector.exchanges.base import ParseError, Session, SnapshotRequest
from collector.ingest.backoff import Backoff
from collector.ingest.sink import EventSink
from collector.rest import RestError, fetch

log = logging.getLogger(__name__)


async def run_snapshot_fetcher(
    session: Session,
    requests: trio.MemoryReceiveChannel[SnapshotRequest],
    sink: EventSink,
    wall_clock: WallClock,
    per_second: float,
    *,
    initial_retry_secs: float = 1.0,
    max_retry_secs: float = 60.0,
) -> None:
    """Fetch every requested snapshot, in order, at most ``per_second`` requests a second.

    A failed fetch is retried with capped backoff (or after the venue's ``Retry-After``)
    until it succeeds or the connection ends. New requests the session makes while
    handling a snapshot (e.g. it was too old) are queued behind. Owns ``requests``.
    """
    interval = 1.0 / per_second
    next_at = trio.current_time()
    with requests:
        async for request in requests:
            queue = [request]
            while queue:
                current = queue.pop(0)
                backoff = Backoff(initial_retry_secs, max_retry_secs)
                while True:
                    await trio.sleep_until(next_at)
                    next_at = trio.current_time() + interval
                    try:
                        body = await trio.to_thread.run_sync(
                            fetch, current.url, abandon_on_cancel=True
                        )
                        break
                    except RestError as exc:
                        delay = exc.retry_after or backoff.next_delay()
                        log.warning(
                            "book snapshot failed, retrying in %.1fs: %s",
                            delay,
                            exc,
                            extra={"exchange": session.exchange, "symbol": current.symbol},
                        )
                        next_at = max(next_at, trio.current_time() + delay)
                received_us = wall_clock()
                try:
                    events = session.parse_snapshot(current, body, received_us)
                except ParseError as exc:
                    log.warning(
                        "book snapshot unreadable: %s",
                        exc,
                        extra={"exchange": session.exchange, "symbol": current.symbol},
                    )
                    events = []
                if events:
                    sink.send(events, received_us)
                queue.extend(session.snapshot_requests)
                session.snapshot_requests.clear()
