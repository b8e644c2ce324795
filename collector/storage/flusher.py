"""The writer's second stage: flush work -> journals -> files whose rows are all journaled.

The flusher owns file identity: for each stream key it has at most one open file (its
final path, chosen when its first rows are journaled, and its :class:`Journal`). For each
:class:`~collector.storage.router.FlushWork` it converts every key's columns to one record
batch and appends it to that key's journal, all in one worker thread, so the event loop
goes on meanwhile. A key without an open file gets a new one, named after its first row;
its journal's schema carries the file's metadata (:mod:`~collector.storage.metadata`),
fixed then, so the finished file says what the run that wrote it was.

On a disk error (``OSError``) the batches not appended are kept and retried *in place*,
every flush interval (a full disk is usually freed by someone else, and rows should move
again within an interval of that, not after a backoff has grown): the flusher takes no new
work meanwhile, so the router's rendezvous send waits, and the router takes
no more batches once a flush's worth waits (memory stays bounded; the event channel fills).
Nothing later is journaled before the failed rows, so a file's rows stay in order.

A file is complete (*retired*) when the work retires its key (the router's hourly
rotation), when its journal has reached ``max_file_size_mb`` (the flusher's size rotation:
the key's next rows open a new file), or when the input ends (every open file). Its journal
is closed and it is sent on as a :class:`RetiredFile` to the finalizer.

Every order book file starts with a ``checkpoint`` row: the flusher keeps each book
stream's current book (:mod:`~collector.storage.checkpoints`), fed in the worker thread
with every batch it appends, and the first batch of a new file is preceded by the book as
the stream's earlier rows left it (stamped with the first row's receive time), unless that
batch starts with a venue snapshot (which states the book itself), or no book is known (no
snapshot yet, or a hole row of the symbol, e.g. ``gap`` or ``disconnected``, with no
snapshot since: each work's hole rows are handed to the books before its book rows). That covers both rotations and a late row's small file alike, as
they all start here. A market's ``book_snapshot_interval_secs`` adds one before the first
batch at or past that interval since the last full book (snapshot or checkpoint), inside a
file too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import trio

from collector.config import StorageSettings
from collector.events import BookUpdate, Status
from collector.metrics import Metrics
from collector.storage.checkpoints import BOOK_HOLE_EVENTS, FULL_BOOK_KINDS, StreamBook
from collector.storage.columns import to_record_batch
from collector.storage.journal import Journal
from collector.storage.layout import choose_parquet_path, journal_path, stream_dir
from collector.storage.metadata import FileMetadataSource
from collector.storage.router import FileKey, FlushWork, StreamRows
from collector.storage.schemas import schema_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetiredFile:
    """A file whose rows are all in its journal, closed: ``journal_path(path)`` becomes
    ``path`` when it is finalized."""

    path: Path
    exchange: str
    data_type: str


@dataclass(eq=False)
class _OpenFile:
    """One file being written. ``path`` and ``journal`` exist from its first append on;
    ``unwritten`` holds the batches not appended yet (a failed append's, retried first)."""

    exchange: str
    symbol: str
    data_type: str
    first_us: int
    path: Path | None = None
    journal: Journal | None = None
    unwritten: list[pa.RecordBatch] = field(default_factory=list)
    fed: bool = False  # rows have been handed to this file (a checkpoint goes first)


class _Files:
    """The flusher's open files. Methods ending in ``_sync`` run in worker threads while
    the flusher task awaits them; nothing else touches the files meanwhile."""

    def __init__(
        self,
        settings: StorageSettings,
        metrics: Metrics,
        server: str | None,
        file_metadata: FileMetadataSource,
    ) -> None:
        self.data_dir = Path(settings.data_dir)
        self.server = server
        self.file_metadata = file_metadata
        self.metrics = metrics
        self.max_bytes = int(settings.max_file_size_mb * 1024 * 1024)
        self.open: dict[FileKey, _OpenFile] = {}
        # Paths of the open files. A retired file keeps its name taken on disk (journal,
        # temporary or Parquet file) until it is finalized, so it needs no entry here.
        self.in_use: set[Path] = set()
        # The current book of each book stream, by (exchange, symbol), across its files.
        self.books: dict[tuple[str, str], StreamBook] = {}

    def assign(self, rows: dict[FileKey, StreamRows]) -> list[tuple[_OpenFile, StreamRows]]:
        """Each key's rows with the file they go to (a new one where none is open)."""
        jobs: list[tuple[_OpenFile, StreamRows]] = []
        for key, stream in rows.items():
            open_file = self.open.get(key)
            if open_file is None:
                open_file = self.open[key] = _OpenFile(*key[:3], first_us=stream.first_us)
            jobs.append((open_file, stream))
        return jobs

    def append_sync(self, jobs: list[tuple[_OpenFile, StreamRows | None]]) -> list[_OpenFile]:
        """Append each file's unwritten batches, then the new rows, to its journal. Returns
        the files an ``OSError`` stopped (the batches not appended stay unwritten)."""
        started = time.perf_counter()
        failed: list[_OpenFile] = []
        self._note_holes_sync(jobs)
        for open_file, stream in jobs:
            if stream is not None and len(stream.columns):
                constants = {"exchange": open_file.exchange, "symbol": open_file.symbol}
                if open_file.data_type == BookUpdate.DATA_TYPE:
                    self._book_rows_sync(open_file, stream, constants)
                open_file.unwritten.append(stream.columns.to_record_batch(constants))
                open_file.fed = True
            written = 0
            try:
                for batch in open_file.unwritten:
                    journal = open_file.journal or self._open_journal_sync(open_file)
                    journal.append(batch)
                    written += 1
                    self.metrics.rows_written.labels(open_file.exchange, open_file.data_type).inc(
                        batch.num_rows
                    )
            except OSError as exc:
                rows = sum(batch.num_rows for batch in open_file.unwritten[written:])
                logger.warning(
                    "flush of %s %s %s failed, %d rows kept for retry: %s",
                    open_file.exchange,
                    open_file.symbol,
                    open_file.data_type,
                    rows,
                    exc,
                )
                self.metrics.writer_errors.labels(stage="flush").inc()
                failed.append(open_file)
            del open_file.unwritten[:written]
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        return failed

    def _note_holes_sync(self, jobs: list[tuple[_OpenFile, StreamRows | None]]) -> None:
        """Tell each book whose symbol has a hole row (for its book or its whole connection)
        in this work about it, before any book rows of the work are fed."""
        for open_file, stream in jobs:
            if stream is None or open_file.data_type != Status.DATA_TYPE:
                continue
            events = stream.columns.column("event")
            if BOOK_HOLE_EVENTS.isdisjoint(events):
                continue
            pair = (open_file.exchange, open_file.symbol)
            book = self.books.get(pair)
            if book is None:  # its book rows may come later in this very work
                book = self.books[pair] = StreamBook()
            data_types = stream.columns.column("data_type")
            times = stream.columns.number_column("timestamp_collector")[0]
            for row, event in enumerate(events):
                if event in BOOK_HOLE_EVENTS and data_types[row] in (None, BookUpdate.DATA_TYPE):
                    book.note_hole(int(times[row]))

    def _book_rows_sync(
        self, open_file: _OpenFile, stream: StreamRows, constants: dict[str, str]
    ) -> None:
        """Queue a checkpoint ahead of ``stream``'s rows where one is due (the file's first
        rows, or the market's interval has passed) unless they start with a venue snapshot,
        then feed the rows to the book."""
        pair = (open_file.exchange, open_file.symbol)
        book = self.books.get(pair)
        if book is None:
            book = self.books[pair] = StreamBook()
        due = not open_file.fed
        if not due and book.known:
            market = self.file_metadata.markets.get(pair)
            interval = market.book_snapshot_interval_secs if market is not None else None
            due = interval is not None and (
                book.last_full_us is None
                or stream.first_us - book.last_full_us >= interval * 1_000_000
            )
        if due and stream.columns.column("kind")[0] not in FULL_BOOK_KINDS:  # states it itself
            row = book.checkpoint(open_file.exchange, open_file.symbol, stream.first_us)
            if row is not None:
                batch = to_record_batch(BookUpdate.DATA_TYPE, [row], constants=constants)
                open_file.unwritten.append(batch)
        book.feed(stream.columns)

    def _open_journal_sync(self, open_file: _OpenFile) -> Journal:
        start_ms = open_file.first_us // 1000
        directory = stream_dir(
            self.data_dir,
            open_file.exchange,
            open_file.symbol,
            open_file.data_type,
            start_ms,
            self.server,
        )
        directory.mkdir(parents=True, exist_ok=True)
        path = choose_parquet_path(directory, start_ms, self.in_use)
        schema = self.file_metadata.schema(
            schema_for(open_file.data_type),
            open_file.exchange,
            open_file.symbol,
            open_file.data_type,
        )
        journal = Journal.create(journal_path(path), schema)
        self.in_use.add(path)
        open_file.path = path
        open_file.journal = journal
        self.metrics.open_files.inc()
        return journal

    def due(self, retired: tuple[FileKey, ...] | None) -> list[FileKey]:
        """The keys whose files are complete: ``retired`` ones and those whose journal has
        reached the size limit; every open key when ``retired`` is None (the end)."""
        if retired is None:
            return list(self.open)
        due = [key for key in retired if key in self.open]
        due.extend(
            key
            for key, open_file in self.open.items()
            if open_file.journal is not None
            and open_file.journal.size >= self.max_bytes
            and key not in retired
        )
        return due

    def close_sync(self, keys: list[FileKey]) -> None:
        """Close the journals of ``keys`` (idempotent; the files stay open here)."""
        for key in keys:
            journal = self.open[key].journal
            if journal is not None:
                journal.close()

    def retire(self, keys: list[FileKey]) -> list[RetiredFile]:
        """Forget the (closed) files of ``keys``: their keys' next rows open new files."""
        retired: list[RetiredFile] = []
        for key in keys:
            open_file = self.open.pop(key)
            if open_file.path is None:
                continue  # never written to: no file
            self.in_use.discard(open_file.path)
            retired.append(RetiredFile(open_file.path, open_file.exchange, open_file.data_type))
        return retired

    def close_all(self) -> None:
        """Close every journal (on cancellation or error: they stay on disk for recovery)."""
        for open_file in self.open.values():
            if open_file.journal is not None:
                open_file.journal.close()


async def run_flusher(
    settings: StorageSettings,
    work_in: trio.MemoryReceiveChannel[FlushWork],
    retired_out: trio.MemorySendChannel[RetiredFile],
    metrics: Metrics,
    *,
    home_server_name: str | None = None,
    file_metadata: FileMetadataSource | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Journal each :class:`FlushWork` of ``work_in``; send complete files on ``retired_out``.

    ``file_metadata`` gives each new file's metadata (default: the collector's version and
    the stream's own keys only, no market options or instance).

    Owns and closes both channel ends. Takes the next work only when every row of the
    previous one is in its journal (see the module docstring for the retries in place), so
    ``work_in``'s sender waits meanwhile. Counts ``rows_written``, ``flush_seconds``,
    ``writer_errors{stage="flush"}`` and, per journal opened, ``open_files`` (the finalizer
    counts it down). When ``work_in`` ends, every open file is retired and ``retired_out``
    is closed.

    Cancellation: open journals are closed and stay on disk for recovery; a worker thread
    already running completes first. Raises what is not a disk error (a bug), and
    ``trio.BrokenResourceError`` if the finalizer went away.
    """
    retry_delay = settings.flush_interval_secs
    files = _Files(settings, metrics, home_server_name, file_metadata or FileMetadataSource())
    limiter = trio.CapacityLimiter(1)  # its own: never waits behind other components' threads
    with work_in, retired_out:
        try:
            task_status.started()
            async for work in work_in:
                jobs: list[tuple[_OpenFile, StreamRows | None]] = list(files.assign(work.rows))
                # Attempts start every flush interval, counted from the previous start, so
                # the time a failing write takes does not stretch the cadence.
                attempt_at = trio.current_time()
                while failed := await trio.to_thread.run_sync(
                    files.append_sync, jobs, limiter=limiter
                ):
                    attempt_at += retry_delay
                    await trio.sleep_until(attempt_at)
                    jobs = [(open_file, None) for open_file in failed]
                await _send_retired(files, files.due(work.retired), retired_out, limiter)
            await _send_retired(files, files.due(None), retired_out, limiter)
        finally:
            files.close_all()


async def _send_retired(
    files: _Files,
    keys: list[FileKey],
    retired_out: trio.MemorySendChannel[RetiredFile],
    limiter: trio.CapacityLimiter,
) -> None:
    if not keys:
        return
    await trio.to_thread.run_sync(files.close_sync, keys, limiter=limiter)
    for retired in files.retire(keys):
        await retired_out.send(retired)
