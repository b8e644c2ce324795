"""Finish what a previous run left behind (it crashed, or was cancelled mid-write)."""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector.events import RAW_SYMBOL, Status
from collector.metrics import Metrics
from collector.storage.finalize import finalize_journal
from collector.storage.layout import JOURNAL_SUFFIX, TEMP_SUFFIX, parquet_for_journal
from collector.storage.metadata import complete_schema
from collector.storage.schemas import ORDER_COLUMN

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
      is ignored) and the journal is deleted. The file's metadata is the one recorded in
      the journal's header when the file was opened (the settings of the run that wrote
      the rows, whatever today's are); a journal of a version without metadata gets what
      its contents prove (:func:`~collector.storage.metadata.complete_schema`).

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
                    journal,
                    final,
                    compression=compression,
                    compression_level=compression_level,
                    complete_schema=complete_schema,
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


UNCLEAN_STOP_DETAIL = (
    "the previous run stopped without a clean shutdown (crash or kill) after this row's time; "
    "what it received after its last flush is missing"
)


def unclean_stop_rows(recovered: list[Path]) -> list[Status]:
    """One ``disconnected`` row per (exchange, symbol) whose files a previous run left
    unfinished, stamped with the time of its last recorded row: a stop that wrote no
    ``disconnected`` row of its own is still marked in the data. Blocking.

    Every file holds one (exchange, symbol): it is read from the first row, and the last
    receive time from the row groups' statistics, so no file is read whole.
    """
    last: dict[tuple[str, str], int] = {}
    for path in recovered:
        parquet = pq.ParquetFile(path)
        first = next(parquet.iter_batches(batch_size=1, columns=["exchange", "symbol"]), None)
        if first is None or first.num_rows == 0:
            continue
        exchange, symbol = first.column(0)[0].as_py(), first.column(1)[0].as_py()
        if symbol == RAW_SYMBOL:
            continue  # raw frames belong to a connection, not to one symbol
        latest = _last_receive_us(parquet)
        if latest > last.get((exchange, symbol), -1):
            last[(exchange, symbol)] = latest
    return [
        Status(exchange, symbol, None, latest, None, "disconnected", detail=UNCLEAN_STOP_DETAIL)
        for (exchange, symbol), latest in sorted(last.items())
    ]


def _last_receive_us(parquet: pq.ParquetFile) -> int:
    meta = parquet.metadata
    index = parquet.schema_arrow.get_field_index("timestamp_collector")
    latest = -1
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(index).statistics
        if stats is not None and stats.has_min_max:
            latest = max(latest, int(stats.max_raw))
        else:  # no statistics (not written by us): read the column
            column = parquet.read_row_group(group, columns=["timestamp_collector"]).column(0)
            latest = max(latest, int(pc.max(column.cast(pa.int64())).as_py()))
    return latest


def highest_order_key(recovered: list[Path]) -> int | None:
    """The highest ``collector_seq`` in the ``recovered`` files (``None``: none has one),
    from their row groups' statistics. Blocking.

    The router starts numbering above it, so a run that follows a crash keeps every
    stream's numbers increasing even if the wall clock went back since the previous start.
    """
    highest: int | None = None
    for path in recovered:
        meta = pq.read_metadata(path)
        index = meta.schema.to_arrow_schema().get_field_index(ORDER_COLUMN)
        if index < 0:
            continue  # written before collector_seq existed
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(index).statistics
            if stats is not None and stats.has_min_max and isinstance(stats.max_raw, int):
                highest = stats.max_raw if highest is None else max(highest, stats.max_raw)
    return highest
