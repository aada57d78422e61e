"""recbole_lpo/runtime.py: the allocator settings the entry points apply."""

import ctypes.util
import sys

from recbole_lpo.runtime import MALLOC_ENV, SETTINGS, keep_freed_memory


def test_keep_freed_memory_applies_on_glibc():
    glibc = sys.platform.startswith("linux") and "libc.so" in (ctypes.util.find_library("c") or "")
    # glibc accepts every value (mallopt refuses an mmap threshold above 32 MB, for one)
    assert keep_freed_memory() is glibc


def test_environment_form_matches_the_settings():
    assert sorted(int(v) for v in MALLOC_ENV.values()) == sorted(SETTINGS.values())
