"""Process-wide tuning for the simulator's command line (never done by the library itself).

glibc serves each multi-megabyte block that the segment writer assembles with a fresh ``mmap``
and returns it on free, so every block is faulted in again page by page: measured on the 10-hour
shift, about 1.5 s of system time. Raising ``M_MMAP_THRESHOLD`` keeps such blocks in the heap,
where they are reused. Elsewhere (musl, macOS) this is a no-op.

The heap has the same problem at its top: glibc gives back (``M_TRIM_THRESHOLD``, 128 KiB by
default) whatever is free there, so a process that receives 1 MiB MQTT messages faults the same
pages in again for every message. Measured with an aiomqtt subscriber taking 200 messages of
1 MiB from mosquitto: 2.5 page faults per page received and 1.0 CPU s/GB of system time; with the
trim threshold at 64 MiB, 0.06 (docs/operations.md, BENCHMARKS.md "Upload").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_BLOCK_HEAP_LIMIT = 64 * 1024 * 1024


def tune_allocator() -> bool:
    """Keep allocations up to 64 MiB in glibc's heap, and up to 64 MiB free at its top; True if
    both settings were applied."""
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
    return bool(mallopt(_M_MMAP_THRESHOLD, _BLOCK_HEAP_LIMIT)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _BLOCK_HEAP_LIMIT)
    )
