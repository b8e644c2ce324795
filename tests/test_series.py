"""Series created at start (``collector.series``): scraped over real HTTP from the running
service before any event, kept as they are by a second call, and closed sets that match
the code that counts them."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families

from collector.exchanges.base import Subscription
from collector.ingest.errors import REASONS, ConnectionFailed
from collector.metrics import CONNECT_OUTCOMES, HANDOVER_OUTCOMES, WRITER_STAGES, Metrics
from collector.planning import plan_service
from collector.series import create_connection_series, create_series
from collector.service import EXIT_OK
from collector.settings_check import parse_settings
from tests.fakes.binance import FakeBinance, trade_frame
from tests.test_http import Samples, fetch_metrics
from tests.test_service import TIME_US, GatedFake, settle, start_service

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0
EX = "binance"
FEEDS = ("trades", "orderbook", "ticker")
# Spelt out here rather than imported, so the test fails if a reason goes missing.
DISCONNECT_REASONS = (
    "connect_failed",
    "connection_lost",
    "stale",
    "parse_errors",
    "venue_reconnect",
    "outbox_full",
)


def two_connections(url: str, data_dir: Path) -> Any:
    """Binance BTCUSDT and ETHUSDT (all three feeds) on binance-0, SOLUSDT trades and raw
    frames on binance-1."""
    return parse_settings(
        {
            "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
            "storage": {"data_dir": str(data_dir)},
            "markets": [
                {"exchange": EX, "symbols": ["btcusdt", "ethusdt"], "base_url": url},
                {
                    "exchange": EX,
                    "symbols": ["solusdt"],
                    "feeds": ["trades", "raw"],
                    "base_url": url,
                },
            ],
        }
    )


def planned_series() -> dict[tuple[str, frozenset[tuple[str, str]]], float | None]:
    """Every series the plan of :func:`two_connections` determines, with its value before
    any event (None: not checked, it may have moved by the time of the scrape)."""
    expected: dict[tuple[str, frozenset[tuple[str, str]]], float | None] = {}

    def add(name: str, value: float | None, **labels: str) -> None:
        expected[(name, frozenset(labels.items()))] = value

    for name in (
        "collector_messages_received_total",
        "collector_bytes_received_total",
        "collector_parse_errors_total",
        "collector_messages_dropped_total",
        "collector_subscribe_errors_total",
        "collector_exchange_latency_seconds_count",
    ):
        add(name, 0, exchange=EX)
    for outcome in ("failed", "timeout"):
        add("collector_websocket_connections_total", 0, exchange=EX, outcome=outcome)
    add("collector_websocket_connections_total", 2, exchange=EX, outcome="connected")
    for outcome in ("ok", "failed", "cut"):  # Binance closes connections at 24 h
        add("collector_planned_handovers_total", 0, exchange=EX, outcome=outcome)
    for reason in DISCONNECT_REASONS:
        add("collector_websocket_disconnects_total", 0, exchange=EX, reason=reason)
    for reason in ("duplicate", "stale", "while_resyncing"):
        add("collector_messages_discarded_total", 0, exchange=EX, reason=reason)
    for connection in ("binance-0", "binance-1"):
        add("collector_writer_wait_seconds_total", 0, exchange=EX, connection=connection)
        add("collector_writer_waiting_seconds", 0, exchange=EX, connection=connection)
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        add("collector_websocket_connected", 1, exchange=EX, symbol=symbol)
    for data_type in FEEDS:
        add("collector_rows_written_total", 0, exchange=EX, data_type=data_type)
        add("collector_sequence_gaps_total", 0, exchange=EX, data_type=data_type)
    for data_type in (*FEEDS, "status", "raw"):
        add("collector_files_finished_total", 0, exchange=EX, data_type=data_type)
    # The connected rows and the raw rows of the frames sent (the subscriptions) may have
    # been flushed already.
    for data_type in ("status", "raw"):
        add("collector_rows_written_total", None, exchange=EX, data_type=data_type)
    for stage in ("flush", "finalize", "recover"):
        add("collector_writer_errors_total", 0, stage=stage)
    for stage in ("put", "verify", "delete"):
        add("collector_upload_failures_total", 0, stage=stage)
    add("collector_upload_s3_available", 1)  # local mode: no request, so none failed
    return expected


def labelled(samples: Samples, name: str) -> set[frozenset[tuple[str, str]]]:
    return {labels for sample_name, labels in samples if sample_name == name}


async def test_every_planned_series_is_scraped_at_0_before_any_event(tmp_path: Path) -> None:
    before = time.time()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = GatedFake()  # accepts, then reads and sends nothing
            await nursery.start(fake.run)
            service = await start_service(nursery, two_connections(fake.url, tmp_path))
            await fake.wait_connected(2)
            await settle()
            samples = await fetch_metrics(service.port)
            after = time.time()
            fake.gate.set()
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()

    problems = []
    for key, value in planned_series().items():
        if key not in samples:
            problems.append(f"missing: {key}")
        elif value is not None and samples[key] != value:
            problems.append(f"{key} = {samples[key]}, expected {value}")
    assert not problems, "\n".join(problems)
    # The timestamps read the start until the first data: their age counts from it.
    started = samples[("collector_start_time_seconds", frozenset())]
    last_message = samples[
        ("collector_last_message_timestamp_seconds", frozenset({("exchange", EX)}))
    ]
    assert before <= started <= last_message <= after
    streams = labelled(samples, "collector_last_data_timestamp_seconds")
    assert streams == {
        frozenset({("exchange", EX), ("symbol", symbol), ("data_type", data_type)})
        for symbol, data_type in [
            *((s, f) for s in ("BTCUSDT", "ETHUSDT") for f in FEEDS),
            ("SOLUSDT", "trades"),  # raw frames are no stream
        ]
    }
    for labels in streams:
        assert samples[("collector_last_data_timestamp_seconds", labels)] == last_message


async def test_events_count_on_the_series_made_at_start_and_add_none(tmp_path: Path) -> None:
    """The first gap and the first duplicate rise from 0 on series that were there before;
    traffic makes no label set the start did not (the closed sets cover what runs)."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            service = await start_service(nursery, two_connections(fake.url, tmp_path))
            start = await fetch_metrics(service.port)
            await fake.wait_subscribed(["btcusdt@trade", "solusdt@trade"])
            # Trade 3 after 1 is a gap; 3 again is a duplicate.
            for trade_id in (1, 3, 3):
                frame = trade_frame("btcusdt", trade_id, 100.0, 0.5, TIME_US + trade_id, True)
                assert await fake.send(frame) == 1
            assert await fake.send(trade_frame("solusdt", 7, 1.0, 2.0, TIME_US, False)) == 1
            await settle()
            running = await fetch_metrics(service.port)
            assert await service.stop() == EXIT_OK
            assert service.handle is not None
            stopped = parse(service.handle.metrics.render().decode())  # its server is gone
            nursery.cancel_scope.cancel()

    gaps = ("collector_sequence_gaps_total", frozenset({("exchange", EX), ("data_type", "trades")}))
    duplicates = (
        "collector_messages_discarded_total",
        frozenset({("exchange", EX), ("reason", "duplicate")}),
    )
    assert (start[gaps], running[gaps]) == (0, 1)
    assert (start[duplicates], running[duplicates]) == (0, 1)
    for name in {name for name, _ in planned_series()} | {
        "collector_last_data_timestamp_seconds",
        "collector_last_message_timestamp_seconds",
    }:
        for later in (running, stopped):
            assert labelled(later, name) == labelled(start, name), name


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_second_call_keeps_every_value_and_adds_a_new_market() -> None:
    """What a market added at run time would do: call again with the connection's new plan."""
    metrics = Metrics()
    plan = plan_service(two_connections("ws://127.0.0.1:1", Path("/nonexistent")))
    t0_us, t1_us = TIME_US, TIME_US + 60_000_000
    create_series(metrics, plan, t0_us)
    value = metrics.registry.get_sample_value

    # Events meanwhile.
    metrics.subscribe_errors.labels(EX).inc()
    metrics.last_message_timestamp.labels(EX).set(t0_us / 1e6 + 5)
    metrics.last_data(EX)[("BTCUSDT", "trades")] = t0_us + 5_000_000

    first = plan.connections[0]
    added = attrs.evolve(
        first, subscriptions=(*first.subscriptions, Subscription("BNBUSDT", "trades"))
    )
    create_connection_series(metrics, added, t1_us)

    assert value("collector_subscribe_errors_total", {"exchange": EX}) == 1
    assert value("collector_last_message_timestamp_seconds", {"exchange": EX}) == t0_us / 1e6 + 5

    def last_data(symbol: str, data_type: str) -> float | None:
        labels = {"exchange": EX, "symbol": symbol, "data_type": data_type}
        return value("collector_last_data_timestamp_seconds", labels)

    assert last_data("BTCUSDT", "trades") == t0_us / 1e6 + 5
    assert last_data("BTCUSDT", "orderbook") == t0_us / 1e6  # still waiting since the start
    assert last_data("BNBUSDT", "trades") == t1_us / 1e6  # waiting since it was added
    assert value("collector_websocket_connected", {"exchange": EX, "symbol": "BNBUSDT"}) == 0


