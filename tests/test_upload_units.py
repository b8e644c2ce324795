"""Upload building blocks without a server: keys, checksums, the HEAD check, the scan."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from collector.settings_check import parse_settings
from collector.upload.backlog import (
    has_marker,
    marker_path,
    read_marker,
    scan_finished,
    write_marker,
)
from collector.upload.digest import LocalDigest, digest_file, head_mismatch
from collector.upload.keys import DEFAULT_KEY_TEMPLATE, check_key_template, object_key
from collector.upload.settings import MiB, UploadSettings
from collector.upload.store import make_client
from tests.s3server import FAKE_KEY_ID, fake_aws_env

REL = "binance/BTCUSDT/trades/2023-11-14/1699999999999.parquet"
REL_SERVER = "binance/BTCUSDT/trades/tokyo-1/2023-11-14/1699999999999.parquet"


@pytest.mark.parametrize(
    ("relative", "prefix", "expected"),
    [
        (REL, "", "binance/BTCUSDT/trades/2023-11-14/1699999999999.parquet"),
        (REL, "raw", "raw/binance/BTCUSDT/trades/2023-11-14/1699999999999.parquet"),
        (REL, "/a/b/", "a/b/binance/BTCUSDT/trades/2023-11-14/1699999999999.parquet"),
        (REL_SERVER, "raw", "raw/binance/BTCUSDT/trades/tokyo-1/2023-11-14/1699999999999.parquet"),
    ],
)
def test_object_key_default_template(relative: str, prefix: str, expected: str) -> None:
    assert object_key(relative, prefix=prefix) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            DEFAULT_KEY_TEMPLATE,
            "raw/binance/BTCUSDT/trades/tokyo-1/2023-11-14/1700000000001.parquet",
        ),
        ("{date}/{name}", "2023-11-14/1700000000001.parquet"),
    ],
)
def test_object_key_offset_bumps_start_ms(template: str, expected: str) -> None:
    """The next keys of a file whose own key is taken: the layout's start_ms + 1 rule."""
    assert object_key(REL_SERVER, prefix="raw", template=template, offset=2) == expected
    assert object_key(REL_SERVER, prefix="raw", offset=0) == object_key(REL_SERVER, prefix="raw")
    with pytest.raises(ValueError, match="offset"):
        object_key(REL_SERVER, offset=-1)


def test_object_key_custom_template() -> None:
    template = "{prefix}/{date}/{exchange}-{symbol}-{data_type}/{server}/{name}"
    assert object_key(REL_SERVER, prefix="p", template=template) == (
        "p/2023-11-14/binance-BTCUSDT-trades/tokyo-1/1699999999999.parquet"
    )


@pytest.mark.parametrize(
    "relative",
    [
        "1699999999999.parquet",
        "binance/BTCUSDT/trades/2023-11-14/notanumber.parquet",
        "binance/BTCUSDT/trades/2023-11-14/1699999999999.journal.arrows",
        "a/b/c/d/e/f/g/1.parquet",
    ],
)
def test_object_key_rejects_paths_off_the_layout(relative: str) -> None:
    with pytest.raises(ValueError, match=r"layout|file name"):
        object_key(relative)


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("{prefix}/{exchange}/{bogus}/{start_ms}.parquet", "unknown field"),
        ("{prefix}/{exchange}/{symbol}.parquet", "must contain"),
        ("{prefix}/{}/{start_ms}", "unknown field"),
        ("{prefix/{start_ms}", "key_template"),
    ],
)
def test_bad_key_templates_are_rejected(template: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_key_template(template)
    with pytest.raises(ValueError, match=match):
        UploadSettings(key_template=template)


def test_default_template_is_valid() -> None:
    check_key_template(DEFAULT_KEY_TEMPLATE)


def test_from_settings_reads_config_and_defaults() -> None:
    settings = parse_settings(
        {
            "storage": {"mode": "s3", "data_dir": "/d"},
            "aws": {"bucket": "bkt", "prefix": "p", "endpoint_url": "http://127.0.0.1:1"},
            "markets": [{"exchange": "binance", "symbols": ["btcusdt"]}],
        }
    )
    cfg = UploadSettings.from_settings(settings)
    assert (cfg.mode, cfg.data_dir, cfg.bucket, cfg.prefix) == ("s3", "/d", "bkt", "p")
    assert cfg.endpoint_url == "http://127.0.0.1:1"
    assert cfg.key_template == DEFAULT_KEY_TEMPLATE
    assert cfg.uploads
    assert cfg.deletes_after_upload
    assert not UploadSettings(mode="both").deletes_after_upload
    assert not UploadSettings(mode="local").uploads


def _b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_digest_single_part(tmp_path: Path) -> None:
    data = os.urandom(3000)
    path = tmp_path / "f"
    path.write_bytes(data)
    d = digest_file(path, threshold=1 * MiB, part_bytes=5 * MiB)
    assert d == LocalDigest(
        size=3000, sha256_hex=hashlib.sha256(data).hexdigest(), sha256_b64=_b64(data)
    )
    assert not d.multipart


@pytest.mark.parametrize("size", [5 * MiB, 10 * MiB, 11 * MiB + 7])
def test_digest_composite_matches_the_s3_definition(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    d = digest_file(path, threshold=1 * MiB, part_bytes=5 * MiB)
    parts = [data[i : i + 5 * MiB] for i in range(0, size, 5 * MiB)]
    expected = base64.b64encode(
        hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    ).decode()
    assert (d.composite_b64, d.parts, d.part_bytes) == (expected, len(parts), 5 * MiB)
    assert d.sha256_b64 == _b64(data)
    assert d.size == size
    assert d.part_sha256_b64 == tuple(_b64(p) for p in parts)


def test_part_size_is_raised_to_the_s3_minimum(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * (2 * MiB))
    cfg = UploadSettings(multipart_threshold_mb=1, multipart_chunk_mb=1)
    d = digest_file(path, threshold=cfg.multipart_threshold_bytes, part_bytes=cfg.part_bytes)
    assert (d.parts, d.part_bytes) == (1, 5 * MiB)


LOCAL = LocalDigest(size=4, sha256_hex="ab" * 32, sha256_b64="full=", composite_b64="comp=")


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        ({"ContentLength": 4, "Metadata": {"sha256": "ab" * 32}}, None),
        ({"ContentLength": 4, "Metadata": {"sha256": "ab" * 32}, "ChecksumSHA256": "full="}, None),
        (
            {"ContentLength": 4, "Metadata": {"sha256": "ab" * 32}, "ChecksumSHA256": "comp=-3"},
            None,
        ),
        ({"ContentLength": 3, "Metadata": {"sha256": "ab" * 32}}, "size differs"),
        ({"ContentLength": 4, "Metadata": {}}, "metadata missing"),
        ({"ContentLength": 4, "Metadata": {"sha256": "cd" * 32}}, "metadata differs"),
        (
            {"ContentLength": 4, "Metadata": {"sha256": "ab" * 32}, "ChecksumSHA256": "other="},
            "ChecksumSHA256 differs",
        ),
    ],
)
def test_head_mismatch(head: dict[str, object], reason: str | None) -> None:
    result = head_mismatch(head, LOCAL)
    if reason is None:
        assert result is None
    else:
        assert result is not None
        assert reason in result


