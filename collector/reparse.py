"""Re-parse from raw: rebuild the normalized tables from the ``raw`` feed with today's parsers.

After a parser fix, the frames the service kept in the ``raw`` feed can be parsed again:
``python -m collector reparse --config SETTINGS --out DIR`` reads every raw row of the
configured exchanges, replays each connection attempt through a fresh adapter
:class:`~collector.exchanges.base.Session`, as the connection's receive loop drove the
original one, and writes what the sessions produce through the real writer into a
separate data directory.

How a replay matches the recording (see :class:`~collector.events.Raw`):

- the connections are planned from the settings given, as the service plans them, and a
  raw row's ``connection`` names its plan (so the settings, and ``--shard``, must be those
  of the recording run: a connection no plan names is skipped, and counted);
- a connection attempt (the raw rows sharing a ``sequence``) gets a session of its own,
  opened and subscribed at its first row (its ``open`` row, where the range holds it);
- ``recv`` rows go to ``session.receive``, the rows of one read (same receive time, in a
  run) together; ``rest`` rows go to ``receive_snapshot`` when the session asked for that
  URL, else to ``receive_polled`` when the connection polls it (a body nobody asked for is
  skipped and counted); ``send`` and ``open`` rows carry nothing to parse;
- every call gets the raw row's own ``timestamp_collector`` as the receive time, so the
  rebuilt rows carry the original receive times: with unchanged parsers the rebuilt
  tables equal the recorded ones.

What is not rebuilt: rows the connection task wrote, not the session (``connected``,
``disconnected``, ``discarded`` summaries, watchdog ``silent`` rows, ``poll_error``,
``handover``), and the ``instruments`` table (REST listings are not in ``raw``). At a
planned reconnect the successor's rows were written after the old connection's last ones
(the handover held them); the replay drops the successor's rows received before the old
attempt's last replayed row, where the service joined the two by sequence.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, Final

import attrs
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import trio

from collector.config import StorageSettings
from collector.doorbell import Doorbell, ring_at_for
from collector.events import RAW_SYMBOL, Event, Raw
from collector.exchanges.base import (
    ConnectionPlan,
    ExchangeAdapter,
    Session,
    SnapshotRequest,
)
from collector.metrics import Metrics
from collector.planning import ServicePlan
from collector.reader.catalog import list_files
from collector.reader.source import Source
from collector.storage import FileMetadataSource, run_writer
from collector.storage.layout import safe_component
from collector.storage.lock import DataDirInUse, DataDirLock, DataDirLockError

log = logging.getLogger(__name__)

# The raw columns a replay reads.
_COLUMNS: Final = ["timestamp_collector", "sequence", "connection", "direction", "payload", "url"]
# Raw rows read per batch from a file (bounds memory: a batch is parsed before the next).
READ_BATCH_ROWS: Final = 8_192


class ReparseError(Exception):
    """The replay cannot start (output directory refused or held); one line for the user."""


@attrs.define
class ReparseReport:
    """What one replay did, for the command's summary and for tests."""

    attempts: int = 0
    frames: int = 0
    bodies: int = 0
    events: int = 0
    # Raw rows of a connection the settings do not plan (other settings, other shard).
    unplanned: int = 0
    # REST bodies no session asked for and no connection polls (a parser change that asks
    # for other snapshots, or rows from before this version).
    unmatched: int = 0
    # The successor's rows of a planned reconnect that the old attempt had covered.
    overlapped: int = 0


@attrs.define
class _Attempt:
    """One connection attempt being replayed: its session and what it asked for."""

    attempt: int
    session: Session
    # URL -> the snapshot requests the session made for it and has not been handed yet.
    asked: defaultdict[str, deque[SnapshotRequest]]
    # Rows received before this are the old attempt's (set at a planned reconnect).
    joins_at: int | None


