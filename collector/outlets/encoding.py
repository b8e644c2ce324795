"""The outlets' value encoding: one event as JSON, with the Parquet columns' names.

Each event becomes one JSON object whose keys are the columns of its table
(:mod:`collector.storage.schemas`; the event structs' fields are those columns, in the
same order), so a consumer reads Kafka and the files with one set of names:

- timestamps are integers, microseconds since the Unix epoch, UTC (the files' unit);
  ``timestamp_exchange`` and the other nullable columns are ``null`` where the files hold
  a null;
- an order book's ``bids`` and ``asks`` are arrays of ``[price, size]`` pairs, in the
  venue's order: a book row carries many levels, and a pair is a third of the bytes of a
  ``{"price": ..., "size": ...}`` object (the files' level struct), with the same order
  of its two numbers;
- a raw frame's ``payload`` is base64 (standard alphabet, padded).

Why JSON and not Avro or Protobuf: every consumer reads it without a schema registry or
generated code, the names are the files' own, and ``msgspec`` encodes a row in about a
microsecond.
"""

from __future__ import annotations

from array import array
from typing import Any

import msgspec

from collector.events import Event


def _levels(obj: Any) -> Any:
    if isinstance(obj, array):
        return list(zip(obj[0::2], obj[1::2], strict=True))
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_levels)
encode_event = _encoder.encode
"""``encode_event(event) -> bytes``: ``event`` as its JSON object (see the module)."""


def encode_value(value: Any) -> bytes:
    """Any value of plain data and events, with levels as pairs, as JSON."""
    return _encoder.encode(value)


def message_key(event: Event) -> bytes:
    """The outlet key of ``event``: ``<exchange>.<symbol>``."""
    return f"{event.exchange}.{event.symbol}".encode()
