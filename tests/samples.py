"""Readers for the recorded exchange traffic in ``../shared/samples`` (see its INDEX.md).

The data is not part of this repository: it is third-party traffic (public test data of
cryptofeed, hftbacktest and nautilus_trader; ``shared/samples/INDEX.md`` names each file's
source and licence) kept beside it, in ``shared/samples``. Tests call
:func:`require_sample`, the one place that skips a test for a missing recording: the reason
names the file and how to get it. Every venue's service path also runs on frames the
project generates itself (``tests/test_bench.py``), so a clone without the recordings still
exercises each venue end to end.

Formats read here:

- F2 (cryptofeed capture format 2): zstd-compressed JSONL, a header line then one record per
  ``connect``/``send``/``recv``/``http`` event -> :func:`read_f2`;
- J (a single pretty-printed JSON message, the nautilus fixtures) -> :func:`read_fixture`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import pyarrow
import pytest

SAMPLES_DIR: Final = Path(__file__).resolve().parents[2] / "shared" / "samples"


def missing_sample_reason(relpath: str) -> str:
    """Why a test that replays ``relpath`` is skipped: the file, and how to get it."""
    return (
        f"recorded sample {SAMPLES_DIR / relpath} is missing: recorded venue traffic is "
        "third-party data kept outside the repository, in ../shared/samples/ beside it "
        "(shared/samples/INDEX.md lists each file's public source); put that directory "
        "there to run this test (see docs/development.md, 'Tests')"
    )


def require_sample(relpath: str) -> Path:
    """The path of a recorded sample, or skip the calling test if it is not there."""
    path = SAMPLES_DIR / relpath
    if not path.is_file():
        pytest.skip(missing_sample_reason(relpath))
    return path


# --------------------------------------------------------------------------- format F2


class F2Header(msgspec.Struct, frozen=True):
    """Line 1 of an F2 file."""

    t: str
    format: int
    exchange: str
    config: dict[str, Any] = {}
    recorded: float | None = None
    converted_from: int | None = None


class F2Record(msgspec.Struct, frozen=True):
    """One recorded event. ``t`` is ``connect``, ``send``, ``recv`` or ``http``."""

    t: str
    conn: str | None = None
    ts: float | None = None  # local receive time, epoch seconds
    data: str | None = None  # the frame (or HTTP body) as text
    b64: str | None = None  # a binary frame, base64
    url: str | None = None  # http records
    addr: str | None = None  # connect records

    @property
    def payload(self) -> bytes:
        """The frame exactly as received (text frames UTF-8 encoded)."""
        if self.b64 is not None:
            return base64.b64decode(self.b64)
        if self.data is not None:
            return self.data.encode()
        raise ValueError(f"{self.t} record has no data")

    @property
    def received_us(self) -> int:
        """The local receive time in integer microseconds."""
        if self.ts is None:
            raise ValueError(f"{self.t} record has no ts")
        return round(self.ts * 1_000_000)


class F2Capture(msgspec.Struct, frozen=True):
    header: F2Header
    records: list[F2Record]

    def received(self, conn: str | None = None) -> Iterator[F2Record]:
        """The ``recv`` records (of one connection if ``conn`` is given), in file order."""
        for record in self.records:
            if record.t == "recv" and (conn is None or record.conn == conn):
                yield record

    def http(self, url_contains: str = "") -> Iterator[F2Record]:
        """The recorded REST responses whose URL contains ``url_contains``."""
        for record in self.records:
            if record.t == "http" and url_contains in (record.url or ""):
                yield record


_HEADER: Final = msgspec.json.Decoder(F2Header)
_RECORD: Final = msgspec.json.Decoder(F2Record)


def read_f2(path: Path) -> F2Capture:
    """Read a whole F2 file (zstd JSONL) into memory; they are small (<1 MB compressed)."""
    with pyarrow.input_stream(str(path), compression="zstd") as stream:
        text: bytes = stream.read()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty F2 file")
    header = _HEADER.decode(lines[0])
    if header.t != "header" or header.format != 2:
        raise ValueError(f"{path}: not an F2 capture (header {header!r})")
    return F2Capture(header, [_RECORD.decode(line) for line in lines[1:]])


# --------------------------------------------------------------------------- format J


def read_fixture(relpath: str) -> Any:
    """A single-message JSON fixture (format J), decoded; skips the test if absent."""
    return msgspec.json.decode(require_sample(relpath).read_bytes())
