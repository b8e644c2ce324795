"""Object keys that collide: a later file never overwrites an earlier object (moto, real HTTP).

The collision the writer cannot see: in ``s3`` mode the first file of a name is uploaded and
deleted, so a later file of the same stream that starts in the same millisecond (after a
restart) gets the same local name and so the same key. Here the "later file" is written at
the very path the first one had, after the first is gone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from collector.upload.backlog import read_marker
from collector.upload.digest import LocalDigest, digest_file
from collector.upload.settings import MiB, UploadSettings
from collector.upload.store import KeyTaken, S3Store, make_client
from tests.s3server import S3Server, fake_aws_env
from tests.test_upload_s3 import T0_MS, TIMEOUT, Running, make_cfg, start_uploader, write_file


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_env(monkeypatch)


DAY = "binance/BTCUSDT/trades/2023-11-14"


def key_of(start_ms: int) -> str:
    return f"{DAY}/{start_ms}.parquet"


def rewrite(path: Path, size: int) -> bytes:
    """A new file at ``path`` (the later file of the same name); returns its bytes."""
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def upload_one(run: Running, path: Path, done: int) -> None:
    await run.send.send(path)
    await run.wait_for(lambda: run.sample("collector_uploads_completed_total") == done)
    await run.wait_idle()


@pytest.mark.parametrize("size", [2000, 11 * MiB + 5], ids=["put", "multipart"])
async def test_a_later_file_of_the_same_name_gets_the_next_key(
    s3: S3Server,
    tmp_path: Path,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    size: int,
) -> None:
    caplog.set_level(logging.INFO, logger="collector.upload.uploader")
    cfg = make_cfg(s3, tmp_path, multipart_threshold_mb=1.0, multipart_chunk_mb=5.0)
    s3.create_bucket(cfg.bucket)
    path = write_file(tmp_path, T0_MS, size=size)
    first = path.read_bytes()
    with trio.fail_after(TIMEOUT):
        run = await start_uploader(nursery, cfg)
        await upload_one(run, path, 1)
        assert not path.exists()  # uploaded, verified, deleted: the writer may reuse the name
        second = rewrite(path, size)
        await upload_one(run, path, 2)
    assert s3.keys(cfg.bucket) == [key_of(T0_MS), key_of(T0_MS + 1)]
    assert s3.get(cfg.bucket, key_of(T0_MS)) == first
    assert s3.get(cfg.bucket, key_of(T0_MS + 1)) == second
    assert not path.exists()  # deleted only after the object at the new key was verified
    # A multipart upload that met a taken key was aborted: no parts left behind.
    assert not s3.client().list_multipart_uploads(Bucket=cfg.bucket).get("Uploads")
    assert run.sample("collector_upload_key_collisions_total") == 1
    assert run.sample("collector_upload_failures_total", {"stage": "put"}) == 0
    assert run.sample("collector_upload_failures_total", {"stage": "verify"}) == 0
    uploaded = [r for r in caplog.records if r.getMessage() == "uploaded"]
    assert [getattr(r, "key", None) for r in uploaded] == [key_of(T0_MS), key_of(T0_MS + 1)]
    moved = [r for r in caplog.records if "next free key" in r.getMessage()]
    assert [(getattr(r, "key", None), getattr(r, "key_offset", None)) for r in moved] == [
        (key_of(T0_MS + 1), 1)
    ]


async def test_a_chain_of_taken_keys_is_walked_and_nothing_is_replaced(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Two earlier objects at start_ms and start_ms + 1; a later file at each name too."""
    cfg = make_cfg(s3, tmp_path, upload_concurrency=1)
    s3.create_bucket(cfg.bucket)
    earlier = [write_file(tmp_path, T0_MS + i) for i in range(2)]
    contents = [p.read_bytes() for p in earlier]
    with trio.fail_after(TIMEOUT):
        run = await start_uploader(nursery, cfg)
        # The backlog scan at start finds both (sending them too raced it: the count could
        # pass 1 before the first wait looked, and that wait then never ended).
        await run.wait_for(lambda: run.sample("collector_uploads_completed_total") == 2)
        await run.wait_idle()
        for n, path in enumerate(earlier, start=3):
            contents.append(rewrite(path, 2000))
            await upload_one(run, path, n)
    keys = [key_of(T0_MS + i) for i in range(4)]
    assert s3.keys(cfg.bucket) == keys
    assert [s3.get(cfg.bucket, k) for k in keys] == contents
    assert run.sample("collector_upload_key_collisions_total") == 2


