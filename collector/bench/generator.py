"""The load generator: a fake exchange on 127.0.0.1, run in its own process.

It plays the venue of every group of a scenario: a WebSocket server (handshake, control
frames and subscriptions through ``websockets``' Sans-I/O ``ServerProtocol``) and a REST
endpoint for book snapshots. Once a connection has subscribed every stream of its group,
data goes out as pre-built chunks of complete frames (:mod:`collector.bench.frames`), one
``send_all`` per chunk of about 256 KiB. With no rate set it sends as fast as the reader
takes them: TCP backpressure blocks ``send_all`` while the collector is behind, so at most a
socket buffer is in flight and "max rate" is the collector's. With a rate it sends a chunk
every few milliseconds on schedule.

The parent talks to it over a ``multiprocessing`` pipe: the generator sends
``("ready", ws_port, rest_port)``, then ``("started",)`` just before the first data frame
goes out, ``("done", GeneratorReport)`` once every group has sent its share, and ends when
the parent sends anything (or closes the pipe).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import trio
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from collector.bench.frames import SEQ_MARK, ChunkTemplate, TemplateBuilder, is_binary
from collector.bench.scenarios import Group, Scenario, first_id, get_scenario, pick_order

CHUNK_BYTES: Final = 256 * 1024
MAX_CHUNK_FRAMES: Final = 4096
TEMPLATES_PER_GROUP: Final = 4
PACED_TICK_SECS: Final = 0.005
READ_SIZE: Final = 65536


@dataclass(frozen=True)
class GeneratorSpec:
    """What to send: a count of frames, or for a duration; at a rate or as fast as taken."""

    scenario: str
    count: int | None = None
    duration: float | None = None
    rate: float | None = None
    seed: int = 1


@dataclass
class GeneratorReport:
    frames: int = 0
    frames_by_type: dict[str, int] = field(default_factory=dict)
    control_frames: int = 0  # replies to subscriptions: messages that carry no rows
    snapshots: int = 0  # REST book snapshots served (each becomes one orderbook row)
    bytes: int = 0
    seconds: float = 0.0  # first chunk sent to last chunk handed to the kernel

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _GroupState:
    """One group's sending state; survives a reconnect (a new connection resumes)."""

    def __init__(
        self, index: int, group: Group, share: float, spec: GeneratorSpec, rng: random.Random
    ) -> None:
        self.index = index
        self.group = group
        self.rate = spec.rate * share if spec.rate else None
        self.quota = math.ceil(spec.count * share) if spec.count is not None else None
        self.next_ids = [first_id(index, i) for i in range(len(group.streams))]
        self.positions = {s.stream: i for i, s in enumerate(group.streams)}
        self.subscribed: set[str] = set()
        # The connection's next message number (venues that number every message).
        self.conn_seq = 0
        self.ready = trio.Event()
        self.finished = False
        self.templates = self._build_templates(rng)

    def _build_templates(self, rng: random.Random) -> list[ChunkTemplate]:
        max_frames = MAX_CHUNK_FRAMES
        if self.rate is not None:
            max_frames = max(1, min(max_frames, int(self.rate * PACED_TICK_SECS)))
        templates = []
        for _ in range(TEMPLATES_PER_GROUP):
            builder = TemplateBuilder(self.group.streams, rng)
            while builder.size < CHUNK_BYTES and builder.frames < max_frames:
                for stream in pick_order(self.group.weights, 16, rng):
                    builder.add(stream)
                    if builder.frames >= max_frames:
                        break
            templates.append(builder.finish())
        return templates

    def numbered(self, payload: bytes) -> bytes:
        """``payload`` with its :data:`SEQ_MARK` (if any) replaced by the next number."""
        if SEQ_MARK not in payload:
            return payload
        number = self.conn_seq
        self.conn_seq += 1
        return payload.replace(SEQ_MARK, b"%d" % number, 1)

    def subscribe(self, streams: list[str]) -> None:
        self.subscribed.update(s for s in streams if s in self.positions)
        if len(self.subscribed) == len(self.positions):
            self.ready.set()


