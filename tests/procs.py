"""Helpers for tests that run the real ``python -m collector`` as a subprocess.

- :func:`write_settings`: a settings file for a run on 127.0.0.1 only;
- :func:`service_process`: start the service (stdout/stderr to files in the test's
  directory), find its HTTP port in its JSON log, and make sure it is gone afterwards;
- :class:`ServiceProcess`: HTTP probes (``/metrics`` parsed), signals, bounded waits;
- :func:`read_rows`: every row of one data type from the finished Parquet files.

The service is started with ``metrics_port = 0`` by default and the test reads the port it
bound from the ``collector started`` log line (``http_port``): no free-port guessing, so
no race with other processes on a busy CI machine.

Every wait here is unbounded on its own: callers own timeouts (``trio.fail_after``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import trio
from prometheus_client.parser import text_string_to_metric_families

HTTP_TIMEOUT_SECS = 5.0
POLL_SECS = 0.05


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_settings(
    path: Path,
    *,
    data_dir: Path,
    base_url: str,
    symbols: Sequence[str] = ("btcusdt", "ethusdt"),
    metrics_port: int = 0,
    collector: Mapping[str, Any] | None = None,
    storage: Mapping[str, Any] | None = None,
    websocket: Mapping[str, Any] | None = None,
    aws: Mapping[str, Any] | None = None,
) -> Path:
    """Write a settings file: one binance market on ``base_url``, JSON logs, local storage
    (and an ``[aws]`` section when ``aws`` is given)."""
    sections: dict[str, dict[str, Any]] = {
        "collector": {
            "log_level": "info",
            "log_format": "json",
            "metrics_host": "127.0.0.1",
            "metrics_port": metrics_port,
            "shutdown_timeout_secs": 20.0,
            **(collector or {}),
        },
        "storage": {"mode": "local", "data_dir": str(data_dir), **(storage or {})},
        "websocket": {
            "initial_retry_delay_secs": 0.2,
            "max_retry_delay_secs": 1.0,
            **(websocket or {}),
        },
    }
    if aws is not None:
        sections["aws"] = dict(aws)
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
        lines.append("")
    lines += [
        "[[markets]]",
        'exchange = "binance"',
        f"symbols = {_toml(list(symbols))}",
        'feeds = ["trades", "orderbook", "ticker"]',
        f"base_url = {_toml(base_url)}",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def clean_env() -> dict[str, str]:
    """This process's environment without settings overrides (``COLLECTOR__*``, CONFIG_PATH)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COLLECTOR__") and k != "CONFIG_PATH"
    }


def metric_value(text: str, sample_name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples called ``sample_name`` (whose labels include ``labels``)."""
    wanted = dict(labels or {})
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and wanted.items() <= sample.labels.items():
                total += sample.value
    return total


class ServiceExited(AssertionError):
    """The service ended while a test waited for something from it."""


class ServiceProcess:
    """One running ``python -m collector`` and its log files."""

    def __init__(self, process: trio.Process, stdout: Path, stderr: Path) -> None:
        self.process = process
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.http_port: int | None = None

    # ------------------------------------------------------------------ logs

    def log_text(self) -> str:
        return self.stderr_path.read_text("utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines are skipped)."""
        records = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def logged(self, msg: str) -> list[dict[str, Any]]:
        """Log records whose message is ``msg``."""
        return [r for r in self.log_records() if r.get("msg") == msg]

    def logged_prefix(self, prefix: str) -> list[dict[str, Any]]:
        """Log records whose (formatted) message starts with ``prefix``."""
        return [r for r in self.log_records() if str(r.get("msg", "")).startswith(prefix)]

    def describe(self) -> str:
        out = self.stdout_path.read_text("utf-8", errors="replace")
        return (
            f"returncode={self.process.returncode}\n--- stderr ---\n{self.log_text()}"
            f"\n--- stdout ---\n{out}"
        )

    # ------------------------------------------------------------------ waiting

    def _check_running(self) -> None:
        if self.process.returncode is not None:
            raise ServiceExited(f"the service exited early\n{self.describe()}")

    async def wait_started(self) -> int:
        """Until the service logged ``collector started``; returns its HTTP port."""
        while True:
            for record in self.logged("collector started"):
                self.http_port = int(record["http_port"])
                return self.http_port
            self._check_running()
            await trio.sleep(POLL_SECS)

    async def wait_log(self, msg: str, *, prefix: bool = False) -> dict[str, Any]:
        """Until a log record with message ``msg`` (or starting with it) appears; returns
        the first one."""
        while True:
            found = self.logged_prefix(msg) if prefix else self.logged(msg)
            if found:
                return found[0]
            self._check_running()
            await trio.sleep(POLL_SECS)

    async def wait_exit(self) -> int:
        return await self.process.wait()

    # ------------------------------------------------------------------ http

    async def get(self, path: str) -> tuple[int, str]:
        """``GET path`` on the service's HTTP port over real HTTP: (status, body)."""
        assert self.http_port is not None, "call wait_started() first"
        url = f"http://127.0.0.1:{self.http_port}{path}"

        def fetch() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECS) as response:
                    return int(response.status), response.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        return await trio.to_thread.run_sync(fetch)

    async def metrics(self) -> str:
        status, body = await self.get("/metrics")
        assert status == 200, body
        return body

    async def metric(self, sample_name: str, labels: Mapping[str, str] | None = None) -> float:
        return metric_value(await self.metrics(), sample_name, labels)

    async def wait_metric(
        self, sample_name: str, at_least: float, labels: Mapping[str, str] | None = None
    ) -> float:
        """Poll ``/metrics`` until the sample reaches ``at_least``; returns its value."""
        while True:
            value = await self.metric(sample_name, labels)
            if value >= at_least:
                return value
            self._check_running()
            await trio.sleep(POLL_SECS)

    async def wait_ready(self) -> None:
        """Until ``/ready`` answers 200 (every connection subscribed)."""
        while True:
            status, _ = await self.get("/ready")
            if status == 200:
                return
            self._check_running()
            await trio.sleep(POLL_SECS)

    # ------------------------------------------------------------------ signals

    def send_signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)


