"""The data directory's lock: one holder, named to the next; released however it ends.

``flock`` locks belong to an open file, so a second acquire in this same process is refused
exactly as a second process would be; the crash case uses a real child process.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from collector.storage.lock import (
    LOCK_NAME,
    DataDirInUse,
    DataDirLock,
    DataDirLockError,
    read_holder,
)

STARTED = datetime.datetime(2026, 3, 1, 12, 30, 5, tzinfo=datetime.UTC)


def test_second_acquire_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    with DataDirLock.acquire(tmp_path, started=STARTED) as held:
        assert held.held
        with pytest.raises(DataDirInUse) as refused:
            DataDirLock.acquire(tmp_path)
    message = str(refused.value)
    assert f"data directory {str(tmp_path)!r} is in use by another collector" in message
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "started 2026-03-01T12:30:05Z" in message
    assert str(tmp_path / LOCK_NAME) in message
    assert refused.value.holder == {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": "2026-03-01T12:30:05Z",
    }


def test_released_lock_can_be_taken_again_and_the_file_stays(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path)
    first.release()
    first.release()  # idempotent
    assert not first.held
    assert (tmp_path / LOCK_NAME).exists()  # never deleted (see the module's docstring)
    with DataDirLock.acquire(tmp_path) as second:
        assert second.held


def test_new_holder_replaces_longer_old_details(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps({"pid": 1, "host": "x" * 300, "started": "long ago"}) + "\n")
    with DataDirLock.acquire(tmp_path, started=STARTED):
        assert json.loads(path.read_text()) == {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": "2026-03-01T12:30:05Z",
        }


def test_holder_without_details_is_still_refused(tmp_path: Path) -> None:
    """A holder between opening and writing (or an unreadable file): refused all the same."""
    path = tmp_path / LOCK_NAME
    with DataDirLock.acquire(tmp_path):
        path.write_text("not json")
        assert read_holder(path) is None
        with pytest.raises(DataDirInUse, match="a process that left no details") as refused:
            DataDirLock.acquire(tmp_path)
    assert refused.value.holder is None


def test_reader_ignores_a_stale_tail_after_the_details(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    path.write_text('{"pid": 7, "host": "a", "started": "s"}\n"host": "older-and-longer"}\n')
    assert read_holder(path) == {"pid": 7, "host": "a", "started": "s"}


def test_missing_directory_is_a_lock_error(tmp_path: Path) -> None:
    with pytest.raises(DataDirLockError, match="cannot open lock file"):
        DataDirLock.acquire(tmp_path / "missing")


HOLD = """
import sys
from pathlib import Path
from collector.storage.lock import DataDirLock
lock = DataDirLock.acquire(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()  # until killed
"""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "held\n"
        with pytest.raises(DataDirInUse, match=f"pid {child.pid} on host"):
            DataDirLock.acquire(tmp_path)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # The kernel released it with the process: no clean-up, no waiting.
    with DataDirLock.acquire(tmp_path) as lock:
        assert lock.held
