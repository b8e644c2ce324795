"""Expected connection failures: the exchange supervisor reconnects on these.

Library errors (OSError, trio, TLS, websockets) are translated into this small hierarchy
at the boundary (``collector.ingest.websocket``); anything else is a bug and propagates.
"""

from __future__ import annotations


class ConnectionFailed(Exception):
    """A connection ended or could not be made; ``reason`` is a short label for metrics."""

    reason = "error"


class ConnectFailed(ConnectionFailed):
    """TCP, TLS or the WebSocket handshake failed (or timed out)."""

    reason = "connect_failed"


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
