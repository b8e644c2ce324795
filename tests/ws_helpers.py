"""Server-side pieces shared by the WebSocket client tests."""

from __future__ import annotations

import trio
from websockets.server import ServerProtocol


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
