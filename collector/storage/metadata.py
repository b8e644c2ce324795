"""What a file says about itself: key-value metadata on every finished Parquet file.

Every key starts with ``collector.``; every value is a UTF-8 string:

==========================  ==============================================================
``collector.version``       version of the collector that opened the file (wrote its rows)
``collector.data_type``     the table: ``trades``, ``orderbook``, ``ticker``, ``status``, ``raw``
``collector.schema_version`` that table's schema version (:data:`.schemas.SCHEMA_VERSIONS`)
``collector.exchange``      the ``exchange`` of every row (e.g. ``bybit-linear``)
``collector.symbol``        the ``symbol`` of every row, exactly as in the column
``collector.category``      the market's ``category`` setting, where one is set
``collector.book_mode``     the market's ``book_mode``, where set (``orderbook`` files only)
``collector.book_depth``    the market's ``book_depth``, where set (``orderbook`` files only)
``collector.instance``      the instance that wrote it: ``aws.home_server_name``, else the host
                            name (a StatefulSet pod's name)
``collector.shard``         ``I/N``: the shard that instance ran as (``0/1``: not sharded)
==========================  ==============================================================

A key is absent when its value is not known or not set: a market option left to the
venue's default is absent (the default is the one of ``collector.version``).

The metadata is fixed when the file is opened: the flusher writes it into the schema
message at the head of the file's journal, and finalizing copies the journal's schema,
metadata and all, into the Parquet footer. So a file recovered after a crash states the
settings of the run that wrote its rows, not those of the run that finished it, even when
the settings changed in between. A journal from a version without metadata gets only
what its own contents prove (:func:`complete_schema`): the table and its schema version
(when the journal's schema is that table's current one, or its version 1), the exchange
and the symbol
(from its first row); the rest stays absent rather than guessed from today's settings.

Read it back with :func:`read_file_metadata` (blocking: it reads the file's footer).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from collector import __version__
from collector.config import MarketSettings
from collector.events import BookUpdate
from collector.storage.schemas import SCHEMA_VERSIONS, SCHEMAS, previous_schema_version

PREFIX: Final = "collector."


class FileMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """The ``collector.*`` metadata of one file; ``None`` where a key is absent."""

    collector_version: str | None = None
    data_type: str | None = None
    schema_version: int | None = None
    exchange: str | None = None
    symbol: str | None = None
    category: str | None = None
    book_mode: str | None = None
    book_depth: int | None = None
    instance: str | None = None
    shard: str | None = None

    def to_kv(self) -> dict[bytes, bytes]:
        """The Parquet/Arrow key-value form: only the keys that have a value."""
        kv: dict[bytes, bytes] = {}
        for field, key in _KEYS.items():
            value = getattr(self, field)
            if value is not None:
                kv[key.encode()] = str(value).encode()
        return kv

    @classmethod
    def from_kv(cls, kv: Mapping[bytes, bytes] | None) -> FileMetadata:
        """The ``collector.*`` keys of ``kv`` (other keys, e.g. ``ARROW:schema``, ignored).

        A value that does not decode (not UTF-8, a non-integer version or depth) is
        treated as absent.
        """
        found: dict[str, str | int] = {}
        for field, key in _KEYS.items():
            raw = (kv or {}).get(key.encode())
            if raw is None:
                continue
            try:
                text = raw.decode()
                found[field] = int(text) if field in _INTEGERS else text
            except ValueError:  # UnicodeDecodeError included
                continue
        return cls(**found)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, str | int]:
        """The keys that have a value, as plain data (for a reader's API or ``--json``)."""
        return {
            key: value for key, value in msgspec.structs.asdict(self).items() if value is not None
        }


# Field -> key. Every key is PREFIX + the field's name, but the version's.
_KEYS: Final = {
    field: PREFIX + ("version" if field == "collector_version" else field)
    for field in FileMetadata.__struct_fields__
}
_INTEGERS: Final = frozenset({"schema_version", "book_depth"})

Pair = tuple[str, str]  # (exchange of the rows, symbol of the rows)


class FileMetadataSource:
    """The metadata of each new file, per stream: the flusher's one question.

    ``markets`` maps each configured (exchange, symbol), as the rows spell them, to its
    market settings (the options that shape the rows); ``instance`` and ``shard`` name
    this process. A stream of no configured market (raw frames, whose symbol is the
    connection's placeholder) gets no market options. Cheap: the answer is kept per stream.
    """

    def __init__(
        self,
        markets: Mapping[Pair, MarketSettings] | None = None,
        *,
        instance: str | None = None,
        shard: str | None = None,
    ) -> None:
        self.markets = dict(markets or {})
        self.instance = instance
        self.shard = shard
        self._cache: dict[tuple[str, str, str], FileMetadata] = {}

    def update(self, markets: Mapping[Pair, MarketSettings]) -> None:
        """The configured pairs changed at run time (:mod:`collector.control`): files
        opened from now on state ``markets``' options. Replaces both mappings in one
        assignment each, so the flusher's thread sees the old or the new, never a mix."""
        self.markets = dict(markets)
        self._cache = {}

    def for_stream(self, exchange: str, symbol: str, data_type: str) -> FileMetadata:
        """The metadata of a file of (``exchange``, ``symbol``, ``data_type``) opened now."""
        key = (exchange, symbol, data_type)
        cached = self._cache.get(key)
        if cached is None:
            market = self.markets.get((exchange, symbol))
            book = market is not None and data_type == BookUpdate.DATA_TYPE
            cached = self._cache[key] = FileMetadata(
                collector_version=__version__,
                data_type=data_type,
                schema_version=SCHEMA_VERSIONS.get(data_type),
                exchange=exchange,
                symbol=symbol,
                category=market.category if market is not None else None,
                book_mode=market.book_mode if book and market is not None else None,
                book_depth=market.book_depth if book and market is not None else None,
                instance=self.instance,
                shard=self.shard,
            )
        return cached

    def schema(self, schema: pa.Schema, exchange: str, symbol: str, data_type: str) -> pa.Schema:
        """``schema`` carrying the metadata of a new file of that stream."""
        return schema.with_metadata(self.for_stream(exchange, symbol, data_type).to_kv())


def has_metadata(schema: pa.Schema) -> bool:
    """Whether ``schema`` carries ``collector.*`` metadata."""
    return any(key.startswith(PREFIX.encode()) for key in (schema.metadata or {}))


def complete_schema(schema: pa.Schema, first: pa.RecordBatch) -> pa.Schema:
    """The schema to finalize a journal with: its own if it carries metadata (a journal of
    this version), else one with what the journal itself proves (see the module
    docstring). ``first`` is the journal's first complete batch."""
    if has_metadata(schema):
        return schema
    data_type = next(
        (name for name, known in SCHEMAS.items() if known.equals(schema, check_metadata=False)),
        None,
    )
    version = SCHEMA_VERSIONS.get(data_type) if data_type is not None else None
    if data_type is None and (earlier := previous_schema_version(schema)) is not None:
        data_type, version = earlier
    derived = FileMetadata(
        data_type=data_type,
        schema_version=version,
        exchange=_first_value(first, "exchange"),
        symbol=_first_value(first, "symbol"),
    )
    return schema.with_metadata({**(schema.metadata or {}), **derived.to_kv()})


def _first_value(batch: pa.RecordBatch, column: str) -> str | None:
    index = batch.schema.get_field_index(column)
    if index < 0 or batch.num_rows == 0:
        return None
    value = batch.column(index)[0].as_py()
    return value if isinstance(value, str) else None


def read_file_metadata(path: str | os.PathLike[str]) -> FileMetadata:
    """The ``collector.*`` metadata of the Parquet file at ``path`` (from its footer only).

    Blocking. Raises ``OSError`` if the file cannot be read and ``pyarrow.ArrowInvalid``
    if it is not a Parquet file.
    """
    return FileMetadata.from_kv(pq.read_metadata(path).metadata)
