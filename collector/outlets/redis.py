"""The Redis outlet: the latest values of each (exchange, symbol), with a TTL per kind.

Keys, under ``redis.key_prefix`` (``P``), each holding the JSON of
:mod:`collector.outlets.encoding`:

- ``P:<exchange>:<symbol>:trade``: the latest trade row (TTL ``redis.ttl_trade_secs``);
- ``P:<exchange>:<symbol>:ticker``: the latest ticker row (``redis.ttl_ticker_secs``);
- ``P:<exchange>:<symbol>:top``: the best bid and ask of the latest order book snapshot:
  the common columns and ``bid_price``, ``bid_size``, ``ask_price``, ``ask_size`` (null
  for an empty side) (``redis.ttl_orderbook_secs``);
- ``P:<exchange>:<symbol>:book``: that snapshot's best ``redis.book_depth`` levels per
  side, as ``bids``/``asks`` of ``[price, size]`` pairs (same TTL).

The book keys come from snapshots only: a delta changes a book the outlet does not hold,
so streams of deltas alone (a venue's diff mode after its first snapshot) update them at
each snapshot the venue sends. Order book levels are taken in the venue's order (best
first on every venue the service supports).

Each round takes every batch waiting in the outlet's buffer, keeps the last value per
key, and writes them in one pipeline (``SET key value PX ttl``), in a worker thread. A
value's TTL counts from its receive time, so a value written late (after an outage) does
not outlive its data; one already expired is not written. While Redis is down the
outlet keeps the latest value per key (a bounded map: one entry per key), retries with a
capped backoff, and takes from its buffer in the meantime.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from functools import partial
from typing import Any, Final

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from collector.backoff import Backoff
from collector.config import RedisSettings
from collector.events import BookUpdate, Event, Ticker, Trade
from collector.health import HealthState
from collector.metrics import OutletMetrics
from collector.outlets.buffer import OutletBuffer
from collector.outlets.encoding import encode_event, encode_value

log = logging.getLogger(__name__)

OUTLET: Final = "redis"
# The data types the Redis outlet keeps a latest value of.
DATA_TYPES: Final = frozenset({"trades", "ticker", "orderbook"})

# key -> (value, data type, receive time us, TTL ms)
Latest = dict[str, tuple[bytes, str, int, int]]


def latest_values(settings: RedisSettings, batches: Iterable[list[Event]], into: Latest) -> None:
    """Put the value of each event of ``batches`` under its key in ``into`` (the last one
    of a key wins: the events come in the files' order)."""
    prefix = settings.key_prefix
    trade_ttl = int(settings.ttl_trade_secs * 1000)
    ticker_ttl = int(settings.ttl_ticker_secs * 1000)
    book_ttl = int(settings.ttl_orderbook_secs * 1000)
    depth = settings.book_depth * 2  # flat values per side
    for batch in batches:
        for event in batch:
            if type(event) is Trade:
                key = f"{prefix}:{event.exchange}:{event.symbol}:trade"
                into[key] = (encode_event(event), "trades", event.timestamp_collector, trade_ttl)
            elif type(event) is Ticker:
                key = f"{prefix}:{event.exchange}:{event.symbol}:ticker"
                into[key] = (encode_event(event), "ticker", event.timestamp_collector, ticker_ttl)
            elif type(event) is BookUpdate and event.kind == "snapshot":
                base = f"{prefix}:{event.exchange}:{event.symbol}"
                ts = event.timestamp_collector
                into[f"{base}:top"] = (encode_value(_top(event)), "orderbook", ts, book_ttl)
                book = _common(event)
                book["bids"] = event.bids[:depth]
                book["asks"] = event.asks[:depth]
                into[f"{base}:book"] = (encode_value(book), "orderbook", ts, book_ttl)


def _common(event: BookUpdate) -> dict[str, Any]:
    return {
        "exchange": event.exchange,
        "symbol": event.symbol,
        "timestamp_exchange": event.timestamp_exchange,
        "timestamp_collector": event.timestamp_collector,
        "sequence": event.sequence,
    }


def _top(event: BookUpdate) -> dict[str, Any]:
    top = _common(event)
    bids, asks = event.bids, event.asks
    top["bid_price"], top["bid_size"] = (bids[0], bids[1]) if len(bids) >= 2 else (None, None)
    top["ask_price"], top["ask_size"] = (asks[0], asks[1]) if len(asks) >= 2 else (None, None)
    return top


def connect(settings: RedisSettings) -> redis.Redis:
    """A client for ``redis.url``: no retries of its own (the outlet retries), every
    request bounded by ``redis.timeout_secs``."""
    return redis.Redis.from_url(
        settings.url,
        socket_timeout=settings.timeout_secs,
        socket_connect_timeout=settings.timeout_secs,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def write_latest(client: redis.Redis, latest: Latest, now_us: int) -> dict[str, int]:
    """Write ``latest`` in one pipeline (a worker thread); the values written per data
    type. Values whose TTL has run out by ``now_us`` are skipped. Raises
    ``redis.RedisError`` (nothing is known to be written then)."""
    written: dict[str, int] = {}
    pipe = client.pipeline(transaction=False)
    for key, (value, data_type, received_us, ttl_ms) in latest.items():
        left_ms = ttl_ms - max(0, now_us - received_us) // 1000
        if left_ms <= 0:
            continue
        pipe.set(key, value, px=left_ms)
        written[data_type] = written.get(data_type, 0) + 1
    if written:
        pipe.execute()
    return written


async def run_redis_outlet(
    settings: RedisSettings,
    buffer: OutletBuffer,
    metrics: OutletMetrics,
    health: HealthState,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep the latest values of ``buffer``'s events in Redis until the buffer is closed
    and drained; then one last write (bounded by ``redis.timeout_secs``) and return.

    Owns its client and the health component ``redis`` (degraded from the first failed
    write until one succeeds, once it has failed for ``redis.stall_secs`` or the values
    wait that long). Never raises for Redis being down: retried with a capped backoff.
    Cancellation: a write under way in its worker thread finishes first (bounded by the
    request timeout); values not written are lost for Redis (the files have them).
    """
    client = connect(settings)
    latest: Latest = {}
    delivered = {dt: metrics.delivered.labels(OUTLET, dt) for dt in DATA_TYPES}
    latency = metrics.delivery_seconds.labels(OUTLET)
    healthy = metrics.healthy.labels(OUTLET)
    metrics.buffered.labels(OUTLET).set_function(lambda: buffer.size + len(latest))
    backoff = Backoff(settings.initial_retry_delay_secs, settings.max_retry_delay_secs)
    failing_since: float | None = None
    task_status.started()
    try:
        while True:
            batches = await buffer.take()
            if not batches and not latest:
                return  # closed and drained
            latest_values(settings, batches, latest)
            started = time.perf_counter()
            try:
                written = await trio.to_thread.run_sync(
                    partial(write_latest, client, latest, time.time_ns() // 1000)
                )
            except redis.RedisError as exc:
                now = trio.current_time()
                if failing_since is None:
                    failing_since = now
                    log.warning("Redis write failed: %s (retrying)", exc, extra={"outlet": OUTLET})
                if now - failing_since >= settings.stall_secs:
                    health.set_problem(OUTLET, f"cannot write to Redis ({exc})")
                    healthy.set(0)
                if buffer.closed:
                    log.warning("%d latest values not written to Redis at shutdown", len(latest))
                    return
                await trio.sleep(backoff.next_delay())
                continue
            latency.observe(time.perf_counter() - started)
            for data_type, count in written.items():
                delivered[data_type].inc(count)
            latest.clear()
            if failing_since is not None:
                log.info("Redis writes succeed again", extra={"outlet": OUTLET})
                failing_since = None
                backoff.reset()
                health.clear_problem(OUTLET)
                healthy.set(1)
    finally:
        health.clear_problem(OUTLET)
        client.close()
