"""Settings the service can run: the schema (:mod:`collector.config`) plus the checks that
need the venues and the uploader.

This module sits one floor above ``config``, ``exchanges`` and ``upload``: it asks the venue
adapters whether an exchange, a market's options and each symbol are valid, and the uploader
whether the key template is. ``config`` stays below all of them and imports none.

- :func:`load_settings`: a settings file plus environment overrides, fully checked;
- :func:`parse_settings`: the same for a document already decoded (tests, ConfigMaps);
- :func:`check_settings`: the checks the schema cannot express;
- :func:`canonical_pair`: a configured symbol as the (exchange, symbol) of its rows.

Every problem raises :class:`~collector.config.ConfigError` with one line naming the key.
"""

from __future__ import annotations

import importlib.util
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector.config import (
    BinarySettings,
    ConfigError,
    KafkaSettings,
    MarketSettings,
    RedisSettings,
    Settings,
    StorageSettings,
    decode_settings,
    read_settings,
)
from collector.exchanges import get_adapter_class, known_exchanges
from collector.upload.keys import check_key_template


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    notices: list[str] | None = None,
) -> tuple[Settings, str]:
    """Read, override and validate settings. Returns them and a description of the source.

    ``path`` None reads the embedded default; ``env`` defaults to ``os.environ``; keys of
    the replaced Rust collector that no longer apply add a line to ``notices``.
    Raises ConfigError.
    """
    settings, source = read_settings(path, env, notices)
    check_settings(settings, source)
    return settings, source


def parse_settings(
    raw: dict[str, Any], source: str = "settings", env_keys: Mapping[str, str] | None = None
) -> Settings:
    """Validate a decoded TOML document into ``Settings`` (raises ConfigError)."""
    settings = decode_settings(raw, source, env_keys)
    check_settings(settings, source)
    return settings


def canonical_pair(market: MarketSettings, symbol: str) -> tuple[str, str]:
    """(exchange of the rows, the venue's spelling of ``symbol``) for a configured symbol.

    Two configured symbols with the same pair would write the same files. Raises KeyError
    for an unknown exchange and ValueError for a symbol the venue cannot have (both are
    reported by :func:`check_settings` first).
    """
    adapter = get_adapter_class(market.exchange)
    canonical = adapter.normalize_symbol(symbol)
    return adapter.data_exchange(market), canonical


def check_settings(settings: Settings, source: str) -> None:
    """Checks msgspec cannot express: delay ranges, the key template, the bucket, known
    exchanges, each venue's market options and symbol formats, duplicate markets.

    Raises ConfigError naming the key, prefixed with ``source``.
    """
    ws = settings.websocket
    if ws.max_retry_delay_secs < ws.initial_retry_delay_secs:
        raise ConfigError(
            f"{source}: websocket.max_retry_delay_secs ({ws.max_retry_delay_secs}) is below "
            f"websocket.initial_retry_delay_secs ({ws.initial_retry_delay_secs})"
        )
    aws = settings.aws
    if aws.max_retry_delay_secs < aws.initial_retry_delay_secs:
        raise ConfigError(
            f"{source}: aws.max_retry_delay_secs ({aws.max_retry_delay_secs}) is below "
            f"aws.initial_retry_delay_secs ({aws.initial_retry_delay_secs})"
        )
    try:
        check_key_template(aws.key_template)
    except ValueError as exc:
        raise ConfigError(f"{source}: aws.key_template: {exc}") from None
    if aws.endpoint_url is not None and not _is_endpoint_url(aws.endpoint_url):
        # The value is not repeated: it may carry credentials (user:password@host).
        raise ConfigError(
            f"{source}: aws.endpoint_url must be an http:// or https:// URL with a host name"
        )
    if settings.storage.mode != "local" and not settings.aws.bucket:
        raise ConfigError(
            f"{source}: storage.mode is '{settings.storage.mode}' but aws.bucket is empty"
        )
    _check_kafka(settings.kafka, source)
    _check_redis(settings.redis, source)
    _check_binary(settings.binary, settings.storage, source)
    seen: dict[tuple[str, str], int] = {}
    for i, market in enumerate(settings.markets):
        where = f"{source}: markets[{i}]"
        _check_market(market, where)
        _check_lead(ws.planned_reconnect_lead_secs, market.exchange, source)
        _check_all_symbols(market, where)
        _check_large_trade_size(market, where)
        if is_all_symbols(market):
            continue  # resolved from the venue at start (collector.control.listings)
        for symbol in market.symbols:
            try:
                key = canonical_pair(market, symbol)
            except ValueError as exc:
                raise ConfigError(f"{where}.symbols: {exc}") from None
            if key in seen:
                raise ConfigError(
                    f"{where}.symbols: duplicate market {key[0]} {key[1]} "
                    f"(also in markets[{seen[key]}])"
                )
            seen[key] = i