@asynccontextmanager
async def service_process(
    config: Path,
    workdir: Path,
    *,
    name: str = "service",
    extra_args: Sequence[str] = (),
) -> AsyncIterator[ServiceProcess]:
    """Run ``python -m collector --config CONFIG run`` in ``workdir``.

    Its stdout and stderr go to ``workdir/{name}.stdout`` / ``.stderr``. If the block
    fails, the service's log is printed (pytest shows it with the failure); a process still
    running when the block ends is killed and reaped.
    """
    stdout = workdir / f"{name}.stdout"
    stderr = workdir / f"{name}.stderr"
    args = [sys.executable, "-m", "collector", "--config", str(config), "run", *extra_args]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = await trio.lowlevel.open_process(
            args, cwd=workdir, env=clean_env(), stdin=None, stdout=out, stderr=err
        )
    service = ServiceProcess(process, stdout, stderr)
    try:
        yield service
    except BaseException:
        print(f"=== {name}: {' '.join(args)}\n{service.describe()}")
        raise
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()


# ---------------------------------------------------------------------- reading data


def parquet_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.rglob("*.parquet"))


def leftovers(data_dir: Path) -> list[Path]:
    """Journals, temporary and corrupt files: nothing of these may remain after a clean stop."""
    return sorted(
        p
        for p in data_dir.rglob("*")
        if p.is_file()
        and (
            p.name.endswith(".journal.arrows")
            or p.name.endswith(".parquet.tmp")
            or p.name.endswith(".corrupt")
        )
    )


def _plain_table(table: pa.Table) -> pa.Table:
    """Timestamps as int64 microseconds (exact comparisons with what was sent)."""
    columns = []
    for field in table.schema:
        column = table.column(field.name)
        if pa.types.is_timestamp(field.type):
            column = column.cast(pa.int64())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def without_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (in file order) without their ``collector_seq``, after checking it increases
    strictly within each (exchange, symbol): the tests compare the event columns with
    what was sent, and the ordering key has its own tests (tests/test_storage_order.py)."""
    last: dict[tuple[str, str], int] = {}
    out = []
    for row in rows:
        row = dict(row)
        seq = row.pop("collector_seq")
        stream = (row["exchange"], row["symbol"])
        assert seq > last.get(stream, -1), (stream, seq)
        last[stream] = seq
        out.append(row)
    return out


def read_rows(data_dir: Path, data_type: str) -> list[dict[str, Any]]:
    """Every row of ``data_type`` in the finished files under ``data_dir``, in file order.

    Layout: ``{exchange}/{symbol}/{data_type}/{date}/{start_ms}.parquet``.
    """
    rows: list[dict[str, Any]] = []
    for path in parquet_files(data_dir):
        if path.relative_to(data_dir).parts[2] != data_type:
            continue
        rows += _plain_table(pq.read_table(path)).to_pylist()
    return without_order(rows)


def read_journal_batches(path: Path) -> list[dict[str, Any]]:
    """The rows of a journal's complete record batches, read with plain pyarrow.

    A journal is an Arrow IPC stream without an end marker whose last message may be cut
    short by a crash: read batch by batch and stop at the first incomplete one.
    """
    rows: list[dict[str, Any]] = []
    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.open_stream(source)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):
                break  # a partial trailing batch
            rows += _plain_table(pa.Table.from_batches([batch])).to_pylist()
    return rows
