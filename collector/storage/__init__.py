"""Storage: events -> crash-safe journals -> finished Parquet files (see design.md).

- :func:`run_writer`: the writer task (router -> flusher -> finalizer, see its module);
- :func:`recover_leftovers`: finalize what a previous run left behind;
- :func:`relative_key`: a finished file's key below the S3 prefix;
- :func:`read_file_metadata`: what a finished file says about itself (its ``collector.*``
  key-value metadata);
- :func:`run_disk_monitor`: the disk high-water mark in ``/health`` and metrics.
"""

from collector.storage.disk import run_disk_monitor
from collector.storage.layout import relative_key
from collector.storage.metadata import FileMetadata, FileMetadataSource, read_file_metadata
from collector.storage.recovery import recover_leftovers
from collector.storage.writer import run_writer

__all__ = [
    "FileMetadata",
    "FileMetadataSource",
    "read_file_metadata",
    "recover_leftovers",
    "relative_key",
    "run_disk_monitor",
    "run_writer",
]
