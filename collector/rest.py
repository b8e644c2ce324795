"""Blocking HTTP GET for venues' public REST APIs (book snapshots, symbol lists).

Standard library only (urllib): the few REST calls the service makes do not earn an HTTP
client dependency. Callers run :func:`fetch` in a worker thread.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from email.message import Message

from collector import __version__

HTTP_TIMEOUT_SECS = 10.0
MAX_BODY_BYTES = 64 * 1024 * 1024
USER_AGENT = f"collector/{__version__}"
# "Unavailable For Legal Reasons" (RFC 7725): venues answer it to locations they refuse.
HTTP_GEO_BLOCKED = 451


class RestError(Exception):
    """The request failed; ``retry_after`` is the venue's hint in seconds, if it gave one,
    and ``status`` the HTTP status of an error answer (None: no answer)."""

    def __init__(
        self, message: str, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


def fetch(url: str, *, timeout: float = HTTP_TIMEOUT_SECS) -> bytes:
    """GET ``url`` and return the body. Raises RestError (HTTP error, network, too large)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise RestError(
            f"HTTP {exc.code} from {url}", _retry_after(exc.headers), exc.code
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RestError(f"cannot fetch {url}: {exc}") from None
    if len(body) > MAX_BODY_BYTES:
        raise RestError(f"answer from {url} is larger than {MAX_BODY_BYTES} bytes")
    return body


def _retry_after(headers: Message | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
