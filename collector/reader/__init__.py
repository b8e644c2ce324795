"""Read back what the collector recorded, from a data directory or an S3 prefix.

>>> from collector.reader import DataReader
>>> data = DataReader("data")                      # or "s3://bucket/prefix"
>>> data.catalog()                                 # streams, with first and last times
>>> data.table("trades", start="2025-06-01T12:00Z", end="2025-06-01T13:00Z")
>>> data.holes(start="2025-06-01", end="2025-06-02")
>>> for item in data.book("binance", "BTCUSDT", "2025-06-01T12:00Z", "2025-06-01T12:01Z"):
...     print(item)

Modules: :mod:`.source` (a location as a pyarrow file system), :mod:`.catalog` (the files
and streams there), :mod:`.tables` (any table as a dataset, Arrow table or DuckDB
relation), :mod:`.holes` (holes from the status rows), :mod:`.books` (order book replay),
:mod:`.times` (time arguments), :mod:`.command` (the ``book`` and ``holes`` commands),
:mod:`.data` (:class:`DataReader`, the front door). DuckDB is needed only for relations
(the ``reader`` extra).
"""

from collector.reader.books import BookItem, BookReset, BookView
from collector.reader.catalog import DataFile, Stream
from collector.reader.data import DataReader
from collector.reader.errors import ReaderError, UsageError
from collector.reader.holes import HOLE_EVENTS, Hole

__all__ = [
    "HOLE_EVENTS",
    "BookItem",
    "BookReset",
    "BookView",
    "DataFile",
    "DataReader",
    "Hole",
    "ReaderError",
    "Stream",
    "UsageError",
]
