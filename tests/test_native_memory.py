"""Returning freed native memory to the OS (glibc; a no-op elsewhere)."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from collector import native_memory


def test_functions_report_whether_they_applied() -> None:
    assert isinstance(native_memory.trim(), bool)
    assert isinstance(native_memory.limit_arenas(), bool)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="malloc arenas and malloc_trim are glibc features",
)
def test_on_glibc_arena_limit_is_applied() -> None:
    assert ctypes.util.find_library("c") is not None
    # mallopt returns 1 on success: the cap is really set, not silently skipped.
    assert native_memory.limit_arenas(2) is True
