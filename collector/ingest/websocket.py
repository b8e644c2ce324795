"""The WebSocket client: ``websockets``' Sans-I/O protocol driven from a Trio stream (the
lean TCP/TLS transport of :mod:`collector.ingest.transport`).

Chosen by measurement (docs/design.md; the figures are in docs/performance.md): the
connection's own task reads up to 64 KiB at a time and gets back every complete message in
that read, so frames are handled in batches with no task switch or channel hop per message.
Complete, unfragmented data frames (all but a handful of a venue's frames) are cut out of
the read by a small fast path here (:meth:`WebSocket._parse`): ``websockets``'
generator-based frame parser cost more per frame than parsing a trade. The protocol still
does the opening handshake, control frames (pings are answered with pongs; a close is
echoed), and, from the first fragmented, oversized or malformed frame on, everything.
Everything library-specific stays in this module; errors leave it as
:class:`~collector.ingest.errors.ConnectionFailed` subclasses.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from functools import cache
from typing import cast

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidURI
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from collector.ingest.errors import ConnectFailed, ConnectionLost
from collector.ingest.transport import READ_SIZE, TcpTransport

# A longer response head is handed to the protocol as it comes (which refuses it).
MAX_RESPONSE_HEAD = 65536

Message = bytes
"""The payload of one complete WebSocket message, text or binary alike: adapters decode
bytes, and a tuple per message with its opcode cost more than anyone used it for."""


@cache
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class WebSocket:
    """An open client WebSocket. One task receives; sends may come from any task."""

    def __init__(
        self, stream: trio.abc.Stream, protocol: ClientProtocol, *, max_message_size: int
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._max_size = max_message_size
        self._send_lock = trio.StrictFIFOLock()
        self._fragments: list[bytes] = []
        self._pending: list[Message] = []
        # How the connection ended while a read's messages were still to be handed over:
        # raised by the next call, after those messages.
        self._failure: ConnectionLost | None = None
        # Fast path state: received bytes not parsed yet (the start of a frame), their
        # size, and how many bytes that frame (or its header) needs in all.
        self._fast = True
        self._tail: list[bytes] = []
        self._tail_size = 0
        self._need = 0

    async def receive_messages(self) -> list[Message]:
        """Every complete message that arrived in one read (possibly none: control frames).

        Raises ConnectionLost when the connection is closed or broken. Messages received
        before that come first: a read whose data frames arrived with a close frame, or
        whose ping could not be answered because the peer had gone, returns its messages,
        and the next call raises (what was received is never lost to the error).
        """
        if self._pending:
            pending, self._pending = self._pending, []
            return pending
        if self._failure is not None:
            raise self._failure
        if self._protocol.state is not State.OPEN:
            # Failed or closed while handling an earlier read (e.g. during the handshake).
            raise ConnectionLost(self._close_description())
        try:
            data = await self._stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(f"transport broke: {exc!r}") from exc
        if data and self._fast:
            messages = self._parse(data)
        else:
            if self._tail:
                self._protocol.receive_data(self._take_tail())
            if data:
                self._protocol.receive_data(data)
            else:
                self._protocol.receive_eof()
            messages = self._collect(self._protocol.events_received())
        try:
            await self._flush()  # pongs, and the reply to a close frame
        except ConnectionLost as exc:
            return self._fail_after(messages, exc)
        state = self._state()  # receive_data() may have moved it on
        if state is State.CLOSED or not data:
            return self._fail_after(messages, ConnectionLost(self._close_description(eof=not data)))
        if state is State.CLOSING and not messages:
            raise ConnectionLost(self._close_description())
        return messages

    def _fail_after(self, messages: list[Message], failure: ConnectionLost) -> list[Message]:
        """Hand over ``messages`` now and raise ``failure`` at the next call; raise it at
        once if there are none."""
        if not messages:
            raise failure
        self._failure = failure
        return messages

    def _state(self) -> State:
        return self._protocol.state

    def _take_tail(self) -> bytes:
        tail = b"".join(self._tail)
        self._tail = []
        self._tail_size = 0
        self._need = 0
        return tail

    def _parse(self, data: bytes | bytearray) -> list[Message]:
        """The fast path: complete, unfragmented data frames of ``data``, parsed here.

        Everything else goes to the ``websockets`` protocol, which parses from a frame
        boundary: a complete control frame alone (pings are answered, a close starts the
        closing handshake), and from a fragment, an oversized or a malformed frame on, all
        that follows, for the rest of the connection (the protocol then reassembles, applies
        the size limit, or fails the connection, exactly as it would have).
        """
        if type(data) is not bytes:
            data = bytes(data)  # payloads are bytes (a TLS stream may hand a bytearray)
        if self._tail:
            self._tail.append(data)
            self._tail_size += len(data)
            if self._tail_size < self._need:
                return []  # a large frame still arriving: join once, when complete
            data = self._take_tail()
        messages: list[Message] = []
        size = len(data)
        max_size = self._max_size
        pos = 0
        while True:
            available = size - pos
            if available < 2:
                need = 2
                break
            first = data[pos]
            length = data[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                if available < 4:
                    need = 4
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            elif length == 127:
                if available < 10:
                    need = 10
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            else:  # the mask bit: a server must not mask
                return messages + self._to_protocol(data[pos:])
            end = start + length
            if end > size:
                need = end - pos
                if length > max_size:
                    return messages + self._to_protocol(data[pos:])
                break
            # FIN, no RSV bits (no extension is negotiated), opcode text (1) or binary (2).
            if first == 0x81 or first == 0x82:
                if length > max_size:
                    return messages + self._to_protocol(data[pos:])
                messages.append(data[start:end])
            elif first & 0x0F >= 8 and first & 0x70 == 0:
                # A control frame: the protocol answers it.
                self._protocol.receive_data(data[pos:end])
                self._collect(self._protocol.events_received())
                if self._protocol.state is not State.OPEN:
                    return messages + self._to_protocol(data[end:])
            else:
                return messages + self._to_protocol(data[pos:])
            pos = end
        if pos < size:
            rest = data[pos:]
            self._tail = [rest]
            self._tail_size = len(rest)
            self._need = need
        return messages

    def _to_protocol(self, data: bytes) -> list[Message]:
        """Leave the fast path for good: ``data`` starts at a frame boundary."""
        self._fast = False
        if not data:
            return []
        self._protocol.receive_data(data)
        return self._collect(self._protocol.events_received())

    def _collect(self, events: Sequence[object]) -> list[Message]:
        messages: list[Message] = []
        for event in events:
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            # Frames parsed from the network always carry bytes.
            data = cast(bytes, event.data)
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if event.fin:
                    messages.append(data)
                else:
                    self._fragments = [data]
            elif opcode is Opcode.CONT:
                self._fragments.append(data)
                if event.fin:
                    messages.append(b"".join(self._fragments))
                    self._fragments = []
        return messages

    def _close_description(self, *, eof: bool = False) -> str:
        rcvd = self._protocol.close_rcvd
        if rcvd is not None:
            return f"closed by peer: code {rcvd.code} {rcvd.reason!r}".rstrip()
        if eof:
            return "connection closed by peer without a close frame"
        exc = self._protocol.parser_exc
        if exc is not None:
            return f"protocol error: {exc}"
        return "connection closed by peer without a close frame"

    async def send_text(self, text: str) -> None:
        """Send one text message. Raises ConnectionLost if the connection is gone."""
        if self._protocol.state is not State.OPEN:
            raise ConnectionLost("send on a closed connection")
        self._protocol.send_text(text.encode())
        await self._flush()

    async def ping(self, data: bytes = b"") -> None:
        """Send a ping frame: the peer's pong makes the receive loop's next read come soon
        (a quiet connection reads nothing otherwise). Raises ConnectionLost if gone."""
        if self._protocol.state is not State.OPEN:
            raise ConnectionLost("ping on a closed connection")
        self._protocol.send_ping(data)
        await self._flush()

    async def _flush(self) -> None:
        writes = self._protocol.data_to_send()
        if not writes:
            return
        async with self._send_lock:
            try:
                for chunk in writes:
                    if chunk:
                        await self._stream.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionLost(f"transport broke while sending: {exc!r}") from exc

    async def aclose(self, code: int = 1000) -> None:
        """Close politely: send a close frame and close the stream.

        Callers bound the time (e.g. a shielded ``move_on_after``); the stream is closed
        whatever happens.
        """
        try:
            if self._protocol.state is State.OPEN:
                self._protocol.send_close(code)
                await self._flush()
        except ConnectionLost:
            pass
        finally:
            await trio.aclose_forcefully(self._stream)


async def connect_websocket(
    url: str, *, max_message_size: int, ssl_context: ssl.SSLContext | None = None
) -> WebSocket:
    """Connect and perform the opening handshake; the caller owns the returned socket.

    ``wss://`` URLs use ``ssl_context`` (default: the system's trusted certificates, with
    host name checks). The caller bounds the connect time with its own cancel scope and
    must call :meth:`WebSocket.aclose` (shielded and bounded) when done. Raises
    ConnectFailed.
    """
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise ConnectFailed(f"invalid WebSocket URL {url!r}: {exc}") from exc
    try:
        context = (ssl_context or _default_ssl_context()) if uri.secure else None
        stream = await TcpTransport.connect(uri.host, uri.port, ssl_context=context)
    except OSError as exc:  # ssl.SSLError too
        raise ConnectFailed(f"cannot connect to {uri.host}:{uri.port}: {exc!r}") from exc
    protocol = ClientProtocol(uri, max_size=max_message_size)
    ws = WebSocket(stream, protocol, max_message_size=max_message_size)
    try:
        await _handshake(ws, stream, protocol)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return ws


async def _handshake(ws: WebSocket, stream: trio.abc.Stream, protocol: ClientProtocol) -> None:
    protocol.send_request(protocol.connect())
    try:
        await ws._flush()
    except ConnectionLost as exc:
        raise ConnectFailed(str(exc)) from exc
    # The protocol gets the response's head only: the frames after it (often in the same
    # read) start the fast path. A response with a body (a refusal) goes to it whole.
    head = b""
    head_done = False
    while True:
        try:
            data = await stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"handshake failed: {exc!r}") from exc
        rest = b""
        if not head_done and data:
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0 and len(head) <= MAX_RESPONSE_HEAD:
                continue
            head_done = True
            if end >= 0:
                data, rest = head[: end + 4], head[end + 4 :]
            else:
                data = head
                ws._fast = False  # the protocol may get frames too: it keeps them all
        elif data:
            ws._fast = False
        if data:
            protocol.receive_data(data)
        else:
            if head and not head_done:
                protocol.receive_data(head)
            protocol.receive_eof()
        events = protocol.events_received()
        for index, event in enumerate(events):
            if isinstance(event, Response):
                failure = protocol.handshake_exc
                if failure is not None:
                    refused = ConnectFailed(
                        f"handshake rejected (HTTP {event.status_code}): {failure}"
                    )
                    refused.status = event.status_code
                    raise refused from failure
                ws._pending = ws._collect(events[index + 1 :])
                if rest:  # only the head went to the protocol: it is at a frame boundary
                    ws._pending += ws._parse(rest)
                await ws._flush()  # pongs or a close frame queued by that same read
                return
        if rest:
            protocol.receive_data(rest)  # e.g. the body of a refusal
            ws._fast = False
        if not data:
            raise ConnectFailed("connection closed during the handshake")
