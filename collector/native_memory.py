"""Give freed native memory back to the OS (glibc only; a no-op elsewhere).

Arrow allocates through the system allocator (see ``collector/__init__.py``). glibc keeps
memory freed by a worker thread in that thread's arena, so a large finalize left its peak
resident long after it ended (seen in the bench's soak). Two standard remedies:
``limit_arenas`` (fewer per-thread arenas, less fragmentation) at start, and
``trim`` after each finalize.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Final

M_ARENA_MAX: Final = -8

_libc: ctypes.CDLL | None
try:
    _name = ctypes.util.find_library("c")
    _libc = ctypes.CDLL(_name) if _name else None
    if _libc is not None and not (hasattr(_libc, "malloc_trim") and hasattr(_libc, "mallopt")):
        _libc = None  # not glibc
except OSError:
    _libc = None


def limit_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas (for threads created from now on). True if applied."""
    return _libc is not None and bool(_libc.mallopt(M_ARENA_MAX, count))


def trim() -> bool:
    """Return free heap memory of every arena to the OS. True if memory was released."""
    return _libc is not None and bool(_libc.malloc_trim(0))
