"""The Sans-I/O WebSocket client against real WebSocket servers on 127.0.0.1."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
from trio_websocket import WebSocketRequest
from websockets.server import ServerProtocol

from collector.ingest.errors import ConnectFailed, ConnectionLost
from collector.ingest.websocket import WebSocket, connect_websocket
from tests.ws_helpers import accept_websocket, drain_until_lost, receive_all, start_server


@pytest.fixture(params=["ws", "wss"])
def contexts(
    request: pytest.FixtureRequest,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) TLS contexts: none for ``ws://``, the test CA's for ``wss://``."""
    if request.param == "ws":
        return None, None
    return server_context, client_context


async def test_text_and_binary_messages_and_sending() -> None:
    received: list[str | bytes] = []

    async def handler(request: WebSocketRequest) -> None:
        conn = await request.accept()
        received.append(await conn.get_message())
        await conn.send_message("hello")
        await conn.send_message(b"\x00binary")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, handler)
        ws = await connect_websocket(url, max_message_size=2**20)
        await ws.send_text('{"method":"SUBSCRIBE"}')
        assert await receive_all(ws, 2) == [b"hello", b"\x00binary"]
        assert received == ['{"method":"SUBSCRIBE"}']
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_all_messages_of_one_read_come_back_together(
    contexts: tuple[ssl.SSLContext | None, ssl.SSLContext | None],
) -> None:
    # Over TLS each message is a record of its own: every record that arrived is
    # decrypted in the one read (Trio's SSLStream handed over one record per call).
    server_context, client_context = contexts
    sent = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        conn = await request.accept()
        for i in range(50):
            await conn.send_message(f"m{i}")
        sent.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, handler, server_context)
        ws = await connect_websocket(url, max_message_size=2**20, ssl_context=client_context)
        await sent.wait()
        await trio.sleep(0.05)  # let every byte reach our socket buffer
        batch = await ws.receive_messages()
        assert batch == [f"m{i}".encode() for i in range(50)]
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_server_ping_is_answered(
    contexts: tuple[ssl.SSLContext | None, ssl.SSLContext | None],
) -> None:
    server_context, client_context = contexts
    ponged = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        conn = await request.accept()
        await conn.ping(b"payload-123")  # returns only when the matching pong arrives
        ponged.set()
        await conn.send_message("after-ping")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, handler, server_context)
        ws = await connect_websocket(url, max_message_size=2**20, ssl_context=client_context)
        assert await receive_all(ws, 1) == [b"after-ping"]
        assert ponged.is_set()
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_server_close_raises_connection_lost_with_code() -> None:
    async def handler(request: WebSocketRequest) -> None:
        conn = await request.accept()
        await conn.send_message("last")
        await conn.aclose(code=1001, reason="going away")

    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, handler)
        ws = await connect_websocket(url, max_message_size=2**20)
        got, lost = await drain_until_lost(ws)
        assert got == [b"last"]
        assert "code 1001" in str(lost)
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_handshake_rejected_is_connect_failed() -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.reject(404, body=b"no such stream")

    async with trio.open_nursery() as nursery:
        url = await start_server(nursery, handler)
        with pytest.raises(ConnectFailed, match="404"):
            await connect_websocket(url, max_message_size=2**20)
        nursery.cancel_scope.cancel()


async def test_refused_connection_is_connect_failed() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await connect_websocket(f"ws://127.0.0.1:{port}/", max_message_size=2**20)


async def test_invalid_url_is_connect_failed() -> None:
    with pytest.raises(ConnectFailed, match="invalid WebSocket URL"):
        await connect_websocket("http://example.invalid/", max_message_size=2**20)


async def raw_server(
    nursery: trio.Nursery, script: Callable[[trio.SocketStream, ServerProtocol], Awaitable[None]]
) -> str:
    """A server built on websockets' Sans-I/O ServerProtocol, for frames trio-websocket
    cannot send (fragments) or abrupt transport ends."""

    async def handle(stream: trio.SocketStream) -> None:
        await script(stream, await accept_websocket(stream))

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    port = listeners[0].socket.getsockname()[1]
    return f"ws://127.0.0.1:{port}/"


