"""Settings: defaults, environment overrides and one clear line for every bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import (
    ConfigError,
    MarketSettings,
    Settings,
    WebSocketSettings,
    decode_settings,
    embedded_default_text,
    mask_secrets,
    read_settings,
    resolve_path,
    settings_as_dict,
)
from collector.settings_check import check_settings, load_settings

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """
[[markets]]
exchange = "binance"
symbols = ["btcusdt"]
"""
BYBIT_LINEAR_BTC = '[[markets]]\nexchange = "bybit"\ncategory = "linear"\nsymbols = ["btcusdt"]\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    settings, _ = load_settings(write(tmp_path, text), env or {})
    return settings


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_repository_settings_file_is_the_embedded_default() -> None:
    assert (ROOT / "settings.toml").read_text() == embedded_default_text()


def test_embedded_default_runs_binance_btc_and_eth_locally() -> None:
    settings, source = load_settings(None, {})
    assert source == "embedded settings.toml"
    assert settings.storage.mode == "local"
    assert settings.storage.data_dir == "./data"
    [market] = settings.markets
    assert market == MarketSettings(
        exchange="binance",
        symbols=("btcusdt", "ethusdt"),
        feeds=("trades", "orderbook", "ticker", "instruments"),
    )


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    settings = load_text(tmp_path, MINIMAL)
    assert settings.collector.metrics_port == 8000
    assert settings.storage.flush_interval_secs == 1.0
    assert settings.storage.max_file_size_mb == 500.0
    assert settings.websocket.initial_retry_delay_secs == 1.0
    assert settings.websocket.max_retry_delay_secs == 60.0
    assert settings.markets[0].feeds == ("trades", "orderbook", "ticker")


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_text(tmp_path, MINIMAL)
    with pytest.raises(AttributeError):
        settings.collector.metrics_port = 1  # type: ignore[misc]


def test_resolve_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_path(None, {}) is None
    (tmp_path / "settings.toml").write_text(MINIMAL)
    assert resolve_path(None, {}) == Path("settings.toml")
    assert resolve_path(None, {"CONFIG_PATH": "/etc/c.toml"}) == Path("/etc/c.toml")
    assert resolve_path("x.toml", {"CONFIG_PATH": "/etc/c.toml"}) == Path("x.toml")


def test_env_overrides_single_keys_with_types(tmp_path: Path) -> None:
    env = {
        "COLLECTOR__COLLECTOR__METRICS_PORT": "9100",
        "COLLECTOR__STORAGE__DATA_DIR": "/var/lib/collector",
        "COLLECTOR__STORAGE__ROTATE_HOURLY": "false",
        "COLLECTOR__AWS__BUCKET": "123",  # a string key keeps the text as is
        "COLLECTOR__MARKETS__0__SYMBOLS": '["solusdt", "xrpusdt"]',
        "UNRELATED": "x",
    }
    settings = load_text(tmp_path, MINIMAL, env)
    assert settings.collector.metrics_port == 9100
    assert settings.storage.data_dir == "/var/lib/collector"
    assert settings.storage.rotate_hourly is False
    assert settings.aws.bucket == "123"
    assert settings.markets[0].symbols == ("solusdt", "xrpusdt")


def test_env_can_append_a_market(tmp_path: Path) -> None:
    env = {
        "COLLECTOR__MARKETS__1__EXCHANGE": "binance",
        "COLLECTOR__MARKETS__1__SYMBOLS": '["solusdt"]',
    }
    settings = load_text(tmp_path, MINIMAL, env)
    assert [m.symbols for m in settings.markets] == [("btcusdt",), ("solusdt",)]


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[collector\nx=1", {}, "TOML syntax error"),
        ("[collector]\nmetrics_port = 1\nmetrics_port = 2\n" + MINIMAL, {}, "line 3"),
        ("[collector]\ncolour = 1\n" + MINIMAL, {}, "unknown key 'collector.colour'"),
        ("[storrage]\n" + MINIMAL, {}, "unknown key 'storrage'"),
        ("[collector]\nmetrics_port = 70000\n" + MINIMAL, {}, "collector.metrics_port"),
        ("[collector]\nmetrics_port = -1\n" + MINIMAL, {}, "collector.metrics_port"),
        ("[collector]\nmetrics_port = 'eighty'\n" + MINIMAL, {}, "expected int, got str"),
        ("[storage]\nflush_interval_secs = 0\n" + MINIMAL, {}, "storage.flush_interval_secs"),
        ("[storage]\nmode = 'ftp'\n" + MINIMAL, {}, "storage.mode"),
        ('[[markets]]\nexchange = "binance"\nsymbols = []\n', {}, "markets[0].symbols"),
        ('[[markets]]\nexchange = "nyse"\nsymbols = ["x"]\n', {}, "unknown exchange 'nyse'"),
        (MINIMAL + 'feeds = ["trades", "candles"]\n', {}, "markets[0].feeds[1]"),
        (MINIMAL + 'feeds = ["trades", "trades"]\n', {}, "listed twice"),
        (MINIMAL + "silence_timeout_secs = 0\n", {}, "markets[0].silence_timeout_secs"),
        (MINIMAL + "silence_timeout_secs = -5\n", {}, "markets[0].silence_timeout_secs"),
        (MINIMAL + MINIMAL, {}, "duplicate market binance BTCUSDT (also in markets[0])"),
        (
            BYBIT_LINEAR_BTC + BYBIT_LINEAR_BTC,
            {},
            "duplicate market bybit-linear BTCUSDT (also in markets[0])",
        ),
        ('[[markets]]\nexchange = "binance"\nsymbols = ["btc-usdt"]\n', {}, "btc-usdt"),
        ('[[markets]]\nsymbols = ["btcusdt"]\n', {}, "missing required key 'markets[0].exchange'"),
        ("[collector]\n", {}, "missing required key 'markets'"),
        ("[storage]\nmode = 's3'\n" + MINIMAL, {}, "aws.bucket is empty"),
        (
            "[websocket]\ninitial_retry_delay_secs = 10\nmax_retry_delay_secs = 5\n" + MINIMAL,
            {},
            "max_retry_delay_secs",
        ),
        (
            "[websocket]\nplanned_reconnect_lead_secs = -1\n" + MINIMAL,
            {},
            "websocket.planned_reconnect_lead_secs",
        ),
        (
            "[websocket]\nplanned_reconnect_lead_secs = 86400\n" + MINIMAL,
            {},
            "websocket.planned_reconnect_lead_secs (86400) must be below binance's "
            "connection lifetime (86400 s); 0 turns planned reconnects off",
        ),
        (
            MINIMAL,
            {"COLLECTOR__COLLECTOR__METRICS_PORT": "99999"},
            "COLLECTOR__COLLECTOR__METRICS_PORT",
        ),
        (MINIMAL, {"COLLECTOR__NOPE__X": "1"}, "unknown settings section 'nope'"),
        (MINIMAL, {"COLLECTOR__COLLECTOR__NOPE": "1"}, "unknown key 'collector.nope'"),
        (MINIMAL, {"COLLECTOR__MARKETS__5__SYMBOLS": "[]"}, "no markets[5]"),
    ],
)
def test_bad_settings_give_one_clear_line(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    message = error_of(tmp_path, text, env)
    assert expected in message
    # The line names where the problem is: the file, or the variable that set the key.
    assert str(tmp_path) in message or any(name in message for name in env)


def test_a_planned_reconnect_lead_binds_only_venues_with_a_lifetime(tmp_path: Path) -> None:
    """Bybit documents no lifetime: any lead is accepted for it; 0 turns planned reconnects
    off, also where the venue has a lifetime."""
    lead = "[websocket]\nplanned_reconnect_lead_secs = {}\n"
    assert load_text(tmp_path, lead.format(100000) + BYBIT_LINEAR_BTC).websocket == (
        WebSocketSettings(planned_reconnect_lead_secs=100000)
    )
    settings = load_text(tmp_path, lead.format(0) + MINIMAL)
    assert settings.websocket.planned_reconnect_lead_secs == 0
    assert load_text(tmp_path, MINIMAL).websocket.planned_reconnect_lead_secs == 300


def test_the_schema_alone_leaves_venue_checks_to_settings_check(tmp_path: Path) -> None:
    """config decodes what the schema allows; check_settings (one floor up) asks the venues."""
    text = '[[markets]]\nexchange = "nyse"\nsymbols = ["x"]\n'
    settings, source = read_settings(write(tmp_path, text), {})
    assert settings.markets[0].exchange == "nyse"
    decoded = decode_settings({"markets": [{"exchange": "nyse", "symbols": ["x"]}]})
    assert decoded == settings
    with pytest.raises(ConfigError, match=r"markets\[0\]\.exchange: unknown exchange 'nyse'"):
        check_settings(settings, source)


def test_one_symbol_may_be_recorded_in_both_bybit_categories(tmp_path: Path) -> None:
    settings = load_text(tmp_path, BYBIT_LINEAR_BTC + BYBIT_LINEAR_BTC.replace("linear", "spot"))
    assert [(m.category, m.symbols) for m in settings.markets] == [
        ("linear", ("btcusdt",)),
        ("spot", ("btcusdt",)),
    ]


def test_port_error_names_the_value(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[collector]\nmetrics_port = 70000\n" + MINIMAL)
    assert "70000" in message
    assert "<= 65535" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="settings file not found"):
        load_settings(tmp_path / "nope.toml", {})


def test_secrets_are_masked() -> None:
    shown = mask_secrets(
        {
            "aws": {
                "secret_access_key": "abc",
                "endpoint_url": "http://user:pw@minio:9000",
                "bucket": "b",
            },
            "coinbase": {"api_secret_file": "/run/secrets/key", "token": ""},
        }
    )
    assert shown == {
        "aws": {
            "secret_access_key": "***",
            "endpoint_url": "http://***@minio:9000",
            "bucket": "b",
        },
        "coinbase": {"api_secret_file": "***", "token": ""},
    }


def test_settings_as_dict_round_trips(tmp_path: Path) -> None:
    settings = load_text(tmp_path, MINIMAL)
    plain = settings_as_dict(settings)
    assert plain["markets"][0]["symbols"] == ["btcusdt"]
    assert plain["collector"]["metrics_port"] == 8000
