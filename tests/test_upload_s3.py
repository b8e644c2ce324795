"""The uploader against a real S3-compatible server (moto) on 127.0.0.1, through boto3.

Nothing in boto3 is patched: every request crosses HTTP to the local server. Credentials are
fake (environment), the endpoint is always the local server, instance metadata is off.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import msgspec
import pytest
import trio

from collector.health import HealthState
from collector.metrics import Metrics
from collector.upload import UploadSettings, run_uploader
from collector.upload.digest import LocalDigest
from collector.upload.errors import VerifyMismatch
from collector.upload.settings import MiB
from collector.upload.store import Presence, S3Store, make_client
from collector.upload.uploader import Uploader
from tests.s3server import FAKE_SECRET, S3Server, fake_aws_env, unique_bucket

TIMEOUT = 20.0
T0_MS = 1_700_000_000_000  # 2023-11-14


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_env(monkeypatch)


def make_cfg(s3: S3Server, data_dir: Path, **changes: object) -> UploadSettings:
    base = UploadSettings(
        mode="s3",
        data_dir=str(data_dir),
        bucket=unique_bucket(),
        endpoint_url=s3.endpoint_url,
        initial_retry_delay_secs=0.05,
        max_retry_delay_secs=0.2,
        connect_timeout_secs=2.0,
        read_timeout_secs=5.0,
        max_attempts=1,
    )
    return msgspec.structs.replace(base, **changes)


def write_file(
    data_dir: Path,
    start_ms: int,
    *,
    size: int = 2000,
    server: str | None = None,
    symbol: str = "BTCUSDT",
    data_type: str = "trades",
) -> Path:
    directory = data_dir / "binance" / symbol / data_type
    if server:
        directory /= server
    directory = directory / "2023-11-14"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{start_ms}.parquet"
    path.write_bytes(os.urandom(size))
    return path


class Running:
    """A started ``run_uploader`` with its channel, health and metrics."""

    def __init__(
        self,
        send: trio.MemorySendChannel[Path],
        uploader: Uploader,
        health: HealthState,
        metrics: Metrics,
        scope: trio.CancelScope,
    ) -> None:
        self.send = send
        self.uploader = uploader
        self.health = health
        self.metrics = metrics
        self.scope = scope

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.sample(name, labels)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Poll ``condition`` (S3 is real I/O: no virtual clock); callers bound it."""
        while not condition():  # noqa: ASYNC110 - state of a real server, polled
            await trio.sleep(0.02)

    async def wait_idle(self) -> None:
        await self.wait_for(lambda: not self.uploader.pending and not self.uploader.scanning)


async def start_uploader(
    nursery: trio.Nursery, cfg: UploadSettings, store: S3Store | None = None
) -> Running:
    metrics = Metrics()
    health = HealthState(metrics)
    send, receive = trio.open_memory_channel[Path](16)
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[Uploader | None]) -> None:
        with scope:
            await run_uploader(cfg, receive, metrics, health, store=store, task_status=task_status)

    uploader = await nursery.start(run)
    assert uploader is not None
    return Running(send, uploader, health, metrics, scope)


@pytest.fixture
async def nursery_() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("server", [None, "tokyo-1"])
@pytest.mark.parametrize("prefix", ["", "raw/v1"])
async def test_s3_mode_uploads_verifies_and_deletes(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery, server: str | None, prefix: str
) -> None:
    cfg = make_cfg(s3, tmp_path, prefix=prefix)
    s3.create_bucket(cfg.bucket)
    files = [write_file(tmp_path, T0_MS + i, server=server) for i in range(3)]
    contents = {p.name: p.read_bytes() for p in files}
    with trio.fail_after(TIMEOUT):
        run = await start_uploader(nursery, cfg)
        for path in files:
            await run.send.send(path)
        await run.wait_for(lambda: run.sample("collector_uploads_completed_total") == 3)
        await run.wait_idle()
    level = f"{server}/" if server else ""
    head = f"{prefix}/" if prefix else ""
    expected = [
        f"{head}binance/BTCUSDT/trades/{level}2023-11-14/{T0_MS + i}.parquet" for i in range(3)
    ]
    assert s3.keys(cfg.bucket) == expected
    for key in expected:
        assert s3.get(cfg.bucket, key) == contents[key.rsplit("/", 1)[1]]
    assert not any(p.exists() for p in files)
    assert run.sample("collector_upload_bytes_total") == 3 * 2000
    assert run.sample("collector_upload_pending_files") == 0
    assert run.sample("collector_upload_seconds_count") == 3
    assert run.health.problems == {}
    run.send.close()


