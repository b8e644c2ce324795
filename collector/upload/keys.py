"""Object keys: a finished file's local path -> its S3 key.

The local layout is ``{exchange}/{symbol}/{data_type}/[{server}/]{date}/{start_ms}.parquet``
below ``data_dir``, or its Hive-style form ``table={data_type}/venue={exchange}/...`` (see
:mod:`collector.storage.layout`; both are parsed). The key is ``key_template`` filled with
those parts; empty segments (no prefix, no server) are dropped, and so are Hive segments
with an empty value (``server=``). The default template mirrors the file's own layout: for
a default-layout file it gives
``{prefix}/{exchange}/{symbol}/{data_type}/[{server}/]{date}/{start_ms}.parquet``, for a
Hive-layout file ``{prefix}/table={data_type}/venue={exchange}/market={symbol}/``
``[server={server}/]date={date}/{start_ms}.parquet`` (:data:`HIVE_KEY_TEMPLATE`), so S3
holds the same tree as the data directory. A custom template is used as it is for both.
The server level comes from the file's own path (the ``home_server_name`` it was written
under), so a file keeps its key even if the setting changes later; a file that a version
up to 0.1.0 wrote under a ``shard-I-of-N`` level (sharding adds none now) is uploaded with
that level, beside what its shard uploaded before.

A key can be taken already: after a restart in ``s3`` mode the first run's file is gone
locally (uploaded, deleted), so the writer may give a new file the same ``start_ms``. The
uploader then stores the file under the next free key by the layout's own rule: ``start_ms``
bumped by 1 (``offset``), exactly as the writer does for a taken local name. Keys stay in
the documented layout, and ``start_ms`` in a key stays within a few ms of the first row.
"""

from __future__ import annotations

import string
from pathlib import PurePosixPath
from typing import Final

import msgspec

from collector.storage.layout import HIVE_NAMES, PARQUET_SUFFIX, parse_place

DEFAULT_KEY_TEMPLATE: Final = (
    "{prefix}/{exchange}/{symbol}/{data_type}/{server}/{date}/{start_ms}.parquet"
)
HIVE_KEY_TEMPLATE: Final = (
    "{prefix}"
    + "".join(
        f"/{HIVE_NAMES[level]}={{{level}}}"
        for level in ("data_type", "exchange", "symbol", "server", "date")
    )
    + "/{start_ms}.parquet"
)
KEY_FIELDS: Final = frozenset(
    {"prefix", "exchange", "symbol", "data_type", "server", "date", "start_ms", "name"}
)


class KeyParts(msgspec.Struct, frozen=True, kw_only=True):
    exchange: str
    symbol: str
    data_type: str
    server: str
    date: str
    start_ms: str
    hive: bool = False

    @property
    def name(self) -> str:
        return f"{self.start_ms}{PARQUET_SUFFIX}"


def check_key_template(template: str) -> None:
    """Raise ``ValueError`` unless ``template`` uses only known fields and names the file."""
    try:
        fields = {f for _, f, spec, conv in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"key_template {template!r}: {exc}") from None
    unknown = fields - KEY_FIELDS
    if unknown or "" in fields:
        known = ", ".join(sorted(KEY_FIELDS))
        bad = ", ".join(sorted(f or "{}" for f in unknown | (fields & {""})))
        raise ValueError(f"key_template {template!r}: unknown field(s) {bad} (known: {known})")
    if not fields & {"start_ms", "name"}:
        raise ValueError(f"key_template {template!r}: must contain {{start_ms}} or {{name}}")


def parse_relative(relative: str) -> KeyParts:
    """Split a relative key (``storage.layout.relative_key``) into its parts.

    Raises ``ValueError`` if it does not follow the layout.
    """
    place = parse_place(PurePosixPath(relative).parts)
    if place is None:
        raise ValueError(f"{relative!r} does not follow the data layout")
    return KeyParts(
        exchange=place.exchange,
        symbol=place.symbol,
        data_type=place.data_type,
        server=place.server,
        date=place.date,
        start_ms=str(place.start_ms),
        hive=place.layout == "hive",
    )


def object_key(
    relative: str,
    *,
    prefix: str = "",
    template: str = DEFAULT_KEY_TEMPLATE,
    offset: int = 0,
) -> str:
    """The S3 key of the file at ``relative``, its ``start_ms`` bumped by ``offset``.

    Offset 0 is the file's own key; 1, 2, ... are the next candidates when that key is
    taken by another file. Raises ``ValueError`` off-layout or for a negative offset.
    """
    if offset < 0:
        raise ValueError(f"key offset must be >= 0, not {offset}")
    p = parse_relative(relative)
    if offset:
        p = msgspec.structs.replace(p, start_ms=str(int(p.start_ms) + offset))
    if template == DEFAULT_KEY_TEMPLATE and p.hive:
        template = HIVE_KEY_TEMPLATE
    filled = template.format(
        prefix=prefix.strip("/"),
        exchange=p.exchange,
        symbol=p.symbol,
        data_type=p.data_type,
        server=p.server,
        date=p.date,
        start_ms=p.start_ms,
        name=p.name,
    )
    return "/".join(
        segment for segment in filled.split("/") if segment and not segment.endswith("=")
    )
