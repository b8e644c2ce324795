"""REST book snapshots for venues whose book sync needs them (Binance diff depth).

The adapter session asks (``Session.snapshot_requests``); this task fetches each one over
HTTP in a worker thread, paced to the venue's request budget, and hands the body back to
the session. It runs in the connection's nursery, so a reconnect starts afresh.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from email.message import Message

import trio

from collector import __version__
from collector.clock import WallClock
from collector.exchanges.base import ParseError, Session, SnapshotRequest
from collector.ingest.backoff import Backoff
from collector.ingest.sink import EventSink

log = logging.getLogger(__name__)

HTTP_TIMEOUT_SECS = 10.0
MAX_BODY_BYTES = 64 * 1024 * 1024
USER_AGENT = f"collector/{__version__}"


class SnapshotFetchError(Exception):
    """The snapshot could not be fetched; ``retry_after`` is the venue's hint, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def fetch(url: str) -> bytes:
    """GET ``url`` (blocking; run in a worker thread). Raises SnapshotFetchError."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECS) as response:
            body: bytes = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise SnapshotFetchError(f"HTTP {exc.code} from {url}", _retry_after(exc.headers)) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SnapshotFetchError(f"cannot fetch {url}: {exc}") from None
    if len(body) > MAX_BODY_BYTES:
        raise SnapshotFetchError(f"snapshot from {url} is larger than {MAX_BODY_BYTES} bytes")
    return body


def _retry_after(headers: Message) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


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
                    except SnapshotFetchError as exc:
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
