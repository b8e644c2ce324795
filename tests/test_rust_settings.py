"""A settings file of the replaced Rust collector runs as is (``translate_rust_keys``).

The keys used are those the issue names (``[storage] local_path``, ``[collector] feeds``,
``log_retention_days``, ``[database]``, ``[archive]``); where they sit in the old file is
our assumption, stated in docs/settings.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from collector.config import ConfigError, read_settings
from tests.procs import clean_env

RUST_FILE = """
log_retention_days = 14

[collector]
feeds = ["trades", "ticker"]
log_retention_days = 30

[storage]
local_path = "{data}"

[database]
url = "postgres://user:secret@db/collector"

[archive]
enabled = true

[[markets]]
exchange = "binance"
symbols = ["btcusdt"]

[[markets]]
exchange = "okx"
symbols = ["BTC-USDT"]
feeds = ["orderbook"]
"""


def test_keys_with_a_meaning_are_translated_and_the_rest_noticed(tmp_path: Path) -> None:
    path = tmp_path / "rust.toml"
    path.write_text(RUST_FILE.format(data=tmp_path / "data"))
    notices: list[str] = []
    settings, _ = read_settings(path, {}, notices)
    assert settings.storage.data_dir == str(tmp_path / "data")
    assert [m.feeds for m in settings.markets] == [("trades", "ticker"), ("orderbook",)]
    assert notices == [
        f"{path}: log_retention_days ignored: logs go to stderr, kept by the log system "
        "(journald, Docker, Kubernetes)",
        f"{path}: collector.log_retention_days ignored: logs go to stderr, kept by the log "
        "system (journald, Docker, Kubernetes)",
        f"{path}: [database] ignored: this collector writes no database",
        f"{path}: [archive] ignored: files go to S3 by [storage] mode and [aws]",
    ]
    assert not any("secret" in n for n in notices)


def test_local_path_and_a_different_data_dir_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "both.toml"
    path.write_text(
        '[storage]\nlocal_path = "/a"\ndata_dir = "/b"\n'
        '[[markets]]\nexchange = "binance"\nsymbols = ["btcusdt"]\n'
    )
    with pytest.raises(
        ConfigError, match=r"storage\.local_path .* and storage\.data_dir .* differ"
    ):
        read_settings(path, {})


def test_a_file_of_this_collector_gets_no_notice() -> None:
    notices: list[str] = []
    read_settings(None, {}, notices)  # the embedded default
    assert notices == []


@pytest.mark.slow
def test_the_rust_file_passes_check_config_with_one_line_per_notice(tmp_path: Path) -> None:
    path = tmp_path / "rust.toml"
    path.write_text(RUST_FILE.format(data=tmp_path / "data"))
    done = subprocess.run(
        [sys.executable, "-m", "collector", "check-config", str(path), "--json"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 4
    assert all(line.startswith("collector: notice: ") for line in lines)
    shown = json.loads(done.stdout)["settings"]
    assert shown["storage"]["data_dir"] == str(tmp_path / "data")
    assert "database" not in shown
    assert "log_retention_days" not in shown["collector"]
