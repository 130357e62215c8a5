"""Process settings a fleet needs: file descriptors (a camera holds a socket and two files),
giving freed heap memory back to the OS, and one fleet per data directory."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from device.errors import ConfigError

FDS_PER_CAMERA: Final = 4
"""Its MQTT socket, its audit log and journal, and one to spare (a segment being written)."""
FDS_SPARE: Final = 256
LOCK_FILE: Final = "fleet.lock"


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the new soft limit.

    Children (the private mosquitto, the workers) inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def fds_needed(cameras: int) -> int:
    """File descriptors a process running ``cameras`` cameras may need."""
    return cameras * FDS_PER_CAMERA + FDS_SPARE


def heap_trimmer() -> Callable[[], None]:
    """A function that gives the C heap's free pages back to the OS (glibc ``malloc_trim``).

    A recording camera's payloads (its pre-roll, segment blocks, upload chunks) come and go in
    megabytes; glibc keeps what was freed in the middle of its heap, so a worker that had 50
    recording cameras held 10-15 MB for each until the next recordings reused it. Trimming every
    few seconds costs well under 10 ms. Elsewhere (musl, macOS) it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return _nothing
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return _nothing
    trim.argtypes = [ctypes.c_size_t]

    def trim_now() -> None:
        trim(0)

    return trim_now


def _nothing() -> None:
    return None


def check_fd_limit(cameras: int, workers: int, *, private_broker: bool) -> int:
    """Raise the limit (``raise_fd_limit``); ``ConfigError`` if it is still too low for the fleet.

    Each worker holds ``FDS_PER_CAMERA`` per camera; a private mosquitto one per camera. Returns
    the limit.
    """
    limit = raise_fd_limit()
    per_worker = fds_needed(-(-cameras // workers))
    need = max(per_worker, cameras + FDS_SPARE if private_broker else 0)
    if limit < need:
        raise ConfigError(
            f"{cameras} cameras in {workers} worker(s) need about {need} file descriptors, "
            f"and this process may open only {limit} (ulimit -n): raise the hard limit or use "
            "more --workers"
        )
    return limit


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir/fleet.lock`` for the block; ``ConfigError`` if another fleet holds it.

    Two fleets on one data directory would be the same cameras twice.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise ConfigError(f"another fleet is running on {data_dir}") from exc
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
