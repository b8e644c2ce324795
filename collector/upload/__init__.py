"""Upload: finished Parquet files -> S3, verified before any local file is deleted.

- :func:`run_uploader`: the service's uploader task (modes ``s3`` and ``both``);
- :func:`run_upload_command`: ``python -m collector upload``;
- :class:`UploadSettings`: the settings all of them read.

Names are imported on first use, so that a service in ``local`` mode never loads boto3
(tens of MB of memory it would not use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collector.upload.command import run_upload_command, upload_all
    from collector.upload.settings import UploadSettings
    from collector.upload.store import S3Store, make_client
    from collector.upload.uploader import Uploader, open_store, run_uploader

_WHERE = {
    "run_upload_command": "command",
    "upload_all": "command",
    "UploadSettings": "settings",
    "S3Store": "store",
    "make_client": "store",
    "Uploader": "uploader",
    "open_store": "uploader",
    "run_uploader": "uploader",
}

__all__ = [
    "S3Store",
    "UploadSettings",
    "Uploader",
    "make_client",
    "open_store",
    "run_upload_command",
    "run_uploader",
    "upload_all",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
