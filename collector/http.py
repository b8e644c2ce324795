"""The HTTP side: ``/health``, ``/ready`` and ``/metrics`` served by Quart-Trio on Hypercorn.

Handlers only read in-memory state (``HealthState``, the metrics registry), so they
never block the event loop.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response
from quart_trio import QuartTrio

from collector.health import HealthState
from collector.metrics import Metrics

log = logging.getLogger(__name__)


def create_app(health: HealthState, metrics: Metrics) -> QuartTrio:
    app = QuartTrio("collector")

    @app.get("/health")
    async def health_endpoint() -> tuple[dict[str, object], int]:
        report = health.report()
        return report, 200

    @app.get("/ready")
    async def ready_endpoint() -> tuple[dict[str, object], int]:
        ready = health.ready
        pending = sorted(n for n, c in health.connections.items() if not c.subscribed_once)
        return {"ready": ready, "waiting_for": pending}, (200 if ready else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), status=200, content_type=CONTENT_TYPE_LATEST)

    return app


async def run_http_server(
    host: str,
    port: int,
    health: HealthState,
    metrics: Metrics,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled. Reports the bound port (useful with port 0) once listening."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    app = create_app(health, metrics)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve, app, config)
        bound_port = int(binds[0].rsplit(":", 1)[1])
        log.info("http server listening", extra={"url": binds[0]})
        task_status.started(bound_port)
