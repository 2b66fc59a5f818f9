"""Keep glibc from returning large CPU activation buffers to the kernel after every batch.

By default glibc serves blocks over a (dynamic) threshold with fresh mmap calls and unmaps
them on free, so each CPU forward pass page-faults its activations in again; on small
virtual machines that costs as much time as the convolutions (see bench/extract.py).
Entry points (the CLI, the app) call this once; the library itself never does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024**2
TRIM_THRESHOLD_BYTES = 1024**3


@cache
def keep_freed_memory_for_reuse() -> bool:
    """Raise glibc's mmap and trim thresholds; True if applied (Linux with glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl)
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
