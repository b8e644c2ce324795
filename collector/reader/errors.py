"""The reader's one error type: bad input, a missing optional library, a missing location.

Every error a caller can act on is a :class:`ReaderError` with one readable sentence; the
command line prints it as its one ``collector: error: ...`` line. Errors of the storage
underneath (``OSError`` from a disk or S3, ``pyarrow.ArrowInvalid`` for a damaged file) are
not wrapped: they say best what went wrong.
"""

from __future__ import annotations


class ReaderError(Exception):
    """Bad input to the reader (a time, a depth, a location) or a missing optional library."""


class UsageError(ReaderError):
    """The caller asked for something malformed (a time that does not parse, a depth below 1,
    a data directory that does not exist): the command line exits 2 for it."""