async def test_fragmented_message_is_reassembled() -> None:
    async def script(stream: trio.SocketStream, protocol: ServerProtocol) -> None:
        protocol.send_text(b'{"part":', fin=False)
        protocol.send_continuation(b'"one",', fin=False)
        protocol.send_continuation(b'"end":true}', fin=True)
        protocol.send_binary(b"next")
        for chunk in protocol.data_to_send():
            await stream.send_all(chunk)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        url = await raw_server(nursery, script)
        ws = await connect_websocket(url, max_message_size=2**20)
        assert await receive_all(ws, 2) == [b'{"part":"one","end":true}', b"next"]
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_abrupt_eof_is_connection_lost() -> None:
    async def script(stream: trio.SocketStream, protocol: ServerProtocol) -> None:
        protocol.send_text(b"bye")
        for chunk in protocol.data_to_send():
            await stream.send_all(chunk)
        await stream.aclose()  # TCP close with no close frame

    async with trio.open_nursery() as nursery:
        url = await raw_server(nursery, script)
        ws = await connect_websocket(url, max_message_size=2**20)
        got, lost = await drain_until_lost(ws)
        assert got == [b"bye"]
        assert "without a close frame" in str(lost)
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_message_over_the_size_limit_is_connection_lost() -> None:
    async def script(stream: trio.SocketStream, protocol: ServerProtocol) -> None:
        protocol.send_text(b"x" * 5000)
        for chunk in protocol.data_to_send():
            await stream.send_all(chunk)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        url = await raw_server(nursery, script)
        ws = await connect_websocket(url, max_message_size=1000)
        got, lost = await drain_until_lost(ws)
        assert got == []
        assert "exceeds limit of 1000 bytes" in str(lost)
        await ws.aclose()
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------- the fast path, unit level


def _pair() -> tuple[WebSocket, ServerProtocol]:
    """A client WebSocket (no stream: only ``_parse`` is used) and the server protocol it
    completed an opening handshake with, in memory."""
    from websockets.client import ClientProtocol
    from websockets.http11 import Request
    from websockets.uri import parse_uri

    client = ClientProtocol(parse_uri("ws://127.0.0.1/"), max_size=2**20)
    server = ServerProtocol()
    client.send_request(client.connect())
    for chunk in client.data_to_send():
        server.receive_data(chunk)
    (request,) = server.events_received()
    assert isinstance(request, Request)
    server.send_response(server.accept(request))
    for chunk in server.data_to_send():
        client.receive_data(chunk)
    assert client.events_received()  # the response: both sides are open now
    return WebSocket(None, client, max_message_size=2**20), server  # type: ignore[arg-type]


def _server_bytes(server: ServerProtocol) -> bytes:
    """Frames as a server sends them: short, 16-bit and 64-bit lengths, a ping between."""
    server.send_text(b"a")
    server.send_text(b"x" * 300)
    server.send_ping(b"are you there")
    server.send_binary(b"y" * 70_000)
    server.send_text(b"end")
    return b"".join(server.data_to_send())


EXPECTED = [b"a", b"x" * 300, b"y" * 70_000, b"end"]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 126, 4096, 65536])
def test_fast_path_reassembles_frames_split_anywhere(step: int) -> None:
    ws, server = _pair()
    data = _server_bytes(server)
    got = []
    for i in range(0, len(data), step):
        got += ws._parse(data[i : i + step])
    assert got == EXPECTED
    assert ws._fast  # nothing unusual: the fast path stayed on
    assert ws._protocol.data_to_send()  # the ping was answered (a pong is queued)


def test_fast_path_every_two_way_split_of_the_small_frames() -> None:
    data = _server_bytes(_pair()[1])
    head = data[: data.index(b"y" * 10) - 4]  # "a", 300 x's and the ping, plus a header
    for cut in range(len(head)):
        ws, _ = _pair()
        got = ws._parse(data[:cut]) + ws._parse(data[cut:])
        assert got == EXPECTED, cut


def test_fast_path_hands_a_fragmented_message_to_the_protocol() -> None:
    ws, server = _pair()
    server.send_text(b"one")
    server.send_text(b"fra", fin=False)
    server.send_continuation(b"gment", fin=True)
    server.send_text(b"two")
    assert ws._parse(b"".join(server.data_to_send())) == [
        b"one",
        b"fragment",
        b"two",
    ]
    assert not ws._fast


class _GoneAfterOneRead(trio.abc.Stream):
    """A transport that hands over ``data`` in one read and whose peer is gone: every write
    fails, and the next read sees the end of the stream."""

    def __init__(self, data: bytes) -> None:
        self._reads = [data]

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._reads.pop(0) if self._reads else b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("the peer is gone")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("last_frame", ["ping", "close"])
async def test_messages_of_a_read_come_before_the_error_its_reply_meets(last_frame: str) -> None:
    # The read's data frames are followed by a frame that needs a reply (a pong, or the
    # close frame's echo), which cannot be sent: the data is handed over, the error after.
    ws, server = _pair()
    server.send_text(b"first")
    server.send_text(b"second")
    if last_frame == "ping":
        server.send_ping(b"still there?")
    else:
        server.send_close(1001, "going away")
    ws._stream = _GoneAfterOneRead(b"".join(server.data_to_send()))
    assert await ws.receive_messages() == [b"first", b"second"]
    with pytest.raises(ConnectionLost):
        await ws.receive_messages()
