"""Pre-built WebSocket frames for the load generator, filled in per chunk at C speed.

A *chunk template* is many complete server-to-client WebSocket frames (header and JSON
payload) laid out as a list of byte pieces. A few pieces are *slots*: a stream's sequence
ids (trade id, update ids) and the event time. Numbers in slots have a fixed width, so every
frame's length (and so its header) is known in advance. Per chunk the generator writes the
next ids and the current time into the slots and joins the pieces: one ``bytes.join`` per
chunk and one small ``%d`` per id, so the generator runs far faster than the collector.

Frames are shaped like the venue's recorded traffic (see ``shared/samples``): the same
keys, decimal strings with 8 decimals, realistic level counts; prices and sizes are drawn
at random by the project itself.

Venues plug in through :class:`StreamFrames`: one object per stream that builds one frame's
pieces (``build``) and says which data type its rows land in.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, NamedTuple, Protocol

ID_WIDTH: Final = 10
"""Digits of every id in a slot (ids stay below 10**10; the generator checks)."""
ID_LIMIT: Final = 10**ID_WIDTH
TIME_WIDTH: Final = 16
"""Digits of a microsecond timestamp (until the year 2286)."""
TIME_MS_WIDTH: Final = 13
"""Digits of a millisecond timestamp (until the year 2286)."""


class IdSlot(NamedTuple):
    """The stream's id at ``offset`` past the first id of this frame's chunk."""

    offset: int


class TimeSlot(NamedTuple):
    """The event time (microseconds) of the chunk."""


class TimeMsSlot(NamedTuple):
    """The event time of the chunk in milliseconds (venues such as OKX and Bybit)."""


class TimeIsoSlot(NamedTuple):
    """The event time of the chunk as RFC 3339 UTC text to the microsecond, without the
    zone (``2026-08-09T21:05:48.123456``; the frame adds ``Z``): Kraken, Coinbase."""


class ConnSeqSlot(NamedTuple):
    """The connection's message number, for venues that number every message of a
    connection across channels (Coinbase ``sequence_num``, Bitfinex ``SEQ_ALL``).

    Frames of the chunk take consecutive numbers in order; the number is right-aligned in
    its slot with leading spaces (JSON whitespace), so it can start from 0 or 1.
    """


TIME: Final = TimeSlot()
TIME_MS: Final = TimeMsSlot()
TIME_ISO: Final = TimeIsoSlot()
CONN_SEQ: Final = ConnSeqSlot()

Piece = bytes | IdSlot | TimeSlot | TimeMsSlot | TimeIsoSlot | ConnSeqSlot

SEQ_MARK: Final = b"\x00seq\x00"
"""Where a frame built at run time (a subscribe answer, a first frame) takes the
connection's next message number: the generator replaces it (see :data:`CONN_SEQ`)."""


class StreamFrames(Protocol):
    """How one stream's frames look: the generator's per-venue, per-feed interface."""

    @property
    def stream(self) -> str:
        """The venue's stream (channel) name, as the collector subscribes to it."""

    @property
    def data_type(self) -> str:
        """The table its rows land in (``trades``, ``orderbook``, ``ticker``)."""

    def build(self, first_offset: int, rng: random.Random) -> tuple[list[Piece], int]:
        """One frame's payload as pieces, and how many ids it uses (from ``first_offset``)."""

    def first_frame(self, next_id: int, time_us: int, rng: random.Random) -> bytes | None:
        """The payload a new subscriber gets first (a book snapshot), or None.

        It comes right after the venue's subscribe answer and before any frame of
        :meth:`build`; it ends just before ``next_id``, so the sequence goes on unbroken.
        """


class ClosingStream(Protocol):
    """A stream whose frames change a state the venue checks (Kraken's book checksum).

    A chunk template is sent again and again, so it must leave that state as it found it:
    after a template's last frame the builder asks for one more frame that restores it.
    """

    def closing_frame(self, rng: random.Random) -> list[Piece] | None:
        """A frame that puts the state back as it was at the template's start (or None)."""