class RecordingStore(S3Store):
    """Records the keys it is asked to put to."""

    def __init__(self, client: object, cfg: UploadSettings) -> None:
        super().__init__(client, cfg)
        self.puts: list[str] = []

    def put(self, path: Path, key: str, local: LocalDigest, *, replace: bool = False) -> None:
        self.puts.append(key)
        super().put(path, key, local, replace=replace)


async def test_a_file_from_before_skips_a_key_held_by_another_object(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Files found at start are HEADed first: a key holding other bytes is passed by without
    sending the file, and a file already at its next key is recognized there."""
    cfg = make_cfg(s3, tmp_path)
    s3.create_bucket(cfg.bucket)
    store = RecordingStore(make_client(cfg), cfg)
    client = s3.client()
    other = os.urandom(3000)
    client.put_object(Bucket=cfg.bucket, Key=key_of(T0_MS), Body=other)
    leftover = write_file(tmp_path, T0_MS)
    data = leftover.read_bytes()
    with trio.fail_after(TIMEOUT):
        first = await start_uploader(nursery, cfg, store)  # the backlog scan finds it
        await first.wait_idle()
    assert first.sample("collector_uploads_completed_total") == 1
    assert store.puts == [key_of(T0_MS + 1)]
    assert s3.get(cfg.bucket, key_of(T0_MS)) == other
    assert s3.get(cfg.bucket, key_of(T0_MS + 1)) == data
    assert not leftover.exists()

    # The same file again from before (as if the delete had not happened): found at +1.
    first.scope.cancel()
    leftover.write_bytes(data)
    with trio.fail_after(TIMEOUT):
        second = await start_uploader(nursery, cfg)
        await second.wait_idle()
    assert second.sample("collector_uploads_skipped_total") == 1
    assert second.sample("collector_uploads_completed_total") == 0
    assert s3.keys(cfg.bucket) == [key_of(T0_MS), key_of(T0_MS + 1)]
    assert not leftover.exists()


class TamperingStore(S3Store):
    """Alters the object just before its first verify; records the keys it was asked about."""

    def __init__(self, client: object, cfg: UploadSettings, s3: S3Server) -> None:
        super().__init__(client, cfg)
        self.s3 = s3
        self.verified: list[str] = []

    def verify(self, key: str, local: LocalDigest) -> None:
        self.verified.append(key)
        if len(self.verified) == 2:  # the second file's first verify
            self.s3.client().put_object(Bucket=self.bucket, Key=key, Body=os.urandom(local.size))
        super().verify(key, local)


async def test_a_moved_file_is_verified_at_its_new_key_and_kept_until_it_matches(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The retry writes over the key the file itself took (no further bump), and the local
    file survives until the object there is verified."""
    cfg = make_cfg(s3, tmp_path)
    s3.create_bucket(cfg.bucket)
    store = TamperingStore(make_client(cfg), cfg, s3)
    path = write_file(tmp_path, T0_MS)
    first = path.read_bytes()
    with trio.fail_after(TIMEOUT):
        run = await start_uploader(nursery, cfg, store)
        await upload_one(run, path, 1)
        second = rewrite(path, 2000)
        await run.send.send(path)
        await run.wait_for(
            lambda: run.sample("collector_upload_failures_total", {"stage": "verify"}) == 1
        )
        await run.wait_for(lambda: run.sample("collector_uploads_completed_total") == 2)
    assert store.verified == [key_of(T0_MS), key_of(T0_MS + 1), key_of(T0_MS + 1)]
    assert s3.keys(cfg.bucket) == [key_of(T0_MS), key_of(T0_MS + 1)]
    assert s3.get(cfg.bucket, key_of(T0_MS)) == first
    assert s3.get(cfg.bucket, key_of(T0_MS + 1)) == second
    assert not path.exists()


class EchoingStore(S3Store):
    """Sends every PUT twice, as botocore does when the first answer is lost on the way."""

    def put(self, path: Path, key: str, local: LocalDigest, *, replace: bool = False) -> None:
        super().put(path, key, local, replace=replace)
        super().put(path, key, local, replace=replace)


async def test_a_put_whose_answer_was_lost_keeps_its_own_key(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = make_cfg(s3, tmp_path)
    s3.create_bucket(cfg.bucket)
    store = EchoingStore(make_client(cfg), cfg)
    path = write_file(tmp_path, T0_MS)
    data = path.read_bytes()
    local = digest_file(path, threshold=cfg.multipart_threshold_bytes, part_bytes=cfg.part_bytes)
    with pytest.raises(KeyTaken):  # what the repeated request meets
        await trio.to_thread.run_sync(store.put, path, "probe", local)
    with trio.fail_after(TIMEOUT):
        run = await start_uploader(nursery, cfg, store)
        await upload_one(run, path, 1)
    assert s3.keys(cfg.bucket) == [key_of(T0_MS), "probe"]
    assert s3.get(cfg.bucket, key_of(T0_MS)) == data
    assert run.sample("collector_upload_key_collisions_total") == 0
    assert run.sample("collector_upload_failures_total", {"stage": "put"}) == 0


async def test_no_free_key_fails_the_put_and_keeps_the_file(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("collector.upload.placement.MAX_KEY_OFFSET", 2)
    cfg = make_cfg(s3, tmp_path)
    s3.create_bucket(cfg.bucket)
    client = s3.client()
    for i in range(3):
        client.put_object(Bucket=cfg.bucket, Key=key_of(T0_MS + i), Body=b"taken")
    path = write_file(tmp_path, T0_MS)
    with trio.fail_after(TIMEOUT):
        run = await start_uploader(nursery, cfg)
        await run.send.send(path)
        await run.wait_for(
            lambda: run.sample("collector_upload_failures_total", {"stage": "put"}) >= 2
        )
    assert path.exists()
    assert "no free object key" in run.health.problems["upload"]
    assert [s3.get(cfg.bucket, key_of(T0_MS + i)) for i in range(3)] == [b"taken"] * 3
    assert s3.keys(cfg.bucket) == [key_of(T0_MS + i) for i in range(3)]


async def test_both_mode_marker_remembers_the_moved_key(
    s3: S3Server, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A kept file verified at its next key is not queued again at the next start."""
    cfg = make_cfg(s3, tmp_path, mode="both")
    s3.create_bucket(cfg.bucket)
    s3.client().put_object(Bucket=cfg.bucket, Key=key_of(T0_MS), Body=b"earlier")
    path = write_file(tmp_path, T0_MS)
    with trio.fail_after(TIMEOUT):
        first = await start_uploader(nursery, cfg)
        await upload_one(first, path, 1)
        first.scope.cancel()
        second = await start_uploader(nursery, cfg)
        await second.wait_idle()
    marker = read_marker(path)
    assert marker is not None
    assert (marker.key, marker.offset) == (key_of(T0_MS + 1), 1)
    assert path.exists()
    assert second.sample("collector_uploads_completed_total") == 0
    assert second.sample("collector_uploads_skipped_total") == 0
    assert s3.get(cfg.bucket, key_of(T0_MS)) == b"earlier"
