"""The S3 side: a boto3 client with explicit timeouts, and the three calls the uploader makes.

Every method here blocks: call it from a worker thread (``trio.to_thread.run_sync`` with the
uploader's limiter). boto3 clients are thread-safe; one client serves every thread. Errors
come out as :mod:`collector.upload.errors` types, never as boto3's own.

Credentials: boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles,
SSO, container and instance roles), plus the original collector's ``AWS_ACCESS_KEY`` /
``AWS_SECRET_KEY`` when the standard variables are not set. They are handed to boto3 and
never stored, shown or logged here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from collector.upload.digest import META_SHA256, LocalDigest, head_mismatch
from collector.upload.errors import UploadError, VerifyMismatch, error_code, translate
from collector.upload.settings import UploadSettings

LEGACY_KEY_ID = "AWS_ACCESS_KEY"
LEGACY_SECRET = "AWS_SECRET_KEY"
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_CHATTY = ("boto3", "botocore", "s3transfer", "urllib3")
_BOTO_ERRORS = (BotoCoreError, ClientError, Boto3Error)


def botocore_config(cfg: UploadSettings) -> Config:
    """Explicit timeouts and bounded retries, so a stalled S3 frees its thread."""
    return Config(
        region_name=cfg.region,
        connect_timeout=cfg.connect_timeout_secs,
        read_timeout=cfg.read_timeout_secs,
        retries={"total_max_attempts": cfg.max_attempts, "mode": "standard"},
        # Checksums only where we ask for them (SHA-256): the newer boto3 default (CRC32
        # on every request) is not understood by every S3-compatible store.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if cfg.endpoint_url else None,
    )


def make_client(cfg: UploadSettings, env: Mapping[str, str] | None = None) -> Any:
    """A boto3 S3 client for ``cfg`` (blocking: it reads config files)."""
    env = os.environ if env is None else env
    # botocore's debug log shows request headers (the access key id among them).
    for name in _CHATTY:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    kwargs: dict[str, str] = {}
    legacy_id, legacy_secret = env.get(LEGACY_KEY_ID), env.get(LEGACY_SECRET)
    if not env.get("AWS_ACCESS_KEY_ID") and legacy_id and legacy_secret:
        kwargs = {"aws_access_key_id": legacy_id, "aws_secret_access_key": legacy_secret}
    session = boto3.session.Session(region_name=cfg.region, **kwargs)
    return session.client("s3", endpoint_url=cfg.endpoint_url, config=botocore_config(cfg))


class S3Store:
    """One bucket, through one client. Blocking methods; errors are ``UploadError``s."""

    def __init__(self, client: Any, cfg: UploadSettings) -> None:
        self.client = client
        self.bucket = cfg.bucket
        self.transfer = TransferConfig(
            multipart_threshold=cfg.multipart_threshold_bytes,
            multipart_chunksize=cfg.part_bytes,
            # Parts go up one after the other in the caller's thread: the uploader's
            # limiter bounds the threads, and an abandoned upload leaves no thread pool.
            use_threads=False,
        )

    def head(self, key: str) -> dict[str, Any] | None:
        """The HEAD response (with S3's checksum if it keeps one), or None if absent."""
        try:
            response: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
            )
        except ClientError as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise translate(exc, self.bucket) from exc
        except _BOTO_ERRORS as exc:
            raise translate(exc, self.bucket) from exc
        return response

    def matches(self, key: str, local: LocalDigest) -> bool:
        """Whether the object at ``key`` already matches ``local`` (no upload needed)."""
        head = self.head(key)
        return head is not None and head_mismatch(head, local) is None

    def put(self, path: Path, key: str, local: LocalDigest) -> None:
        """Upload ``path`` to ``key``: one PUT, or multipart at or above the threshold.

        The request carries the SHA-256 (whole object, or per part), which S3 checks on
        receipt, and the hex SHA-256 as metadata for :meth:`verify`.
        """
        extra: dict[str, Any] = {
            "Metadata": {META_SHA256: local.sha256_hex},
            "ChecksumAlgorithm": "SHA256",
        }
        if not local.multipart:
            extra["ChecksumSHA256"] = local.sha256_b64
        try:
            self.client.upload_file(
                str(path), self.bucket, key, ExtraArgs=extra, Config=self.transfer
            )
        except _BOTO_ERRORS as exc:
            raise translate(exc, self.bucket) from exc

    def verify(self, key: str, local: LocalDigest) -> None:
        """Raise ``VerifyMismatch`` unless the object's HEAD matches ``local``."""
        head = self.head(key)
        if head is None:
            raise VerifyMismatch(f"s3://{self.bucket}/{key}: object missing after upload")
        reason = head_mismatch(head, local)
        if reason is not None:
            raise VerifyMismatch(f"s3://{self.bucket}/{key}: {reason}")

    def check_bucket(self) -> None:
        """HEAD the bucket: raises ``StoreRefused`` if it is missing or access is refused."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) in _NOT_FOUND | {"NoSuchBucket"}:
                raise translate(
                    ClientError({"Error": {"Code": "NoSuchBucket"}}, "HeadBucket"), self.bucket
                ) from exc
            raise translate(exc, self.bucket) from exc
        except _BOTO_ERRORS as exc:
            raise translate(exc, self.bucket) from exc


__all__ = ["S3Store", "UploadError", "botocore_config", "make_client"]
