"""The uploader's and the disk monitor's metrics, on the service's registry.

Created once per service by :class:`collector.metrics.Metrics` (``metrics.upload``,
``metrics.disk``), so they are exported in every storage mode.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
            "1 while the last S3 request succeeded, 0 after a failure",
            registry=r,
        )


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