async def test_both_mode_keeps_files_and_does_not_upload_them_again(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = make_cfg(s3, tmp_path, mode="both")
    s3.create_bucket(cfg.bucket)
    files = [write_file(tmp_path, T0_MS + i) for i in range(2)]
    with trio.fail_after(TIMEOUT):
        first = await start_uploader(nursery, cfg)
        for path in files:
            await first.send.send(path)
        await first.wait_for(lambda: first.sample("collector_uploads_completed_total") == 2)
        first.scope.cancel()
        assert all(p.exists() for p in files)
        assert len(s3.keys(cfg.bucket)) == 2
        # A restart: the kept files are known to be in S3 and are not queued again.
        second = await start_uploader(nursery, cfg)
        await second.wait_idle()
    assert second.sample("collector_uploads_completed_total") == 0
    assert second.sample("collector_uploads_skipped_total") == 0
    assert all(p.exists() for p in files)


async def test_local_mode_uploads_nothing(s3: S3Server, tmp_path: Path) -> None:
    cfg = make_cfg(s3, tmp_path, mode="local")
    bucket = s3.create_bucket(cfg.bucket)
    path = write_file(tmp_path, T0_MS)
    send, receive = trio.open_memory_channel[Path](4)
    metrics = Metrics()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            started = await nursery.start(run_uploader, cfg, receive, metrics, HealthState(metrics))
            assert started is None
            async with send:
                await send.send(path)
    assert path.exists()
    assert s3.keys(bucket) == []


# ----------------------------------------------------------------------------- failures


async def test_outage_everything_arrives_and_nothing_is_deleted_early(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    own = S3Server()  # this test stops its server
    own.start()
    try:
        cfg = make_cfg(own, tmp_path)
        own.create_bucket(cfg.bucket)
        first = write_file(tmp_path, T0_MS)
        contents = {first: first.read_bytes()}
        with trio.fail_after(TIMEOUT):
            run = await start_uploader(nursery, cfg)
            await run.send.send(first)
            await run.wait_for(lambda: run.sample("collector_uploads_completed_total") == 1)

            await trio.to_thread.run_sync(own.stop)
            during = [write_file(tmp_path, T0_MS + 10 + i) for i in range(4)]
            contents |= {p: p.read_bytes() for p in during}
            for path in during:
                await run.send.send(path)
            # Several failed rounds: every file is still here, health says why.
            await run.wait_for(
                lambda: run.sample("collector_upload_failures_total", {"stage": "put"}) >= 8
            )
            assert all(p.exists() for p in during)
            assert "S3 unreachable" in run.health.problems["upload"]
            assert run.health.report()["status"] == "degraded"
            assert run.sample("collector_upload_pending_files") == 4
            assert run.sample("collector_upload_pending_bytes") == 4 * 2000
            assert run.sample("collector_upload_oldest_pending_age_seconds") > 0
            assert run.sample("collector_upload_s3_available") == 0

            await trio.to_thread.run_sync(own.start)
            await run.wait_idle()
        assert run.sample("collector_uploads_completed_total") == 5
        assert "upload" not in run.health.problems
        assert run.sample("collector_upload_s3_available") == 1
        for path, data in contents.items():
            assert not path.exists()
            key = path.relative_to(tmp_path).as_posix()
            assert own.get(cfg.bucket, key) == data
        failing = [r for r in caplog.records if r.getMessage().startswith("upload failing")]
        assert len(failing) == 1  # one clear line, not one per retry
    finally:
        own.stop()


class TamperingStore(S3Store):
    """Replaces the object with other bytes of the same size just before the first verify
    (as if it were altered in S3 after the upload); records what it saw on the retry."""

    def __init__(self, client: object, cfg: UploadSettings, s3: S3Server, local: Path) -> None:
        super().__init__(client, cfg)
        self.s3 = s3
        self.local = local
        self.verifies = 0
        self.local_existed_on_retry: bool | None = None

    def presence(self, key: str, local: LocalDigest) -> Presence:
        if self.verifies:
            self.local_existed_on_retry = self.local.exists()
        return super().presence(key, local)

    def verify(self, key: str, local: LocalDigest) -> None:
        self.verifies += 1
        if self.verifies == 1:
            self.s3.client().put_object(
                Bucket=self.bucket, Key=key, Body=os.urandom(local.size), Metadata={"x": "y"}
            )
        super().verify(key, local)


async def test_verification_mismatch_keeps_the_file_and_retries(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = make_cfg(s3, tmp_path)
    s3.create_bucket(cfg.bucket)
    path = write_file(tmp_path, T0_MS)
    data = path.read_bytes()
    store = TamperingStore(make_client(cfg), cfg, s3, path)
    with trio.fail_after(TIMEOUT):
        run = await start_uploader(nursery, cfg, store)
        await run.send.send(path)
        await run.wait_for(lambda: run.sample("collector_uploads_completed_total") == 1)
    assert run.sample("collector_upload_failures_total", {"stage": "verify"}) == 1
    assert store.verifies == 2
    assert store.local_existed_on_retry is True
    assert not path.exists()
    assert s3.get(cfg.bucket, path.relative_to(tmp_path).as_posix()) == data


@pytest.mark.parametrize("alteration", ["truncated", "replaced", "no-metadata"])
async def test_verify_detects_an_altered_object(
    s3: S3Server, tmp_path: Path, alteration: str
) -> None:
    cfg = make_cfg(s3, tmp_path)
    s3.create_bucket(cfg.bucket)
    path = write_file(tmp_path, T0_MS, size=5000)
    data = path.read_bytes()
    store = S3Store(make_client(cfg), cfg)
    from collector.upload.digest import digest_file

    local = digest_file(path, threshold=cfg.multipart_threshold_bytes, part_bytes=cfg.part_bytes)
    key = "k"
    await trio.to_thread.run_sync(store.put, path, key, local)
    await trio.to_thread.run_sync(store.verify, key, local)  # as uploaded: fine
    meta = {"sha256": local.sha256_hex}
    client = s3.client()
    if alteration == "truncated":
        client.put_object(Bucket=cfg.bucket, Key=key, Body=data[:-1], Metadata=meta)
    elif alteration == "replaced":
        # Same size and the same metadata, other bytes: S3's own checksum tells.
        client.put_object(
            Bucket=cfg.bucket,
            Key=key,
            Body=os.urandom(5000),
            Metadata=meta,
            ChecksumAlgorithm="SHA256",
        )
    else:
        client.put_object(Bucket=cfg.bucket, Key=key, Body=data)
    with pytest.raises(VerifyMismatch):
        await trio.to_thread.run_sync(store.verify, key, local)


async def test_restart_uploads_leftovers_and_skips_what_is_already_there(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = make_cfg(s3, tmp_path)
    s3.create_bucket(cfg.bucket)
    # A previous run: one file went up but was not deleted (crash before the delete).
    done = write_file(tmp_path, T0_MS)
    first = await trio.to_thread.run_sync(make_client, cfg)
    from collector.upload.digest import digest_file

    local = digest_file(done, threshold=cfg.multipart_threshold_bytes, part_bytes=cfg.part_bytes)
    S3Store(first, cfg).put(done, done.relative_to(tmp_path).as_posix(), local)
    leftovers = [write_file(tmp_path, T0_MS + i, symbol="ETHUSDT") for i in range(3)]
    day = leftovers[0].parent
    (day / f"{T0_MS + 100}.journal.arrows").write_bytes(b"open file")
    (day / f".{T0_MS + 101}.parquet.tmp").write_bytes(b"finalizing")
    owned = day / f"{T0_MS + 102}.parquet"
    owned.write_bytes(b"renamed, journal not yet deleted")
    (day / f"{T0_MS + 102}.journal.arrows").write_bytes(b"j")
    with trio.fail_after(TIMEOUT):
        run = await start_uploader(nursery, cfg)
        await run.wait_idle()
    assert run.sample("collector_uploads_completed_total") == 3
    assert run.sample("collector_uploads_skipped_total") == 1
    assert not done.exists()
    assert not any(p.exists() for p in leftovers)
    assert owned.exists()
    assert sorted(p.name for p in day.iterdir()) == sorted(
        [
            f"{T0_MS + 100}.journal.arrows",
            f".{T0_MS + 101}.parquet.tmp",
            owned.name,
            f"{T0_MS + 102}.journal.arrows",
        ]
    )
    assert len(s3.keys(cfg.bucket)) == 4


async def test_multipart_upload_is_verified(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = make_cfg(s3, tmp_path, multipart_threshold_mb=1.0, multipart_chunk_mb=5.0)
    s3.create_bucket(cfg.bucket)
    path = write_file(tmp_path, T0_MS, size=11 * MiB + 123)
    data = path.read_bytes()
    with trio.fail_after(TIMEOUT):
        run = await start_uploader(nursery, cfg)
        await run.send.send(path)
        await run.wait_idle()
    assert run.sample("collector_uploads_completed_total") == 1
    key = path.relative_to(tmp_path).as_posix()
    head = s3.client().head_object(Bucket=cfg.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert head["ChecksumSHA256"]
    assert s3.get(cfg.bucket, key) == data
    assert not path.exists()


async def test_missing_bucket_is_reported_once_and_nothing_is_lost(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg(s3, tmp_path)
    files = [write_file(tmp_path, T0_MS + i) for i in range(2)]
    with trio.fail_after(TIMEOUT):
        run = await start_uploader(nursery, cfg)
        await run.wait_for(lambda: "upload" in run.health.problems)
        assert run.health.problems["upload"] == f"S3 bucket '{cfg.bucket}' does not exist"
        for path in files:  # the writer's channel keeps flowing meanwhile
            await run.send.send(path)
        await run.wait_for(
            lambda: run.sample("collector_upload_failures_total", {"stage": "put"}) >= 4
        )
        assert all(p.exists() for p in files)
        assert run.health.report()["status"] == "degraded"
        s3.create_bucket(cfg.bucket)
        await run.wait_idle()
    assert "upload" not in run.health.problems
    assert len(s3.keys(cfg.bucket)) == 2
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert messages == [f"upload failing: S3 bucket '{cfg.bucket}' does not exist"]


async def test_refused_credentials_are_reported_and_never_shown(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = make_cfg(s3, tmp_path)
    s3.create_bucket(cfg.bucket)
    path = write_file(tmp_path, T0_MS)
    await trio.to_thread.run_sync(s3.set_auth, True)
    try:
        with trio.fail_after(TIMEOUT):
            run = await start_uploader(nursery, cfg)
            await run.send.send(path)
            await run.wait_for(
                lambda: run.sample("collector_upload_failures_total", {"stage": "put"}) >= 2
            )
            problem = run.health.problems["upload"]
            assert "refused the credentials (InvalidAccessKeyId)" in problem or "denied" in problem
            assert path.exists()
            report = json.dumps(run.health.report())
            assert FAKE_SECRET not in report
            assert FAKE_SECRET not in caplog.text
            assert FAKE_SECRET not in run.metrics.render().decode()
    finally:
        await trio.to_thread.run_sync(s3.set_auth, False)
    with trio.fail_after(TIMEOUT):
        await run.wait_idle()
    assert not path.exists()


async def test_shutdown_during_an_outage_ends_promptly_and_keeps_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = S3Server()
    own.start()
    cfg = make_cfg(own, tmp_path)
    own.create_bucket(cfg.bucket)
    await trio.to_thread.run_sync(own.stop)
    files = [write_file(tmp_path, T0_MS + i) for i in range(5)]
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            run = await start_uploader(
                nursery,
                make_cfg(
                    own,
                    tmp_path,
                    bucket=cfg.bucket,
                    initial_retry_delay_secs=5.0,
                    max_retry_delay_secs=5.0,
                ),
            )
            await run.wait_for(lambda: run.sample("collector_upload_s3_available") == 0)
            run.send.close()  # the writer is done: shutdown
    assert all(p.exists() for p in files)
    assert "left for the next start" in caplog.text


async def test_a_stalled_s3_does_not_block_cancellation(tmp_path: Path) -> None:
    """A server that accepts connections and never answers: cancelling returns at once."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        cfg = UploadSettings(
            mode="s3",
            data_dir=str(tmp_path),
            bucket=unique_bucket(),
            endpoint_url=f"http://127.0.0.1:{port}",
            connect_timeout_secs=30.0,
            read_timeout_secs=30.0,
            max_attempts=1,
        )
        write_file(tmp_path, T0_MS)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                run = await start_uploader(nursery, cfg)
                await trio.sleep(0.5)  # the workers are now blocked in their threads
                assert run.uploader.pending
                nursery.cancel_scope.cancel()
    finally:
        listener.close()
