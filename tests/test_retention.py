"""Local retention (``storage.retention_days``): which finished files go, and when.

Ages come from explicit modification times (``os.utime``); the periodic task runs on
virtual time with a wall clock that moves with it. Verification in S3 is the uploader's
real marker, written by a real upload to moto on 127.0.0.1.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio

from collector.clock import trio_wall_clock
from collector.retention import SECONDS_PER_DAY, Sweep, run_retention, sweep
from collector.storage.layout import journal_path
from collector.upload import UploadSettings, run_upload_command
from collector.upload.backlog import marker_path, write_marker
from tests.s3server import S3Server, fake_aws_env, unique_bucket
from tests.test_upload_s3 import T0_MS, write_file

NOW = 1_800_000_000.0  # seconds since the epoch: "now" for the sweeps below
DAY = SECONDS_PER_DAY


def aged(path: Path, days: float) -> Path:
    """Set ``path``'s modification time to ``days`` before NOW."""
    when = NOW - days * DAY
    os.utime(path, (when, when))
    return path


def test_local_mode_deletes_only_finished_files_older_than_the_limit(tmp_path: Path) -> None:
    old = aged(write_file(tmp_path, T0_MS, size=100), 8)
    older = aged(write_file(tmp_path, T0_MS + 1, size=50, symbol="ETHUSDT"), 30)
    young = aged(write_file(tmp_path, T0_MS + 2), 6.9)
    # Not finished: a journal beside it (the writer or its recovery owns it), and the rest.
    owned = aged(write_file(tmp_path, T0_MS + 3), 40)
    journal = journal_path(owned)
    journal.write_bytes(b"j")
    aged(journal, 40)
    tmp = owned.with_name(f".{T0_MS + 4}.parquet.tmp")
    tmp.write_bytes(b"t")
    aged(tmp, 40)
    other = tmp_path / "notes.txt"
    other.write_text("keep")
    aged(other, 40)

    assert sweep(tmp_path, NOW - 7 * DAY, None) == Sweep(deleted=2, deleted_bytes=150)
    assert not old.exists()
    assert not older.exists()
    assert all(p.exists() for p in (young, owned, journal, tmp, other))
    assert young.parent.is_dir()  # directories stay


def test_s3_modes_delete_only_files_verified_in_the_current_bucket(tmp_path: Path) -> None:
    verified = write_file(tmp_path, T0_MS, size=100)
    aged(verified, 10)
    write_marker(verified, "bucket", "k/0", "00")
    unverified = aged(write_file(tmp_path, T0_MS + 1), 10)
    elsewhere = aged(write_file(tmp_path, T0_MS + 2), 10)
    write_marker(elsewhere, "another-bucket", "k/2", "00")
    changed = aged(write_file(tmp_path, T0_MS + 3), 20)
    write_marker(changed, "bucket", "k/3", "00")
    aged(changed, 10)  # modified after it was verified: the marker no longer matches
    young = write_file(tmp_path, T0_MS + 4)
    aged(young, 1)
    write_marker(young, "bucket", "k/4", "00")

    done = sweep(tmp_path, NOW - 7 * DAY, "bucket")
    assert done == Sweep(deleted=1, deleted_bytes=100, unverified=3)
    assert not verified.exists()
    assert not marker_path(verified).exists()
    assert all(p.exists() for p in (unverified, elsewhere, changed, young, marker_path(young)))


async def test_the_task_sweeps_at_start_then_every_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    wall = trio_wall_clock(int(NOW * 1e6))  # wall time NOW at virtual time 0
    first = aged(write_file(tmp_path, T0_MS), 2.5)
    second = aged(write_file(tmp_path, T0_MS + 1), 1.4)  # 2 days old at virtual 0.6 day
    sweeps: list[tuple[float, int]] = []
    swept = trio.Event()

    def on_sweep(done: Sweep) -> None:
        nonlocal swept
        sweeps.append((trio.current_time(), done.deleted))
        swept.set()
        swept = trio.Event()

    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_retention,
                tmp_path,
                2,
                None,
                wall_clock=wall,
                interval_secs=3600,
                on_sweep=on_sweep,
            )
        )
        # Started: the first sweep is done.
        assert sweeps == [(0.0, 1)]
        assert not first.exists()
        assert second.exists()
        # Waiting on an event, not sleeping: virtual time moves only to the next sweep.
        while second.exists():
            await swept.wait()
        nursery.cancel_scope.cancel()
    # Hourly; `second` went at the first sweep after it turned 2 days old (0.6 day).
    assert [t for t, _ in sweeps] == [3600.0 * i for i in range(16)]
    assert [n for _, n in sweeps] == [1] + [0] * 14 + [1]


# ----------------------------------------------------------------------------- with S3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


async def test_both_mode_deletes_old_files_once_uploaded_and_verified(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_aws_env(monkeypatch)
    cfg = UploadSettings(
        mode="both",
        data_dir=str(tmp_path),
        bucket=unique_bucket(),
        endpoint_url=s3.endpoint_url,
        initial_retry_delay_secs=0.05,
        max_retry_delay_secs=0.1,
        max_attempts=1,
    )
    s3.create_bucket(cfg.bucket)
    uploaded = [aged(write_file(tmp_path, T0_MS + i), 10) for i in range(2)]
    with trio.fail_after(30):
        code = await trio.to_thread.run_sync(
            partial(run_upload_command, cfg, stdout=io.StringIO(), stderr=io.StringIO())
        )
    assert code == 0
    assert all(marker_path(p).exists() for p in uploaded)
    later = aged(write_file(tmp_path, T0_MS + 5), 10)  # as old, never uploaded

    assert sweep(tmp_path, NOW - 7 * DAY, cfg.bucket).deleted == 2
    assert not any(p.exists() for p in uploaded)
    assert later.exists()
    assert len(s3.keys(cfg.bucket)) == 2  # S3 keeps its copies
    # The same files in local mode would all have gone; in another bucket, none.
    other = msgspec.structs.replace(cfg, bucket="not-this-one")
    assert sweep(tmp_path, NOW - 7 * DAY, other.bucket).deleted == 0
    assert later.exists()
