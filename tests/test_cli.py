"""The command line: help, ``check-config`` output, settings sources, and bad settings.

Most cases call :func:`collector.cli.main` in-process (fast); a few run the real
``python -m collector`` to check what a user sees, exit status included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from collector.cli import main
from tests.procs import clean_env

GOOD = """\
[collector]
metrics_host = "127.0.0.1"
metrics_port = 9123

[storage]
data_dir = "/srv/market-data"
flush_interval_secs = 0.5

[aws]
bucket = "quant-raw"
endpoint_url = "https://minio-user:hunter2pass@minio.internal:9000"

[[markets]]
exchange = "binance"
symbols = ["btcusdt", "ethusdt"]
feeds = ["trades", "ticker"]
base_url = "ws://127.0.0.1:1"
"""

MARKET = '[[markets]]\nexchange = "binance"\nsymbols = ["btcusdt"]\n'


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings from the caller's environment or working directory."""
    for name in list(os.environ):
        if name.startswith("COLLECTOR__") or name == "CONFIG_PATH":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "settings.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``python -m collector`` (bounded: it must never start serving here)."""
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        cwd=cwd,
        env={**clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_toml(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[dict[str, Any], str]:
    """Run ``check-config`` in-process; return its output parsed as TOML, and the raw text."""
    assert main(["check-config", *argv]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return tomllib.loads(out), out


# ----------------------------------------------------------------------------- help


def test_help_lists_commands_and_exits_0(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""
    assert "run" in result.stdout
    assert "check-config" in result.stdout
    assert "--config" in result.stdout
    assert "CONFIG_PATH" in result.stdout


def test_subcommand_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check-config", "--help"])
    assert info.value.code == 0
    assert "--json" in capsys.readouterr().out


# ----------------------------------------------------------------------------- check-config


def test_check_config_prints_effective_values_as_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD)
    shown, out = check_toml(capsys, str(path))
    assert out.startswith(f"# settings OK: {path}\n")
    # Values from the file ...
    assert shown["collector"]["metrics_port"] == 9123
    assert shown["storage"]["data_dir"] == "/srv/market-data"
    assert shown["storage"]["flush_interval_secs"] == 0.5
    (market,) = shown["markets"]
    assert {k: market[k] for k in ("exchange", "symbols", "feeds", "base_url")} == {
        "exchange": "binance",
        "symbols": ["btcusdt", "ethusdt"],
        "feeds": ["trades", "ticker"],
        "base_url": "ws://127.0.0.1:1",
    }
    # ... and the defaults it did not set, all effective values shown.
    assert shown["collector"]["shutdown_timeout_secs"] == 30.0
    assert shown["storage"]["mode"] == "local"
    assert shown["websocket"]["max_retry_delay_secs"] == 60.0
    assert "# compression_level is not set" in out
    # The connections the configuration opens (comment lines).
    assert "# connections this configuration opens:" in out
    assert "#   binance-0: ws://127.0.0.1:1/stream?timeUnit=MICROSECOND (4 subscriptions)" in out


def test_check_config_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    shown, out = check_toml(capsys, str(path))
    assert shown["aws"]["endpoint_url"] == "https://***@minio.internal:9000"
    assert "hunter2pass" not in out
    assert "minio-user" not in out
    assert main(["check-config", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["settings"]["aws"]["endpoint_url"] == "https://***@minio.internal:9000"
    assert "hunter2pass" not in out


def test_check_config_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    assert main(["check-config", "--json", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    doc = json.loads(out)
    assert doc["source"] == str(path)
    assert doc["settings"]["collector"]["metrics_port"] == 9123
    assert doc["settings"]["storage"]["compression_level"] is None
    assert doc["connections"] == [
        {
            "name": "binance-0",
            "exchange": "binance",
            "url": "ws://127.0.0.1:1/stream?timeUnit=MICROSECOND",
            "subscriptions": 4,
            "symbols": ["BTCUSDT", "ETHUSDT"],
            "raw": False,
        }
    ]


def test_check_config_path_forms_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    outputs = []
    for argv in (
        ["check-config", str(path)],
        ["check-config", "--config", str(path)],
        ["--config", str(path), "check-config"],
    ):
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2]


def test_config_path_env_picks_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD, "elsewhere.toml")
    write(tmp_path, MARKET + "[collector]\nmetrics_port = 1111\n")  # ./settings.toml: ignored
    monkeypatch.setenv("CONFIG_PATH", str(path))
    shown, out = check_toml(capsys)
    assert out.startswith(f"# settings OK: {path}\n")
    assert shown["collector"]["metrics_port"] == 9123


def test_local_settings_toml_then_embedded_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown, out = check_toml(capsys)
    assert out.startswith("# settings OK: embedded settings.toml\n")
    assert shown["collector"]["metrics_port"] == 8000
    write(tmp_path, MARKET + "[collector]\nmetrics_port = 1111\n")
    shown, out = check_toml(capsys)
    assert out.startswith("# settings OK: settings.toml\n")
    assert shown["collector"]["metrics_port"] == 1111


def test_environment_overrides_show_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("COLLECTOR__STORAGE__DATA_DIR", "/mnt/override")
    monkeypatch.setenv("COLLECTOR__COLLECTOR__METRICS_PORT", "9200")
    monkeypatch.setenv("COLLECTOR__MARKETS__0__SYMBOLS", '["solusdt"]')
    shown, out = check_toml(capsys, str(path))
    assert shown["storage"]["data_dir"] == "/mnt/override"
    assert shown["collector"]["metrics_port"] == 9200
    assert shown["markets"][0]["symbols"] == ["solusdt"]
    assert "(2 subscriptions)" in out


def test_check_config_subprocess_with_config_path_and_override(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = run_cli(
        "check-config",
        "--json",
        cwd=tmp_path,
        env={"CONFIG_PATH": str(path), "COLLECTOR__STORAGE__FLUSH_INTERVAL_SECS": "2.5"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["source"] == str(path)
    assert doc["settings"]["storage"]["flush_interval_secs"] == 2.5
    assert "hunter2pass" not in result.stdout


# ----------------------------------------------------------------------------- bad settings

# The wording of messages belongs to config.py; these tests pin what each line must name
# (the key, the offending value, the line of a syntax error), not the phrasing around it.
BAD: dict[str, tuple[str | None, tuple[str, ...]]] = {
    # name: (file text, or None for no file; fragments the one error line must contain)
    "missing file": (None, ("not found",)),
    "toml syntax": (MARKET + "[collector]\nmetrics_port = \n", ("TOML syntax error", "line 5")),
    "unknown key": (MARKET + "[storage]\ndata_dri = 'x'\n", ("unknown key", "storage.data_dri")),
    "unknown section": (MARKET + "[nope]\na = 1\n", ("unknown key", "nope")),
    "unknown exchange": (
        '[[markets]]\nexchange = "mtgox"\nsymbols = ["btcusd"]\n',
        ("markets[0].exchange", "unknown exchange", "mtgox", "binance"),
    ),
    "wrong type": (
        MARKET + '[collector]\nmetrics_port = "9100"\n',
        ("collector.metrics_port", "expected int", "str", "9100"),
    ),
    "empty symbols": (
        '[[markets]]\nexchange = "binance"\nsymbols = []\n',
        ("markets[0].symbols", ">= 1"),
    ),
    "duplicate market": (
        MARKET + MARKET.replace("btcusdt", "BTCUSDT"),
        ("markets[1].symbols", "duplicate", "BTCUSDT", "markets[0]"),
    ),
    "port out of range": (
        MARKET + "[collector]\nmetrics_port = 65536\n",
        ("collector.metrics_port", "65535", "65536"),
    ),
    "no markets": ("[collector]\nmetrics_port = 1\n", ("missing", "markets")),
    "endpoint not a url": (
        MARKET + '[aws]\nendpoint_url = "minio:hunter2@not a host"\n',
        ("aws.endpoint_url", "http:// or https://"),
    ),
}


def _bad_path(tmp_path: Path, text: str | None) -> Path:
    return tmp_path / "missing.toml" if text is None else write(tmp_path, text, "bad.toml")


def assert_one_error_line(err: str, path: Path, fragments: tuple[str, ...]) -> None:
    """Exactly one line: ``collector: error: <file>[ (overridden by VAR)]: <what is wrong>``."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"collector: error: {path}"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_settings_one_line_exit_2(
    case: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, fragments = BAD[case]
    path = _bad_path(tmp_path, text)
    assert main(["--config", str(path), command]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, path, fragments)


def test_bad_environment_override_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("COLLECTOR__COLLECTOR__METRICS_PORT", "70000")
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(
        err,
        path,
        (
            f"{path} (overridden by COLLECTOR__COLLECTOR__METRICS_PORT): ",
            "collector.metrics_port",
            "70000",
        ),
    )


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(
    "case",
    ["missing file", "toml syntax", "unknown key", "port out of range", "endpoint not a url"],
)
def test_bad_settings_subprocess(case: str, command: str, tmp_path: Path) -> None:
    """What a user sees from ``python -m collector``: one line, exit status 2."""
    text, fragments = BAD[case]
    path = _bad_path(tmp_path, text)
    result = run_cli("--config", str(path), command, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_error_line(result.stderr, path, fragments)
    assert not (tmp_path / "data").exists()  # "run" never got as far as the data directory


@pytest.mark.parametrize(
    "url",
    ["minio:hunter2@not a host", "ftp://hunter2@minio:9000", "http://u:hunter2@minio:99999"],
)
def test_bad_endpoint_url_is_not_repeated(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The S3 client would refuse it once running; its value may carry credentials."""
    path = write(tmp_path, MARKET + f'[aws]\nendpoint_url = "{url}"\n')
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, path, ("aws.endpoint_url",))
    assert "hunter2" not in err


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_adapter_that_cannot_start_gives_one_line_exit_2(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Coinbase reads its key file at start: a missing one is a settings error, not a traceback."""
    monkeypatch.setenv("COINBASE_API_KEY", "organizations/x/apiKeys/y")
    monkeypatch.setenv("COINBASE_API_SECRET_FILE", str(tmp_path / "missing.pem"))
    path = write(tmp_path, '[[markets]]\nexchange = "coinbase"\nsymbols = ["BTC-USD"]\n')
    assert main([command, "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("collector: error: coinbase: COINBASE_API_SECRET_FILE=")
    assert "cannot read key file" in err
    assert not (tmp_path / "data").exists()
