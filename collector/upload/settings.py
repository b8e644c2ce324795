"""The uploader's settings: one frozen view of everything the upload code reads.

Built from :class:`collector.config.Settings` by :meth:`UploadSettings.from_settings`
(``[aws]`` and two ``[storage]`` keys). Tests build an ``UploadSettings`` directly (or
``msgspec.structs.replace`` one) to use small values.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from collector.config import Settings
from collector.upload.keys import DEFAULT_KEY_TEMPLATE, check_key_template

MiB = 1024 * 1024
# S3's smallest part (except the last): boto3 raises smaller chunk sizes to this.
MIN_PART_BYTES = 5 * MiB

StorageMode = Literal["local", "s3", "both"]


class UploadSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the uploader, the ``upload`` command and the disk monitor read."""

    mode: StorageMode = "local"
    data_dir: str = "./data"
    # [aws]
    region: str = "us-east-1"
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    key_template: str = DEFAULT_KEY_TEMPLATE
    multipart_threshold_mb: float = 64.0
    multipart_chunk_mb: float = 16.0
    upload_concurrency: int = 2
    initial_retry_delay_secs: float = 1.0
    max_retry_delay_secs: float = 60.0
    connect_timeout_secs: float = 10.0
    read_timeout_secs: float = 60.0
    # Attempts per S3 request, the first included (botocore standard retry mode).
    max_attempts: int = 3
    # [storage]
    disk_high_water_percent: float = 90.0

    def __post_init__(self) -> None:
        check_key_template(self.key_template)
        if self.multipart_threshold_mb <= 0 or self.multipart_chunk_mb <= 0:
            raise ValueError("multipart sizes must be > 0")
        if self.upload_concurrency < 1:
            raise ValueError("upload_concurrency must be >= 1")
        if not 0 < self.initial_retry_delay_secs <= self.max_retry_delay_secs:
            raise ValueError("need 0 < initial_retry_delay_secs <= max_retry_delay_secs")
        if self.connect_timeout_secs <= 0 or self.read_timeout_secs <= 0:
            raise ValueError("timeouts must be > 0")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not 0 < self.disk_high_water_percent <= 100:
            raise ValueError("disk_high_water_percent must be in (0, 100]")

    @property
    def multipart_threshold_bytes(self) -> int:
        return max(1, int(self.multipart_threshold_mb * MiB))

    @property
    def part_bytes(self) -> int:
        """The configured part size, raised to S3's minimum as boto3 does."""
        return max(MIN_PART_BYTES, int(self.multipart_chunk_mb * MiB))

    @property
    def uploads(self) -> bool:
        """Whether the service runs the uploader (``s3`` or ``both``)."""
        return self.mode != "local"

    @property
    def deletes_after_upload(self) -> bool:
        return self.mode == "s3"

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadSettings:
        """The upload view of ``settings`` (keys config.py lacks take the defaults)."""
        aws, storage = settings.aws, settings.storage
        return cls(
            mode=storage.mode,
            data_dir=storage.data_dir,
            region=aws.region,
            bucket=aws.bucket,
            prefix=aws.prefix,
            endpoint_url=aws.endpoint_url,
            key_template=aws.key_template,
            multipart_threshold_mb=aws.multipart_threshold_mb,
            multipart_chunk_mb=aws.multipart_chunk_mb,
            upload_concurrency=aws.upload_concurrency,
            initial_retry_delay_secs=aws.initial_retry_delay_secs,
            max_retry_delay_secs=aws.max_retry_delay_secs,
            connect_timeout_secs=aws.connect_timeout_secs,
            read_timeout_secs=aws.read_timeout_secs,
            max_attempts=aws.max_attempts,
            disk_high_water_percent=storage.disk_high_water_percent,
        )
