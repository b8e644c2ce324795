"""A fake venue REST API on 127.0.0.1 for instrument listings: one answer per path and
query parameter value, as the venue would give it.

A tiny HTTP/1.1 server on ``trio.serve_tcp`` (one request per connection), enough for the
collector's worker-thread fetches (urllib). A test maps a path to a function of the
request's query (``{name: [values]}``) that returns the status and body, sees every
request, and can make the next requests fail with a status code.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import trio

Query = dict[str, list[str]]
Answer = Callable[[Query], tuple[int, bytes]]


class FakeRest:
    def __init__(self, routes: dict[str, Answer]) -> None:
        self.routes = routes
        self.requests: list[str] = []
        self.fail_next: list[int] = []  # status codes for the next requests, in order
        self.port = 0
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def wait_requests(self, n: int) -> None:
        while len(self.requests) < n:
            await self._changed.wait()

    async def _handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        _method, target, _version = data.split(b"\r\n", 1)[0].decode().split(" ", 2)
        self.requests.append(target)
        self._changed.set()
        self._changed = trio.Event()
        if self.fail_next:
            status, body = self.fail_next.pop(0), b'{"error":"failing as asked"}'
        else:
            parts = urlsplit(target)
            answer = self.routes.get(parts.path)
            status, body = (404, b"{}") if answer is None else answer(parse_qs(parts.query))
        head = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        await stream.send_all(head.encode() + body)
        await stream.aclose()