ALL_SYMBOLS = "*"
# The market keys that only mean something with ``symbols = ["*"]``.
_LISTING_FILTERS = ("quote", "status", "symbols_regex", "max_symbols")


def is_all_symbols(market: MarketSettings) -> bool:
    """Whether ``market`` collects every symbol the venue lists (``symbols = ["*"]``)."""
    return ALL_SYMBOLS in market.symbols


def _check_all_symbols(market: MarketSettings, where: str) -> None:
    """``*`` stands alone, on a venue that can list its symbols; the listing filters come
    only with it, the quote and status filters only where the venue's listing says them,
    and the regular expression compiles."""
    if not is_all_symbols(market):
        used = [key for key in _LISTING_FILTERS if getattr(market, key) is not None]
        if used:
            raise ConfigError(f'{where}.{used[0]}: only with symbols = ["*"]')
        return
    if market.symbols != (ALL_SYMBOLS,):
        raise ConfigError(f'{where}.symbols: "*" (every listed symbol) stands alone')
    adapter = get_adapter_class(market.exchange)
    try:
        adapter.symbols_url(None, market.category)
    except (NotImplementedError, ValueError) as exc:
        raise ConfigError(f'{where}.symbols: "*" needs the venue\'s listing: {exc}') from None
    if not adapter.listing_quotes:
        for key in ("quote", "status"):
            if getattr(market, key) is not None:
                raise ConfigError(
                    f"{where}.{key}: {market.exchange}'s listing does not say each symbol's "
                    f"{key} (filter with symbols_regex)"
                )
    if market.symbols_regex is not None:
        try:
            re.compile(market.symbols_regex)
        except re.error as exc:
            raise ConfigError(f"{where}.symbols_regex: {exc}") from None
    if isinstance(market.large_trade_size, dict):
        raise ConfigError(
            f'{where}.large_trade_size: one size for every symbol with symbols = ["*"]'
        )


def _check_large_trade_size(market: MarketSettings, where: str) -> None:
    """A per-symbol threshold names a symbol of the market, spelled as in ``symbols``."""
    sizes = market.large_trade_size
    if isinstance(sizes, dict):
        unknown = sorted(set(sizes) - set(market.symbols))
        if unknown:
            raise ConfigError(
                f"{where}.large_trade_size: {', '.join(unknown)} not in this market's symbols"
            )


def _check_lead(lead: float, exchange: str, source: str) -> None:
    """A planned reconnect must start after the connection does: the lead stays below the
    venue's connection lifetime (0 turns planned reconnects off)."""
    lifetime = get_adapter_class(exchange).max_connection_lifetime_secs
    if lifetime is not None and lead >= lifetime:
        raise ConfigError(
            f"{source}: websocket.planned_reconnect_lead_secs ({lead:g}) must be below "
            f"{exchange}'s connection lifetime ({lifetime:g} s); 0 turns planned "
            "reconnects off"
        )


_HOST_RE = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?$")


