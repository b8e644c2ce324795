"""The S3 side: a boto3 client with explicit timeouts, and the calls the uploader makes.

A put never replaces an object it was not told to: it carries ``If-None-Match: *`` (on the
PutObject, or on the CompleteMultipartUpload of a multipart upload), so a key another file
already holds answers 412 and nothing is written (:class:`KeyTaken`). The multipart upload is
done here rather than by boto3's ``upload_file``, whose allowed arguments do not include
``IfNoneMatch``.

Every method here blocks: call it from a worker thread (``trio.to_thread.run_sync`` with the
uploader's limiter). boto3 clients are thread-safe; one client serves every thread. Errors
come out as :mod:`collector.upload.errors` types, never as boto3's own.

Credentials: boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles,
SSO, container and instance roles), plus the original collector's ``AWS_ACCESS_KEY`` /
``AWS_SECRET_KEY`` when the standard variables are not set. They are handed to boto3 and
never stored, shown or logged here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from collector.upload.digest import META_SHA256, LocalDigest, head_mismatch
from collector.upload.errors import (
    PRECONDITION_FAILED_CODES,
    KeyTaken,
    UploadError,
    VerifyMismatch,
    error_code,
    translate,
)
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


class Presence(Enum):
    """What a key holds, compared with a local file."""

    ABSENT = "absent"
    SAME = "same"  # the local file's bytes, verified by size and checksums
    OTHER = "other"  # another object (another file's, or altered)


def _is_precondition_failed(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return error_code(exc) in PRECONDITION_FAILED_CODES or status == 412


class S3Store:
    """One bucket, through one client. Blocking methods; errors are ``UploadError``s."""

    def __init__(self, client: Any, cfg: UploadSettings) -> None:
        self.client = client
        self.bucket = cfg.bucket

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

    def presence(self, key: str, local: LocalDigest) -> Presence:
        """Whether ``key`` is free, holds ``local``'s bytes already, or holds another object."""
        head = self.head(key)
        if head is None:
            return Presence.ABSENT
        return Presence.SAME if head_mismatch(head, local) is None else Presence.OTHER

    def put(self, path: Path, key: str, local: LocalDigest, *, replace: bool = False) -> None:
        """Upload ``path`` to ``key``: one PUT, or multipart when ``local`` was cut in parts.

        Only onto a free key unless ``replace`` (for a key this file already owns): raises
        ``KeyTaken`` if another object holds it, having written nothing. The request carries
        the SHA-256 (whole object, or per part), which S3 checks on receipt, and the hex
        SHA-256 as metadata for :meth:`verify`.
        """
        condition = {} if replace else {"IfNoneMatch": "*"}
        metadata = {META_SHA256: local.sha256_hex}
        try:
            if local.multipart:
                self._put_parts(path, key, local, metadata, condition)
            else:
                with path.open("rb") as body:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=body,
                        Metadata=metadata,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=local.sha256_b64,
                        **condition,
                    )
        except ClientError as exc:
            if _is_precondition_failed(exc):
                raise KeyTaken(f"s3://{self.bucket}/{key} is taken") from exc
            raise translate(exc, self.bucket) from exc
        except _BOTO_ERRORS as exc:
            raise translate(exc, self.bucket) from exc

    def _put_parts(
        self,
        path: Path,
        key: str,
        local: LocalDigest,
        metadata: dict[str, str],
        condition: dict[str, str],
    ) -> None:
        """A multipart upload; aborted (best effort) if any step fails, the condition too.

        One part in memory at a time, read in the caller's thread: the uploader's limiter
        bounds the threads, so memory stays at ``upload_concurrency`` parts.
        """
        assert local.part_bytes is not None
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, Metadata=metadata, ChecksumAlgorithm="SHA256"
        )["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            with path.open("rb") as f:
                for number, checksum in enumerate(local.part_sha256_b64, start=1):
                    response = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=f.read(local.part_bytes),
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=checksum,
                    )
                    parts.append(
                        {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}
                    )
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **condition,
            )
        except BaseException:
            # Parts of an unfinished upload are kept (and billed) until aborted.
            with contextlib.suppress(*_BOTO_ERRORS):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

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


__all__ = ["KeyTaken", "Presence", "S3Store", "UploadError", "botocore_config", "make_client"]
