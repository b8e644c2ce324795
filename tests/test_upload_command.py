"""``python -m collector upload`` (as ``run_upload_command``)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio

from collector.upload import UploadSettings, run_upload_command
from tests.s3server import S3Server, fake_aws_env, unique_bucket
from tests.test_upload_s3 import T0_MS, write_file

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_env(monkeypatch)


def cfg_for(s3: S3Server, data_dir: Path, **changes: object) -> UploadSettings:
    base = UploadSettings(
        mode="s3",
        data_dir=str(data_dir),
        bucket=unique_bucket(),
        endpoint_url=s3.endpoint_url,
        initial_retry_delay_secs=0.05,
        max_retry_delay_secs=0.1,
        max_attempts=1,
    )
    return msgspec.structs.replace(base, **changes)


async def run_command(cfg: UploadSettings) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await trio.to_thread.run_sync(partial(run_upload_command, cfg, stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()


async def test_upload_command_uploads_everything_and_exits_0(s3: S3Server, tmp_path: Path) -> None:
    cfg = cfg_for(s3, tmp_path)
    s3.create_bucket(cfg.bucket)
    files = [write_file(tmp_path, T0_MS + i, size=1000) for i in range(4)]
    (files[0].parent / f"{T0_MS + 50}.journal.arrows").write_bytes(b"j")
    with trio.fail_after(TIMEOUT):
        code, out, _ = await run_command(cfg)
    assert code == 0
    assert out.strip() == (
        "upload: 4/4 files in S3 (4 uploaded, 0 already there), 4.0 KB uploaded, 0 failures"
    )
    assert not any(p.exists() for p in files)
    assert len(s3.keys(cfg.bucket)) == 4
    with trio.fail_after(TIMEOUT):  # nothing left: a second run has nothing to do
        code, out, _ = await run_command(cfg)
    assert (code, out.strip()) == (
        0,
        "upload: 0/0 files in S3 (0 uploaded, 0 already there), 0 B uploaded, 0 failures",
    )


async def test_upload_command_in_both_mode_keeps_files(s3: S3Server, tmp_path: Path) -> None:
    cfg = cfg_for(s3, tmp_path, mode="both")
    s3.create_bucket(cfg.bucket)
    files = [write_file(tmp_path, T0_MS + i) for i in range(2)]
    with trio.fail_after(TIMEOUT):
        assert (await run_command(cfg))[0] == 0
        code, out, _ = await run_command(cfg)
    assert code == 0
    assert "0/0 files" in out  # the markers say they are verified
    assert all(p.exists() for p in files)


async def test_upload_command_fails_on_a_missing_bucket(s3: S3Server, tmp_path: Path) -> None:
    cfg = cfg_for(s3, tmp_path)
    path = write_file(tmp_path, T0_MS)
    with trio.fail_after(TIMEOUT):
        code, out, _ = await run_command(cfg)
    assert code == 1
    assert f"S3 bucket '{cfg.bucket}' does not exist" in out
    assert "1 failures" in out
    assert path.exists()


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: chmod 0 does not make a file unreadable",
)
async def test_upload_command_counts_files_that_fail(s3: S3Server, tmp_path: Path) -> None:
    cfg = cfg_for(s3, tmp_path)
    s3.create_bucket(cfg.bucket)
    good = write_file(tmp_path, T0_MS)
    bad = write_file(tmp_path, T0_MS + 1)
    bad.chmod(0)  # unreadable
    try:
        assert not _readable(bad)
        with trio.fail_after(TIMEOUT):
            code, out, _ = await run_command(cfg)
    finally:
        bad.chmod(0o644)
    assert code == 1
    assert "1/2 files in S3" in out
    assert "1 failures" in out
    assert not good.exists()
    assert bad.exists()


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except PermissionError:
        return False
    return True


def test_upload_command_needs_a_bucket(tmp_path: Path) -> None:
    err = io.StringIO()
    code = run_upload_command(UploadSettings(mode="s3", data_dir=str(tmp_path)), stderr=err)
    assert code == 2
    assert "aws.bucket is not set" in err.getvalue()


async def test_files_left_under_a_shard_level_are_uploaded_with_it(
    s3: S3Server, tmp_path: Path
) -> None:
    """Before sharding stopped moving the data, a shard wrote under ``shard-I-of-N/``. Such
    leftovers are not stranded: they go up under the key their own path gives (beside
    what that shard uploaded before), and the same stream's new files under the plain
    layout."""
    cfg = cfg_for(s3, tmp_path, prefix="md")
    s3.create_bucket(cfg.bucket)
    old = write_file(tmp_path, T0_MS, server="shard-1-of-3")
    new = write_file(tmp_path, T0_MS + 5)
    with trio.fail_after(TIMEOUT):
        code, out, _ = await run_command(cfg)
    assert code == 0, out
    assert not old.exists()
    assert not new.exists()
    assert s3.keys(cfg.bucket) == [
        f"md/binance/BTCUSDT/trades/2023-11-14/{T0_MS + 5}.parquet",
        f"md/binance/BTCUSDT/trades/shard-1-of-3/2023-11-14/{T0_MS}.parquet",
    ]
