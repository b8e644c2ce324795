"""The outlets' parts without servers: the encoding, the buffer, the tap and its overflow
rows, the router's tap, the settings checks, and the Redis outlet's latest values."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from array import array
from functools import partial
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from collector.cli import to_toml
from collector.clock import trio_wall_clock
from collector.config import ConfigError, RedisSettings, StorageSettings, settings_as_dict
from collector.events import BookUpdate, Event, Raw, Status, Ticker, Trade, levels_from_pairs
from collector.health import HealthState
from collector.metrics import Metrics
from collector.outlets import open_outlets
from collector.outlets.buffer import OutletBuffer
from collector.outlets.encoding import encode_event, message_key
from collector.outlets.redis import Latest, latest_values
from collector.outlets.tap import OVERFLOW_ROW_INTERVAL_SECS, OutletTap
from collector.settings_check import parse_settings
from collector.storage.router import FlushWork, run_router
from collector.storage.schemas import SCHEMAS

T0 = 1_700_000_000_000_000
MARKETS = [{"exchange": "binance", "symbols": ["btcusdt"]}]


def trade(n: int, symbol: str = "BTCUSDT", ts: int = T0) -> Trade:
    return Trade("binance", symbol, ts - 5, ts + n, n, str(n), 100.0 + n, 0.5, "buy")


def book(n: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> BookUpdate:
    return BookUpdate(
        "binance",
        "BTCUSDT",
        None,
        T0 + n,
        n,
        "snapshot",
        n,
        None,
        levels_from_pairs(bids),
        levels_from_pairs(asks),
    )


EXAMPLES: list[Event] = [
    trade(1),
    book(2, [(100.0, 1.0), (99.5, 2.0)], [(100.5, 3.0)]),
    Ticker("binance", "BTCUSDT", None, T0, 7, 100.0, 1.0, 100.5, 2.0, None, None),
    Status("binance", "BTCUSDT", None, T0, None, "gap", "orderbook", 5, 9, None, "lost"),
    Raw("binance", "_all", None, T0, None, "binance-0", "recv", b"\x00{}"),
]


def batches_of(*events: Event) -> list[Event]:
    return list(events)


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.DATA_TYPE)
def test_the_json_has_the_parquet_columns_names_in_their_order(event: Event) -> None:
    decoded = msgspec.json.decode(encode_event(event))
    # All but the writer's collector_seq: the outlets get the events before it numbers them.
    assert list(decoded) == [n for n in SCHEMAS[event.DATA_TYPE].names if n != "collector_seq"]


def test_values_are_the_files_values_levels_pairs_times_in_microseconds() -> None:
    decoded = msgspec.json.decode(encode_event(EXAMPLES[1]))
    assert decoded["bids"] == [[100.0, 1.0], [99.5, 2.0]]
    assert decoded["asks"] == [[100.5, 3.0]]
    assert decoded["timestamp_collector"] == T0 + 2
    assert decoded["timestamp_exchange"] is None
    raw = msgspec.json.decode(encode_event(EXAMPLES[4]))
    assert raw["payload"] == "AHt9"  # base64 of b"\x00{}"
    assert message_key(EXAMPLES[0]) == b"binance.BTCUSDT"


# --------------------------------------------------------------------------- buffer and tap


async def test_the_buffer_refuses_what_does_not_fit_and_hands_over_in_order() -> None:
    buffer = OutletBuffer("kafka", 3, frozenset({"trades"}))
    first: list[Event] = [trade(1), trade(2)]
    second: list[Event] = [trade(3)]
    third: list[Event] = [trade(4)]
    assert buffer.offer(first)
    assert buffer.offer(second)
    assert not buffer.offer(third)  # 4 events > 3
    assert await buffer.take() == [first, second]
    assert buffer.size == 0
    assert buffer.offer(third)
    buffer.close()
    assert not buffer.offer([trade(5)])
    assert await buffer.take() == [third]
    assert await buffer.take() == []  # closed and drained


async def test_take_waits_for_a_batch_or_the_close() -> None:
    buffer = OutletBuffer("kafka", 10, frozenset({"trades"}))
    got: list[list[list[Event]]] = []

    async def taker() -> None:
        got.append(await buffer.take())
        got.append(await buffer.take())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(taker)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        batch: list[Event] = [trade(1)]
        buffer.offer(batch)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [[batch]]
        buffer.close()
    assert got == [[batch], []]


async def test_overflow_is_counted_per_outlet_and_data_type_and_recorded_once_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    full = OutletBuffer("kafka", 1, frozenset({"trades", "status"}))
    roomy = OutletBuffer("redis", 100, frozenset({"trades"}))
    tap = OutletTap([full, roomy], metrics.outlets)
    tap([trade(1)])  # fits
    tap([trade(2), trade(3, "ETHUSDT"), EXAMPLES[2]])  # the ticker is not kafka's here
    assert roomy.size == 4
    rows = tap.status_rows(T0 + 99)
    assert [(r.symbol, r.event, r.data_type, r.count) for r in rows if type(r) is Status] == [
        ("BTCUSDT", "outlet_overflow", "trades", 1),
        ("ETHUSDT", "outlet_overflow", "trades", 1),
    ]
    assert all(r.timestamp_collector == T0 + 99 for r in rows)
    dropped = "collector_outlet_dropped_total"
    assert metrics.sample(dropped, {"outlet": "kafka", "data_type": "trades"}) == 2
    assert metrics.sample(dropped, {"outlet": "redis", "data_type": "trades"}) == 0
    # More drops within the second: counted now, recorded at the next second.
    tap([trade(4), trade(5)])
    assert not tap.status_rows(T0 + 100)
    await trio.sleep(OVERFLOW_ROW_INTERVAL_SECS)
    (row,) = tap.status_rows(T0 + 200)
    assert isinstance(row, Status)
    assert row.count == 2
    assert f"between {T0 + 4} and {T0 + 5}" in (row.detail or "")
    assert not tap.pending
    tap.close()
    assert full.closed
    assert roomy.closed


# --------------------------------------------------------------------------- the router's tap


async def test_the_router_offers_every_routed_batch_and_closes_the_tap_at_its_end() -> None:
    metrics = Metrics()
    buffer = OutletBuffer("kafka", 100, frozenset({"trades", "status"}))
    tap = OutletTap([buffer], metrics.outlets)
    stop = Status("binance", "BTCUSDT", None, T0, None, "disconnected", None, None, None, None, "x")
    events_send, events = trio.open_memory_channel[list[Event]](8)
    work_out, work_in = trio.open_memory_channel[FlushWork](0)
    batches: list[list[Event]] = [[trade(1), trade(2)], [trade(3)]]
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_router,
                StorageSettings(rotate_hourly=False),
                events,
                work_out,
                wall_clock=trio_wall_clock(T0),
                first_rows=[stop],
                tap=tap,
            )
        )
        for batch in batches:
            await events_send.send(batch)
        events_send.close()
        async for _ in work_in:
            pass
    assert await buffer.take() == [[stop], *batches]
    assert buffer.closed


async def test_overflow_rows_go_to_the_files(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    buffer = OutletBuffer("kafka", 1, frozenset({"trades"}))
    tap = OutletTap([buffer], metrics.outlets)
    events_send, events = trio.open_memory_channel[list[Event]](8)
    work_out, work_in = trio.open_memory_channel[FlushWork](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_router,
                StorageSettings(rotate_hourly=False),
                events,
                work_out,
                wall_clock=trio_wall_clock(T0),
                tap=tap,
            )
        )
        await events_send.send(batches_of(trade(1), trade(2)))  # too many: dropped for kafka
        events_send.close()
        keys: set[tuple[str, str, str, int]] = set()
        async for work in work_in:
            keys.update(work.rows)
    assert ("binance", "BTCUSDT", "status", -1) in keys
    assert ("binance", "BTCUSDT", "trades", -1) in keys


# --------------------------------------------------------------------------- settings


def settings(**sections: Any) -> Any:
    return parse_settings({"markets": MARKETS, **sections})


async def test_no_outlet_enabled_means_no_tap() -> None:
    metrics = Metrics()
    tap, tasks = open_outlets(settings(), metrics.outlets, HealthState(metrics))
    assert tap is None
    assert tasks == []


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"topic_template": "collector"}, r"must contain \{data_type\}"),
        ({"topic_template": "{data_type}.{exchange}"}, "and no other field"),
        ({"topic_template": "c/{data_type}"}, "not a valid Kafka topic name"),
        ({"options": {"acks": "1"}}, "kafka.options may not set acks"),
        ({"options": {"enable.idempotence": "false"}}, "may not set enable.idempotence"),
        ({"data_types": ["trades", "trades"]}, "listed twice"),
    ],
)
def test_kafka_settings_are_checked(kafka: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(kafka=kafka)


def test_redis_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"redis.url must be a redis://"):
        settings(redis={"url": "http://user:secret@host"})
    with pytest.raises(ConfigError) as info:
        settings(redis={"url": "http://user:secret@host"})
    assert "secret" not in str(info.value)
    with pytest.raises(ConfigError, match="max_retry_delay_secs"):
        settings(redis={"initial_retry_delay_secs": 5, "max_retry_delay_secs": 1})


@pytest.mark.parametrize(
    ("section", "module", "extra"),
    [("kafka", "confluent_kafka", "collector[kafka]"), ("redis", "redis", "collector[redis]")],
)
def test_an_enabled_outlet_without_its_library_is_a_settings_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, section: str, module: str, extra: str
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == module else real(name, *args)

    settings(**{section: {"enabled": True}})  # installed here: fine
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=rf"{section}.enabled is true but .* not installed"):
        settings(**{section: {"enabled": True}})
    with pytest.raises(ConfigError, match=re.escape(extra)):
        settings(**{section: {"enabled": True}})
    settings(**{section: {"enabled": False}})  # not enabled: not needed


# --------------------------------------------------------------------------- redis values


def test_the_last_value_of_each_key_wins_and_books_come_from_snapshots_only() -> None:
    cfg = RedisSettings(book_depth=1)
    delta = BookUpdate(
        "binance", "ETHUSDT", None, T0, 9, "delta", 9, 8, array("d", [1.0, 1.0]), array("d")
    )
    latest: Latest = {}
    latest_values(cfg, [[trade(1), trade(2)], [EXAMPLES[1], delta]], latest)
    assert sorted(latest) == [
        "collector:binance:BTCUSDT:book",
        "collector:binance:BTCUSDT:top",
        "collector:binance:BTCUSDT:trade",
    ]
    value, data_type, received, ttl = latest["collector:binance:BTCUSDT:trade"]
    assert msgspec.json.decode(value)["trade_id"] == "2"
    assert (data_type, received, ttl) == ("trades", T0 + 2, 60_000)
    top = msgspec.json.decode(latest["collector:binance:BTCUSDT:top"][0])
    assert (top["bid_price"], top["bid_size"], top["ask_price"], top["ask_size"]) == (
        100.0,
        1.0,
        100.5,
        3.0,
    )
    book_value = msgspec.json.decode(latest["collector:binance:BTCUSDT:book"][0])
    assert book_value["bids"] == [[100.0, 1.0]]  # depth 1
    assert latest["collector:binance:BTCUSDT:book"][3] == 3_000


def test_check_config_shows_the_outlet_sections_as_toml_with_secrets_masked() -> None:
    shown = settings_as_dict(
        settings(
            kafka={"enabled": True, "options": {"sasl.password": "hunter2", "client.rack": "a"}},
            redis={"url": "redis://:hunter2@cache:6379/0"},
        )
    )
    text = to_toml(shown)
    assert "hunter2" not in text
    parsed = tomllib.loads(text)
    assert parsed["kafka"]["options"] == {"sasl.password": "***", "client.rack": "a"}
    assert parsed["redis"]["url"] == "redis://***@cache:6379/0"
