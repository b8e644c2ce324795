"""Prometheus metrics, owned by one ``Metrics`` object per service (no process globals).

Names follow the original collector's style (``collector_*``). Hot paths increment once
per batch, never once per event.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# name -> callable returning (current items, max size)
ChannelProbe = Callable[[], tuple[int, float]]


class _ChannelCollector(Collector):
    """Reads channel fill levels at scrape time."""

    def __init__(self) -> None:
        self.probes: dict[str, ChannelProbe] = {}

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "collector_channel_items", "Items waiting in a bounded channel", labels=["channel"]
        )
        size = GaugeMetricFamily(
            "collector_channel_capacity", "Capacity of a bounded channel", labels=["channel"]
        )
        for name, probe in sorted(self.probes.items()):
            current, capacity = probe()
            used.add_metric([name], current)
            size.add_metric([name], capacity)
        yield used
        yield size


class _LastDataCollector(Collector):
    """``collector_last_data_timestamp_seconds``, read at scrape time from the mappings
    the receive loops write (one per exchange: (symbol, data_type) -> receive time, us)."""

    def __init__(self) -> None:
        self.by_exchange: dict[str, dict[tuple[str, str], int]] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "collector_last_data_timestamp_seconds",
            "Unix time of the last read that carried data of this stream (before the "
            "first: when the service started waiting for it)",
            labels=["exchange", "symbol", "data_type"],
        )
        for exchange, streams in sorted(self.by_exchange.items()):
            for (symbol, data_type), received_us in sorted(streams.items()):
                family.add_metric([exchange, symbol, data_type], received_us / 1e6)
        yield family


# The closed sets of label values that need no plan: every one is created at 0 with its
# metric, so a rate or increase over it starts at 0 (a series born at 1 looks flat).
# ``collector_websocket_connections_total{outcome}`` (collector.ingest.connection):
CONNECT_OUTCOMES = ("connected", "failed", "timeout")
# ``collector_planned_handovers_total{outcome}`` (collector.ingest.supervisor):
HANDOVER_OUTCOMES = ("ok", "failed", "cut")
# ``collector_instrument_fetches_total{outcome}`` (collector.instruments):
INSTRUMENT_FETCH_OUTCOMES = ("ok", "failed")
# ``collector_writer_errors_total{stage}`` (collector.storage: flusher, finalizer, recovery):
WRITER_STAGES = ("flush", "finalize", "recover")

UPLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
STAGES = ("put", "verify", "delete")


class UploadMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.completed = Counter(
            "collector_uploads_completed_total",
            "Files uploaded and verified in S3",
            registry=r,
        )
        self.failed = Counter(
            "collector_upload_failures_total",
            "Failed upload attempts by stage (put, verify, delete); each is retried",
            ["stage"],
            registry=r,
        )
        for stage in STAGES:
            self.failed.labels(stage)
        self.bytes_uploaded = Counter(
            "collector_upload_bytes_total",
            "Bytes of files uploaded and verified",
            registry=r,
        )
        self.seconds = Histogram(
            "collector_upload_seconds",
            "Time to upload and verify one file",
            buckets=UPLOAD_BUCKETS,
            registry=r,
        )
        self.skipped = Counter(
            "collector_uploads_skipped_total",
            "Files found already verified in S3 (not uploaded again)",
            registry=r,
        )
        self.key_collisions = Counter(
            "collector_upload_key_collisions_total",
            "Files stored under a later key (start_ms + n) because their own held another object",
            registry=r,
        )
        self.pending_files = Gauge(
            "collector_upload_pending_files", "Finished files not yet verified in S3", registry=r
        )
        self.pending_bytes = Gauge(
            "collector_upload_pending_bytes",
            "Bytes of finished files not yet verified in S3",
            registry=r,
        )
        self.oldest_pending_age = Gauge(
            "collector_upload_oldest_pending_age_seconds",
            "Age (from its modification time) of the oldest file waiting for upload; 0 if none",
            registry=r,
        )
        self.available = Gauge(
            "collector_upload_s3_available",
            "0 while the last S3 request failed, else 1 (also in local mode, which makes none)",
            registry=r,
        )
        # 1 from the start: only a failed request makes it 0 (local mode makes none, so an
        # alert on 0 does not fire there).
        self.available.set(1)


class DiskMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.used_ratio = Gauge(
            "collector_disk_used_ratio",
            "Used fraction of the file system holding data_dir",
            registry=registry,
        )
        self.free_bytes = Gauge(
            "collector_disk_free_bytes",
            "Free bytes on the file system holding data_dir",
            registry=registry,
        )
        self.above_high_water = Gauge(
            "collector_disk_above_high_water",
            "1 while disk usage is above storage.disk_high_water_percent",
            registry=registry,
        )


OUTLET_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class OutletMetrics:
    """The live outlets' (collector.outlets) metrics, labelled by ``outlet`` (kafka,
    redis) and ``data_type``; created for the enabled outlets only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.delivered = Counter(
            "collector_outlet_delivered_total",
            "Events an outlet delivered (Kafka: acknowledged by the brokers; Redis: written)",
            ["outlet", "data_type"],
            registry=r,
        )
        self.failed = Counter(
            "collector_outlet_failed_total",
            "Events an outlet gave up on after trying (Kafka: not acknowledged within "
            "kafka.delivery_timeout_secs)",
            ["outlet", "data_type"],
            registry=r,
        )
        self.dropped = Counter(
            "collector_outlet_dropped_total",
            "Events stored but not sent to an outlet because its buffer was full",
            ["outlet", "data_type"],
            registry=r,
        )
        self.buffered = Gauge(
            "collector_outlet_buffered_events",
            "Events waiting for an outlet: in its buffer and in its client's queue",
            ["outlet"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "collector_outlet_delivery_seconds",
            "Kafka: produce to acknowledgement per message; Redis: one pipeline's round trip",
            ["outlet"],
            buckets=OUTLET_BUCKETS,
            registry=r,
        )
        self.healthy = Gauge(
            "collector_outlet_healthy",
            "0 while an outlet cannot deliver (see /health), else 1",
            ["outlet"],
            registry=r,
        )

    def create(self, outlet: str, data_types: Iterable[str]) -> None:
        """Create ``outlet``'s series at 0 (healthy at 1), so the first increase shows."""
        for data_type in data_types:
            for metric in (self.delivered, self.failed, self.dropped):
                metric.labels(outlet, data_type)
        self.delivery_seconds.labels(outlet)
        self.buffered.labels(outlet)
        self.healthy.labels(outlet).set(1)


class AnalyticsMetrics:
    """Trade analytics (collector.analytics) per (exchange, symbol): the gauges hold the
    last completed interval; the label sets are the configured symbols only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        labels = ["exchange", "symbol"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"collector_analytics_{name}", doc, labels, registry=r)

        self.vwap = gauge("vwap", "Volume-weighted average trade price (NaN: no trades)")
        self.high = gauge("high", "Highest trade price (NaN: no trades)")
        self.low = gauge("low", "Lowest trade price (NaN: no trades)")
        self.volume = gauge("volume", "Traded size, in the trades' units")
        self.buy_volume = gauge("buy_volume", "Traded size with a buying aggressor")
        self.sell_volume = gauge("sell_volume", "Traded size with a selling aggressor")
        self.buy_sell_ratio = gauge(
            "buy_sell_ratio", "buy_volume / sell_volume (NaN while sell_volume is 0)"
        )
        self.trades = gauge("trades", "Trades")
        self.interval_end = gauge(
            "interval_end_seconds",
            "Unix time the interval the other gauges describe ended (the start time until "
            "the first)",
        )
        self.large_trades = Counter(
            "collector_analytics_large_trades_total",
            "Trades of at least the symbol's large_trade_size (counted as intervals complete)",
            labels,
            registry=r,
        )
        self.late_trades = Counter(
            "collector_analytics_late_trades_total",
            "Trades routed after their interval had been completed: counted in the next one",
            labels,
            registry=r,
        )

    def create(self, exchange: str, symbol: str, now: float) -> None:
        """Create one pair's series: counters and counts at 0, prices NaN (no interval
        completed yet), the interval end at ``now`` (Unix time: as the other timestamp
        gauges, so ``time() - x`` is how long the service has waited for the first)."""
        for counter in (self.large_trades, self.late_trades):
            counter.labels(exchange, symbol)
        for zero in (self.volume, self.buy_volume, self.sell_volume, self.trades):
            zero.labels(exchange, symbol)
        for unknown in (self.vwap, self.high, self.low, self.buy_sell_ratio):
            unknown.labels(exchange, symbol).set(math.nan)
        self.interval_end.labels(exchange, symbol).set(now)

    def remove(self, exchange: str, symbol: str) -> None:
        """Remove one pair's series (a symbol no longer collected)."""
        for metric in (
            self.large_trades,
            self.late_trades,
            self.volume,
            self.buy_volume,
            self.sell_volume,
            self.trades,
            self.vwap,
            self.high,
            self.low,
            self.buy_sell_ratio,
            self.interval_end,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(exchange, symbol)


class Metrics:
    """Every metric the service exports, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # ingest
        self.websocket_connected = Gauge(
            "collector_websocket_connected",
            "1 while the WebSocket connection carrying this exchange and symbol is open",
            ["exchange", "symbol"],
            registry=r,
        )
        self.connections_total = Counter(
            "collector_websocket_connections_total",
            "WebSocket connection attempts by outcome",
            ["exchange", "outcome"],
            registry=r,
        )
        self.disconnects_total = Counter(
            "collector_websocket_disconnects_total",
            "Connections lost or replaced, by reason",
            ["exchange", "reason"],
            registry=r,
        )
        self.planned_handovers = Counter(
            "collector_planned_handovers_total",
            "Planned reconnects (a venue's connection lifetime) by outcome: ok (switched to "
            "the new connection without a hole), failed (the new connection failed first; "
            "retried while the old one lasts), cut (the old one ended first: a marked hole)",
            ["exchange", "outcome"],
            registry=r,
        )
        self.messages_received = Counter(
            "collector_messages_received_total",
            "WebSocket messages received",
            ["exchange"],
            registry=r,
        )
        self.bytes_received = Counter(
            "collector_bytes_received_total",
            "WebSocket payload bytes received",
            ["exchange"],
            registry=r,
        )
        self.parse_errors = Counter(
            "collector_parse_errors_total",
            "Frames that could not be parsed (skipped)",
            ["exchange"],
            registry=r,
        )
        self.messages_dropped = Counter(
            "collector_messages_dropped_total",
            "Events received but never handed to the writer (it had stopped)",
            ["exchange"],
            registry=r,
        )
        self.messages_discarded = Counter(
            "collector_messages_discarded_total",
            "Received updates a session skipped on purpose, by reason: duplicate, stale, "
            "while_resyncing",
            ["exchange", "reason"],
            registry=r,
        )
        self.writer_wait_seconds = Counter(
            "collector_writer_wait_seconds_total",
            "Seconds a connection waited for room in the full event channel (not reading)",
            ["exchange", "connection"],
            registry=r,
        )
        self.writer_waiting_seconds = Gauge(
            "collector_writer_waiting_seconds",
            "How long a connection has been waiting for room in the event channel (0: not)",
            ["exchange", "connection"],
            registry=r,
        )
        self.sequence_gaps = Counter(
            "collector_sequence_gaps_total",
            "Detected sequence gaps",
            ["exchange", "data_type"],
            registry=r,
        )
        self.book_resyncs = Counter(
            "collector_book_resyncs_total",
            "Books found invalid and resynced (a fresh snapshot), by reason: checksum "
            "(the venue's book checksum did not match), crossed (best bid >= best ask)",
            ["exchange", "reason"],
            registry=r,
        )
        self.subscribe_errors = Counter(
            "collector_subscribe_errors_total",
            "Subscriptions the venue refused",
            ["exchange"],
            registry=r,
        )
        self.rest_poll_errors = Counter(
            "collector_rest_poll_errors_total",
            "Polled REST requests that failed (e.g. Binance open interest); retried next round",
            ["exchange"],
            registry=r,
        )
        self.latency = Histogram(
            "collector_exchange_latency_seconds",
            "Receive time minus exchange event time (sampled once per read)",
            ["exchange"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.last_message_timestamp = Gauge(
            "collector_last_message_timestamp_seconds",
            "Unix time of the last message received (before the first: when the service "
            "started waiting for it)",
            ["exchange"],
            registry=r,
        )
        # instrument listings (REST)
        self.instrument_fetches = Counter(
            "collector_instrument_fetches_total",
            "REST instrument listing requests by outcome (ok; failed: HTTP, network or an "
            "unreadable answer, tried again later)",
            ["exchange", "outcome"],
            registry=r,
        )
        # writer
        self.rows_written = Counter(
            "collector_rows_written_total",
            "Rows flushed to the journal of an open file",
            ["exchange", "data_type"],
            registry=r,
        )
        self.files_finished = Counter(
            "collector_files_finished_total",
            "Parquet files finalized",
            ["exchange", "data_type"],
            registry=r,
        )
        self.bytes_written = Counter(
            "collector_parquet_bytes_written_total",
            "Bytes of finished Parquet files",
            registry=r,
        )
        self.files_recovered = Counter(
            "collector_files_recovered_total",
            "Files finalized at start from journals a previous run left behind",
            registry=r,
        )
        self.open_files = Gauge("collector_open_files", "Files currently being written", registry=r)
        self.flush_seconds = Histogram(
            "collector_flush_seconds",
            "Time to flush pending rows to journals",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.finalize_seconds = Histogram(
            "collector_finalize_seconds",
            "Time to write one Parquet file from its journal",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.writer_errors = Counter(
            "collector_writer_errors_total",
            "Errors while writing files",
            ["stage"],
            registry=r,
        )
        for stage in WRITER_STAGES:
            self.writer_errors.labels(stage)
        # service
        self.up_since = Gauge(
            "collector_start_time_seconds", "Unix time the service started", registry=r
        )
        # sharding (collector.sharding.Assignment; set once by record_assignment)
        self.shard_info = Gauge(
            "collector_shard_info",
            "1, labelled with this instance's shard index and the shard count (0 and 1: not "
            "sharded)",
            ["shard", "shards"],
            registry=r,
        )
        self.shard_pairs = Gauge(
            "collector_shard_pairs",
            "(exchange, symbol) pairs this instance collects",
            registry=r,
        )
        self.configured_pairs = Gauge(
            "collector_configured_pairs",
            "(exchange, symbol) pairs the settings configure, over all shards",
            registry=r,
        )
        self.shard_pair = Gauge(
            "collector_shard_pair_info",
            "1 for each (exchange, symbol) pair this instance collects",
            ["exchange", "symbol"],
            registry=r,
        )
        # upload and disk (collector.upload)
        self.upload = UploadMetrics(r)
        self.disk = DiskMetrics(r)
        self.outlets = OutletMetrics(r)
        self.analytics = AnalyticsMetrics(r)
        self._channels = _ChannelCollector()
        r.register(self._channels)
        self._last_data = _LastDataCollector()
        r.register(self._last_data)
        self._assigned: set[tuple[str, str]] = set()

    def record_assignment(
        self, index: int, count: int, pairs: Iterable[tuple[str, str]], configured: int
    ) -> None:
        """Export what this instance collects: shard ``index`` of ``count``, its ``pairs``
        ((exchange, symbol) as the rows spell them) out of ``configured`` in all. Summed over
        the instances, ``collector_shard_pairs`` below ``collector_configured_pairs`` means
        pairs no running instance collects (a shard down, or fewer replicas than shards)."""
        self.shard_info.labels(str(index), str(count)).set(1)
        pairs = list(pairs)
        self.shard_pairs.set(len(pairs))
        self.configured_pairs.set(configured)
        for exchange, symbol in pairs:
            self.shard_pair.labels(exchange, symbol).set(1)
        self._assigned = set(pairs)

    def update_assignment(self, pairs: Iterable[tuple[str, str]], configured: int) -> None:
        """The pairs collected changed at run time (:mod:`collector.control`): export the
        new ones, drop the series of the pairs no longer collected."""
        pairs = set(pairs)
        for exchange, symbol in self._assigned - pairs:
            self.shard_pair.remove(exchange, symbol)
        for exchange, symbol in pairs - self._assigned:
            self.shard_pair.labels(exchange, symbol).set(1)
        self._assigned = pairs
        self.shard_pairs.set(len(pairs))
        self.configured_pairs.set(configured)

    def watch_channel(self, name: str, probe: ChannelProbe) -> None:
        """Export a channel's fill level (items and capacity) at each scrape."""
        self._channels.probes[name] = probe

    def last_data(self, exchange: str) -> dict[tuple[str, str], int]:
        """The mapping of ``exchange``'s streams, (symbol, data_type), to the receive time
        (us since the epoch) of their last data, exported as
        ``collector_last_data_timestamp_seconds``. Its connections write it, on the
        receive path, with plain dict stores: cheaper there than a labelled gauge."""
        return self._last_data.by_exchange.setdefault(exchange, {})

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of one sample (0 if absent). For health summaries and tests."""
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    def sum_samples(self, name: str) -> float:
        """Sum of one sample name over all label values."""
        total = 0.0
        for family in self.registry.collect():
            for s in family.samples:
                if s.name == name:
                    total += s.value
        return total