def _is_endpoint_url(url: str) -> bool:
    """Whether the S3 client will take ``url`` as its endpoint (http or https, a host name
    or IP address, a valid port), checked here so that a bad one is a settings error and not
    a failure of the uploader once the service runs."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
    except ValueError:
        return False
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        return False
    return ":" in host or _HOST_RE.match(host) is not None  # IPv6 literal, or a host name


def _check_market(market: MarketSettings, where: str) -> None:
    """The exchange is known, no feed is listed twice, the venue accepts the options."""
    if market.exchange not in known_exchanges():
        names = ", ".join(known_exchanges())
        raise ConfigError(
            f"{where}.exchange: unknown exchange '{market.exchange}' (known: {names})"
        )
    if len(set(market.feeds)) != len(market.feeds):
        raise ConfigError(f"{where}.feeds: a feed is listed twice")
    try:
        get_adapter_class(market.exchange).check_market(market)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# librdkafka settings that would weaken the Kafka outlet's delivery guarantees: set by the
# outlet itself (collector.outlets.kafka), never by kafka.options.
KAFKA_GUARDED_OPTIONS = frozenset(
    {
        "enable.idempotence",
        "acks",
        "request.required.acks",
        "max.in.flight",
        "max.in.flight.requests.per.connection",
        "bootstrap.servers",
        "metadata.broker.list",
    }
)
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def kafka_topic(template: str, data_type: str) -> str:
    """The topic of ``data_type`` under ``template`` (checked by :func:`check_settings`)."""
    return template.format(data_type=data_type)


def _check_kafka(kafka: KafkaSettings, source: str) -> None:
    """The topic template makes a valid, distinct topic per data type; the options do not
    touch the guarded delivery settings; the client library is there when enabled."""
    fields = {name for _, name, _, _ in string.Formatter().parse(kafka.topic_template) if name}
    if fields - {"data_type"} or "data_type" not in fields:
        raise ConfigError(
            f"{source}: kafka.topic_template must contain {{data_type}} and no other field "
            f"(got {kafka.topic_template!r})"
        )
    try:
        topics = {kafka_topic(kafka.topic_template, dt) for dt in kafka.data_types}
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"{source}: kafka.topic_template: {exc}") from None
    for topic in sorted(topics):
        if not _TOPIC_RE.match(topic) or topic in (".", ".."):
            raise ConfigError(
                f"{source}: kafka.topic_template makes {topic!r}, not a valid Kafka topic "
                "name (letters, digits, '.', '_', '-'; at most 249)"
            )
    if len(set(kafka.data_types)) != len(kafka.data_types):
        raise ConfigError(f"{source}: kafka.data_types: a data type is listed twice")
    guarded = sorted(KAFKA_GUARDED_OPTIONS.intersection(kafka.options))
    if guarded:
        raise ConfigError(
            f"{source}: kafka.options may not set {', '.join(guarded)} (the outlet sets "
            "the servers and its delivery guarantees itself)"
        )
    if kafka.enabled and importlib.util.find_spec("confluent_kafka") is None:
        raise ConfigError(
            f"{source}: kafka.enabled is true but confluent-kafka is not installed "
            "(install the extra: pip install 'collector[kafka]')"
        )
    control = kafka.control_topic
    if control is not None:
        if not _TOPIC_RE.match(control) or control in (".", ".."):
            raise ConfigError(
                f"{source}: kafka.control_topic {control!r} is not a valid Kafka topic name "
                "(letters, digits, '.', '_', '-'; at most 249)"
            )
        if control in topics:
            raise ConfigError(
                f"{source}: kafka.control_topic {control!r} is also a topic the outlet writes"
            )
        if importlib.util.find_spec("confluent_kafka") is None:
            raise ConfigError(
                f"{source}: kafka.control_topic is set but confluent-kafka is not installed "
                "(install the extra: pip install 'collector[kafka]')"
            )


def _check_redis(redis: RedisSettings, source: str) -> None:
    """Delay ranges and the URL scheme; the client library is there when enabled."""
    if redis.max_retry_delay_secs < redis.initial_retry_delay_secs:
        raise ConfigError(
            f"{source}: redis.max_retry_delay_secs ({redis.max_retry_delay_secs}) is below "
            f"redis.initial_retry_delay_secs ({redis.initial_retry_delay_secs})"
        )
    scheme = urlsplit(redis.url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        # The value is not repeated: it may carry a password.
        raise ConfigError(f"{source}: redis.url must be a redis://, rediss:// or unix:// URL")
    if redis.enabled and importlib.util.find_spec("redis") is None:
        raise ConfigError(
            f"{source}: redis.enabled is true but redis-py is not installed "
            "(install the extra: pip install 'collector[redis]')"
        )


def _check_binary(binary: BinarySettings, storage: StorageSettings, source: str) -> None:
    """Delay range; the column root is a directory of its own, not the Parquet tree."""
    if binary.max_retry_delay_secs < binary.initial_retry_delay_secs:
        raise ConfigError(
            f"{source}: binary.max_retry_delay_secs ({binary.max_retry_delay_secs}) is below "
            f"binary.initial_retry_delay_secs ({binary.initial_retry_delay_secs})"
        )
    if not binary.dir:
        raise ConfigError(f"{source}: binary.dir must not be empty")
    if binary.enabled and Path(binary.dir).resolve() == Path(storage.data_dir).resolve():
        # Same <exchange>/<symbol>/ tree: the column tables would sit among the Parquet
        # data types (and be taken for one by the reader).
        raise ConfigError(f"{source}: binary.dir must not be storage.data_dir")
