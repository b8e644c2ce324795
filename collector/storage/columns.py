"""A file's waiting rows, kept as columns from the moment the writer routes them.

Routing an event appends each of its fields to that field's column at once, while the
event is still in the CPU cache of the core that built it. Integers, timestamps and floats
go into ``array.array`` buffers, which Arrow wraps without a copy or a pass over Python
objects; strings and bytes stay Python lists, converted by one ``pa.array`` call each. So
the flush's worker thread no longer walks the events at all for numbers (or book levels,
below).

Why: converting a file's events to columns in the worker thread meant reading their fields
up to a second after the event loop built them on the other core, from cold caches, which
cost several times the same work on fresh events; appending at route time is cheap on the
event loop and saves most of it (figures in docs/performance.md).

Book levels go into flat columns too: one ``array('d')`` of prices, one of sizes, and an
``array('i')`` of each row's end offset, which Arrow wraps as a ``list<struct<price,
size>>`` column without a pass over Python objects. Events carry each side as one flat
``array('d')`` (:data:`collector.events.Levels`, which says why), copied in by two slices;
anything else is refused.

The ``add`` function of each layout is generated from the Arrow schema (one straight-line
function per data type and set of constant columns, like ``dataclasses`` builds
``__init__``): a loop over fields, or a function call per field, would cost more than the
appends themselves on this path.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, TypeAlias

import pyarrow as pa

from collector.events import Event
from collector.storage.schemas import LEVEL, LEVELS, SCHEMAS, TIMESTAMP

# array.array type codes of the columns Arrow can take as they are (64-bit, native order).
_TYPECODES: Final[dict[pa.DataType, str]] = {
    pa.int64(): "q",
    TIMESTAMP: "q",
    pa.float64(): "d",
}

# The stored kind of a book levels column (see ``LevelsColumn``).
_LEVELS_KIND: Final = "levels"
if array("i").itemsize != 4:  # pragma: no cover - every platform we run on
    raise ImportError("array('i') is not 32-bit here: book level offsets need int32")


class LevelsColumn:
    """A book levels column: each level's price and size, and each row's end offset."""

    __slots__ = ("offsets", "prices", "sizes")

    def __init__(self) -> None:
        self.offsets = array("i", [0])
        self.prices = array("d")
        self.sizes = array("d")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def cut(self, rows: int) -> None:
        """Keep the first ``rows`` rows."""
        del self.offsets[rows + 1 :]
        end = self.offsets[rows]
        del self.prices[end:]
        del self.sizes[end:]

    def to_array(self) -> pa.Array:
        count = len(self.prices)
        prices = pa.Array.from_buffers(pa.float64(), count, [None, pa.py_buffer(self.prices)])
        sizes = pa.Array.from_buffers(pa.float64(), count, [None, pa.py_buffer(self.sizes)])
        offsets = pa.Array.from_buffers(
            pa.int32(), len(self.offsets), [None, pa.py_buffer(self.offsets)]
        )
        values = pa.StructArray.from_arrays([prices, sizes], fields=list(LEVEL))
        return pa.ListArray.from_arrays(offsets, values, type=LEVELS)


Column: TypeAlias = "array[Any] | list[Any] | LevelsColumn"
Adder = Callable[[Event], None]


@dataclass(frozen=True)
class _Layout:
    """How the events of one data type are stored, given the columns the caller fills."""

    schema: pa.Schema
    # For each stored (non-constant) column, in schema order: field, and its kind: an
    # array type code, "" for a Python list, or ``_LEVELS_KIND``.
    stored: tuple[tuple[pa.Field, str], ...]
    constants: frozenset[str]
    make_add: Callable[..., Adder]
    # A stored column whose length is the row count (not a levels column).
    count_index: int


class ColumnBuffer:
    """The rows of one file (one data type) that wait for the next flush, as columns.

    ``constant_names`` are columns whose value the owner knows for every row (the writer's
    file key: ``exchange`` and ``symbol``); they are not stored per row, and
    :meth:`to_record_batch` takes their values.

    ``add(event)`` appends one event; it raises ``ValueError`` (and stores nothing of that
    event) for a null in a non-nullable column or a value of the wrong type: an adapter
    bug, better found here than in a journal that can never become Parquet.

    Not thread-safe: the writer appends on the event loop, then hands the whole buffer to
    a worker thread and starts a new one, never touching the old one again.
    """

    __slots__ = ("_columns", "_layout", "_nulls", "add", "data_type")

    def __init__(self, data_type: str, constant_names: frozenset[str] = frozenset()) -> None:
        layout = _layout(data_type, constant_names)
        self.data_type = data_type
        self._layout = layout
        self._columns: list[Column] = [_new_column(kind) for _field, kind in layout.stored]
        # Row numbers of the nulls in each array column (lists hold None themselves).
        self._nulls: list[list[int]] = [[] for _ in layout.stored]
        # ``add`` refers to the columns, never to ``self``: no reference cycle, so a
        # buffer's memory goes back as soon as its flush drops it, not at a GC pass.
        self.add: Adder = layout.make_add(self._columns, self._nulls)

    def __len__(self) -> int:
        return len(self._columns[self._layout.count_index])

    def _stored(self, name: str) -> int:
        for index, (field, _kind) in enumerate(self._layout.stored):
            if field.name == name:
                return index
        raise KeyError(f"{self.data_type}: no stored column {name!r}")

    def column(self, name: str) -> list[Any]:
        """The values of the Python-list column ``name`` (a string column), for reading."""
        column = self._columns[self._stored(name)]
        if not isinstance(column, list):
            raise TypeError(f"{self.data_type}: {name!r} is not a list column")
        return column

    def number_column(self, name: str) -> tuple[array[Any], list[int]]:
        """The number column ``name`` (its array, where a null row holds 0) and its null
        row numbers, for reading."""
        index = self._stored(name)
        column = self._columns[index]
        if not isinstance(column, array):
            raise TypeError(f"{self.data_type}: {name!r} is not a number column")
        return column, self._nulls[index]

    def levels_column(self, name: str) -> LevelsColumn:
        """The book levels column ``name``: ``offsets`` (each row's end, after a leading
        0), ``prices`` and ``sizes``, for reading."""
        column = self._columns[self._stored(name)]
        if not isinstance(column, LevelsColumn):
            raise TypeError(f"{self.data_type}: {name!r} is not a levels column")
        return column

    def to_record_batch(self, constants: Mapping[str, Any] | None = None) -> pa.RecordBatch:
        """The rows as one record batch of the data type's schema.

        ``constants`` gives the value of each constant column. The batch shares the
        number columns' memory: add nothing to this buffer afterwards (``array.array``
        refuses to grow while Arrow holds its buffer).
        """
        layout = self._layout
        constants = constants or {}
        missing = layout.constants - constants.keys()
        if missing:
            raise ValueError(f"{self.data_type}: no value for constant columns {sorted(missing)}")
        count = len(self)
        stored = iter(zip(layout.stored, self._columns, self._nulls, strict=True))
        arrays: list[pa.Array] = []
        for field in layout.schema:
            if field.name in layout.constants:
                scalar = pa.scalar(constants[field.name], type=field.type)
                arrays.append(pa.repeat(scalar, count))
                continue
            (_, kind), column, nulls = next(stored)
            if isinstance(column, LevelsColumn):
                arrays.append(column.to_array())
            elif kind:
                arrays.append(_numbers(field.type, count, column, nulls))
            else:
                arrays.append(pa.array(column, type=field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=layout.schema)


class _Refused(ValueError):
    """A value ``add`` refuses by name (a null where none may be): raised as it is."""


def _new_column(kind: str) -> Column:
    if kind == _LEVELS_KIND:
        return LevelsColumn()
    return array(kind) if kind else []


def _rollback(columns: list[Column], nulls: list[list[int]]) -> None:
    """Drop a partly added row: cut every column back to the shortest."""
    rows = min(len(column) for column in columns)
    for column, column_nulls in zip(columns, nulls, strict=True):
        if isinstance(column, LevelsColumn):
            column.cut(rows)
        else:
            del column[rows:]
        while column_nulls and column_nulls[-1] >= rows:
            column_nulls.pop()


def _numbers(type_: pa.DataType, count: int, column: Column, nulls: list[int]) -> pa.Array:
    """A fixed-width array over ``column``'s own memory, with ``nulls`` as its nulls."""
    if not nulls:
        return pa.Array.from_buffers(type_, count, [None, pa.py_buffer(column)])
    if len(nulls) == count:
        return pa.nulls(count, type=type_)
    valid = bytearray(b"\x01") * count
    for row in nulls:
        valid[row] = 0
    # uint8 -> bool packs the bytes into the bitmap Arrow wants.
    bitmap = pa.Array.from_buffers(pa.uint8(), count, [None, pa.py_buffer(valid)])
    validity = bitmap.cast(pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(
        type_, count, [validity, pa.py_buffer(column)], null_count=len(nulls)
    )


@cache
def _layout(data_type: str, constants: frozenset[str]) -> _Layout:
    schema = SCHEMAS[data_type]
    unknown = constants - set(schema.names)
    if unknown:
        raise ValueError(f"{data_type}: no such columns {sorted(unknown)}")
    if "timestamp_collector" in constants:  # every row has its own; the buffer counts them
        raise ValueError(f"{data_type}: timestamp_collector cannot be a constant column")
    stored = tuple(
        (field, _LEVELS_KIND if field.type == LEVELS else _TYPECODES.get(field.type, ""))
        for field in schema
        if field.name not in constants
    )
    for field, kind in stored:
        if kind == _LEVELS_KIND and field.nullable:
            raise ValueError(f"{data_type}: a levels column cannot be nullable ({field.name!r})")
    count_index = next(i for i, (_, kind) in enumerate(stored) if kind != _LEVELS_KIND)
    return _Layout(schema, stored, constants, _compile_add(data_type, stored), count_index)


def _compile_add(data_type: str, stored: tuple[tuple[pa.Field, str], ...]) -> Callable[..., Adder]:
    """``make_add(columns, nulls) -> add(event)``, generated for these stored columns.

    ``add`` has the i-th column and its list of null rows as ``c{i}`` and ``n{i}``. For fields
    ``price`` (float, not nullable), ``trade_id`` (string, not nullable) and ``side``
    (string, nullable) ``add`` reads::

        v = event.trade_id
        if v is None:
            raise Refused(...)
        c4.append(v)
        c5.append(event.price)  # an array refuses None: the except clause names the column
        c6.append(event.side)

    and for book levels ``bids`` (``c7`` a ``LevelsColumn``, with its arrays' methods bound once;
    the event's flat ``array('d')`` is copied by two slices)::

        v = event.bids
        if type(v) is not array:
            raise Refused(...)  # None, or not flat levels
        if len(v) % 2:
            raise Refused(...)
        pe7(v[0::2])  # array.extend refuses another typecode (TypeError)
        se7(v[1::2])
        o7(len(c7.prices))
    """
    body: list[str] = []
    prologue: list[str] = []
    for i, (field, typecode) in enumerate(stored):
        name = field.name
        if typecode == _LEVELS_KIND:
            prologue += [
                f"o{i} = c{i}.offsets.append",
                f"pe{i}, se{i} = c{i}.prices.extend, c{i}.sizes.extend",
            ]
            null = f"{data_type}: null in non-nullable column {name!r}"
            not_flat = (
                f"{data_type}: {name!r}: levels must be one flat array('d') "
                "(price, size, price, size, ...), not "
            )
            odd = f"{data_type}: {name!r}: flat levels of odd length"
            body += [
                f"v = event.{name}",
                "if type(v) is not array:",
                "    if v is None:",
                f"        raise Refused({null!r})",
                f"    raise Refused({not_flat!r} + type(v).__name__)",
                "if len(v) % 2:",
                f"    raise Refused({odd!r})",
                f"pe{i}(v[0::2])",
                f"se{i}(v[1::2])",
                f"o{i}(len(c{i}.prices))",
            ]
        elif typecode and field.nullable:
            body += [
                f"v = event.{name}",
                "if v is None:",
                f"    n{i}.append(len(c{i}))",
                f"    c{i}.append(0)",
                "else:",
                f"    c{i}.append(v)",
            ]
        elif not field.nullable and typecode:
            # array.append refuses None itself (TypeError): the except clause names it.
            body.append(f"c{i}.append(event.{name})")
        elif not field.nullable:
            body += [
                f"v = event.{name}",
                "if v is None:",
                f"    raise Refused({f'{data_type}: null in non-nullable column {name!r}'!r})",
                f"c{i}.append(v)",
            ]
        else:
            body.append(f"c{i}.append(event.{name})")
    required_numbers = tuple(
        f.name for f, code in stored if code and code != _LEVELS_KIND and not f.nullable
    )
    columns = [f"c{i}" for i in range(len(stored))]
    nulls = [f"n{i}" for i in range(len(stored))]
    lines = [
        "def make_add(columns, nulls):",
        f"    {', '.join(columns)}, = columns",
        f"    {', '.join(nulls)}, = nulls",
        *(f"    {line}" for line in prologue),
        "    def add(event):",
        "        try:",
        *(f"            {line}" for line in body),
        "        except (TypeError, OverflowError, ValueError) as exc:",
        "            rollback(columns, nulls)",
        "            if type(exc) is Refused:",
        "                raise",
        "            for name in required_numbers:",
        "                if getattr(event, name, 0) is None:",
        f"                    raise Refused({data_type + ': null in non-nullable column '!r}"
        " + repr(name)) from None",
        f"            raise ValueError({data_type + ': cannot store '!r} + repr(event)[:200]"
        " + ': ' + str(exc)) from exc",
        "    return add",
    ]
    namespace: dict[str, Any] = {}
    exec(
        "\n".join(lines),
        {
            "rollback": _rollback,
            "Refused": _Refused,
            "array": array,
            "required_numbers": required_numbers,
        },
        namespace,
    )  # source built above
    make_add: Callable[..., Adder] = namespace["make_add"]
    return make_add


def to_record_batch(
    data_type: str, events: Iterable[Event], *, constants: Mapping[str, Any] | None = None
) -> pa.RecordBatch:
    """Convert events that all have ``DATA_TYPE == data_type`` into one record batch.

    ``constants`` names columns whose value the caller knows every event shares; those
    are not read from the events. Raises ``ValueError`` for a null in a non-nullable column
    or a value of the wrong type.
    """
    constants = constants or {}
    buffer = ColumnBuffer(data_type, frozenset(constants))
    add = buffer.add
    for event in events:
        add(event)
    return buffer.to_record_batch(constants)
