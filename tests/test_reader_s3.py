"""The reader on an S3 prefix: data written by the real writer (under a server level),
uploaded by the real ``upload`` command to moto on 127.0.0.1, read back through pyarrow's
S3 file system, and compared with the same data read from the local directory."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from collector.reader import BookView, DataReader
from collector.reader.times import from_us
from collector.upload import UploadSettings, run_upload_command
from tests.reader_data import DISCONNECT, GAP, Scenario, record, scenario, us
from tests.s3server import S3Server, fake_aws_env, unique_bucket

PREFIX = "market/raw"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_env(monkeypatch)


@pytest.fixture(scope="module")
def data() -> Scenario:
    return scenario()


@pytest.fixture
def uploaded(s3: S3Server, data: Scenario, tmp_path: Path) -> tuple[Path, str]:
    """The scenario recorded under the server ``home-1`` and uploaded (``both`` mode keeps
    the local files): the local directory and the bucket."""
    directory = tmp_path / "data"
    paths = trio.run(record, directory, data.events, "home-1")
    settings = UploadSettings(
        mode="both",
        data_dir=str(directory),
        bucket=unique_bucket(),
        prefix=PREFIX,
        endpoint_url=s3.endpoint_url,
        max_attempts=1,
    )
    s3.create_bucket(settings.bucket)
    out = io.StringIO()
    assert run_upload_command(settings, stdout=out, stderr=io.StringIO()) == 0, out.getvalue()
    keys = s3.keys(settings.bucket)
    assert len(keys) == len(paths)
    assert all(key.startswith(f"{PREFIX}/") and "/home-1/" in key for key in keys)
    return directory, settings.bucket


def test_an_s3_prefix_reads_like_the_data_directory(
    s3: S3Server, uploaded: tuple[Path, str]
) -> None:
    directory, bucket = uploaded
    local = DataReader(directory)
    remote = DataReader(f"s3://{bucket}/{PREFIX}", endpoint_url=s3.endpoint_url)

    assert remote.catalog() == local.catalog()
    assert len(remote.catalog()) == 5
    window = {"start": "2024-05-01T23:00:00Z", "end": "2024-05-02T00:30:00Z"}
    trades = remote.table("trades", exchange="binance", **window)
    assert trades.num_rows > 0
    assert trades.equals(local.table("trades", exchange="binance", **window))
    assert remote.holes() == local.holes()
    assert [h.event for h in remote.holes(start=from_us(DISCONNECT), end=from_us(GAP + 1))] == [
        "subscribe_error",
        "disconnected",
        "gap",
    ]
    replay = list(remote.book("binance", "BTCUSDT", window["start"], window["end"], depth=5))
    assert replay == list(local.book("binance", "BTCUSDT", window["start"], window["end"], depth=5))
    assert sum(isinstance(item, BookView) for item in replay) > 100
    rel = remote.relation("ticker", start=from_us(us("2024-05-01T22:00:00")))
    assert rel.count("*").fetchall() == [(local.table("ticker").num_rows,)]


def test_an_empty_or_missing_prefix_has_no_data(s3: S3Server) -> None:
    bucket = s3.create_bucket()
    remote = DataReader(f"s3://{bucket}/nothing-here", endpoint_url=s3.endpoint_url)
    assert remote.catalog() == []
    assert remote.holes() == []
    assert remote.table("trades").num_rows == 0
