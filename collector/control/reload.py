"""``SIGHUP``: read the settings file again and apply its markets.

The command line hands the service a :data:`Reload`: a function that reads the settings
file the service started with (same path, same environment overrides, same shard) and
returns this instance's settings and the number of pairs all shards configure. On each
``SIGHUP`` :func:`watch_reloads` calls it (in a worker thread: it reads a file) and hands
the result to the :class:`~collector.control.controller.Controller`. A file that does not
load (a syntax error, a bad value, a shard left with nothing) is one logged line, and the
service keeps running what it ran; so is a change the controller refuses. Signals that
come while a reload is being applied are taken one at a time, in order.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import trio

from collector.config import ConfigError, Settings
from collector.control.controller import ChangeRefused, ChangeReport, Controller

log = logging.getLogger(__name__)

ORIGIN = "SIGHUP"

# Reads the settings again: (this instance's settings, pairs configured over all shards).
# Raises ConfigError for a file that does not load.
Reload = Callable[[], tuple[Settings, int]]


async def reload_once(controller: Controller, reload: Reload) -> ChangeReport | None:
    """Read the settings with ``reload`` and apply them; None (logged) when the file does
    not load or the change is refused (the running markets stay)."""
    try:
        settings, configured = await trio.to_thread.run_sync(reload)
    except ConfigError as exc:
        log.error("reload failed, keeping the running markets: %s", exc)
        return None
    try:
        return await controller.apply(settings, ORIGIN, configured_pairs=configured)
    except ChangeRefused as exc:
        log.error("reload refused, keeping the running markets: %s", exc)
        return None


async def watch_reloads(
    controller: Controller,
    reload: Reload,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply a reload (:func:`reload_once`) at every ``SIGHUP`` until cancelled. Owns the
    process's ``SIGHUP`` handling while it runs (Trio restores the previous handler)."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            log.info("SIGHUP: reading the settings again")
            await reload_once(controller, reload)
