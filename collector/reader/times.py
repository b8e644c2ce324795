"""Points in time as the reader takes and gives them.

Taken (:func:`to_us`): a ``datetime`` (naive means UTC), an ISO 8601 string (``Z`` or an
offset; none means UTC; a date alone is its midnight), or an integer or all-digit string of
milliseconds since the epoch. Given: ``datetime`` in UTC, exact to the microsecond, as the
files store them. Inside the reader every time is an integer of microseconds since the
epoch, the unit of every timestamp column.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias

from collector.reader.errors import UsageError

TimeLike: TypeAlias = "datetime | str | int"

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)


def to_us(value: TimeLike) -> int:
    """Microseconds since the epoch of ``value`` (see the module docstring for the forms).

    Raises :class:`UsageError` for a string that is neither ISO 8601 nor digits, and for a
    value of another type (``bool`` included: ``True`` is no time).
    """
    if isinstance(value, bool):
        raise UsageError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value * 1000
    if isinstance(value, datetime):
        return _datetime_us(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text) * 1000
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise UsageError(
                f"not a time: {value!r} (give ISO 8601, e.g. 2025-06-01T12:00:00Z, "
                "or milliseconds since the epoch)"
            ) from None
        return _datetime_us(parsed)
    raise UsageError(f"not a time: {value!r}")


def _datetime_us(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // _US


def from_us(us: int) -> datetime:
    """The UTC ``datetime`` of ``us`` microseconds since the epoch (exact)."""
    return EPOCH + timedelta(microseconds=us)


def iso(us: int) -> str:
    """``us`` as ISO 8601 in UTC with microseconds and a ``Z``, for printing."""
    return from_us(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
