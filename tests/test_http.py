"""The HTTP side over real HTTP on 127.0.0.1: /health, /ready and /metrics.

These use Trio's real clock: the HTTP client (urllib) runs in a worker thread, which
an autojump clock would take for idleness. Every wait is bounded with ``trio.fail_after``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from collector.health import HealthState
from collector.http import bind_http, run_http_server
from collector.metrics import Metrics

TIMEOUT = 10.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def fetch(port: int, path: str) -> tuple[int, str, str]:
    """GET ``path`` from 127.0.0.1:``port``: (status, content type, body)."""
    return await trio.to_thread.run_sync(_get, f"http://127.0.0.1:{port}{path}")


async def fetch_json(port: int, path: str) -> tuple[int, Any]:
    status, content_type, body = await fetch(port, path)
    assert content_type == "application/json"
    return status, json.loads(body)


async def fetch_metrics(port: int) -> Samples:
    """Every sample of ``/metrics``, parsed by prometheus_client's own parser."""
    status, content_type, body = await fetch(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def start_http(nursery: trio.Nursery, health: HealthState, metrics: Metrics) -> int:
    listener = bind_http("127.0.0.1", 0)
    port: int = await nursery.start(run_http_server, listener, health, metrics)
    return port


async def test_ready_and_health_follow_the_connection_states() -> None:
    metrics = Metrics()
    health = HealthState(metrics)
    health.add_connection("binance-0", "binance", ("BTCUSDT", "ETHUSDT"))
    health.add_connection("binance-1", "binance", ("SOLUSDT",))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await start_http(nursery, health, metrics)
            assert port > 0

            assert await fetch_json(port, "/ready") == (
                503,
                {"ready": False, "waiting_for": ["binance-0", "binance-1"]},
            )
            status, report = await fetch_json(port, "/health")
            assert status == 200
            assert report["status"] == "degraded"
            assert report["ready"] is False
            assert report["connections"]["up"] == 0
            assert report["connections"]["total"] == 2
            assert report["problems"] == {
                "binance-0": "down: not connected yet",
                "binance-1": "down: not connected yet",
            }

            health.set_up("binance-0")
            health.set_up("binance-1")
            health.set_subscribed("binance-0")
            assert await fetch_json(port, "/ready") == (
                503,
                {"ready": False, "waiting_for": ["binance-1"]},
            )
            health.set_subscribed("binance-1")
            assert await fetch_json(port, "/ready") == (200, {"ready": True, "waiting_for": []})

            metrics.messages_dropped.labels("binance").inc(3)
            metrics.messages_received.labels("binance").inc(40)
            status, report = await fetch_json(port, "/health")
            assert report["status"] == "healthy"
            assert report["ready"] is True
            assert report["connections"]["up"] == 2
            assert report["connections"]["detail"]["binance-0"]["connects"] == 1
            assert report["messages_dropped"] == 3
            assert report["messages_received"] == 40
            assert report["problems"] == {}
            assert report["uptime_seconds"] >= 0

            # A lost connection: degraded with the reason, still ready (it subscribed once).
            health.set_down("binance-1", "StaleConnection: no message for 30.0s")
            status, report = await fetch_json(port, "/health")
            assert report["status"] == "degraded"
            assert report["connections"]["up"] == 1
            assert report["problems"] == {
                "binance-1": "down: StaleConnection: no message for 30.0s"
            }
            assert (await fetch_json(port, "/ready"))[0] == 200

            # Stopping: not ready any more.
            health.shutting_down = True
            assert (await fetch_json(port, "/ready"))[0] == 503
            assert (await fetch_json(port, "/health"))[1]["status"] == "stopping"
            nursery.cancel_scope.cancel()


async def test_problems_are_set_and_cleared_through_methods() -> None:
    """Other parts report problems by component; ``/health`` lists them beside connections."""
    health = HealthState(Metrics())
    assert health.report()["status"] == "healthy"
    health.set_problem("disk", "disk 95.0% full")
    health.set_problem("upload", "S3 unreachable")
    health.set_problem("upload", "S3 bucket 'b' does not exist")  # restated: replaced
    report = health.report()
    assert report["status"] == "degraded"
    assert report["problems"] == {
        "disk": "disk 95.0% full",
        "upload": "S3 bucket 'b' does not exist",
    }
    assert health.problems == report["problems"]
    health.clear_problem("disk")
    health.clear_problem("disk")  # clearing twice is harmless
    assert health.report()["problems"] == {"upload": "S3 bucket 'b' does not exist"}
    health.clear_problem("upload")
    assert health.report()["status"] == "healthy"
    assert health.problems == {}


async def test_metrics_endpoint_serves_the_registry_in_prometheus_text() -> None:
    metrics = Metrics()
    health = HealthState(metrics)
    health.add_connection("binance-0", "binance", ("BTCUSDT",))
    health.set_up("binance-0")
    metrics.messages_received.labels("binance").inc(7)
    metrics.watch_channel("events", lambda: (3, 16))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await start_http(nursery, health, metrics)
            samples = await fetch_metrics(port)
            nursery.cancel_scope.cancel()
    assert (
        sample(samples, "collector_websocket_connected", exchange="binance", symbol="BTCUSDT") == 1
    )
    assert sample(samples, "collector_messages_received_total", exchange="binance") == 7
    assert sample(samples, "collector_channel_items", channel="events") == 3
    assert sample(samples, "collector_channel_capacity", channel="events") == 16


async def test_unknown_paths_are_404() -> None:
    metrics = Metrics()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await start_http(nursery, HealthState(metrics), metrics)
            status, _, _ = await fetch(port, "/nope")
            nursery.cancel_scope.cancel()
    assert status == 404
