"""The uploader task: finished files -> S3, verified, then deleted (``s3``) or kept (``both``).

```
run_uploader
├── backlog scan     finished files a previous run left (once, at start)
├── bucket check     HEAD bucket until it answers: a clear message early, not at the first file
├── N workers        one file at a time each; every blocking call in a worker thread
└── (its own body)   receives finished paths from the writer until the channel closes
```

One file's attempt: SHA-256 of the local bytes -> (only for files not fresh from the writer,
or being retried) HEAD: already there and matching? -> PUT onto a free key only (multipart at
or above the threshold) -> HEAD: size and checksums match (:mod:`collector.upload.digest`)?
-> delete the local file (``s3``) or record a marker beside it (``both``). A failed stage
keeps the local file, counts ``collector_upload_failures_total{stage}``, puts the file back
at the end of the queue and pauses all workers for a capped, jittered backoff; retries go on
forever.

A put never replaces another file's object (:mod:`collector.upload.placement`): a file
whose key is taken goes to its next key, ``start_ms`` + 1, logged with the key used and
counted in ``collector_upload_key_collisions_total``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import attrs
import trio

from collector.backoff import Backoff
from collector.health import HealthState
from collector.metrics import Metrics, UploadMetrics
from collector.storage.layout import relative_key
from collector.upload.backlog import (
    FileInfo,
    read_marker,
    remove_marker,
    scan_finished,
    stat_file,
    write_marker,
)
from collector.upload.digest import LocalDigest, digest_file
from collector.upload.errors import StoreRefused, StoreUnavailable, UploadError
from collector.upload.keys import object_key
from collector.upload.placement import KeyedStore, place
from collector.upload.settings import UploadSettings
from collector.upload.store import S3Store, make_client

logger = logging.getLogger(__name__)

PROBLEM: Final = "upload"
T = TypeVar("T")


class Store(KeyedStore, Protocol):
    """What the uploader needs from S3 (:class:`~collector.upload.store.S3Store`)."""

    bucket: str

    def verify(self, key: str, local: LocalDigest) -> None: ...
    def check_bucket(self) -> None: ...


class Outcome(Enum):
    UPLOADED = "uploaded"  # put and verified
    PRESENT = "present"  # already verified in S3: not uploaded again
    GONE = "gone"  # the local file disappeared: nothing to do
    INVALID = "invalid"  # not a file of the data layout: never uploaded
    FAILED = "failed"  # retry later


@attrs.define
class Pending:
    info: FileInfo
    # HEAD before PUT: for files from a previous run, and for retries.
    check_existing: bool
    attempts: int = 0
    # The key this file holds (start_ms + key_offset) once placed: a retry starts there and
    # may write over it; a key this file did not write is never replaced.
    key_offset: int = 0
    owns_key: bool = False


@attrs.frozen
class Attempt:
    outcome: Outcome
    path: Path
    size: int = 0
    stage: str | None = None
    error: Exception | None = None
    key: str | None = None  # where the file is in S3 (UPLOADED, and PRESENT when checked)
    key_offset: int = 0  # how far past the file's own key (taken keys skipped)


class Uploader:
    """The state of one upload run: the queue of pending files and the workers' pacing.

    Shared by :func:`run_uploader` (forever, until its input closes) and the ``upload``
    command (``attempts_per_file`` tries each, then gives up).
    """

    def __init__(
        self,
        cfg: UploadSettings,
        store: Store,
        metrics: UploadMetrics,
        health: HealthState | None = None,
        *,
        attempts_per_file: int | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.health = health
        self.attempts_per_file = attempts_per_file
        self.on_attempt = on_attempt
        self.data_dir = Path(cfg.data_dir)
        self.limiter = trio.CapacityLimiter(cfg.upload_concurrency)
        self.backoff = Backoff(cfg.initial_retry_delay_secs, cfg.max_retry_delay_secs)
        self.pending: dict[Path, Pending] = {}
        self.ready: deque[Path] = deque()
        self.input_open = True
        self.scanning = True
        self.stopping = False
        self.resume_at = 0.0
        self.given_up: list[Path] = []
        self._changed = trio.Event()
        self._stop = trio.Event()
        self._problem: str | None = None
        self._oldest_mtime: float | None = None
        metrics.pending_files.set(0)
        metrics.pending_bytes.set(0)
        metrics.available.set(1)
        metrics.oldest_pending_age.set_function(self._oldest_age)

    # ------------------------------------------------------------------ the queue

    def add(self, info: FileInfo, *, check_existing: bool) -> bool:
        """Queue a file unless it is already pending. Returns whether it was added."""
        if info.path in self.pending:
            return False
        self.pending[info.path] = Pending(info, check_existing)
        self.ready.append(info.path)
        self.metrics.pending_files.inc()
        self.metrics.pending_bytes.inc(info.size)
        if self._oldest_mtime is None or info.mtime < self._oldest_mtime:
            self._oldest_mtime = info.mtime
        self._notify()
        return True

    def _remove(self, path: Path) -> None:
        entry = self.pending.pop(path)
        self.metrics.pending_files.dec()
        self.metrics.pending_bytes.dec(entry.info.size)
        if entry.info.mtime == self._oldest_mtime:
            self._oldest_mtime = min((p.info.mtime for p in self.pending.values()), default=None)

    def _oldest_age(self) -> float:
        oldest = self._oldest_mtime
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def close_input(self, *, stopping: bool) -> None:
        """No more files will be added. ``stopping``: the service is shutting down, so a
        file that fails now is left for the next start instead of being retried."""
        self.input_open = False
        self.stopping = stopping
        if stopping:
            self._stop.set()
        self._notify()

    def scan_done(self) -> None:
        self.scanning = False
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _next(self) -> Path | None:
        """The next file to try, after any backoff pause; None when all is done."""
        while True:
            while not self._stop.is_set() and trio.current_time() < self.resume_at:
                with trio.move_on_at(self.resume_at):
                    await self._stop.wait()
            if self.ready:
                return self.ready.popleft()
            if not self.input_open and not self.scanning:
                return None
            await self._changed.wait()

    # ------------------------------------------------------------------ tasks

    async def run_worker(self) -> None:
        """Upload pending files until the input is closed and nothing is left."""
        while (path := await self._next()) is not None:
            attempt = await self.attempt(path)
            self._settle(attempt)

    async def scan_backlog(self) -> int:
        """Queue the finished files already on disk. Returns how many were queued."""
        try:
            found = await self._thread(self.find_backlog)
            added = 0
            for info in found:
                added += self.add(info, check_existing=True)
            if added:
                logger.info("uploading files left from before", extra={"files": added})
            return added
        finally:
            self.scan_done()

    async def check_bucket(self) -> None:
        """HEAD the bucket until it answers, reporting what is wrong meanwhile."""
        backoff = Backoff(self.cfg.initial_retry_delay_secs, self.cfg.max_retry_delay_secs)
        while True:
            try:
                await self._thread(self.store.check_bucket)
            except UploadError as exc:
                self._report_problem(exc, stage=None)
                with trio.move_on_after(backoff.next_delay()):
                    await self._stop.wait()
                if self._stop.is_set():
                    return
            else:
                self._report_ok()
                return

    async def receive(self, files: trio.MemoryReceiveChannel[Path]) -> None:
        """Queue each path from the writer (fresh files: no HEAD before PUT)."""
        async for path in files:
            try:
                info = await trio.to_thread.run_sync(stat_file, path)
            except FileNotFoundError:
                logger.warning("finished file vanished before upload", extra={"path": str(path)})
                continue
            self.add(info, check_existing=False)

    # ------------------------------------------------------------------ one attempt

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(
            fn, *args, limiter=self.limiter, abandon_on_cancel=True
        )

    def _relative(self, path: Path) -> str:
        """``path`` below ``data_dir`` (blocking: it resolves links; ``ValueError`` outside)."""
        return relative_key(path.resolve(), self.data_dir.resolve())

    def _object_key(self, relative: str, offset: int = 0) -> str:
        """The object key of the file at ``relative``, bumped by ``offset`` (pure)."""
        return object_key(
            relative, prefix=self.cfg.prefix, template=self.cfg.key_template, offset=offset
        )

    def _marked(self, path: Path) -> bool:
        """Whether a ``both``-mode marker shows ``path`` verified, as it is, at one of its keys
        in this bucket (raises ``ValueError`` off the data layout)."""
        marker = read_marker(path)
        return (
            marker is not None
            and marker.bucket == self.store.bucket
            and marker.key == self._object_key(self._relative(path), marker.offset)
        )

    def find_backlog(self) -> list[FileInfo]:
        """Finished files, less those a ``both``-mode marker shows verified as they are."""
        found = scan_finished(self.data_dir)
        if self.cfg.deletes_after_upload:
            return found
        todo = []
        for info in found:
            try:
                if self._marked(info.path):
                    continue
            except ValueError:
                pass  # reported when its attempt finds it off-layout
            todo.append(info)
        return todo

    def _prepare(self, path: Path) -> tuple[str, LocalDigest] | None:
        """(relative path, digest), or None if a ``both``-mode marker says it is verified.

        Raises ``ValueError`` off the data layout (checked here, before any hashing)."""
        relative = self._relative(path)
        self._object_key(relative)
        if not self.cfg.deletes_after_upload and self._marked(path):
            return None
        local = digest_file(
            path, threshold=self.cfg.multipart_threshold_bytes, part_bytes=self.cfg.part_bytes
        )
        return relative, local

    def _finish(self, path: Path, key: str, offset: int, local: LocalDigest) -> None:
        if self.cfg.deletes_after_upload:
            path.unlink()
            remove_marker(path)
        else:
            try:
                write_marker(path, self.store.bucket, key, local.sha256_hex, offset=offset)
            except OSError as exc:  # only costs a HEAD at the next start
                logger.warning(
                    "cannot write upload marker", extra={"path": str(path), "error": str(exc)}
                )

    async def attempt(self, path: Path) -> Attempt:
        """Try ``path`` once: returns what happened (errors are returned, not raised)."""
        entry = self.pending[path]
        entry.attempts += 1
        started = trio.current_time()
        stage = "put"
        try:
            prepared = await self._thread(self._prepare, path)
            if prepared is None:
                return Attempt(Outcome.PRESENT, path)
            relative, local = prepared
            placed = await self._thread(
                functools.partial(
                    place,
                    self.store,
                    path,
                    local,
                    functools.partial(self._object_key, relative),
                    start=entry.key_offset,
                    owned=entry.owns_key,
                    check_existing=entry.check_existing,
                )
            )
            key, present = placed.key, placed.present
            # The object exists from now on: a retry HEADs first and may write over it.
            entry.key_offset, entry.owns_key, entry.check_existing = placed.offset, True, True
            if not present:
                stage = "verify"
                await self._thread(self.store.verify, key, local)
            stage = "delete"
            with contextlib.suppress(FileNotFoundError):  # deleted already: fine
                await self._thread(self._finish, path, key, entry.key_offset, local)
        except FileNotFoundError:
            return Attempt(Outcome.GONE, path)
        except ValueError as exc:  # off-layout path (relative_key / object_key)
            return Attempt(Outcome.INVALID, path, error=exc)
        except (UploadError, OSError) as exc:
            return Attempt(Outcome.FAILED, path, stage=stage, error=exc)
        outcome = Outcome.PRESENT if present else Outcome.UPLOADED
        if not present:
            self.metrics.seconds.observe(trio.current_time() - started)
        return Attempt(outcome, path, size=local.size, key=key, key_offset=entry.key_offset)

    def _settle(self, attempt: Attempt) -> None:
        """Book an attempt: metrics, health, the queue and the pacing."""
        path = attempt.path
        if self.on_attempt is not None:
            self.on_attempt(attempt)
        if attempt.outcome is not Outcome.FAILED:
            if attempt.outcome is Outcome.UPLOADED:
                self.metrics.completed.inc()
                self.metrics.bytes_uploaded.inc(attempt.size)
                where = {"path": str(path), "key": attempt.key}
                logger.info("uploaded", extra=where | {"bytes": attempt.size})
                if attempt.key_offset:
                    self.metrics.key_collisions.inc()
                    logger.warning(
                        "object key held another file: stored under the next free key",
                        extra=where | {"key_offset": attempt.key_offset},
                    )
            elif attempt.outcome is Outcome.PRESENT:
                self.metrics.skipped.inc()
            elif attempt.outcome is Outcome.INVALID:
                logger.warning(
                    "not uploading a file outside the data layout",
                    extra={"path": str(path), "error": str(attempt.error)},
                )
            elif attempt.outcome is Outcome.GONE:
                logger.warning("file vanished before upload", extra={"path": str(path)})
            self._remove(path)
            if attempt.outcome in (Outcome.UPLOADED, Outcome.PRESENT):
                self.backoff.reset()
                self.resume_at = 0.0
                self._report_ok()
            return
        assert attempt.stage is not None
        assert attempt.error is not None
        self.metrics.failed.labels(attempt.stage).inc()
        error = attempt.error
        self._report_problem(error, stage=attempt.stage, path=path)
        outage = isinstance(error, StoreUnavailable | StoreRefused)
        entry = self.pending[path]
        if self.stopping:
            self._remove(path)
            if outage and self.ready:
                left = len(self.ready)
                for other in list(self.ready):
                    self._remove(other)
                self.ready.clear()
                logger.warning(
                    "S3 unavailable while stopping: files left for the next start",
                    extra={"files": left + 1},
                )
            return
        if self.attempts_per_file is not None and entry.attempts >= self.attempts_per_file:
            self._remove(path)
            self.given_up.append(path)
            return
        self.ready.append(path)
        self.resume_at = trio.current_time() + self.backoff.next_delay()
        self._notify()

    # ------------------------------------------------------------------ reporting

    def _report_problem(
        self, error: Exception, *, stage: str | None, path: Path | None = None
    ) -> None:
        if isinstance(error, UploadError):
            message = str(error)
        else:
            message = f"cannot read local file: {error}"
        if isinstance(error, StoreUnavailable | StoreRefused):
            self.metrics.available.set(0)
        if self.health is not None:
            self.health.set_problem(PROBLEM, message)
        extra = {"stage": stage, "path": str(path) if path else None}
        if message != self._problem:
            logger.error("upload failing: %s", message, extra=extra)
        else:
            logger.debug("upload still failing: %s", message, extra=extra)
        self._problem = message

    def _report_ok(self) -> None:
        self.metrics.available.set(1)
        if self._problem is not None:
            logger.info("uploads working again")
            self._problem = None
        if self.health is not None:
            self.health.clear_problem(PROBLEM)


async def open_store(cfg: UploadSettings) -> S3Store:
    """An ``S3Store`` for ``cfg`` (the client is made in a worker thread)."""
    client = await trio.to_thread.run_sync(make_client, cfg)
    return S3Store(client, cfg)


async def run_uploader(
    cfg: UploadSettings,
    files: trio.MemoryReceiveChannel[Path],
    metrics: Metrics,
    health: HealthState,
    *,
    store: Store | None = None,
    task_status: trio.TaskStatus[Uploader | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Upload every finished file to S3 (modes ``s3`` and ``both``) until ``files`` closes.

    In ``local`` mode it only logs each finished path (no client, no S3) and hands back None.

    Owns ``files`` (the receive end of the writer's finished-files channel) and closes it.
    At start it queues the finished files already under ``data_dir`` and HEADs the bucket;
    then it queues each path received. ``upload_concurrency`` workers upload, verify and
    delete (``s3``) or mark (``both``); failures are retried forever with capped, jittered
    backoff and reported as the ``"upload"`` health problem (one log line per new reason).

    When ``files`` closes (the writer finished its drain at shutdown) it keeps uploading what
    is queued; a file that fails then is left on disk for the next start, and an S3 outage
    ends the drain at once. Cancellation stops it at any point: worker threads are abandoned
    (boto3's own timeouts end them) and nothing unverified has been deleted.

    ``started()`` hands back the :class:`Uploader` (its queue, for tests) once
    the workers run. Raises only on bugs and on a client that cannot be made (bad
    ``endpoint_url``); S3 errors never end it.
    """
    with files:
        if not cfg.uploads:
            task_status.started(None)
            async for path in files:  # local mode: finished files stay where they are
                logger.info("file finished", extra={"path": str(path)})
            return
        upload_metrics = metrics.upload
        if store is None:
            store = await open_store(cfg)
        uploader = Uploader(cfg, store, upload_metrics, health)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(uploader.scan_backlog)
            nursery.start_soon(uploader.check_bucket)
            for _ in range(cfg.upload_concurrency):
                nursery.start_soon(uploader.run_worker)
            task_status.started(uploader)
            await uploader.receive(files)
            uploader.close_input(stopping=True)
