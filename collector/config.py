"""Settings: ``settings.toml`` plus environment overrides -> frozen ``Settings`` (the schema).

Resolution of the settings file: ``--config PATH``, else ``$CONFIG_PATH``, else
``./settings.toml`` if it exists, else the copy embedded in the package.

Environment overrides set single keys: ``COLLECTOR__<SECTION>__<KEY>=value``, e.g.
``COLLECTOR__STORAGE__DATA_DIR=/data`` or ``COLLECTOR__MARKETS__0__SYMBOLS='["btcusdt"]'``.
A value for a string key is taken as is; any other value is read as a TOML value
(``9100``, ``true``, ``["a", "b"]``).

This is the bottom floor: it imports nothing else of the package, so every other module
may import it. It checks what each key may hold (types, ranges, unknown keys); the checks
that need the venues or the uploader (known exchanges, symbols, key templates) are
:mod:`collector.settings_check`, one floor up, whose ``load_settings`` is what callers use.
Every problem raises :class:`ConfigError` with one line naming the key; nothing here runs
at service run time.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

ENV_PREFIX = "COLLECTOR__"

Feed = Literal["trades", "orderbook", "ticker", "derivatives", "liquidations", "instruments", "raw"]
Port = Annotated[int, Meta(ge=0, le=65535)]
PositiveFloat = Annotated[float, Meta(gt=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]


class ConfigError(Exception):
    """A settings problem, described in one line fit to show the user."""


class CollectorSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: text on a terminal, JSON lines otherwise.
    log_format: Literal["auto", "json", "text"] = "auto"
    metrics_host: str = "0.0.0.0"
    metrics_port: Port = 8000
    shutdown_timeout_secs: PositiveFloat = 30.0
    # Bounded channels: batches of events, and finished file paths.
    event_channel_size: Annotated[int, Meta(ge=1)] = 1024
    file_channel_size: Annotated[int, Meta(ge=1)] = 1024
    # Markets with the ``instruments`` feed: their venue's REST listing is read at start and
    # then this often; a listing that failed is tried again after instruments_retry_secs.
    instruments_interval_secs: PositiveFloat = 86400.0
    instruments_retry_secs: PositiveFloat = 300.0
    # The environment variable holding the admin API's bearer token (None: the admin API
    # is off). The token itself is never in the settings, nor logged.
    admin_token_env: str | None = None


class StorageSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    mode: Literal["local", "s3", "both"] = "local"
    data_dir: str = "./data"
    flush_interval_secs: PositiveFloat = 1.0
    # Flush early once this many rows wait in memory (bounds memory at high rates).
    flush_max_rows: Annotated[int, Meta(ge=1)] = 20_000
    rotate_hourly: bool = True
    max_file_size_mb: PositiveFloat = 500.0
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    compression_level: int | None = None
    # Above this used percentage of data_dir's file system, /health is degraded.
    disk_high_water_percent: Annotated[float, Meta(gt=0, le=100)] = 90.0
    # Finished files older than this many days are deleted (in s3/both mode only once
    # verified in S3); None keeps them forever.
    retention_days: PositiveFloat | None = None
    # Directory layout of the files (collector/storage/layout.py, docs/schemas.md#layout).
    layout: Literal["default", "hive"] = "default"


class AwsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    region: str = "us-east-1"
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    home_server_name: str | None = None
    # Object key; fields: prefix, exchange, symbol, data_type, server, date, start_ms, name.
    # Empty segments (no prefix, no server) are dropped.
    key_template: str = (
        "{prefix}/{exchange}/{symbol}/{data_type}/{server}/{date}/{start_ms}.parquet"
    )
    multipart_threshold_mb: PositiveFloat = 64.0
    multipart_chunk_mb: PositiveFloat = 16.0
    upload_concurrency: Annotated[int, Meta(ge=1)] = 2
    initial_retry_delay_secs: PositiveFloat = 1.0
    max_retry_delay_secs: PositiveFloat = 60.0
    connect_timeout_secs: PositiveFloat = 10.0
    read_timeout_secs: PositiveFloat = 60.0
    # Attempts per S3 request, the first included (botocore standard retry mode).
    max_attempts: Annotated[int, Meta(ge=1)] = 3


class WebSocketSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    initial_retry_delay_secs: PositiveFloat = 1.0
    max_retry_delay_secs: PositiveFloat = 60.0
    # A connection that stayed up this long resets the backoff to its initial delay.
    healthy_after_secs: NonNegativeFloat = 60.0
    # No frame for this long: the connection is stale and is replaced.
    message_timeout_secs: PositiveFloat = 30.0
    connect_timeout_secs: PositiveFloat = 10.0
    max_message_size_mb: PositiveFloat = 16.0
    # Circuit breaker: reconnect when more than half of the last N frames failed to parse.
    parse_error_window: Annotated[int, Meta(ge=2)] = 20
    # On a venue that closes connections at a known age (Binance: 24 h), open the
    # replacement this long before the old one is due and switch without a hole (0: off,
    # the venue's close is an ordinary reconnect).
    planned_reconnect_lead_secs: NonNegativeFloat = 300.0


class MarketSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    exchange: str
    symbols: Annotated[tuple[str, ...], Meta(min_length=1)]
    feeds: Annotated[tuple[Feed, ...], Meta(min_length=1)] = ("trades", "orderbook", "ticker")
    base_url: str | None = None
    # REST API base where the venue's book sync needs snapshots (Binance diff depth).
    rest_url: str | None = None
    # Venue-specific product category where one venue endpoint serves several (Bybit:
    # "spot" or "linear"); None = the venue's default.
    category: str | None = None
    # Venue-specific order book options (see docs/venues.md); None = the venue's default.
    book_mode: Literal["snapshot", "diff"] | None = None
    book_depth: Annotated[int, Meta(ge=1)] | None = None
    # A subscribed stream (symbol, feed) of this market with no data for this long is
    # silent: its connection is replaced (None: only the connection-wide message timeout).
    silence_timeout_secs: PositiveFloat | None = None
    # Seconds between polls of open interest where the venue streams none (Binance
    # futures with the derivatives feed); None: the venue's default.
    open_interest_interval_secs: PositiveFloat | None = None
    # Analytics (``[analytics]``): a trade of at least this size (the trades' own units)
    # counts as large; one size for the market's symbols, or a map of symbol -> size
    # (symbols as listed in ``symbols``; unlisted ones have no threshold). None: no threshold.
    large_trade_size: PositiveFloat | dict[str, PositiveFloat] | None = None
    # Write the writer's book of each symbol as a ``checkpoint`` row this often inside an
    # order book file too (None: only as the first row of every file).
    book_snapshot_interval_secs: PositiveFloat | None = None
    # All-symbols mode (``symbols = ["*"]``; collector.control.listings): the venue's
    # listing, resolved at start and every ``symbols_refresh_secs``, filtered by quote
    # asset (venues whose listing names it), status (None: trading only), a regular
    # expression the whole symbol matches, and capped at ``max_symbols`` (the first in
    # sorted order). Only with ``*``.
    quote: tuple[str, ...] | None = None
    status: tuple[str, ...] | None = None
    symbols_regex: str | None = None
    max_symbols: Annotated[int, Meta(ge=1)] | None = None
    symbols_refresh_secs: PositiveFloat = 3600.0


# The data types an outlet can publish (the stored tables).
OutletDataType = Literal["trades", "orderbook", "ticker", "status", "raw"]


class KafkaSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The Kafka outlet (collector.outlets.kafka): every stored event also goes to Kafka."""

    enabled: bool = False
    bootstrap_servers: str = "localhost:9092"
    # One topic per data type; the only field is {data_type}.
    topic_template: str = "collector.{data_type}"
    data_types: Annotated[tuple[OutletDataType, ...], Meta(min_length=1)] = (
        "trades",
        "orderbook",
        "ticker",
        "status",
        "raw",
    )
    client_id: str = "collector"
    # The outlet's own buffer (events): full, further events are dropped and counted for
    # the outlet only; the files never wait for Kafka.
    buffer_events: Annotated[int, Meta(ge=1)] = 100_000
    # Requests in flight per broker connection: at most 5 keeps the idempotent producer's
    # ordering guarantee.
    max_in_flight: Annotated[int, Meta(ge=1, le=5)] = 5
    linger_ms: NonNegativeFloat = 5.0
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    # A message not acknowledged within this is failed (counted) by the client.
    delivery_timeout_secs: PositiveFloat = 120.0
    # /health is degraded while events wait and none was delivered for this long.
    stall_secs: PositiveFloat = 10.0
    # At shutdown, how long to wait for the events still queued to be acknowledged.
    flush_timeout_secs: NonNegativeFloat = 5.0
    # Extra librdkafka settings (TLS, SASL, ...), passed as they are; the delivery
    # guarantees (idempotence, acks, in-flight bound) cannot be weakened here.
    options: dict[str, str] = {}
    # A topic whose messages add or remove symbols while the service runs
    # (collector.control.kafka); None: none is read. Independent of ``enabled``.
    control_topic: str | None = None


class RedisSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The Redis outlet (collector.outlets.redis): the latest values per (exchange, symbol)."""

    enabled: bool = False
    url: str = "redis://localhost:6379/0"
    key_prefix: str = "collector"
    ttl_orderbook_secs: PositiveFloat = 3.0
    ttl_trade_secs: PositiveFloat = 60.0
    ttl_ticker_secs: PositiveFloat = 300.0
    # Levels per side kept under the top-N book key.
    book_depth: Annotated[int, Meta(ge=1)] = 10
    buffer_events: Annotated[int, Meta(ge=1)] = 100_000
    # Timeout of one Redis request (connect, or a pipeline's round trip).
    timeout_secs: PositiveFloat = 5.0
    initial_retry_delay_secs: PositiveFloat = 0.5
    max_retry_delay_secs: PositiveFloat = 10.0
    stall_secs: PositiveFloat = 10.0


class AnalyticsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Per-symbol trade analytics over fixed intervals (collector.analytics)."""

    enabled: bool = False
    # Interval length; intervals are aligned to multiples of it since the Unix epoch.
    interval_secs: Annotated[int, Meta(ge=1, le=86400)] = 60
    # Also store each interval's figures as rows of the ``analytics`` table.
    table: bool = False
    # Export the ``collector_analytics_*`` series of only the N pairs with the largest
    # notional (price x size) in the last completed interval (None: every pair). Meant for
    # all-symbols mode; the ``analytics`` table still holds every pair.
    top_n: Annotated[int, Meta(ge=1)] | None = None


class BinarySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The binary column outlet (collector.outlets.binary): MD and TRADES column files."""

    enabled: bool = False
    # Root of the column files: <dir>/<exchange>/<symbol>/<MD|TRADES>/<column>.DD.MM.YY.bin
    dir: str = "./binary"
    buffer_events: Annotated[int, Meta(ge=1)] = 100_000
    # /health is degraded while writes have failed for this long.
    stall_secs: PositiveFloat = 10.0
    initial_retry_delay_secs: PositiveFloat = 0.5
    max_retry_delay_secs: PositiveFloat = 10.0


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    collector: CollectorSettings = CollectorSettings()
    storage: StorageSettings = StorageSettings()
    aws: AwsSettings = AwsSettings()
    websocket: WebSocketSettings = WebSocketSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    binary: BinarySettings = BinarySettings()
    markets: Annotated[tuple[MarketSettings, ...], Meta(min_length=1)]


# --------------------------------------------------------------------------- loading


def resolve_path(cli_path: str | None, env: Mapping[str, str]) -> Path | None:
    """The settings file to read, or None for the embedded default."""
    if cli_path:
        return Path(cli_path)
    if env.get("CONFIG_PATH"):
        return Path(env["CONFIG_PATH"])
    local = Path("settings.toml")
    return local if local.is_file() else None


def embedded_default_text() -> str:
    return resources.files("collector").joinpath("default_settings.toml").read_text("utf-8")


def read_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    notices: list[str] | None = None,
) -> tuple[Settings, str]:
    """Read, override and decode settings (schema only); returns them and a description of
    the source. Keys of the replaced Rust collector are translated
    (:func:`translate_rust_keys`); a notice for each one that no longer applies is appended
    to ``notices``. Raises ConfigError. :func:`collector.settings_check.load_settings` adds
    the checks that need the venues."""
    env = os.environ if env is None else env
    if path is None:
        source, text = "embedded settings.toml", embedded_default_text()
    else:
        source = str(path)
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{source}: settings file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read settings file: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from None
    found = translate_rust_keys(raw, source)
    if notices is not None:
        notices.extend(found)
    env_keys = _apply_env_overrides(raw, env)
    return decode_settings(raw, source, env_keys), source


# Sections of the replaced Rust collector's settings that have no meaning here.
_RUST_SECTIONS: dict[str, str] = {
    "database": "this collector writes no database",
    "archive": "files go to S3 by [storage] mode and [aws]",
}


def translate_rust_keys(raw: dict[str, Any], source: str = "settings") -> list[str]:
    """Rewrite, in place, the keys of the replaced Rust collector's settings file that have
    a meaning here into this collector's keys, and drop those that no longer apply; returns
    one notice line per dropped key. A file written for this collector is left unchanged.

    - ``[storage] local_path`` -> ``storage.data_dir`` (both set and different: ConfigError);
    - ``[collector] feeds`` -> the ``feeds`` of every ``[[markets]]`` that lists none;
    - ``log_retention_days`` (``[collector]`` or top level), ``[database]``, ``[archive]``:
      dropped with a notice (logs go to stderr here: their retention is the log system's).
    """
    notices: list[str] = []
    storage = raw.get("storage")
    if isinstance(storage, dict) and "local_path" in storage:
        local_path = storage.pop("local_path")
        if "data_dir" in storage and storage["data_dir"] != local_path:
            raise ConfigError(
                f"{source}: storage.local_path ({local_path!r}) and storage.data_dir "
                f"({storage['data_dir']!r}) differ: keep one (data_dir)"
            )
        storage["data_dir"] = local_path
    collector = raw.get("collector")
    if isinstance(collector, dict) and "feeds" in collector:
        feeds = collector.pop("feeds")
        markets = raw.get("markets")
        for market in markets if isinstance(markets, list) else []:
            if isinstance(market, dict):
                market.setdefault("feeds", feeds)
    for table, where in ((raw, "log_retention_days"), (collector, "collector.log_retention_days")):
        if isinstance(table, dict) and "log_retention_days" in table:
            del table["log_retention_days"]
            notices.append(
                f"{source}: {where} ignored: logs go to stderr, kept by the log system "
                "(journald, Docker, Kubernetes)"
            )
    for name, why in _RUST_SECTIONS.items():
        if name in raw:
            del raw[name]
            notices.append(f"{source}: [{name}] ignored: {why}")
    return notices


def decode_settings(
    raw: dict[str, Any], source: str = "settings", env_keys: Mapping[str, str] | None = None
) -> Settings:
    """A decoded TOML document as ``Settings``, checked against the schema only.

    ``env_keys`` maps key paths to the variables that overrode them (named in messages).
    Raises ConfigError.
    """
    try:
        return msgspec.convert(raw, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), raw, source, env_keys or {})) from None


_STRING_TYPES = (str, type(None))


def _is_string_field(section: type[msgspec.Struct], key: str) -> bool:
    hints = typing.get_type_hints(section, include_extras=False)
    hint = hints.get(key)
    if hint is None:
        return False
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return all(a in _STRING_TYPES for a in args) and str in args


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "collector": CollectorSettings,
    "storage": StorageSettings,
    "aws": AwsSettings,
    "websocket": WebSocketSettings,
    "kafka": KafkaSettings,
    "redis": RedisSettings,
    "binary": BinarySettings,
}


def _env_value(value: str, string_field: bool) -> Any:
    if string_field:
        return value
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Apply ``COLLECTOR__...`` variables to ``raw`` in place; return {key path: variable}."""
    applied: dict[str, str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ConfigError(f"{name}: malformed variable name (use COLLECTOR__SECTION__KEY)")
        value = env[name]
        if parts[0] == "markets":
            _apply_market_override(raw, name, parts[1:], value)
            applied[".".join(parts)] = name
            continue
        if len(parts) != 2:
            raise ConfigError(f"{name}: expected COLLECTOR__SECTION__KEY")
        section, key = parts
        cls = _SECTIONS.get(section)
        if cls is None:
            raise ConfigError(f"{name}: unknown settings section '{section}'")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: '{section}' is not a table in the settings file")
        table[key] = _env_value(value, _is_string_field(cls, key))
        applied[f"{section}.{key}"] = name
    return applied


def _apply_market_override(raw: dict[str, Any], name: str, parts: list[str], value: str) -> None:
    if not parts:
        raw["markets"] = _env_value(value, False)
        return
    markets = raw.setdefault("markets", [])
    if not isinstance(markets, list):
        raise ConfigError(f"{name}: 'markets' is not an array of tables")
    if len(parts) != 2 or not parts[0].isdigit():
        raise ConfigError(f"{name}: expected COLLECTOR__MARKETS__<INDEX>__<KEY>")
    index, key = int(parts[0]), parts[1]
    if index == len(markets):
        markets.append({})
    elif index > len(markets):
        raise ConfigError(f"{name}: there is no markets[{index}] (there are {len(markets)})")
    market = markets[index]
    market[key] = _env_value(value, _is_string_field(MarketSettings, key))


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")
_MISSING_RE = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")


def _lookup(raw: Any, path: str) -> Any:
    node = raw
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        key, index = part
        try:
            node = node[int(index)] if index else node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _dotted(path: str) -> str:
    return path.lstrip(".")


def _explain(message: str, raw: Any, source: str, env_keys: Mapping[str, str]) -> str:
    """Turn a msgspec validation message into one line naming the key (and its value)."""
    match = _PATH_RE.search(message)
    path = match.group("path") if match else ""
    body = message[: match.start()] if match else message
    if m := _UNKNOWN_RE.match(body):
        key = _dotted(f"{path}.{m.group('field')}")
        text = f"unknown key '{key}'"
    elif m := _MISSING_RE.match(body):
        key = _dotted(f"{path}.{m.group('field')}")
        text = f"missing required key '{key}'"
    else:
        key = _dotted(path)
        value = _lookup(raw, path)
        detail = body[0].lower() + body[1:] if body else "invalid value"
        detail = detail.replace("`", "")
        if value is None or isinstance(value, dict):
            shown = ""
        elif ", got " in detail:  # "expected int, got str" -> "... got str 'abc'"
            shown = f" {value!r}"
        else:
            shown = f" (got {value!r})"
        text = f"{key or 'settings'}: {detail}{shown}"
    origin = env_keys.get(re.sub(r"\[(\d+)\]", r".\1", key))
    where = f"{source} (overridden by {origin})" if origin else source
    return f"{where}: {text}"


# --------------------------------------------------------------------------- showing

_SECRET_RE = re.compile(r"secret|password|token|credential|private|access_key", re.IGNORECASE)
_URL_USERINFO_RE = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)

MASK = "***"


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of a plain settings tree with secret-looking values replaced by ``***``."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str):
        if value and _SECRET_RE.search(key):
            return MASK
        return _URL_USERINFO_RE.sub(lambda m: f"{m.group('scheme')}{MASK}@", value)
    return value


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    """Effective settings as plain data, secrets masked (for ``check-config`` and logs)."""
    plain = msgspec.to_builtins(settings)
    assert isinstance(plain, dict)
    masked = mask_secrets(plain)
    assert isinstance(masked, dict)
    return masked
