"""Pieces shared by the WebSocket client tests (plain and TLS)."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import trio
from trio_websocket import WebSocketRequest, serve_websocket
from websockets.server import ServerProtocol

from collector.ingest.errors import ConnectionLost
from collector.ingest.websocket import WebSocket

Handler = Callable[[WebSocketRequest], Awaitable[None]]


async def start_server(
    nursery: trio.Nursery, handler: Handler, context: ssl.SSLContext | None = None
) -> str:
    """A trio-websocket server on 127.0.0.1 (``wss://`` with ``context``); its URL."""
    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, context)
    scheme = "ws" if context is None else "wss"
    return f"{scheme}://127.0.0.1:{server.port}/stream"


async def receive_all(ws: WebSocket, count: int) -> list[bytes]:
    """Messages until at least ``count`` have arrived."""
    got: list[bytes] = []
    while len(got) < count:
        got.extend(await ws.receive_messages())
    return got


async def drain_until_lost(ws: WebSocket) -> tuple[list[bytes], ConnectionLost]:
    """Every message received until the connection is lost, and how it was lost."""
    got: list[bytes] = []
    while True:
        try:
            got.extend(await ws.receive_messages())
        except ConnectionLost as exc:
            return got, exc


async def accept_websocket(stream: trio.abc.Stream) -> ServerProtocol:
    """Complete a WebSocket opening handshake on ``stream`` with websockets' Sans-I/O
    ServerProtocol, for servers that send what trio-websocket cannot (fragments, abrupt
    transport ends)."""
    protocol = ServerProtocol()
    while True:
        protocol.receive_data(await stream.receive_some(65536))
        events = protocol.events_received()
        if events:
            break
    protocol.send_response(protocol.accept(events[0]))  # type: ignore[arg-type]
    for chunk in protocol.data_to_send():
        await stream.send_all(chunk)
    return protocol
