"""The label sets a run knows before any event: created at start, so alerts see the first one.

prometheus_client creates a labelled child at its first use. A counter whose series is
born at its first increment (at 1) has no earlier sample to rise from: ``rate`` and
``increase`` see a flat series, so an alert on the first sequence gap or refused
subscription never fires. The plan knows, at start, every exchange, connection, symbol
and data type of the run, and the reasons, outcomes and stages are closed sets; so every
such series is created here, counters at 0, before the HTTP server serves a scrape.

Per labelled metric of :class:`~collector.metrics.Metrics`:

- ``exchange`` (received messages and bytes, parse errors, drops, refused subscriptions,
  failed REST polls, the latency histogram): one per planned exchange.
- ``exchange, outcome`` (connection attempts): :data:`~collector.metrics.CONNECT_OUTCOMES`;
  planned handovers: :data:`~collector.metrics.HANDOVER_OUTCOMES`, where the venue has a
  connection lifetime (the only venues that hand over).
- ``exchange, reason`` (disconnects): :data:`collector.ingest.errors.REASONS`; discards:
  :data:`~collector.exchanges.base.DISCARD_REASONS`; book resyncs:
  :data:`~collector.exchanges.base.BOOK_RESYNC_REASONS`, where the connection carries books.
- ``exchange, connection`` (writer waits): one per planned connection.
- ``exchange, symbol`` (connected): one per planned symbol (also set by
  :class:`~collector.health.HealthState`).
- ``exchange, data_type`` (gaps, rows written, files finished): the planned feeds, and
  ``status`` and ``raw`` where rows of those are written. Gaps come with a feed's data type;
  a gap row without one (none is planned so) would make its own series at its first count.
- ``exchange, symbol, data_type`` (last data time): one per planned stream.
- ``exchange, data_type`` for ``analytics`` (rows written, files finished): each exchange
  with analytics rows (``analytics.table``); the analytics' own series are created by
  :class:`~collector.analytics.TradeAnalytics`.
- ``stage`` (writer errors, upload failures) needs no plan: created with the metric.
- ``channel`` (channel fill) is read at scrape time from the channels being watched.
- ``shard, shards`` and ``exchange, symbol`` of the shard gauges are set once at start,
  at 1, by :meth:`~collector.metrics.Metrics.record_assignment`.

The two timestamp gauges start at the time their series are created, not at 0: "the last
message came 55 years ago" would fire the no-data alerts at once. Until the first data
they read the creation time, so their age is how long the service has waited for it (the
same clock the connection watchdog keeps: a stream's time starts with its connection).
"""

from __future__ import annotations

from prometheus_client import Gauge

from collector.analytics import large_trade_sizes
from collector.events import IntervalStats, Raw, Status, feed_data_type
from collector.exchanges.base import BOOK_RESYNC_REASONS, DISCARD_REASONS, ConnectionPlan
from collector.ingest.errors import REASONS
from collector.metrics import CONNECT_OUTCOMES, HANDOVER_OUTCOMES, Metrics
from collector.planning import ServicePlan


def create_series(metrics: Metrics, plan: ServicePlan, now_us: int) -> None:
    """Create, in ``metrics``, every series ``plan`` determines (``now_us``: wall time, us
    since the epoch, for the timestamp gauges). Called once by ``run_service`` before its
    HTTP server starts; see :func:`create_connection_series`."""
    for exchange in plan.exchanges:
        lifetime = exchange.adapter.max_connection_lifetime_secs
        for connection in exchange.connections:
            create_connection_series(metrics, connection, now_us, handovers=lifetime is not None)
    analytics = plan.settings.analytics
    if analytics.enabled and analytics.table:
        # The analytics rows' own streams (their metrics' series: TradeAnalytics).
        for exchange_name in sorted({pair[0] for pair in large_trade_sizes(plan.settings.markets)}):
            metrics.rows_written.labels(exchange_name, IntervalStats.DATA_TYPE)
            metrics.files_finished.labels(exchange_name, IntervalStats.DATA_TYPE)


def create_connection_series(
    metrics: Metrics, connection: ConnectionPlan, now_us: int, *, handovers: bool = False
) -> None:
    """Create every series of one planned connection: its exchange's, its own and those of
    each of its subscriptions; ``handovers``: also the planned-handover outcomes (for a
    venue with a connection lifetime).

    Idempotent: a series that exists keeps its value (counters are only looked up, a
    timestamp gauge is set only while it reads 0, a stream's last-data time only if it has
    none). So a market added while the service runs is covered by calling this again with
    the connection's new plan (or a plan of the new connection alone). Never raises for a
    valid plan; takes no lock the receive path could wait on beyond prometheus_client's own.
    """
    exchange = connection.exchange
    for metric in (
        metrics.messages_received,
        metrics.bytes_received,
        metrics.parse_errors,
        metrics.messages_dropped,
        metrics.subscribe_errors,
        metrics.rest_poll_errors,
        metrics.latency,
    ):
        metric.labels(exchange)
    _start_clock(metrics.last_message_timestamp, (exchange,), now_us / 1e6)
    for outcome in CONNECT_OUTCOMES:
        metrics.connections_total.labels(exchange, outcome)
    if handovers:
        for handover in HANDOVER_OUTCOMES:
            metrics.planned_handovers.labels(exchange, handover)
    for reason in REASONS:
        metrics.disconnects_total.labels(exchange, reason)
    for discard in DISCARD_REASONS:
        metrics.messages_discarded.labels(exchange, discard)
    metrics.writer_wait_seconds.labels(exchange, connection.name)
    metrics.writer_waiting_seconds.labels(exchange, connection.name)
    for symbol in connection.symbols:
        metrics.websocket_connected.labels(exchange, symbol)

    last_data = metrics.last_data(exchange)
    feeds: dict[str, None] = {}  # the planned data types, in plan order
    for sub in connection.subscriptions:
        data_type = feed_data_type(sub.feed)  # e.g. derivatives -> derivative_ticker
        feeds[data_type] = None
        last_data.setdefault((sub.symbol, data_type), now_us)
    for feed in feeds:
        metrics.sequence_gaps.labels(exchange, feed)
    if "orderbook" in feeds:
        for resync in BOOK_RESYNC_REASONS:
            metrics.book_resyncs.labels(exchange, resync)
    # Every connection writes status rows (connected, disconnected, ...); raw rows only
    # where the plan keeps them.
    written = [*feeds, Status.DATA_TYPE, *([Raw.DATA_TYPE] if connection.raw else [])]
    for data_type in written:
        metrics.rows_written.labels(exchange, data_type)
        metrics.files_finished.labels(exchange, data_type)


def _start_clock(gauge: Gauge, labels: tuple[str, ...], now: float) -> None:
    """Set the child of ``gauge`` for ``labels`` to ``now`` unless it holds a time already."""
    child = gauge.labels(*labels)
    (family,) = child.collect()
    if all(sample.value == 0 for sample in family.samples):
        child.set(now)
