"""The byte stream under the WebSocket client: a TCP socket, with TLS or without, read from
the connection's own task with as little machinery as there can be.

Trio's ``SocketStream.receive_some`` tries ``recv`` first, takes the ``BlockingIOError``,
waits, tries again and yields once more; ``SSLStream`` adds a state machine and hands over
one TLS record (at most 16 KiB) per call. Here a read is one wait for readability and one
``recv``, and with TLS every record that arrived is decrypted in the same step
(``ssl.SSLObject`` over memory BIOs, as ``SSLStream`` itself does). At a steady rate the
service wakes once per arriving read, so every step saved per read shows in its CPU per
message (measured with the bench: docs/performance.md).

The connection is opened by ``trio.open_tcp_stream`` (name resolution, happy eyeballs) and
then owned here. Sends (subscriptions, pongs, TLS handshake and key-update records) take a
lock, so bytes from two tasks never interleave. Errors are ``OSError`` (``ssl.SSLError``
is one) or ``trio.ClosedResourceError`` after :meth:`aclose`.
"""

from __future__ import annotations

import socket
import ssl

import trio

READ_SIZE = 65536


class TcpTransport(trio.abc.Stream):
    """A connected, non-blocking TCP socket, optionally wrapped in TLS (client side)."""

    def __init__(
        self, sock: socket.socket, ssl_context: ssl.SSLContext | None = None, host: str = ""
    ) -> None:
        """Own ``sock``; with ``ssl_context``, a TLS client for ``host`` (handshake not
        done yet: :meth:`connect` does it)."""
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = (
            None
            if ssl_context is None
            else ssl_context.wrap_bio(
                self._incoming, self._outgoing, server_side=False, server_hostname=host
            )
        )
        self._send_lock = trio.StrictFIFOLock()
        self._closed = False
        self._eof = False  # TLS: the peer's end was seen after data still being returned
        self._behind = False  # the last read filled its buffer: data is likely waiting

    @classmethod
    async def connect(
        cls, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> TcpTransport:
        """Connect (and with ``ssl_context``, complete the TLS handshake).

        Raises ``OSError`` (``ssl.SSLError`` for a failed handshake, e.g. an untrusted
        certificate). The caller bounds the time with its own cancel scope.
        """
        stream = await trio.open_tcp_stream(host, port)  # sets TCP_NODELAY
        sock = socket.socket(fileno=stream.socket.detach())
        sock.setblocking(False)
        transport = cls(sock, ssl_context, host)
        if ssl_context is not None:
            try:
                await transport._handshake()
            except BaseException:
                await trio.aclose_forcefully(transport)
                raise
        return transport

    async def _handshake(self) -> None:
        assert self._tls is not None
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush_tls()
                data = await self._receive_raw()
                if not data:
                    raise ssl.SSLEOFError("connection closed during the TLS handshake") from None
                self._incoming.write(data)
        await self._flush_tls()

    # ------------------------------------------------------------------ receiving

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """What arrived in one read (b"" at the end of the stream).

        With TLS: all the plaintext of the records that read completed (``max_bytes`` is
        then a bound per record, not on the whole). A peer that closes without a TLS
        close_notify is an ordinary end here, as for HTTPS clients.
        """
        size = max_bytes or READ_SIZE
        tls = self._tls
        if tls is None:
            return await self._receive_raw(size)
        if self._eof:
            await trio.lowlevel.checkpoint()
            return b""
        waited = False
        while True:
            parts = self._decrypt(tls, size)
            if self._outgoing.pending:
                await self._flush_tls()  # e.g. the answer to a TLS 1.3 key update
            if parts or self._eof:
                if not waited:
                    await trio.lowlevel.checkpoint()  # every call is a checkpoint
                return parts[0] if len(parts) == 1 else b"".join(parts)
            data = await self._receive_raw(READ_SIZE)
            waited = True
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()

    def _decrypt(self, tls: ssl.SSLObject, size: int) -> list[bytes]:
        """Every record's plaintext that the incoming buffer holds in full."""
        parts: list[bytes] = []
        while True:
            try:
                data = tls.read(size)
            except ssl.SSLWantReadError:
                return parts
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof = True
                return parts
            if not data:
                self._eof = True
                return parts
            parts.append(data)

    async def _receive_raw(self, size: int = READ_SIZE) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("transport closed")
        sock = self._sock
        if self._behind:
            # The last read filled the buffer: more is probably waiting already. Take it
            # at once and only yield, as waiting for readability would cost a round of
            # epoll registration for nothing.
            try:
                data = sock.recv(size)
            except BlockingIOError:
                pass
            else:
                self._behind = len(data) == size
                await trio.lowlevel.checkpoint()
                return data
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(size)
            except BlockingIOError:
                continue  # readiness without data: wait again
            self._behind = len(data) == size
            return data

    # ------------------------------------------------------------------ sending

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._send_lock:
            if self._tls is not None:
                self._tls.write(data)
                data = self._outgoing.read()
            await self._send_raw(data)

    async def _flush_tls(self) -> None:
        async with self._send_lock:
            data = self._outgoing.read()
            if data:
                await self._send_raw(data)

    async def _send_raw(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("transport closed")
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        while view:
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)
                continue
            view = view[sent:]
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._sock)

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        """Close the socket at once (no TLS close_notify: the WebSocket close frame, when
        there is time for one, has already told the peer)."""
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
        await trio.lowlevel.checkpoint()
