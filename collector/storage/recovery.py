"""Finish what a previous run left behind (it crashed, or was cancelled mid-write)."""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from collector.metrics import Metrics
from collector.storage.finalize import finalize_journal
from collector.storage.layout import JOURNAL_SUFFIX, TEMP_SUFFIX, parquet_for_journal

logger = logging.getLogger(__name__)

CORRUPT_SUFFIX = ".corrupt"


def _scan(root: Path) -> tuple[list[Path], list[Path]]:
    journals: list[Path] = []
    temps: list[Path] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.endswith(JOURNAL_SUFFIX):
                journals.append(Path(dirpath, name))
            elif name.startswith(".") and name.endswith(TEMP_SUFFIX):
                temps.append(Path(dirpath, name))
    return sorted(journals), sorted(temps)


def _is_readable_parquet(path: Path) -> bool:
    """Whether ``path`` is a complete Parquet file (its footer parses)."""
    try:
        pq.read_metadata(path)
    except pa.ArrowInvalid:
        return False
    return True


def recover_leftovers(
    data_dir: str | os.PathLike[str],
    metrics: Metrics,
    *,
    compression: str = "zstd",
    compression_level: int | None = None,
) -> list[Path]:
    """Finalize every journal under ``data_dir``; return the finished ``.parquet`` paths.

    Blocking (run it in a worker thread). For each ``*.journal.arrows``:

    - no complete batch: the journal is deleted, no file is made;
    - the final ``.parquet`` already exists and is readable (a crash between the rename
      and the journal's deletion): the journal is deleted and the existing file is kept and
      returned (it was never handed to the uploader);
    - otherwise the complete batches become the ``.parquet`` file (a truncated trailing batch
      is ignored) and the journal is deleted.

    Stale ``.*.parquet.tmp`` files (a crash mid-finalize) are deleted first. A disk error
    on one file is logged and counted (``writer_errors{stage="recover"}``) and that file is
    left for the next start; a journal pyarrow cannot read is renamed to ``*.corrupt`` and
    logged, so that one bad file cannot stop every later start.
    """
    root = Path(data_dir)
    if not root.is_dir():
        return []
    journals, temps = _scan(root)
    for tmp in temps:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            logger.exception("cannot delete stale temporary file %s", tmp)
            metrics.writer_errors.labels(stage="recover").inc()
    finished: list[Path] = []
    for journal in journals:
        final = parquet_for_journal(journal)
        try:
            if final.exists() and _is_readable_parquet(final):
                journal.unlink()
                size: int | None = None
            else:
                size = finalize_journal(
                    journal, final, compression=compression, compression_level=compression_level
                )
                if size is None:
                    logger.info("deleted journal %s: no complete batch", journal)
                    continue
        except OSError:
            logger.exception("cannot recover journal %s; kept for the next start", journal)
            metrics.writer_errors.labels(stage="recover").inc()
            continue
        except pa.ArrowException:
            logger.exception("journal %s is corrupt; renamed to *%s", journal, CORRUPT_SUFFIX)
            metrics.writer_errors.labels(stage="recover").inc()
            with suppress(OSError):
                journal.rename(journal.with_name(journal.name + CORRUPT_SUFFIX))
            continue
        if size is not None:
            metrics.bytes_written.inc(size)
        metrics.files_recovered.inc()
        logger.info("recovered %s", final)
        finished.append(final)
    return finished
