"""Any table over a time range: a pyarrow dataset, an Arrow table, a DuckDB relation.

:func:`dataset` builds a ``pyarrow.dataset.Dataset`` over exactly the files that can hold
rows of the range (listed by :mod:`.catalog`: no globbing), with two columns the files do
not store, taken from each file's path:

- ``date`` (``date32``): the UTC date directory of the file (the date of its first row);
- ``data_type`` (string): the table's name, so tables stacked together stay apart. The
  ``status`` table has its own ``data_type`` column (the feed a row is about), which keeps
  its meaning there.

``exchange`` and ``symbol`` are stored columns of every table. Rows are selected on
``timestamp_collector`` (the receive time; every table has it, every file is named and
dated by it) in ``[start, end)``, and on the exact ``exchange`` and ``symbol`` where given;
pyarrow skips the row groups whose statistics rule them out.

The schema is the newest file's, so data written by a newer version (a column added) is
read whole, and older files simply have nulls in the newer columns. Tables are read
generically: any ``data_type`` directory is a table.

Rows come file by file (files in order of their first row, per stream), each file in the
order it was written; sort by ``timestamp_collector`` where order across streams matters.

DuckDB is optional (the ``reader`` extra): :func:`relation` imports it when called and
raises :class:`ReaderError` naming the extra when it is missing. It scans the pyarrow
dataset itself, with projections and filters pushed down, so S3 needs no DuckDB extension
(the files are read through pyarrow's file system, credentials and all).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from collector.reader.catalog import TIMESTAMP_COLUMN, DataFile, list_files, read_footer
from collector.reader.errors import ReaderError
from collector.reader.source import Source
from collector.reader.times import from_us
from collector.storage.schemas import SCHEMAS, TIMESTAMP

if TYPE_CHECKING:
    import duckdb

DATE_COLUMN: Final = "date"
TABLE_COLUMN: Final = "data_type"

MISSING_DUCKDB: Final = (
    "DuckDB relations need the duckdb package: install the collector's [reader] extra "
    "(or pip install duckdb)"
)


def time_filter(start_us: int | None, end_us: int | None) -> pc.Expression | None:
    """``start_us <= timestamp_collector < end_us`` (either bound may be absent)."""
    column = pc.field(TIMESTAMP_COLUMN)
    conditions = []
    if start_us is not None:
        conditions.append(column >= pa.scalar(start_us, TIMESTAMP))
    if end_us is not None:
        conditions.append(column < pa.scalar(end_us, TIMESTAMP))
    return _all(conditions)


def _all(conditions: Sequence[pc.Expression]) -> pc.Expression | None:
    combined: pc.Expression | None = None
    for condition in conditions:
        combined = condition if combined is None else combined & condition
    return combined


def _schema(source: Source, data_type: str, files: Sequence[DataFile]) -> tuple[pa.Schema, bool]:
    """The dataset's schema, and whether it adds the ``data_type`` column (it does unless
    the table has its own, as ``status`` has)."""
    if files:
        newest = max(files, key=lambda f: (f.start_ms, f.path))
        schema = read_footer(source, newest).schema.to_arrow_schema()
    else:
        schema = SCHEMAS.get(data_type, pa.schema([]))
    schema = schema.remove_metadata()
    adds_table = schema.get_field_index(TABLE_COLUMN) < 0
    if adds_table:
        schema = schema.append(pa.field(TABLE_COLUMN, pa.string(), nullable=False))
    return schema.append(pa.field(DATE_COLUMN, pa.date32(), nullable=False)), adds_table


def _path_columns(file: DataFile, data_type: str, adds_table: bool) -> pc.Expression:
    """The partition expression that gives ``file``'s rows their path columns."""
    expression = pc.field(DATE_COLUMN) == pa.scalar(date.fromisoformat(file.date), pa.date32())
    if adds_table:
        expression = expression & (pc.field(TABLE_COLUMN) == data_type)
    return expression


def dataset(
    source: Source,
    data_type: str,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
) -> tuple[ds.Dataset, pc.Expression | None]:
    """The dataset of ``data_type``'s files that can hold rows received before ``end_us``
    (of one exchange and/or symbol where given), and the row filter that selects
    ``[start_us, end_us)`` and the exact exchange and symbol. Pass the filter to
    ``to_table``/``scanner``; the files are listed now (blocking), the rows read later.
    """
    files = list_files(
        source, exchange=exchange, symbol=symbol, data_type=data_type, before_us=end_us
    )
    schema, adds_table = _schema(source, data_type, files)
    built = ds.FileSystemDataset.from_paths(
        [f.path for f in files],
        schema=schema,
        format=ds.ParquetFileFormat(),
        filesystem=source.filesystem,
        partitions=[_path_columns(f, data_type, adds_table) for f in files],
    )
    conditions = [c for c in [time_filter(start_us, end_us)] if c is not None]
    if exchange is not None:
        conditions.append(pc.field("exchange") == exchange)
    if symbol is not None:
        conditions.append(pc.field("symbol") == symbol)
    return built, _all(conditions)


def read_table(
    source: Source,
    data_type: str,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The rows of ``data_type`` received in ``[start_us, end_us)`` as one Arrow table
    (``columns``: only those, in that order). Blocking. Raises ``OSError`` or
    ``pyarrow.ArrowInvalid`` from the files, ``KeyError``-like ``ArrowInvalid`` for an
    unknown column."""
    built, row_filter = dataset(
        source, data_type, start_us=start_us, end_us=end_us, exchange=exchange, symbol=symbol
    )
    return built.to_table(columns=list(columns) if columns is not None else None, filter=row_filter)


def relation(
    source: Source,
    data_type: str,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> duckdb.DuckDBPyRelation:
    """The same rows as :func:`read_table`, as a lazy DuckDB relation on ``connection``
    (default: a new in-memory connection). The files are listed now; rows are read each
    time the relation runs, with its projections and these filters pushed down into the
    pyarrow scan. Raises :class:`ReaderError` if DuckDB is not installed."""
    try:
        import duckdb
    except ImportError:
        raise ReaderError(MISSING_DUCKDB) from None
    built, _ = dataset(
        source, data_type, start_us=start_us, end_us=end_us, exchange=exchange, symbol=symbol
    )
    con = connection if connection is not None else duckdb.connect()
    rel = con.from_arrow(built)
    conditions = []
    if start_us is not None:
        conditions.append(f"{TIMESTAMP_COLUMN} >= {_sql_time(start_us)}")
    if end_us is not None:
        conditions.append(f"{TIMESTAMP_COLUMN} < {_sql_time(end_us)}")
    if exchange is not None:
        conditions.append(f"exchange = {_sql_text(exchange)}")
    if symbol is not None:
        conditions.append(f"symbol = {_sql_text(symbol)}")
    return rel.filter(" AND ".join(conditions)) if conditions else rel


def _sql_time(us: int) -> str:
    return f"TIMESTAMPTZ '{from_us(us).strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
