"""The HTTP side: ``/health``, ``/ready`` and ``/metrics`` served by Quart-Trio on Hypercorn
(and the admin API where it is on: :mod:`collector.control.admin`).

Handlers only read in-memory state (``HealthState``, the metrics registry), so they
never block the event loop.

The listening socket is bound by :func:`bind_http` before the service starts anything
else, so a port in use is a one-line start-up failure, not a traceback from inside the
task tree after the venues were already connected.
"""

from __future__ import annotations

import logging
from functools import partial

import attrs
import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response
from quart_trio import QuartTrio

from collector.control.admin import AdminApi, add_admin_routes
from collector.health import HealthState
from collector.metrics import Metrics

log = logging.getLogger(__name__)


def create_app(health: HealthState, metrics: Metrics, admin: AdminApi | None = None) -> QuartTrio:
    """The service's app; with ``admin``, the admin API too (:mod:`collector.control.admin`)."""
    app = QuartTrio("collector")
    if admin is not None:
        add_admin_routes(app, admin)

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


class HttpBindError(Exception):
    """The listening socket cannot be bound; the message names the address."""


@attrs.frozen
class HttpListener:
    """A bound, listening socket for :func:`run_http_server`; the caller closes it
    (:meth:`close`) when the server never ran or has ended."""

    config: Config
    sockets: Sockets

    @property
    def port(self) -> int:
        return int(self.sockets.insecure_sockets[0].getsockname()[1])

    def close(self) -> None:
        for sock in self.sockets.insecure_sockets:
            sock.close()


def _config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    return config


def bind_http(host: str, port: int) -> HttpListener:
    """Bind and listen on ``host:port`` now (blocking, immediate). Raises HttpBindError
    (port in use, address not available, permission denied for a low port)."""
    config = _config(host, port)
    try:
        sockets = config.create_sockets()  # hypercorn's own bind: SO_REUSEADDR, TCP_NODELAY
    except OSError as exc:  # socket.gaierror too: a host name that does not resolve
        reason = exc.strerror or str(exc)
        raise HttpBindError(f"cannot listen on {config.bind[0]}: {reason}") from None
    listener = HttpListener(config, sockets)
    try:
        for sock in sockets.insecure_sockets:
            sock.listen(config.backlog)
    except OSError as exc:
        listener.close()
        raise HttpBindError(f"cannot listen on {config.bind[0]}: {exc.strerror}") from None
    return listener


async def run_http_server(
    listener: HttpListener,
    health: HealthState,
    metrics: Metrics,
    admin: AdminApi | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on ``listener`` (from :func:`bind_http`) until cancelled (with ``admin``, the
    admin API too). Reports the bound port (useful with port 0) once serving. Does not
    close ``listener``."""
    app = create_app(health, metrics, admin)
    async with trio.open_nursery() as nursery:
        # What hypercorn.trio.serve calls, given the sockets bound already.
        serve = partial(
            worker_serve,
            wrap_app(app, listener.config.wsgi_max_body_size, None),
            listener.config,
            sockets=listener.sockets,
        )
        binds: list[str] = await nursery.start(serve)
        log.info("http server listening", extra={"url": binds[0]})
        task_status.started(listener.port)
