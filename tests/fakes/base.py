"""Scaffolding shared by the fake venue servers (one WebSocket server on 127.0.0.1 each).

:class:`FakeServer` owns what every fake does the same way: listening on a free port
(:meth:`~FakeServer.run`, :attr:`~FakeServer.url`), accepting a connection on the venue's
path (HTTP 404 elsewhere), keeping the open clients in :attr:`~FakeServer.clients` and
every client message in :attr:`~FakeServer.client_messages`, the waits built on
:meth:`~FakeServer._notify`, and the controls :meth:`~FakeServer.broadcast` and
:meth:`~FakeServer.drop`. A venue's fake adds its client type (:meth:`_new_client`), its
receive loop (reading with :meth:`_receive_text`), its replies and its keepalive rules.
All scheduling uses Trio's clock; callers own timeouts.

A fake whose subscriptions start with a pushed snapshot answers each request under the
client's :meth:`~FakeServer.replying` lock, and its ``send`` takes the same lock: on the
venue a topic's pushes follow its snapshot, so a push sent while a subscription is being
answered must not reach the client between the subscription and its snapshot.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket


class _Client(Protocol):
    conn: WebSocketConnection


C = TypeVar("C", bound=_Client)
Watcher = Callable[[C], Awaitable[object]]


async def abort(conn: WebSocketConnection) -> None:
    """Close the TCP stream under a WebSocket without a close frame (what venues do)."""
    await conn._stream.aclose()  # trio-websocket keeps the transport here


async def send_quietly(conn: WebSocketConnection, frame: str | bytes) -> int:
    """Send ``frame``: 1 if sent, 0 if the connection is gone."""
    try:
        await conn.send_message(frame)
    except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        return 0
    return 1


async def wait_idle(last_seen: Callable[[], float], idle_secs: float) -> None:
    """Return once ``idle_secs`` seconds have passed since ``last_seen()`` (re-read each time)."""
    while True:
        deadline = last_seen() + idle_secs
        if trio.current_time() >= deadline:
            return
        await trio.sleep_until(deadline)


class FakeServer(ABC, Generic[C]):
    """A fake venue WebSocket server. Start it with ``await nursery.start(fake.run)``."""

    # The request path the venue serves (None: any); other paths get HTTP 404.
    path: ClassVar[str | None] = None
    # What :attr:`url` adds after host and port (empty: adapters append their own path).
    url_path: ClassVar[str] = ""

    def __init__(self) -> None:
        self.client_messages: list[str] = []  # every message from any client, in order
        self.connections = 0  # accepted since start (including closed ones)
        self.clients: list[C] = []  # open connections
        self._port: int | None = None
        self._changed = trio.Event()
        self._reply_locks: weakref.WeakKeyDictionary[C, trio.Lock] = weakref.WeakKeyDictionary()

    def replying(self, client: C) -> trio.Lock:
        """The lock held while one request of ``client`` is answered (its subscriptions
        taken and every reply sent): pushes to ``client`` wait for it."""
        lock = self._reply_locks.get(client)
        if lock is None:
            lock = self._reply_locks[client] = trio.Lock()
        return lock

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError(
                f"{type(self).__name__} is not running (start it with nursery.start)"
            )
        return f"ws://127.0.0.1:{self._port}{self.url_path}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (a free port) and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_websocket, self._handle, "127.0.0.1", 0, ssl_context=None)
            )
            self._port = server.port
            task_status.started()

    # ----------------------------------------------------------------- waiting

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_connected(self, n: int = 1) -> None:
        """Until ``n`` connections have been accepted since start."""
        await self._wait_for(lambda: self.connections >= n)

    async def wait_for_message(self, predicate: Callable[[str], bool]) -> None:
        """Until a client has sent a message (text) for which ``predicate`` is true."""
        await self._wait_for(lambda: any(predicate(m) for m in self.client_messages))

    def _count_json_messages(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        """How many client messages are JSON objects for which ``predicate`` is true."""
        found = 0
        for text in self.client_messages:
            try:
                decoded = msgspec.json.decode(text)
            except msgspec.DecodeError:
                continue
            if isinstance(decoded, dict) and predicate(decoded):
                found += 1
        return found

    # ----------------------------------------------------------------- controls

    async def broadcast(self, frame: str | bytes) -> int:
        """Send ``frame`` to every open client; the number it reached."""
        sent = 0
        for client in list(self.clients):
            sent += await self._send_to(client, frame)
        return sent

    async def drop(self) -> None:
        """Close every client's TCP connection abruptly (no close frame)."""
        for client in list(self.clients):
            await abort(client.conn)

    async def _send_to(self, client: C, frame: str | bytes) -> int:
        """Send one frame to one client (1 if sent); fakes add their bookkeeping."""
        return await send_quietly(client.conn, frame)

    # ----------------------------------------------------------------- serving

    def _accepts(self, path: str) -> bool:
        return self.path is None or urlsplit(path).path == self.path

    @abstractmethod
    def _new_client(self, conn: WebSocketConnection, request: WebSocketRequest) -> C:
        """The fake's state for a connection just accepted (``connections`` counts it)."""

    async def _on_open(self, client: C) -> None:
        """What the venue sends first on a new connection (nothing by default)."""

    def _watchers(self, client: C) -> list[Watcher[C]]:
        """Tasks that run beside the receive loop (keepalive rules, heartbeats)."""
        return []

    @abstractmethod
    async def _receive_loop(self, client: C) -> None:
        """Read and answer the client's messages until the connection closes."""

    async def _receive_text(self, client: C) -> str | None:
        """The client's next message as text (recorded), or None once it has closed."""
        try:
            message = await client.conn.get_message()
        except ConnectionClosed:
            return None
        text = message if isinstance(message, str) else message.decode(errors="replace")
        self.client_messages.append(text)
        return text

    async def _handle(self, request: WebSocketRequest) -> None:
        if not self._accepts(request.path):
            await request.reject(404, body=b"not found")
            return
        conn = await request.accept()
        self.connections += 1
        client = self._new_client(conn, request)
        self.clients.append(client)
        self._notify()
        try:
            await self._on_open(client)
            async with trio.open_nursery() as nursery:
                for watcher in self._watchers(client):
                    nursery.start_soon(watcher, client)
                await self._receive_loop(client)
                nursery.cancel_scope.cancel()
        finally:
            self.clients.remove(client)
            self._notify()
