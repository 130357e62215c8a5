"""Process-wide tuning for the simulator's command line (never done by the library itself).

glibc serves each multi-megabyte block that the segment writer assembles with a fresh ``mmap``
and returns it on free, so every block is faulted in again page by page: measured on the 10-hour
shift, about 1.5 s of system time. Raising ``M_MMAP_THRESHOLD`` keeps such blocks in the heap,
where they are reused. Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3
_BLOCK_HEAP_LIMIT = 64 * 1024 * 1024


def tune_allocator() -> bool:
    """Keep allocations up to 64 MiB in glibc's heap; True if the setting was applied."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _BLOCK_HEAP_LIMIT))