class _Connection:
    """The replay of one planned connection: its attempts, one session at a time."""

    def __init__(self, adapter: ExchangeAdapter, plan: ConnectionPlan) -> None:
        self.adapter = adapter
        self.plan = plan
        polling = adapter.polling(plan)
        self.polled: dict[str, SnapshotRequest] = (
            {r.url: r for r in polling.requests} if polling is not None else {}
        )
        self.current: _Attempt | None = None
        # The receive time of the last row replayed, and the attempts already ended.
        self.last_us: int | None = None
        self.ended: set[int] = set()

    def attempt_for(self, attempt: int, at_us: int, report: ReparseReport) -> _Attempt | None:
        """The replay of ``attempt`` (opened and subscribed at its first row), or None for a
        row of an attempt that has already given way to a newer one."""
        current = self.current
        if current is not None and current.attempt == attempt:
            return current
        if attempt in self.ended:
            return None
        if current is not None:
            self.ended.add(current.attempt)
        session = self.adapter.open_session(self.plan)
        opened = _Attempt(attempt, session, defaultdict(deque), None)
        if current is not None and self.last_us is not None and at_us <= self.last_us:
            opened.joins_at = self.last_us  # a successor whose start the old one covered
        self.current = opened
        report.attempts += 1
        self._asked(opened, session.subscribe(at_us).fetch)
        return opened

    @staticmethod
    def _asked(attempt: _Attempt, fetch: tuple[SnapshotRequest, ...]) -> None:
        for request in fetch:
            attempt.asked[request.url].append(request)

    def replay(
        self, attempt: _Attempt, rows: list[dict[str, Any]], report: ReparseReport
    ) -> list[Event]:
        """Hand ``rows`` (one read's ``recv`` rows, or one other row) to the attempt's
        session; its events, less those a planned reconnect's old attempt covered."""
        first = rows[0]
        at_us: int = first["timestamp_collector"]
        direction = first["direction"]
        events: list[Event] = []
        session = attempt.session
        if direction == "recv":
            report.frames += len(rows)
            actions = session.receive([r["payload"] for r in rows], at_us, events)
        elif direction == "rest":
            url = first["url"] or ""
            waiting = attempt.asked.get(url)
            if waiting:
                actions = session.receive_snapshot(
                    waiting.popleft(), first["payload"], at_us, events
                )
            elif url in self.polled:
                actions = session.receive_polled(self.polled[url], first["payload"], at_us, events)
            else:
                report.unmatched += 1
                return []
            report.bodies += 1
        else:
            return []  # open, send: nothing to parse
        self._asked(attempt, actions.fetch)
        self.last_us = at_us if self.last_us is None else max(self.last_us, at_us)
        if attempt.joins_at is not None:
            if at_us <= attempt.joins_at:
                report.overlapped += len(events)
                return []
            attempt.joins_at = None
        return events


def _raw_rows(source: Source, exchange: str) -> Iterator[list[dict[str, Any]]]:
    """``exchange``'s raw rows in the order they were written: file by file (files in order
    of their first row), batch by batch. Blocking."""
    files = list_files(
        source, exchange=safe_component(exchange), symbol=RAW_SYMBOL, data_type=Raw.DATA_TYPE
    )
    for file in files:
        with source.filesystem.open_input_file(file.path) as handle:
            parquet = pq.ParquetFile(handle)
            names = set(parquet.schema_arrow.names)
            columns = [c for c in _COLUMNS if c in names]
            for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
                # The stored integers (µs), not datetimes: the replay hands them on as they are.
                at = batch.schema.get_field_index("timestamp_collector")
                batch = batch.set_column(
                    at, "timestamp_collector", batch.column(at).cast(pa.int64())
                )
                rows = batch.to_pylist()
                for row in rows:
                    row.setdefault("url", None)
                    row.setdefault("sequence", None)
                yield rows


