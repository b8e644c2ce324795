"""The real ``python -m collector`` with ``mode = "s3"`` against the fake Binance and moto."""

from __future__ import annotations

import io
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import trio

from tests.fakes.binance import FakeBinance, trade_frame
from tests.procs import leftovers, parquet_files, service_process, write_settings
from tests.s3server import FAKE_SECRET, S3Server, fake_aws_env, unique_bucket

pytestmark = pytest.mark.slow

TIMEOUT = 30.0
RECEIVED = "collector_messages_received_total"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_env(monkeypatch)


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBinance:
    server = FakeBinance()
    await nursery.start(server.run)
    return server


def s3_settings(tmp_path: Path, fake: FakeBinance, s3: S3Server, bucket: str) -> Path:
    config = write_settings(
        tmp_path / "settings.toml",
        data_dir=tmp_path / "data",
        base_url=fake.url,
        symbols=("btcusdt",),
        storage={"mode": "s3"},
    )
    with config.open("a") as f:
        f.write(
            f'\n[aws]\nbucket = "{bucket}"\nprefix = "raw"\n'
            f'endpoint_url = "{s3.endpoint_url}"\nhome_server_name = "box-1"\n'
        )
    return config


async def send_trades(fake: FakeBinance, count: int) -> None:
    now_us = time.time_ns() // 1000
    for i in range(count):
        assert (
            await fake.send(trade_frame("btcusdt", 1000 + i, "100.5", "0.1", now_us + i, False))
            == 1
        )


async def test_service_uploads_on_shutdown_and_deletes_local_files(
    fake: FakeBinance, s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.create_bucket(unique_bucket())
    config = s3_settings(tmp_path, fake, s3, bucket)
    data_dir = tmp_path / "data"
    async with service_process(config, tmp_path) as service:
        with trio.fail_after(TIMEOUT):
            await service.wait_started()
            await fake.wait_subscribed()
            await service.wait_ready()
            baseline = await service.metric(RECEIVED)
            await send_trades(fake, 20)
            await service.wait_metric(RECEIVED, baseline + 20)
            service.send_signal(signal.SIGTERM)
            assert await service.wait_exit() == 0
        assert FAKE_SECRET not in service.log_text()
    assert parquet_files(data_dir) == []
    assert leftovers(data_dir) == []
    keys = s3.keys(bucket)
    trade_keys = [k for k in keys if "/trades/" in k]
    assert trade_keys
    assert all(k.startswith("raw/binance/BTCUSDT/trades/box-1/") for k in trade_keys)
    rows = []
    for key in trade_keys:
        rows += pq.read_table(io.BytesIO(s3.get(bucket, key))).to_pylist()
    assert sorted(r["sequence"] for r in rows) == list(range(1000, 1020))


async def test_service_keeps_collecting_when_the_bucket_is_missing(
    fake: FakeBinance, s3: S3Server, tmp_path: Path
) -> None:
    bucket = unique_bucket()  # never created
    config = s3_settings(tmp_path, fake, s3, bucket)
    data_dir = tmp_path / "data"
    async with service_process(config, tmp_path) as service:
        with trio.fail_after(TIMEOUT):
            await service.wait_started()
            await fake.wait_subscribed()
            await service.wait_ready()
            while True:
                _status, body = await service.get("/health")
                health = json.loads(body)
                if "upload" in health["problems"]:
                    break
                await trio.sleep(0.05)
            assert health["status"] == "degraded"
            assert health["problems"]["upload"] == f"S3 bucket '{bucket}' does not exist"
            baseline = await service.metric(RECEIVED)
            await send_trades(fake, 10)
            await service.wait_metric(RECEIVED, baseline + 10)
            service.send_signal(signal.SIGTERM)
            assert await service.wait_exit() == 0
        failing = service.logged_prefix("upload failing")
        assert len(failing) == 1
    assert parquet_files(data_dir)  # everything kept locally for the next start
