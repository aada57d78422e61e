"""Process settings that make CPU training faster without changing any result.

glibc's malloc serves large blocks (a [256, 12102] logits tensor is 12 MB)
with ``mmap`` and returns them to the OS on ``free``, so every training step
page-faults its biggest buffers back in: on a 2-core CPU that is about 8 % of
a SASRec epoch (``benchmarks/epoch_profile.py``). ``keep_freed_memory``
raises the mmap and trim thresholds so freed buffers stay in the heap and
are reused. The entry points call it (the command line, the grid's workers,
the benchmarks); importing the package does not. Peak memory does not grow:
the same buffers are reused instead of re-mapped.
"""

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc malloc.h) and the values set
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 256 << 20}
# the same as environment variables, for processes started by this one
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
              "MALLOC_TOP_PAD_": str(256 << 20)}


def keep_freed_memory():
    """Apply ``SETTINGS`` with glibc's ``mallopt``; True when applied (False off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