def _reads(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """``rows`` cut into what the session was handed at once: a run of ``recv`` rows of one
    attempt with one receive time (one read), or any other row alone."""
    group: list[dict[str, Any]] = []
    for row in rows:
        if group and (
            row["direction"] != "recv"
            or group[0]["direction"] != "recv"
            or row["timestamp_collector"] != group[0]["timestamp_collector"]
            or row["sequence"] != group[0]["sequence"]
            or row["connection"] != group[0]["connection"]
        ):
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def check_output(out_dir: Path, data_dirs: list[Path]) -> None:
    """Refuse an output directory that is, or is inside or around, a data directory the
    recording lives in (the replay must never write into live data)."""
    out = out_dir.expanduser().resolve()
    for data_dir in data_dirs:
        data = data_dir.expanduser().resolve()
        if out == data or data in out.parents or out in data.parents:
            raise ReparseError(
                f"the output directory {str(out_dir)!r} overlaps the data directory "
                f"{str(data_dir)!r}: give a separate --out"
            )


def _open_output(plan: ServicePlan, source: Source, out_dir: Path) -> DataDirLock:
    """Check, make and lock the output directory (blocking)."""
    data_dirs = [Path(plan.settings.storage.data_dir)]
    if not source.location.startswith("s3://"):
        data_dirs.append(Path(source.root))
    check_output(out_dir, data_dirs)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return DataDirLock.acquire(out_dir)
    except (DataDirInUse, DataDirLockError, OSError) as exc:
        raise ReparseError(f"output directory {str(out_dir)!r}: {exc}") from None


async def run_reparse(
    plan: ServicePlan,
    source: Source,
    out_dir: Path,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> ReparseReport:
    """Replay the raw rows under ``source`` of ``plan``'s exchanges and write the rebuilt
    tables into ``out_dir`` (through :func:`~collector.storage.run_writer`, with the plan's
    storage settings but ``out_dir`` as the data directory). Returns what it did.

    Holds ``out_dir``'s data-directory lock while it writes. Raises :class:`ReparseError`
    before reading anything when ``out_dir`` overlaps the plan's data directory or the
    source's (local) root, or another process holds it; ``OSError`` and Arrow errors from
    the files. Reading is blocking I/O done in worker threads; parsing runs in this task.
    The writer's rows carry their original receive times, and the writer's clock follows
    them (so hourly files are retired as the replay passes each hour, not by today's clock).
    """
    lock = await trio.to_thread.run_sync(_open_output, plan, source, out_dir)
    report = ReparseReport()
    with lock:
        storage: StorageSettings = msgspec.structs.replace(
            plan.settings.storage, data_dir=str(out_dir)
        )
        cfg = plan.settings.collector
        clock = _ReplayClock()
        metrics = Metrics()
        event_tx, event_rx = trio.open_memory_channel[list[Event]](cfg.event_channel_size)
        file_tx, file_rx = trio.open_memory_channel[Path](cfg.file_channel_size)
        doorbell = Doorbell(ring_at_for(cfg.event_channel_size))
        writer = partial(
            run_writer,
            storage,
            event_rx,
            file_tx,
            metrics,
            wall_clock=clock,
            home_server_name=plan.settings.aws.home_server_name,
            file_metadata=_file_metadata(plan),
            doorbell=doorbell,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drop_paths, file_rx)
            await nursery.start(writer)
            task_status.started()
            with event_tx:
                for exchange in plan.exchanges:
                    await _replay_exchange(
                        exchange.adapter,
                        exchange.connections,
                        source,
                        report,
                        clock,
                        event_tx,
                        doorbell,
                    )
            doorbell.ring()  # the writer drains what is left, then finalizes
    return report


def _file_metadata(plan: ServicePlan) -> FileMetadataSource:
    from collector.service import file_metadata_source  # the service's own, not a copy

    return file_metadata_source(plan)


async def _replay_exchange(
    adapter: ExchangeAdapter,
    connections: tuple[ConnectionPlan, ...],
    source: Source,
    report: ReparseReport,
    clock: _ReplayClock,
    events: trio.MemorySendChannel[list[Event]],
    doorbell: Doorbell,
) -> None:
    if not connections:
        return
    exchange = connections[0].exchange
    replays = {plan.name: _Connection(adapter, plan) for plan in connections}
    batches = _raw_rows(source, exchange)
    while True:
        rows = await trio.to_thread.run_sync(next, batches, None)
        if rows is None:
            return
        out: list[Event] = []
        for read in _reads(rows):
            first = read[0]
            replay = replays.get(first["connection"])
            attempt_id = first["sequence"]
            if replay is None or attempt_id is None:
                report.unplanned += len(read)
                continue
            attempt = replay.attempt_for(attempt_id, first["timestamp_collector"], report)
            if attempt is None:
                report.overlapped += len(read)
                continue
            out += replay.replay(attempt, read, report)
            clock.advance(first["timestamp_collector"])
        if out:
            report.events += len(out)
            await events.send(out)
            doorbell.sent()


class _ReplayClock:
    """The writer's wall clock during a replay: the latest receive time replayed so far."""

    def __init__(self) -> None:
        self.now_us = 0

    def advance(self, at_us: int) -> None:
        self.now_us = max(self.now_us, at_us)

    def __call__(self) -> int:
        return self.now_us


async def _drop_paths(files: trio.MemoryReceiveChannel[Path]) -> None:
    """The finished files stay where the writer put them (nothing uploads a replay)."""
    with files:
        async for _ in files:
            pass
