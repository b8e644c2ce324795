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
``("ready", ws_port, rest_port)`` (the parent may then set a clock offset, see
``_wait_parent``), then ``("started",)`` just before the first data frame
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
from collector.bench.scenarios import Scenario, get_scenario, pick_order

CHUNK_BYTES: Final = 256 * 1024
MAX_CHUNK_FRAMES: Final = 4096
TEMPLATES_PER_GROUP: Final = 4
PACED_TICK_SECS: Final = 0.005
READ_SIZE: Final = 65536


REST_WEIGHT_PER_MINUTE: Final = 6000
"""Binance spot's REST budget: request weight per IP per minute (``X-MBX-USED-WEIGHT-1M``)."""


SPOT_DEPTH_PATH: Final = "/api/v3/depth"


def depth_weight(limit: int) -> int:
    """The weight of one Binance spot ``GET /api/v3/depth`` at ``limit`` levels (spot API
    docs as exchanges.md quotes them: 1-100: 5, 101-500: 25, 501-1000: 50, 1001-5000: 250;
    docs/venues.md says how far that is confirmed)."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


@dataclass(frozen=True)
class Burst:
    """``factor`` times the rate for ``secs`` seconds, ``at_secs`` after data starts."""

    at_secs: float
    secs: float
    factor: float


@dataclass(frozen=True)
class GeneratorSpec:
    """What to send: a count of frames, or for a duration; at a rate or as fast as taken.

    ``burst``: a window at a multiple of ``rate`` (paced runs only). ``clock_offset_us``:
    added to every time the generator writes into frames (the collector's wall clock is
    offset alike, so an hour boundary can fall inside a run). ``rest_weight_per_minute``:
    the REST weight budget enforced per wall-clock minute (None: none); a request over it
    is refused with HTTP 429 and ``Retry-After`` (seconds to the next minute), as Binance
    does.
    """

    scenario: str
    count: int | None = None
    duration: float | None = None
    rate: float | None = None
    seed: int = 1
    burst: Burst | None = None
    clock_offset_us: int = 0
    rest_weight_per_minute: int | None = REST_WEIGHT_PER_MINUTE


@dataclass
class GeneratorReport:
    frames: int = 0
    frames_by_type: dict[str, int] = field(default_factory=dict)
    control_frames: int = 0  # replies to subscriptions: messages that carry no rows
    snapshots: int = 0  # REST book snapshots served (each becomes one orderbook row)
    bytes: int = 0
    seconds: float = 0.0  # first chunk sent to last chunk handed to the kernel
    # Wall-clock times (time.time(), unshifted): the first WebSocket connection accepted,
    # every group's streams subscribed, and every diff book's first REST snapshot served.
    first_connect_at: float | None = None
    subscribed_at: float | None = None
    books: int = 0  # diff-depth books (each needs a REST snapshot to sync)
    books_served_at: float | None = None
    rest_refused: int = 0  # REST requests refused with HTTP 429 (over the weight budget)
    rest_peak_weight: int = 0  # the most weight used in one minute
    rest_weight: int = 0  # all weight used
    # The burst window as sent: wall-clock start and end, and the frames sent in it.
    burst_started_at: float | None = None
    burst_ended_at: float | None = None
    burst_frames: int = 0

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _GroupState:
    """One group's sending state; survives a reconnect (a new connection resumes)."""

    def __init__(
        self,
        index: int,
        scenario: Scenario,
        spec: GeneratorSpec,
        rng: random.Random,
    ) -> None:
        group = scenario.groups[index]
        share = scenario.share(group)
        self.index = index
        self.group = group
        self.rate = spec.rate * share if spec.rate else None
        self.quota = math.ceil(spec.count * share) if spec.count is not None else None
        self.next_ids = [scenario.first_id(index, i) for i in range(len(group.streams))]
        self.positions = {s.stream: i for i, s in enumerate(group.streams)}
        self.subscribed: set[str] = set()
        # The connection's next message number (venues that number every message).
        self.conn_seq = 0
        self.ready = trio.Event()
        self.finished = False
        self.templates = (
            self._build_templates(rng)
            if scenario.period_frames is None
            else self._build_period(rng, scenario.period_frames)
        )

    def _max_frames(self) -> int:
        if self.rate is None:
            return MAX_CHUNK_FRAMES
        return max(1, min(MAX_CHUNK_FRAMES, int(self.rate * PACED_TICK_SECS)))

    def _build_period(self, rng: random.Random, period: int) -> list[ChunkTemplate]:
        """Templates that together send one period of ``period`` frames: each stream its
        share of them (at least one), in a shuffled order, cut into chunks."""
        weights = self.group.weights
        total = sum(weights)
        order = [
            index
            for index, weight in enumerate(weights)
            for _ in range(max(1, round(weight / total * period)))
        ]
        rng.shuffle(order)
        max_frames = self._max_frames()
        templates = []
        builder = TemplateBuilder(self.group.streams, rng)
        for stream in order:
            builder.add(stream)
            if builder.frames >= max_frames or builder.size >= CHUNK_BYTES:
                templates.append(builder.finish())
                builder = TemplateBuilder(self.group.streams, rng)
        if builder.frames:
            templates.append(builder.finish())
        return templates

    def _build_templates(self, rng: random.Random) -> list[ChunkTemplate]:
        max_frames = self._max_frames()
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
        self.groups = [_GroupState(i, scenario, spec, rng) for i in range(len(scenario.groups))]
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
        # REST weight used per wall-clock minute (the minute's number -> weight).
        self.weight_used: dict[int, int] = {}
        self.books_served: set[tuple[str, str]] = set()
        self.offset_us = spec.clock_offset_us
        for state in self.groups:
            depth_path = getattr(state.group.protocol, "depth_path", "/api/v3/depth")
            for i, source in enumerate(state.group.streams):
                if source.stream.endswith("@depth@100ms"):
                    symbol = source.stream.partition("@")[0].upper()
                    self.snapshot_ids[depth_path, symbol] = state.next_ids[i] - 1
        self.report.books = len(self.snapshot_ids)

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
        if self.report.first_connect_at is None:
            self.report.first_connect_at = time.time()
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
                if self.report.subscribed_at is None and all(g.ready.is_set() for g in self.groups):
                    self.report.subscribed_at = time.time()
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
        time_us = time.time_ns() // 1000 + self.offset_us
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
        start = trio.current_time()
        deadline = start + self.spec.duration if self.spec.duration is not None else None
        burst = self.spec.burst if rate is not None else None
        burst_start = start + burst.at_secs if burst is not None else math.inf
        burst_end = burst_start + burst.secs if burst is not None else math.inf
        offset_us = self.offset_us
        next_at = start
        turn = 0
        while not state.finished:
            if state.quota is not None and state.quota <= 0:
                break
            if deadline is not None and trio.current_time() >= deadline:
                break
            in_burst = rate is not None and burst_start <= next_at < burst_end
            # In a burst each send carries several templates, so the sends per second (and
            # the generator's cost per send) stay those of the base rate.
            batch = [
                templates[(turn + i) % len(templates)]
                for i in range(max(1, round(burst.factor)) if in_burst and burst else 1)
            ]
            turn += len(batch)
            frames = sum(t.frames for t in batch)
            if rate is not None:
                await trio.sleep_until(next_at)
                next_at += frames / (rate * burst.factor if in_burst and burst else rate)
                now = trio.current_time()
                if next_at < now - 1.0:  # far behind (the reader is slow): do not burst
                    next_at = now
            if in_burst:
                if report.burst_started_at is None:
                    report.burst_started_at = time.time()
                report.burst_frames += frames
            elif (
                report.burst_started_at is not None
                and report.burst_ended_at is None
                and trio.current_time() >= burst_end
            ):
                report.burst_ended_at = time.time()
            now_us = time.time_ns() // 1000 + offset_us
            chunks = []
            for template in batch:
                chunks.append(template.fill(state.next_ids, now_us, state.conn_seq))
                state.conn_seq += len(template.conn_seq_positions)
            chunk = b"".join(chunks) if len(chunks) > 1 else chunks[0]
            self._mark_started()
            async with lock:
                await stream.send_all(chunk)
            self.last_send = time.perf_counter()
            report.frames += frames
            report.bytes += len(chunk)
            for template in batch:
                for data_type, n in template.frames_by_type.items():
                    report.frames_by_type[data_type] = report.frames_by_type.get(data_type, 0) + n
            if state.quota is not None:
                state.quota -= frames
        state.finished = True
        if report.burst_started_at is not None and report.burst_ended_at is None:
            report.burst_ended_at = time.time()  # the run ended inside the burst
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
            key = (url.path, query.get("symbol", ""))
            snapshot_id = self.snapshot_ids.get(key)
            headers = b""
            refused = False
            # Spot's budget (the futures snapshots' own is not enforced here).
            if (
                snapshot_id is not None
                and url.path == SPOT_DEPTH_PATH
                and self.spec.rest_weight_per_minute is not None
            ):
                refused, headers = self._spend(depth_weight(int(query.get("limit", "100"))))
            if refused:
                status, body = (
                    b"429 Too Many Requests",
                    (
                        b'{"code":-1003,"msg":"Too much request weight used; '
                        b'current limit is %d request weight per 1 MINUTE."}'
                        % (self.spec.rest_weight_per_minute or 0)
                    ),
                )
            elif snapshot_id is None:
                status, body = b"404 Not Found", b'{"code":-1121,"msg":"Invalid symbol."}'
            else:
                venue = next(
                    g.group.protocol
                    for g in self.groups
                    if getattr(g.group.protocol, "depth_path", None) == url.path
                )
                status, body = b"200 OK", venue.snapshot_body(url.path, query, snapshot_id)
                self.report.snapshots += 1
                if key not in self.books_served:
                    self.books_served.add(key)
                    if len(self.books_served) == self.report.books:
                        self.report.books_served_at = time.time()
            await stream.send_all(
                b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"%sConnection: close\r\n\r\n%s" % (status, len(body), headers, body)
            )

    def _spend(self, weight: int) -> tuple[bool, bytes]:
        """Spend ``weight`` of this wall-clock minute's budget: (refused, response headers).

        Over the budget: refused, with ``Retry-After`` (whole seconds to the next minute) and
        nothing spent, as Binance answers HTTP 429."""
        now = time.time() + self.offset_us / 1e6
        minute = int(now // 60)
        used = self.weight_used.get(minute, 0)
        budget = self.spec.rest_weight_per_minute or 0
        if used + weight > budget:
            self.report.rest_refused += 1
            retry = max(1, math.ceil((minute + 1) * 60 - now))
            return True, b"Retry-After: %d\r\nX-MBX-USED-WEIGHT-1M: %d\r\n" % (retry, used)
        used += weight
        self.weight_used[minute] = used
        self.report.rest_weight += weight
        self.report.rest_peak_weight = max(self.report.rest_peak_weight, used)
        return False, b"X-MBX-USED-WEIGHT-1M: %d\r\n" % used


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
            nursery.start_soon(_wait_parent, conn, waiting, generator)
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


async def _wait_parent(conn: Connection, scope: trio.CancelScope, generator: _Generator) -> None:
    """Until the parent says stop (anything but a clock offset) or goes: an
    ``("offset", us)`` message sets the offset of every time written from then on (the
    parent sends it before it starts the service, and waits for ``("offset-ok",)``)."""
    with contextlib.suppress(EOFError, OSError):
        while True:
            message = await trio.to_thread.run_sync(conn.recv, abandon_on_cancel=True)
            if not (isinstance(message, tuple) and message[:1] == ("offset",)):
                break
            generator.offset_us = int(message[1])
            conn.send(("offset-ok",))  # on the Trio thread, as every other send
    scope.cancel()


def generator_main(conn: Connection, spec: GeneratorSpec) -> None:
    """Entry point of the generator process."""
    try:
        trio.run(serve, conn, spec)
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()
