"""Checksums of a local file, and the check of a HEAD response against them.

Verification (see docs/operations.md, "Verification"): the object's size and a SHA-256
computed from the local bytes must match what S3 reports on HEAD:

- ``Content-Length`` equals the local size;
- the user metadata ``x-amz-meta-sha256`` equals the hex SHA-256 of the local file (we
  send it with the upload; every S3-compatible store keeps user metadata);
- when the store reports its own checksum (``ChecksumSHA256``, HEAD with
  ``ChecksumMode=ENABLED``), it equals the base64 SHA-256 of the local bytes (single-part),
  or the S3 composite checksum (SHA-256 of the parts' SHA-256 digests, with an optional
  ``-N`` part-count suffix) for a multipart upload. Stores that report none (older MinIO,
  R2 for some uploads) are verified by size and metadata alone.

The upload itself carries ``x-amz-checksum-sha256`` (per part for multipart), which S3
checks on receipt: corrupted bytes are refused before they are stored.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
from s3transfer.utils import ChunksizeAdjuster

META_SHA256: Final = "sha256"
_READ_BYTES: Final = 1024 * 1024


class LocalDigest(msgspec.Struct, frozen=True, kw_only=True):
    """What a file's object must match. ``composite_b64`` is set for multipart uploads.

    ``part_sha256_b64`` holds each part's SHA-256 (multipart only): the parts carry it, so
    S3 refuses a part whose bytes changed since they were hashed.
    """

    size: int
    sha256_hex: str
    sha256_b64: str
    part_bytes: int | None = None
    parts: int = 1
    composite_b64: str | None = None
    part_sha256_b64: tuple[str, ...] = ()

    @property
    def multipart(self) -> bool:
        return self.composite_b64 is not None


def part_size_for(size: int, threshold: int, part_bytes: int) -> int | None:
    """The part size boto3 will use for a file of ``size`` bytes, or None for one PUT."""
    if size < threshold:
        return None
    adjusted: int = ChunksizeAdjuster().adjust_chunksize(part_bytes, size)
    return adjusted


def digest_file(path: Path, *, threshold: int, part_bytes: int) -> LocalDigest:
    """SHA-256 of the whole file and, at or above ``threshold``, of each part. Blocking."""
    size = path.stat().st_size
    part_size = part_size_for(size, threshold, part_bytes)
    full = hashlib.sha256()
    part_digests: list[bytes] = []
    with path.open("rb") as f:
        if part_size is None:
            while block := f.read(_READ_BYTES):
                full.update(block)
        else:
            while True:
                part, left = hashlib.sha256(), part_size
                while left and (block := f.read(min(_READ_BYTES, left))):
                    full.update(block)
                    part.update(block)
                    left -= len(block)
                if left == part_size and part_digests:
                    break  # nothing more to read
                part_digests.append(part.digest())
                if left:
                    break  # a short (last) part
    digest = full.digest()
    composite = None
    if part_digests:
        composite = base64.b64encode(hashlib.sha256(b"".join(part_digests)).digest()).decode()
    return LocalDigest(
        size=size,
        sha256_hex=digest.hex(),
        sha256_b64=base64.b64encode(digest).decode(),
        part_bytes=part_size,
        parts=max(1, len(part_digests)),
        composite_b64=composite,
        part_sha256_b64=tuple(base64.b64encode(d).decode() for d in part_digests),
    )


def head_mismatch(head: Mapping[str, Any], local: LocalDigest) -> str | None:
    """Why the HEAD response ``head`` does not match ``local``, or None if it matches."""
    size = head.get("ContentLength")
    if size != local.size:
        return f"size differs (S3 {size}, local {local.size})"
    metadata = head.get("Metadata") or {}
    stored = metadata.get(META_SHA256)
    if stored != local.sha256_hex:
        return "sha256 metadata differs" if stored else "sha256 metadata missing"
    server = head.get("ChecksumSHA256")
    if server:
        value = str(server).partition("-")[0]
        if value not in {local.sha256_b64, local.composite_b64}:
            return "S3 ChecksumSHA256 differs"
    return None
