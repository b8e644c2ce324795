"""``python -m collector upload``: upload every finished local file not yet verified in S3.

The same attempt as the service's uploader (verify, then delete in ``s3`` mode or mark in
``both``/``local`` mode), over the files under ``data_dir``, a few tries each, then exit:
0 if every file is in S3, 1 if any failed, 2 if settings forbid it (no bucket). A progress
line on a terminal (stderr), and a summary line on stdout.

It may run beside a service on the same ``data_dir`` and does not take the service's lock
(:mod:`collector.storage.lock`): it only touches finished files (never a journal or a file
being finalized), a file that both upload is placed once (HEAD, then a conditional put that
finds the other's identical object), and a file the other deleted first counts as skipped.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Final, TextIO

import attrs
import trio

from collector.config import Settings
from collector.metrics import Metrics
from collector.upload.errors import UploadError
from collector.upload.settings import UploadSettings
from collector.upload.uploader import Attempt, Outcome, Store, Uploader, open_store

logger = logging.getLogger(__name__)

ATTEMPTS_PER_FILE: Final = 3
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2


@attrs.define
class UploadSummary:
    files: int = 0  # files found to upload
    uploaded: int = 0
    present: int = 0  # already verified in S3
    bytes: int = 0
    failures: int = 0  # files given up on
    skipped: int = 0  # off-layout or vanished
    error: str | None = None  # the store refused or could not be reached at all

    @property
    def ok(self) -> bool:
        return self.failures == 0 and self.error is None

    def line(self) -> str:
        text = (
            f"upload: {self.uploaded + self.present}/{self.files} files in S3 "
            f"({self.uploaded} uploaded, {self.present} already there), "
            f"{_size(self.bytes)} uploaded, {self.failures} failures"
        )
        if self.skipped:
            text += f", {self.skipped} skipped"
        if self.error:
            text += f"; {self.error}"
        return text


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class _Progress:
    """One self-overwriting status line on a terminal; nothing otherwise."""

    def __init__(self, stream: TextIO | None, summary: UploadSummary) -> None:
        self.stream = stream
        self.summary = summary

    def update(self) -> None:
        if self.stream is None:
            return
        s = self.summary
        done = s.uploaded + s.present + s.failures + s.skipped
        width = 30
        filled = width * done // s.files if s.files else width
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r[{bar}] {done}/{s.files} files, {_size(s.bytes)}, {s.failures} failed "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()


async def upload_all(
    cfg: UploadSettings,
    *,
    store: Store | None = None,
    progress: TextIO | None = None,
    attempts_per_file: int = ATTEMPTS_PER_FILE,
) -> UploadSummary:
    """Upload the finished files under ``cfg.data_dir``; ``progress``: a terminal stream."""
    summary = UploadSummary()
    if store is None:
        store = await open_store(cfg)
    bar = _Progress(progress, summary)

    def book(attempt: Attempt) -> None:
        if attempt.outcome is Outcome.UPLOADED:
            summary.uploaded += 1
            summary.bytes += attempt.size
        elif attempt.outcome is Outcome.PRESENT:
            summary.present += 1
        elif attempt.outcome in (Outcome.GONE, Outcome.INVALID):
            summary.skipped += 1
        bar.update()

    uploader = Uploader(
        cfg,
        store,
        Metrics().upload,
        attempts_per_file=attempts_per_file,
        on_attempt=book,
    )
    uploader.close_input(stopping=False)
    try:
        await trio.to_thread.run_sync(store.check_bucket, abandon_on_cancel=True)
    except UploadError as exc:  # the message says what to fix
        summary.error = str(exc)
        summary.failures = len(await trio.to_thread.run_sync(uploader.find_backlog))
        summary.files = summary.failures
        return summary
    summary.files = await uploader.scan_backlog()
    bar.update()
    async with trio.open_nursery() as nursery:
        for _ in range(cfg.upload_concurrency):
            nursery.start_soon(uploader.run_worker)
    summary.failures = len(uploader.given_up)
    bar.close()
    return summary


def run_upload_command(
    settings: Settings | UploadSettings,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The ``upload`` command (call it outside Trio). Returns the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    cfg = (
        settings if isinstance(settings, UploadSettings) else UploadSettings.from_settings(settings)
    )
    if not cfg.bucket:
        print("collector: error: aws.bucket is not set: nothing to upload to", file=stderr)
        return EXIT_CONFIG
    if not Path(cfg.data_dir).is_dir():
        print(
            f"upload: data directory {cfg.data_dir!r} does not exist: nothing to upload",
            file=stdout,
        )
        return EXIT_OK
    progress = stderr if stderr.isatty() else None
    summary = trio.run(lambda: upload_all(cfg, progress=progress))
    logger.info(
        "upload finished",
        extra={"files": summary.files, "bytes": summary.bytes, "failures": summary.failures},
    )
    print(summary.line(), file=stdout)
    return EXIT_OK if summary.ok else EXIT_FAILED
