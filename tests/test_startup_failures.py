"""What a user sees when ``python -m collector`` cannot start: one line, a documented code.

Each failure runs the real command line as a subprocess: exactly one stderr line starts
with ``collector: error:``, there is no traceback, every other stderr line is a JSON log
record, and the exit status is the documented one (1: the environment may clear it; 2: a
restart will not). Beside a running service, a second one is refused while ``upload``
works. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from tests.fakes.binance import FakeBinance
from tests.procs import clean_env, service_process, write_settings
from tests.s3server import S3Server, fake_aws_env, unique_bucket
from tests.test_upload_s3 import T0_MS, write_file

pytestmark = pytest.mark.slow

TIMEOUT = 60.0  # generous: a busy CI machine starts Python slowly


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBinance:
    server = FakeBinance()
    await nursery.start(server.run)
    return server


async def run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    """``python -m collector ARGS`` to the end: (exit status, stdout, stderr)."""
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-m", "collector", *args],
            cwd=cwd,
            env=clean_env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def the_error_line(stderr: str) -> str:
    """The one ``collector: error:`` line; every other line must be a JSON log record."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("collector: error: ")]
    assert len(errors) == 1, stderr
    for line in stderr.splitlines():
        if line != errors[0]:
            assert isinstance(json.loads(line), dict), line
    return errors[0]


async def test_second_service_on_a_data_dir_exits_2_naming_the_holder(
    fake: FakeBinance, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    config = write_settings(tmp_path / "settings.toml", data_dir=data_dir, base_url=fake.url)
    async with service_process(config, tmp_path, name="first") as first:
        with trio.fail_after(TIMEOUT):
            await first.wait_started()
            await fake.wait_subscribed()
        code, out, err = await run_cli("--config", str(config), "run", cwd=tmp_path)
        assert code == 2
        assert out == ""
        line = the_error_line(err)
        assert line.startswith(f"collector: error: data directory {str(data_dir)!r} is in use")
        assert f"pid {first.process.pid} on host {socket.gethostname()}" in line
        assert len(fake.clients) == 1  # the refused one never connected
        with trio.fail_after(TIMEOUT):
            first.send_signal(signal.SIGTERM)
            assert await first.wait_exit() == 0


async def test_port_in_use_exits_1_before_contacting_the_venue(
    fake: FakeBinance, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_settings(
            tmp_path / "settings.toml",
            data_dir=tmp_path / "data",
            base_url=fake.url,
            metrics_port=port,
        )
        code, out, err = await run_cli("--config", str(config), "run", cwd=tmp_path)
    assert code == 1
    assert out == ""
    assert the_error_line(err) == (
        f"collector: error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(collector.metrics_host, collector.metrics_port)"
    )
    assert fake.clients == []


async def test_data_dir_under_a_file_exits_1(fake: FakeBinance, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    data_dir = blocker / "data"
    config = write_settings(tmp_path / "settings.toml", data_dir=data_dir, base_url=fake.url)
    code, out, err = await run_cli("--config", str(config), "run", cwd=tmp_path)
    assert code == 1
    assert out == ""
    line = the_error_line(err)
    assert line.startswith(f"collector: error: data directory {str(data_dir)!r} is not writable")
    assert "Not a directory" in line
    assert fake.clients == []


@contextmanager
def unwritable(directory: Path) -> Iterator[str]:
    """Make ``directory`` refuse new files; yields the error's text. Root writes through
    permissions, so as root the directory is made immutable (``chattr +i``) instead."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield "Permission denied"
        finally:
            directory.chmod(0o700)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr")
    made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i not possible here: {made.stderr.decode().strip()}")
    try:
        yield "Operation not permitted"
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


async def test_data_dir_without_write_permission_exits_1(fake: FakeBinance, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = write_settings(tmp_path / "settings.toml", data_dir=data_dir, base_url=fake.url)
    with unwritable(data_dir) as reason:
        code, out, err = await run_cli("--config", str(config), "run", cwd=tmp_path)
    assert code == 1
    assert out == ""
    # Opening the lock file is the first write into an existing directory.
    assert the_error_line(err) == (
        f"collector: error: cannot open lock file {str(data_dir / '.collector.lock')!r}: {reason}"
    )
    assert fake.clients == []


async def test_symbols_of_an_unknown_exchange_is_usage_exit_2(tmp_path: Path) -> None:
    code, out, err = await run_cli("symbols", "foo", cwd=tmp_path)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("collector: error: unknown exchange 'foo' (known: binance, ")


async def test_upload_works_beside_a_running_service(
    fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_aws_env(monkeypatch)  # the subprocesses inherit these
    s3 = S3Server()
    await trio.to_thread.run_sync(s3.start)
    try:
        bucket = unique_bucket()
        await trio.to_thread.run_sync(s3.create_bucket, bucket)
        data_dir = tmp_path / "data"
        config = write_settings(
            tmp_path / "settings.toml",
            data_dir=data_dir,
            base_url=fake.url,
            aws={"bucket": bucket, "endpoint_url": s3.endpoint_url},
        )
        async with service_process(config, tmp_path) as service:
            with trio.fail_after(TIMEOUT):
                await service.wait_started()
            files = [write_file(data_dir, T0_MS + i, size=500) for i in range(3)]
            code, out, err = await run_cli("--config", str(config), "upload", cwd=tmp_path)
            assert (code, "Traceback" in err) == (0, False), err
            assert out.startswith("upload: 3/3 files in S3 (3 uploaded, 0 already there)"), out
            assert len(await trio.to_thread.run_sync(s3.keys, bucket)) == len(files)
            assert service.process.returncode is None  # undisturbed, still holding its lock
            with trio.fail_after(TIMEOUT):
                service.send_signal(signal.SIGTERM)
                assert await service.wait_exit() == 0
    finally:
        await trio.to_thread.run_sync(s3.stop)
