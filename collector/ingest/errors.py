"""Expected connection failures: the exchange supervisor reconnects on these.

Library errors (OSError, trio, TLS, websockets) are translated into this small hierarchy
at the boundary (``collector.ingest.websocket``); anything else is a bug and propagates.
A connection's tasks can fail together (the socket breaks under the receive loop and the
sender at once); :func:`connection_failure` makes one error of them at the boundary of
``run_connection``, so the supervisor catches a plain :class:`ConnectionFailed`.
"""

from __future__ import annotations

from collections.abc import Iterator


class ConnectionFailed(Exception):
    """A connection ended or could not be made; ``reason`` is a short label for metrics.

    ``uptime`` is how long the connection was up, in Trio seconds (0 if it never
    connected): set by ``run_connection`` on the error it raises, so the supervisor can
    tell a connection that stayed up from one that keeps failing.
    """

    reason = "error"
    uptime: float = 0.0


class ConnectFailed(ConnectionFailed):
    """TCP, TLS or the WebSocket handshake failed (or timed out).

    ``status`` is the HTTP status of a handshake the server refused (None otherwise).
    """

    reason = "connect_failed"
    status: int | None = None


class ConnectionLost(ConnectionFailed):
    """The peer closed the connection or the transport broke."""

    reason = "connection_lost"


class StaleConnection(ConnectionFailed):
    """No frame arrived within ``message_timeout_secs``."""

    reason = "stale"


class TooManyParseErrors(ConnectionFailed):
    """The parse-error circuit breaker tripped."""

    reason = "parse_errors"


class VenueRequestedReconnect(ConnectionFailed):
    """The venue announced a shutdown or asked clients to reconnect."""

    reason = "venue_reconnect"


class OutboxOverflow(ConnectionFailed):
    """The session queued more frames or requests than the connection can hold."""

    reason = "outbox_full"


# Which failure names the end of a connection when several come together, first first: the
# one most likely to be the cause of the others. The venue's reconnect request and our own
# decisions (the parse breaker, a full outbox) come from what was read, and the socket
# closing is often their consequence; a lost connection explains a silence, so ``stale``
# is last. Failures of the same kind keep the group's order.
PRIORITY: tuple[type[ConnectionFailed], ...] = (
    VenueRequestedReconnect,
    TooManyParseErrors,
    OutboxOverflow,
    ConnectionLost,
    ConnectFailed,
    StaleConnection,
)

# Every ``reason`` a connection can end with (the ``reason`` label of
# ``collector_websocket_disconnects_total``): a closed set, so each is created at 0 at start.
REASONS: tuple[str, ...] = tuple(kind.reason for kind in PRIORITY)


def connection_failure(group: BaseExceptionGroup[ConnectionFailed]) -> ConnectionFailed:
    """One error for a group of connection failures: a fresh copy of the one that ranks
    first in :data:`PRIORITY` (an unlisted kind ranks last). The caller raises it
    ``from group``, so every failure stays in the traceback; the copy keeps the chosen
    error out of its own cause chain.
    """
    failures = list(_leaves(group))
    chosen = min(failures, key=_rank)
    return type(chosen)(*chosen.args)


def _rank(failure: ConnectionFailed) -> int:
    for rank, kind in enumerate(PRIORITY):
        if isinstance(failure, kind):
            return rank
    return len(PRIORITY)


def _leaves(group: BaseExceptionGroup[ConnectionFailed]) -> Iterator[ConnectionFailed]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
