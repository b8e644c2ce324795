"""``wss://``: the client's own TLS transport against TLS WebSocket servers on 127.0.0.1.

Certificates come from a throwaway CA (trustme); the client trusts it through
``connect_websocket(..., ssl_context=...)``, as the system's CAs are trusted in production.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trustme
from trio_websocket import WebSocketRequest
from websockets.server import ServerProtocol

from collector.ingest.errors import ConnectFailed, ConnectionLost
from collector.ingest.websocket import connect_websocket
from tests.ws_helpers import accept_websocket, drain_until_lost, receive_all, start_server


async def test_messages_both_ways_over_tls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    received: list[str | bytes] = []
    big = "z" * 200_000  # many TLS records (16 KiB each) and many reads

    async def handler(request: WebSocketRequest) -> None:
        conn = await request.accept()
        received.append(await conn.get_message())
        await conn.send_message("hello")
        await conn.send_message(big)
        await conn.send_message(b"\x00binary")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, handler, server_context)
        ws = await connect_websocket(url, max_message_size=2**20, ssl_context=client_context)
        await ws.send_text('{"method":"SUBSCRIBE"}')
        assert await receive_all(ws, 3) == [
            b"hello",
            big.encode(),
            b"\x00binary",
        ]
        assert received == ['{"method":"SUBSCRIBE"}']
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_a_certificate_from_an_unknown_authority_is_refused(
    server_context: ssl.SSLContext,
) -> None:
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)  # trusts some other CA only

    async def handler(request: WebSocketRequest) -> None:
        await request.accept()

    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, handler, server_context)
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await connect_websocket(url, max_message_size=2**20, ssl_context=other)
        nursery.cancel_scope.cancel()


async def test_a_name_the_certificate_does_not_hold_is_refused(
    ca: trustme.CA, client_context: ssl.SSLContext
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("stream.example.com").configure_cert(context)  # not 127.0.0.1

    async def handler(request: WebSocketRequest) -> None:
        await request.accept()

    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, handler, context)
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await connect_websocket(url, max_message_size=2**20, ssl_context=client_context)
        nursery.cancel_scope.cancel()


Script = Callable[[trio.SSLStream[trio.SocketStream], ServerProtocol], Awaitable[None]]


async def raw_tls_server(nursery: trio.Nursery, context: ssl.SSLContext, script: Script) -> str:
    """A TLS server on websockets' Sans-I/O ServerProtocol, for endings trio-websocket
    does not make (a TCP close with no TLS close_notify and no close frame)."""

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await script(stream, await accept_websocket(stream))

    listeners = await nursery.start(trio.serve_ssl_over_tcp, handle, 0, context)
    port = listeners[0].transport_listener.socket.getsockname()[1]
    return f"wss://127.0.0.1:{port}/"


@pytest.mark.parametrize("close_notify", [False, True], ids=["tcp-close", "close-notify"])
async def test_a_server_that_ends_without_a_close_frame_ends_the_stream(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, close_notify: bool
) -> None:
    async def script(stream: trio.SSLStream[trio.SocketStream], protocol: ServerProtocol) -> None:
        protocol.send_text(b"bye")
        for chunk in protocol.data_to_send():
            await stream.send_all(chunk)
        if close_notify:
            await stream.aclose()  # TLS close_notify, then the TCP close
        else:
            await stream.transport_stream.aclose()  # the TCP close alone

    async with trio.open_nursery() as nursery:
        url = await raw_tls_server(nursery, server_context, script)
        ws = await connect_websocket(url, max_message_size=2**20, ssl_context=client_context)
        got, lost = await drain_until_lost(ws)
        assert got == [b"bye"]
        assert "without a close frame" in str(lost)
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_closing_while_another_task_receives_ends_that_receive(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.accept()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, handler, server_context)
        ws = await connect_websocket(url, max_message_size=2**20, ssl_context=client_context)
        outcome: list[ConnectionLost] = []

        async def receive() -> None:
            try:
                await ws.receive_messages()
            except ConnectionLost as exc:
                outcome.append(exc)

        async with trio.open_nursery() as inner:
            inner.start_soon(receive)
            await trio.sleep(0.05)
            await trio.aclose_forcefully(ws._stream)
        (lost,) = outcome
        assert "transport broke" in str(lost)
        nursery.cancel_scope.cancel()