def ws_header(length: int, *, text: bool = True) -> bytes:
    """The header of one unmasked, final server frame with a ``length``-byte payload."""
    first = 0x81 if text else 0x82
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


TIME_ISO_WIDTH: Final = 26
"""Characters of :class:`TimeIsoSlot` text."""


def _slot_width(piece: IdSlot | TimeSlot | TimeMsSlot | TimeIsoSlot | ConnSeqSlot) -> int:
    if isinstance(piece, TimeSlot):
        return TIME_WIDTH
    if isinstance(piece, TimeMsSlot):
        return TIME_MS_WIDTH
    if isinstance(piece, TimeIsoSlot):
        return TIME_ISO_WIDTH
    return ID_WIDTH


def iso_time(time_us: int) -> bytes:
    """``time_us`` as :class:`TimeIsoSlot` text."""
    stamp = datetime.fromtimestamp(time_us // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return b"%s.%06d" % (stamp.encode(), time_us % 1_000_000)


def is_binary(source: object) -> bool:
    """Whether a stream's frames go out as binary WebSocket frames (Upbit); text otherwise."""
    return bool(getattr(source, "binary", False))


@dataclass
class ChunkTemplate:
    """Frames of several streams, interleaved, with slots for ids and times.

    ``id_slots[s]`` lists (position in ``parts``, id offset) for stream ``s``;
    ``advance[s]`` is how many ids stream ``s`` uses per chunk.
    """

    parts: list[bytes]
    time_positions: list[int]
    id_slots: list[list[tuple[int, int]]]
    advance: list[int]
    frames: int
    frames_by_type: dict[str, int]
    size: int
    time_ms_positions: list[int] = field(default_factory=list)
    time_iso_positions: list[int] = field(default_factory=list)
    conn_seq_positions: list[int] = field(default_factory=list)

    def fill(self, next_ids: list[int], time_us: int, conn_seq: int = 0) -> bytes:
        """The chunk's bytes with ids from ``next_ids`` (advanced in place) and ``time_us``.

        Message numbers (:data:`CONN_SEQ`) run from ``conn_seq``; the caller advances its
        counter by ``len(conn_seq_positions)``.
        """
        parts = self.parts
        stamp = b"%016d" % time_us
        for position in self.time_positions:
            parts[position] = stamp
        if self.time_ms_positions:
            stamp_ms = b"%013d" % (time_us // 1000)
            for position in self.time_ms_positions:
                parts[position] = stamp_ms
        if self.time_iso_positions:
            stamp_iso = iso_time(time_us)
            for position in self.time_iso_positions:
                parts[position] = stamp_iso
        for offset, position in enumerate(self.conn_seq_positions):
            number = conn_seq + offset
            if number >= ID_LIMIT:
                raise OverflowError(f"message numbers would exceed {ID_WIDTH} digits")
            parts[position] = b"%10d" % number
        for stream, slots in enumerate(self.id_slots):
            if not slots:
                continue
            base = next_ids[stream]
            if base + self.advance[stream] > ID_LIMIT:
                raise OverflowError(f"stream {stream}: ids would exceed {ID_WIDTH} digits")
            for position, offset in slots:
                parts[position] = b"%010d" % (base + offset)
            next_ids[stream] = base + self.advance[stream]
        return b"".join(parts)


@dataclass
class TemplateBuilder:
    """Lays frames out into a :class:`ChunkTemplate`."""

    streams: Sequence[StreamFrames]
    rng: random.Random
    parts: list[bytes] = field(default_factory=list)
    time_positions: list[int] = field(default_factory=list)
    time_ms_positions: list[int] = field(default_factory=list)
    time_iso_positions: list[int] = field(default_factory=list)
    conn_seq_positions: list[int] = field(default_factory=list)
    frames_by_type: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    size: int = 0

    def __post_init__(self) -> None:
        self.id_slots: list[list[tuple[int, int]]] = [[] for _ in self.streams]
        self.used: list[int] = [0 for _ in self.streams]

    def add(self, stream: int) -> None:
        """Append one frame of ``streams[stream]``."""
        source = self.streams[stream]
        pieces, ids = source.build(self.used[stream], self.rng)
        self._append(stream, pieces, ids)

    def _append(self, stream: int, pieces: list[Piece], ids: int) -> None:
        source = self.streams[stream]
        length = sum(len(p) if isinstance(p, bytes) else _slot_width(p) for p in pieces)
        header = ws_header(length, text=not is_binary(source))
        self.parts.append(header)
        self.size += len(header) + length
        for piece in pieces:
            if isinstance(piece, bytes):
                self.parts.append(piece)
            else:
                position = len(self.parts)
                self.parts.append(b"0" * _slot_width(piece))
                if isinstance(piece, TimeSlot):
                    self.time_positions.append(position)
                elif isinstance(piece, TimeMsSlot):
                    self.time_ms_positions.append(position)
                elif isinstance(piece, TimeIsoSlot):
                    self.time_iso_positions.append(position)
                elif isinstance(piece, ConnSeqSlot):
                    self.conn_seq_positions.append(position)
                else:
                    self.id_slots[stream].append((position, piece.offset))
        self.used[stream] += ids
        self.frames += 1
        self.frames_by_type[source.data_type] = self.frames_by_type.get(source.data_type, 0) + 1

    def finish(self) -> ChunkTemplate:
        # Streams that change a checked state put it back (see ClosingStream).
        for index, source in enumerate(self.streams):
            close = getattr(source, "closing_frame", None)
            if close is not None:
                pieces = close(self.rng)
                if pieces is not None:
                    self._append(index, pieces, 0)
        # Merge neighbouring static pieces: fewer, larger pieces join faster.
        merged: list[bytes] = []
        slot_positions = set(self.time_positions)
        slot_positions.update(self.time_ms_positions)
        slot_positions.update(self.time_iso_positions)
        slot_positions.update(self.conn_seq_positions)
        slot_positions.update(p for slots in self.id_slots for p, _ in slots)
        remap: dict[int, int] = {}
        last_is_static = False
        for index, piece in enumerate(self.parts):
            if index in slot_positions:
                remap[index] = len(merged)
                merged.append(piece)
                last_is_static = False
            elif last_is_static:
                merged[-1] += piece
            else:
                merged.append(piece)
                last_is_static = True
        return ChunkTemplate(
            parts=merged,
            time_positions=[remap[p] for p in self.time_positions],
            id_slots=[[(remap[p], off) for p, off in slots] for slots in self.id_slots],
            advance=list(self.used),
            frames=self.frames,
            frames_by_type=dict(self.frames_by_type),
            size=self.size,
            time_ms_positions=[remap[p] for p in self.time_ms_positions],
            time_iso_positions=[remap[p] for p in self.time_iso_positions],
            conn_seq_positions=[remap[p] for p in self.conn_seq_positions],
        )


def build_template(
    streams: Sequence[StreamFrames], order: Sequence[int], rng: random.Random
) -> ChunkTemplate:
    """A template holding one frame of ``streams[i]`` for each ``i`` in ``order``."""
    builder = TemplateBuilder(streams, rng)
    for stream in order:
        builder.add(stream)
    return builder.finish()


# --------------------------------------------------------------------------- helpers


def decimal(value: float) -> bytes:
    """The venue's decimal-string spelling, 8 decimals: ``b'"0.35210000"'``."""
    return b'"%.8f"' % value


def levels(pairs: Sequence[tuple[float, float]]) -> bytes:
    """``[["price","size"],...]``."""
    return b"[" + b",".join(b"[%s,%s]" % (decimal(p), decimal(s)) for p, s in pairs) + b"]"


def book_side(
    rng: random.Random, mid: float, tick: float, count: int, *, bids: bool, deletes: float = 0.0
) -> list[tuple[float, float]]:
    """``count`` levels walking away from ``mid``; a ``deletes`` share of sizes are 0."""
    step = -tick if bids else tick
    price = mid + step * rng.randint(1, 3)
    out: list[tuple[float, float]] = []
    for _ in range(count):
        size = 0.0 if rng.random() < deletes else round(rng.lognormvariate(-1.0, 1.6), 5)
        out.append((round(price, 8), size))
        price += step * rng.randint(1, 4)
    return out