def test_scan_finds_only_finished_parquet_files(tmp_path: Path) -> None:
    day = tmp_path / "binance" / "BTCUSDT" / "trades" / "2023-11-14"
    day.mkdir(parents=True)
    done = day / "1000.parquet"
    done.write_bytes(b"a")
    open_file = day / "2000.parquet"  # finalized, but its journal is still there
    open_file.write_bytes(b"b")
    (day / "2000.journal.arrows").write_bytes(b"j")
    (day / "3000.journal.arrows").write_bytes(b"j")
    (day / ".4000.parquet.tmp").write_bytes(b"t")
    (day / "5000.parquet.corrupt").write_bytes(b"c")
    (day / ".1000.parquet.s3").write_bytes(b"{}")
    assert [f.path for f in scan_finished(tmp_path)] == [done]


def test_marker_records_bucket_key_and_file_state(tmp_path: Path) -> None:
    path = tmp_path / "1.parquet"
    path.write_bytes(b"abc")
    assert not has_marker(path, "b", "k")
    write_marker(path, "b", "k", "00")
    assert has_marker(path, "b", "k")
    assert not has_marker(path, "other", "k")
    assert not has_marker(path, "b", "other")
    path.write_bytes(b"abcd")
    assert not has_marker(path, "b", "k")


def test_marker_keeps_the_key_offset_and_reads_old_markers(tmp_path: Path) -> None:
    path = tmp_path / "1.parquet"
    path.write_bytes(b"abc")
    write_marker(path, "b", "k2", "00", offset=2)
    marker = read_marker(path)
    assert marker is not None
    assert (marker.key, marker.offset) == ("k2", 2)
    # A marker written before offsets existed reads as offset 0.
    st = path.stat()
    old = {"bucket": "b", "key": "k", "size": 3, "mtime_ns": st.st_mtime_ns, "sha256": "00"}
    marker_path(path).write_bytes(json.dumps(old).encode())
    marker = read_marker(path)
    assert marker is not None
    assert (marker.key, marker.offset) == ("k", 0)


def test_legacy_credential_variables_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_env(monkeypatch)
    env = {"AWS_ACCESS_KEY": "LEGACYKEYID", "AWS_SECRET_KEY": "legacy-secret"}
    cfg = UploadSettings(mode="s3", bucket="b", endpoint_url="http://127.0.0.1:9")
    client = make_client(cfg, env)
    creds = client._request_signer._credentials
    assert (creds.access_key, creds.secret_key) == ("LEGACYKEYID", "legacy-secret")
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (10.0, 60.0)
    assert config.retries["total_max_attempts"] == 3


def test_standard_credential_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_env(monkeypatch)
    env = {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_ACCESS_KEY": "LEGACY", "AWS_SECRET_KEY": "x"}
    client = make_client(
        UploadSettings(mode="s3", bucket="b", endpoint_url="http://127.0.0.1:9"), env
    )
    assert client._request_signer._credentials.access_key == FAKE_KEY_ID
