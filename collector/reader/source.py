"""Where the data is: a local data directory or an S3 prefix, as one pyarrow file system.

:func:`open_source` turns ``"data"``, ``"/srv/collector/data"`` or ``"s3://bucket/prefix"``
into a :class:`Source`: a ``pyarrow.fs.FileSystem`` and the root path inside it, below
which the collector's layout starts (``{exchange}/{symbol}/{data_type}/...``). Everything
else in the reader lists and reads through it, so a data directory and its S3 copy are read
the same way.

S3 goes through pyarrow's own client (``pyarrow.fs.S3FileSystem``): credentials come from
the standard AWS chain (environment, shared files, instance or container role), the region
from the argument, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else ``us-east-1``; an
S3-compatible store (MinIO, R2) needs ``endpoint_url``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow.fs as pafs

from collector.reader.errors import UsageError

S3_SCHEME: Final = "s3://"


@dataclass(frozen=True)
class Source:
    """A file system and the root of the collector's layout in it.

    ``root`` has no trailing slash: an absolute local path, or ``bucket/prefix`` for S3.
    ``location`` is what the caller gave, for messages.
    """

    filesystem: pafs.FileSystem
    root: str
    location: str

    def path(self, *parts: str) -> str:
        """``root/part/...`` (parts are joined with ``/``, empty ones skipped)."""
        return "/".join([self.root, *(p for p in parts if p)])


def open_source(
    location: str | os.PathLike[str],
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> Source:
    """The :class:`Source` for a data directory or an ``s3://bucket[/prefix]`` location.

    Lists nothing and contacts nothing: a missing prefix shows as no data later. Raises
    :class:`UsageError` for a local directory that does not exist, an S3 location without a
    bucket, or ``endpoint_url``/``region`` given for a local directory.
    """
    text = os.fspath(location)
    if text.startswith(S3_SCHEME):
        root = text[len(S3_SCHEME) :].strip("/")
        if not root or root.startswith("/"):
            raise UsageError(f"no bucket in {text!r}: give s3://BUCKET[/PREFIX]")
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        filesystem = pafs.S3FileSystem(
            region=region or "us-east-1",
            endpoint_override=endpoint_url,
        )
        return Source(filesystem, root, text)
    if endpoint_url is not None or region is not None:
        raise UsageError(f"an endpoint URL or region is for s3:// locations, not {text!r}")
    directory = Path(text).expanduser().absolute()
    if not directory.is_dir():
        raise UsageError(f"no data directory at {text!r}")
    return Source(pafs.LocalFileSystem(), directory.as_posix(), text)
