"""Keep glibc from holding on to large freed buffers in a long-running process.

glibc serves an allocation above its mmap threshold (128 KiB at start) with its own mmap and
unmaps it on free, but each such free raises the threshold to the freed size ("dynamic"
threshold, up to 32 MiB). After the first scrypt check (a 16 MiB work buffer) or the first
~1 MB page of a list answer, later buffers of that size come from the heap instead, and a
freed heap chunk stays resident; every worker thread has its own arena, so a few password
checks on the API's thread pool pinned ~16 MiB per thread (the control-api grew from 85 to
124 MB when three agents authenticated). A fixed threshold (which also turns the dynamic one
off) sends them back to the kernel on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD", "bound_heap_retention"]

_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 256 * 1024


def bound_heap_retention(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process; False when the C
    library is not glibc (nothing to do: musl has no such threshold)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