class _Generator:
    def __init__(self, scenario: Scenario, spec: GeneratorSpec) -> None:
        rng = random.Random(spec.seed)
        self.scenario = scenario
        self.spec = spec
        self.groups = [
            _GroupState(i, g, scenario.share(g), spec, rng) for i, g in enumerate(scenario.groups)
        ]
        self.by_name = {state.group.name: state for state in self.groups}
        self.report = GeneratorReport()
        self.rng = random.Random(spec.seed + 1)
        self.first_send: float | None = None
        self.last_send = 0.0
        # Set just before the first data frame goes out (the parent's measured window opens).
        self.started = trio.Event()
        self.all_done = trio.Event()
        # (REST depth path, symbol) -> the lastUpdateId a REST snapshot reports: just before
        # the first delta (spot and futures books of one symbol are apart by their path).
        self.snapshot_ids: dict[tuple[str, str], int] = {}
        for state in self.groups:
            depth_path = getattr(state.group.protocol, "depth_path", "/api/v3/depth")
            for i, source in enumerate(state.group.streams):
                if source.stream.endswith("@depth@100ms"):
                    symbol = source.stream.partition("@")[0].upper()
                    self.snapshot_ids[depth_path, symbol] = state.next_ids[i] - 1

    # ------------------------------------------------------------------ WebSocket

    async def serve_ws(self, stream: trio.SocketStream) -> None:
        protocol = ServerProtocol(max_size=2**22)
        lock = trio.StrictFIFOLock()
        request = await _handshake(stream, protocol)
        if request is None:
            return
        # "/<group>" + the venue's path, as the venue's adapter connects to it.
        name, _, rest = urlsplit(request.path).path.lstrip("/").partition("/")
        state = self.by_name.get(name)
        if state is None or f"/{rest}".rstrip("/") != state.group.protocol.ws_path:
            protocol.send_response(protocol.reject(404, f"no such path {request.path!r}\n"))
            await _flush(stream, protocol, lock)
            await stream.aclose()
            return
        protocol.send_response(protocol.accept(request))
        await _flush(stream, protocol, lock)
        state.conn_seq = getattr(state.group.protocol, "first_seq", 0)  # a new connection
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(self._read_client, stream, protocol, lock, state, nursery)
            await state.ready.wait()
            await self._send_data(stream, lock, state)
            await trio.sleep_forever()  # until the client closes (the reader cancels us)

    async def _read_client(
        self,
        stream: trio.SocketStream,
        protocol: ServerProtocol,
        lock: trio.StrictFIFOLock,
        state: _GroupState,
        nursery: trio.Nursery,
    ) -> None:
        venue = state.group.protocol
        subscribed: list[str] = []
        try:
            while protocol.state is not State.CLOSED:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    protocol.receive_eof()
                else:
                    protocol.receive_data(data)
                for event in protocol.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        replies, streams = venue.on_client_text(bytes(event.data))
                        for reply in replies:
                            _send(protocol, state.numbered(reply), binary=is_binary(venue))
                        self.report.control_frames += len(replies)
                        self._send_first_frames(protocol, state, streams)
                        subscribed += streams
                await _flush(stream, protocol, lock)
                # Only now may data flow: the answers and snapshots are on the wire first.
                state.subscribe(subscribed)
                subscribed = []
                if not data:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        nursery.cancel_scope.cancel()

    def _send_first_frames(
        self, protocol: ServerProtocol, state: _GroupState, streams: list[str]
    ) -> None:
        """Queue the first frame (a book snapshot) of each newly subscribed stream."""
        time_us = time.time_ns() // 1000
        for name in streams:
            index = state.positions.get(name)
            if index is None:
                continue
            source = state.group.streams[index]
            payload = source.first_frame(state.next_ids[index], time_us, self.rng)
            if payload is None:
                continue
            self._mark_started()
            _send(protocol, state.numbered(payload), binary=is_binary(source))
            report = self.report
            report.frames += 1
            report.bytes += len(payload)
            report.frames_by_type[source.data_type] = (
                report.frames_by_type.get(source.data_type, 0) + 1
            )

    async def _send_data(
        self, stream: trio.SocketStream, lock: trio.StrictFIFOLock, state: _GroupState
    ) -> None:
        templates = state.templates
        report = self.report
        rate = state.rate
        deadline = (
            trio.current_time() + self.spec.duration if self.spec.duration is not None else None
        )
        next_at = trio.current_time()
        turn = 0
        while not state.finished:
            if state.quota is not None and state.quota <= 0:
                break
            if deadline is not None and trio.current_time() >= deadline:
                break
            template = templates[turn % len(templates)]
            turn += 1
            if rate is not None:
                await trio.sleep_until(next_at)
                next_at += template.frames / rate
                now = trio.current_time()
                if next_at < now - 1.0:  # far behind (the reader is slow): do not burst
                    next_at = now
            chunk = template.fill(state.next_ids, time.time_ns() // 1000, state.conn_seq)
            state.conn_seq += len(template.conn_seq_positions)
            self._mark_started()
            async with lock:
                await stream.send_all(chunk)
            self.last_send = time.perf_counter()
            report.frames += template.frames
            report.bytes += len(chunk)
            for data_type, n in template.frames_by_type.items():
                report.frames_by_type[data_type] = report.frames_by_type.get(data_type, 0) + n
            if state.quota is not None:
                state.quota -= template.frames
        state.finished = True
        if all(g.finished for g in self.groups):
            report.seconds = self.last_send - (self.first_send or self.last_send)
            self.started.set()  # (already set, unless nothing at all was sent)
            self.all_done.set()

    def _mark_started(self) -> None:
        if self.first_send is None:
            self.first_send = time.perf_counter()
            self.started.set()

    # ------------------------------------------------------------------ REST

    async def serve_rest(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    return
                head += data
            try:
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            except (IndexError, UnicodeDecodeError):
                target = ""
            url = urlsplit(target)
            query = dict(parse_qsl(url.query))
            snapshot_id = self.snapshot_ids.get((url.path, query.get("symbol", "")))
            if snapshot_id is None:
                status, body = b"404 Not Found", b'{"code":-1121,"msg":"Invalid symbol."}'
            else:
                venue = next(
                    g.group.protocol
                    for g in self.groups
                    if getattr(g.group.protocol, "depth_path", None) == url.path
                )
                status, body = b"200 OK", venue.snapshot_body(url.path, query, snapshot_id)
                self.report.snapshots += 1
            await stream.send_all(
                b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (status, len(body), body)
            )


def _send(protocol: ServerProtocol, payload: bytes, *, binary: bool) -> None:
    if binary:
        protocol.send_binary(payload)
    else:
        protocol.send_text(payload)


async def _handshake(stream: trio.SocketStream, protocol: ServerProtocol) -> Request | None:
    while True:
        data = await stream.receive_some(READ_SIZE)
        if not data:
            return None
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Request):
                return event


async def _flush(
    stream: trio.SocketStream, protocol: ServerProtocol, lock: trio.StrictFIFOLock
) -> None:
    writes = protocol.data_to_send()
    if not writes:
        return
    async with lock:
        for chunk in writes:
            if chunk:
                await stream.send_all(chunk)


async def serve(conn: Connection, spec: GeneratorSpec) -> None:
    """Run the generator until the parent says stop (see the module docstring)."""
    generator = _Generator(get_scenario(spec.scenario), spec)
    async with trio.open_nursery() as nursery:
        ws_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        rest_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, partial(_guard, generator.serve_ws), ws_listeners)
        nursery.start_soon(
            trio.serve_listeners, partial(_guard, generator.serve_rest), rest_listeners
        )
        conn.send(
            (
                "ready",
                ws_listeners[0].socket.getsockname()[1],
                rest_listeners[0].socket.getsockname()[1],
            )
        )
        with trio.CancelScope() as waiting:
            nursery.start_soon(_wait_parent, conn, waiting)
            await generator.started.wait()
            conn.send(("started",))
            await generator.all_done.wait()
            conn.send(("done", generator.report))
            await trio.sleep_forever()
        nursery.cancel_scope.cancel()


async def _guard(
    handler: Callable[[trio.SocketStream], Awaitable[None]], stream: trio.SocketStream
) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await handler(stream)


async def _wait_parent(conn: Connection, scope: trio.CancelScope) -> None:
    with contextlib.suppress(EOFError, OSError):
        await trio.to_thread.run_sync(conn.recv, abandon_on_cancel=True)
    scope.cancel()


def generator_main(conn: Connection, spec: GeneratorSpec) -> None:
    """Entry point of the generator process."""
    try:
        trio.run(serve, conn, spec)
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()