def test_a_new_exchange_starts_its_message_clock_when_added() -> None:
    metrics = Metrics()
    plan = plan_service(two_connections("ws://127.0.0.1:1", Path("/nonexistent")))
    other = attrs.evolve(plan.connections[0], exchange="binance-other", name="binance-other-0")
    create_series(metrics, plan, TIME_US)
    create_connection_series(metrics, other, TIME_US + 1_000_000)
    value = metrics.registry.get_sample_value
    assert value("collector_last_message_timestamp_seconds", {"exchange": EX}) == TIME_US / 1e6
    assert value("collector_last_message_timestamp_seconds", {"exchange": "binance-other"}) == (
        TIME_US / 1e6 + 1
    )


# --------------------------------------------------------------------------- closed sets


def _subclasses(cls: type[ConnectionFailed]) -> list[type[ConnectionFailed]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_connection_failure_has_its_reason_created() -> None:
    assert sorted(REASONS) == sorted(DISCONNECT_REASONS)
    assert {kind.reason for kind in _subclasses(ConnectionFailed)} <= set(REASONS)


def _labels_in_source(pattern: str, *paths: str) -> set[str]:
    return {
        match
        for path in paths
        for match in re.findall(pattern, (ROOT / "collector" / path).read_text("utf-8"))
    }


def test_the_stage_and_outcome_labels_in_the_code_are_the_closed_sets() -> None:
    """Every literal label value the code counts is one created at start."""
    stages = _labels_in_source(
        r'writer_errors\.labels\(stage="(\w+)"\)',
        "storage/flusher.py",
        "storage/finalizer.py",
        "storage/recovery.py",
    )
    assert stages == set(WRITER_STAGES)
    outcomes = _labels_in_source(
        r'attempts\.labels\(plan\.exchange, "(\w+)"\)', "ingest/connection.py"
    )
    assert outcomes == set(CONNECT_OUTCOMES)
    handovers = _labels_in_source(
        r'handovers\.labels\(plan\.exchange, "(\w+)"\)', "ingest/supervisor.py"
    )
    assert handovers == set(HANDOVER_OUTCOMES)


def test_derivative_feeds_get_the_series_of_the_tables_they_write() -> None:
    """``derivatives`` writes ``derivative_ticker``: its series carry that data type, the
    one its rows (and the watchdog's streams) are counted under."""
    settings = parse_settings(
        {
            "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
            "markets": [
                {"exchange": "bybit", "category": "linear", "symbols": ["BTCUSDT"],
                 "feeds": ["derivatives", "liquidations"]},
            ],
        }
    )  # fmt: skip
    metrics = Metrics()
    create_series(metrics, plan_service(settings), TIME_US)
    value = metrics.registry.get_sample_value
    for data_type in ("derivative_ticker", "liquidations"):
        labels = {"exchange": "bybit-linear", "symbol": "BTCUSDT", "data_type": data_type}
        assert value("collector_last_data_timestamp_seconds", labels) == TIME_US / 1e6
        written = {"exchange": "bybit-linear", "data_type": data_type}
        assert value("collector_rows_written_total", written) == 0
        assert value("collector_sequence_gaps_total", written) == 0
    stray = {"exchange": "bybit-linear", "data_type": "derivatives"}
    assert value("collector_rows_written_total", stray) is None
