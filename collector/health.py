"""What ``/health`` and ``/ready`` report: the state of every configured connection.

Owned by the service; connections report into it, and other components (the uploader, the
disk monitor) set and clear their own problems through :meth:`HealthState.set_problem` and
:meth:`HealthState.clear_problem`. Plain synchronous state, so reading it from an HTTP
handler never blocks the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import trio

from collector.metrics import Metrics

# A connection that has waited this long for room in the event channel makes ``/health``
# degraded: a wait of a moment is the writer catching up with a burst, a longer one means
# storage cannot keep up (a failing or slow disk) and the venue's buffers are filling.
WRITER_WAIT_DEGRADED_SECS = 5.0


@attrs.define
class ConnectionHealth:
    exchange: str
    symbols: tuple[str, ...]
    up: bool = False
    subscribed_once: bool = False
    connects: int = 0
    last_error: str | None = None
    since: float = 0.0  # trio time of the last up/down change
    writer_wait_since: float | None = None  # trio time a wait for the writer began


class HealthState:
    """Connection states for health and readiness, and the service-wide summary."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.connections: dict[str, ConnectionHealth] = {}
        self.started_at = trio.current_time()
        self.shutting_down = False
        # Extra problems other parts report (e.g. an upload outage), by component: set and
        # cleared only through set_problem / clear_problem.
        self._problems: dict[str, str] = {}

    @property
    def problems(self) -> Mapping[str, str]:
        """The problems other parts reported, by component (a read-only view)."""
        return MappingProxyType(self._problems)

    def set_problem(self, component: str, message: str) -> None:
        """Report (or restate) ``component``'s problem: ``/health`` is degraded until cleared."""
        self._problems[component] = message

    def clear_problem(self, component: str) -> None:
        """``component`` is well again (nothing happens if it had no problem)."""
        self._problems.pop(component, None)

    def add_connection(self, name: str, exchange: str, symbols: tuple[str, ...]) -> None:
        self.connections[name] = ConnectionHealth(exchange, symbols, since=trio.current_time())
        for symbol in symbols:
            self.metrics.websocket_connected.labels(exchange, symbol).set(0)

    def add_symbols(self, name: str, symbols: tuple[str, ...]) -> None:
        """``symbols`` were added to running connection ``name``: they follow its state
        (``collector_websocket_connected``) from now on."""
        conn = self.connections[name]
        conn.symbols = tuple(dict.fromkeys((*conn.symbols, *symbols)))
        for symbol in symbols:
            self.metrics.websocket_connected.labels(conn.exchange, symbol).set(int(conn.up))

    def remove_symbols(self, name: str, symbols: tuple[str, ...]) -> None:
        """``symbols`` were removed from connection ``name`` at run time: their
        ``collector_websocket_connected`` series go (a symbol no longer collected has no
        connection state), and the connection's up/down changes no longer touch them."""
        conn = self.connections[name]
        gone = set(symbols)
        conn.symbols = tuple(s for s in conn.symbols if s not in gone)
        for symbol in symbols:
            with contextlib.suppress(KeyError):
                self.metrics.websocket_connected.remove(conn.exchange, symbol)

    def remove_connection(self, name: str) -> None:
        """Connection ``name`` was stopped at run time (after its supervisor ended): it no
        longer counts for ``/health`` or ``/ready``; its symbols' series go as in
        :meth:`remove_symbols`."""
        self.remove_symbols(name, self.connections[name].symbols)
        del self.connections[name]

    def set_up(self, name: str) -> None:
        conn = self.connections[name]
        conn.up = True
        conn.connects += 1
        conn.since = trio.current_time()
        for symbol in conn.symbols:
            self.metrics.websocket_connected.labels(conn.exchange, symbol).set(1)

    def set_subscribed(self, name: str) -> None:
        self.connections[name].subscribed_once = True

    def set_down(self, name: str, reason: str) -> None:
        conn = self.connections[name]
        now = trio.current_time()
        conn.up = False
        conn.last_error = reason
        conn.since = now
        for symbol in conn.symbols:
            self.metrics.websocket_connected.labels(conn.exchange, symbol).set(0)

    def set_writer_wait(self, name: str, since: float) -> None:
        """Connection ``name`` has been waiting since ``since`` (Trio time) for room in the
        event channel; ``/health`` is degraded once that lasts
        :data:`WRITER_WAIT_DEGRADED_SECS`."""
        self.connections[name].writer_wait_since = since

    def clear_writer_wait(self, name: str) -> None:
        """Connection ``name`` no longer waits for the writer."""
        self.connections[name].writer_wait_since = None

    @property
    def ready(self) -> bool:
        """Every configured connection has subscribed at least once (and we are not stopping)."""
        return (
            bool(self.connections)
            and not self.shutting_down
            and all(c.subscribed_once for c in self.connections.values())
        )

    def report(self) -> dict[str, Any]:
        """The ``/health`` document."""
        now = trio.current_time()
        up = sum(1 for c in self.connections.values() if c.up)
        total = len(self.connections)
        problems = dict(self._problems)
        for name, conn in self.connections.items():
            found = []
            if not conn.up:
                found.append(f"down: {conn.last_error or 'not connected yet'}")
            since = conn.writer_wait_since
            if since is not None and now - since >= WRITER_WAIT_DEGRADED_SECS:
                found.append(
                    f"waiting {now - since:.0f}s for the writer (the event channel is full)"
                )
            if found:
                problems[name] = "; ".join(found)
        if self.shutting_down:
            status = "stopping"
        elif problems:
            status = "degraded"
        else:
            status = "healthy"
        return {
            "status": status,
            "ready": self.ready,
            "uptime_seconds": round(now - self.started_at, 3),
            "connections": {
                "up": up,
                "total": total,
                "detail": {
                    name: {
                        "exchange": c.exchange,
                        "up": c.up,
                        "subscribed": c.subscribed_once,
                        "connects": c.connects,
                        "last_error": c.last_error,
                        "seconds_in_state": round(now - c.since, 3),
                    }
                    for name, c in sorted(self.connections.items())
                },
            },
            "messages_received": int(self.metrics.sum_samples("collector_messages_received_total")),
            "messages_dropped": int(self.metrics.sum_samples("collector_messages_dropped_total")),
            "sequence_gaps": int(self.metrics.sum_samples("collector_sequence_gaps_total")),
            "parse_errors": int(self.metrics.sum_samples("collector_parse_errors_total")),
            "problems": problems,
        }
