"""Upload: finished Parquet files -> S3, verified before any local file is deleted.

- :func:`run_uploader`: the service's uploader task (modes ``s3`` and ``both``);
- :func:`run_disk_monitor`: the disk high-water mark in ``/health`` and metrics;
- :func:`run_upload_command`: ``python -m collector upload``;
- :class:`UploadSettings`: the settings all of them read.
"""

from collector.metrics import DiskMetrics, UploadMetrics
from collector.upload.command import run_upload_command, upload_all
from collector.upload.disk import run_disk_monitor
from collector.upload.settings import UploadSettings
from collector.upload.store import S3Store, make_client
from collector.upload.uploader import Uploader, open_store, run_uploader

__all__ = [
    "DiskMetrics",
    "S3Store",
    "UploadMetrics",
    "UploadSettings",
    "Uploader",
    "make_client",
    "open_store",
    "run_disk_monitor",
    "run_upload_command",
    "run_uploader",
    "upload_all",
]
