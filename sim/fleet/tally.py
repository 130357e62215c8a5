"""Counting what a worker's loggers report: errors by kind, warnings by logger.

``LogTally`` is a ``logging.Handler`` on the root logger. Records of level ERROR and above are
errors (``log:<logger>``): the supervisors in the daemon, the link and the fleet log what they
catch with ``log.exception``. The MQTT link logs every failed connect and dropped connection at
INFO (``MQTT link down (<error>); retrying``): each is an error ``link:<error type>``. Warnings
are counted apart (``<logger>``), for the summary; so is a known aiomqtt race at disconnect
(``tolerate_closed_socket_writes``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
from collections import Counter
from typing import Any, Final, Self

log = logging.getLogger(__name__)

LINK_LOGGER: Final = "device.mqtt.link"
_LINK_DOWN: Final = "MQTT link down"


class LogTally(logging.Handler):
    """Counts log records (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.errors: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()

    @classmethod
    def install(cls, verbose: int = 0) -> Self:
        """Log to stderr (WARNING; INFO with ``verbose``) and count every record there."""
        root = logging.getLogger()
        root.setLevel(logging.INFO if verbose else logging.WARNING)
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(logging.INFO if verbose else logging.WARNING)
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(stream)
        tally = cls()
        root.addHandler(tally)
        # The link's INFO records are needed for its "link down" lines, and only those.
        logging.getLogger(LINK_LOGGER).setLevel(logging.INFO)
        return tally

    def emit(self, record: logging.LogRecord) -> None:
        """Count ``record``."""
        if record.levelno >= logging.ERROR:
            self.errors[f"log:{record.name}"] += 1
        elif record.levelno >= logging.WARNING:
            self.warnings[record.name] += 1
        elif record.name == LINK_LOGGER and str(record.msg).startswith(_LINK_DOWN):
            cause = record.args[0] if isinstance(record.args, tuple) and record.args else None
            self.errors[f"link:{type(cause).__name__ if cause is not None else 'down'}"] += 1


def tolerate_closed_socket_writes(loop: asyncio.AbstractEventLoop) -> None:
    """Report aiomqtt's add-writer-after-close race as a warning, not an error.

    aiomqtt 2.5 registers a socket for writing with ``call_soon_threadsafe`` but unregisters and
    closes it at once: when paho sends DISCONNECT and closes the socket in the same call (the
    fleet's shutdown disconnects thousands of clients at once), the deferred ``add_writer`` finds
    a closed descriptor (``EBADF``) and asyncio logs it as an error. Nothing is lost: the
    connection was being closed anyway. Any other exception reaches asyncio's default handler.
    """

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if (
            isinstance(error, OSError)
            and error.errno == errno.EBADF
            and "add_writer" in repr(context.get("handle"))
        ):
            log.warning("a socket closed before aiomqtt registered it for writing (disconnect)")
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
