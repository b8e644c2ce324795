"""One service per data directory: an exclusive ``flock`` on ``data_dir/.collector.lock``.

Two services on one ``data_dir`` destroy each other's data: the second one's start-up
recovery finalizes (and deletes) the first one's open journals while the first keeps
writing to them. So the service takes this lock before anything touches a journal and holds
it for its whole life; a second service finds it taken and stops with a message naming the
holder (pid, host, start time), which the holder writes into the lock file.

- The lock is ``flock(LOCK_EX | LOCK_NB)`` on an open file description: the kernel drops it
  when the holder's process ends however it ends (crash, ``kill -9``), so there is never a
  stale lock to clean up, and the file is never deleted (deleting a lock file lets a
  waiter lock the old inode while a newcomer locks a new one). A second ``open`` of the
  file in the same process conflicts too (``flock`` is per open file, not per process), so
  in-process tests see what a second process sees.
- Containers sharing a volume on one host share the kernel, so ``docker compose up --scale``
  is refused as well. Network file systems differ: NFS v4 maps ``flock`` onto its own
  locks; a file system without locks makes :meth:`DataDirLock.acquire` fail (refusing to
  run unguarded rather than risk the data).
- Readers and the ``upload`` command do not take it: they only read finished files (and
  ``upload`` deletes or marks files already verified in S3), which is safe beside a
  running service.

Blocking but short (a few small syscalls): called once at start, before the event loop
has anything else to do.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Final

LOCK_NAME: Final = ".collector.lock"


class DataDirInUse(Exception):
    """Another process holds the lock; the message names it (fit to show the user)."""

    def __init__(self, message: str, holder: dict[str, object] | None) -> None:
        super().__init__(message)
        self.holder = holder


class DataDirLockError(Exception):
    """The lock file cannot be opened or locked (permissions, a file system without locks)."""


def _describe(holder: dict[str, object] | None) -> str:
    if holder is None:
        return "a process that left no details"
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}"
    )


def read_holder(path: Path) -> dict[str, object] | None:
    """The details the holder wrote into the lock file, or None if there are none (yet).

    Only the first JSON value counts: a holder rewrites the file in place (write, then
    truncate), so a reader racing it may see a shorter tail of older text after it.
    """
    try:
        text = path.read_text("utf-8", errors="replace")
        value, _ = json.JSONDecoder().raw_decode(text)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class DataDirLock:
    """The held lock of one data directory; :meth:`release` (or ``with``) lets it go.

    Owns the lock file's descriptor: closing it releases the lock.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path, *, started: datetime.datetime | None = None) -> DataDirLock:
        """Lock ``data_dir`` (which must exist) for this process, without waiting.

        Writes this process's pid, host name and ``started`` (default: now, UTC) into the
        lock file. Raises :class:`DataDirInUse` when another holder has it and
        :class:`DataDirLockError` when the file cannot be opened or locked.
        """
        path = data_dir / LOCK_NAME
        try:
            # No O_TRUNC: the current holder's details stay readable until we hold it.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DataDirLockError(f"cannot open lock file {str(path)!r}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(path)
            raise DataDirInUse(
                f"data directory {str(data_dir)!r} is in use by another collector "
                f"({_describe(holder)}; lock file {str(path)!r})",
                holder,
            ) from None
        except OSError as exc:
            os.close(fd)
            raise DataDirLockError(f"cannot lock {str(path)!r}: {exc.strerror}") from None
        lock = cls(path, fd)
        when = started or datetime.datetime.now(datetime.UTC)
        details = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        data = (json.dumps(details) + "\n").encode()
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        except OSError as exc:
            lock.release()
            raise DataDirLockError(
                f"cannot write lock file {str(path)!r}: {exc.strerror}"
            ) from None
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Let the lock go (idempotent). The file stays, with the last holder's details."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
