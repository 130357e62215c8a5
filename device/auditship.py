"""Shipping the audit log to the evidence receiver: a pure core that the daemon drives.

The receiver keeps a byte-identical copy of ``audit.log``. The shipper sends the complete lines
after the offset the receiver last acknowledged, one range in flight at a time
(``protocol.auditship``; docs/protocol.md, "Audit log shipping"), and never writes to the log.
Shell contract, as for ``UploadManager``: after every input (``link_up``, ``link_down``,
``on_message``, ``handle_timeout``) call ``poll(now)`` and publish what it returns with QoS 1;
arm one timer for ``next_deadline()`` and, when it fires, call ``handle_timeout(now)`` then
``poll(now)``. Subscribe to ``ack_topic`` before the first ``poll`` after ``link_up``. While idle
the deadline comes every ``idle_poll_s``, so lines appended meanwhile go out without any call
from the audit log; calling ``poll`` right after an audit append only ships them sooner.

The acknowledged offset and the hash of the line ending there are kept in
``<state_dir>/audit-ship.json`` (atomic and, when ``durable``, fsynced), so a restarted device
resumes where it was; the receiver's ack is authoritative, and any ack repositions the shipper.
A log that no longer matches what the receiver acknowledged (shorter after a repair, another line
at that offset), a receiver that holds more than the log, or a permanent rejection stop shipping:
``progress().problem`` and ``take_problem()`` report it once, for a fault event and an audit
record; nothing is sent again until ``release``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from device.auditformat import MAX_LINE_BYTES
from device.auditshipstate import (
    STATE_FILE,
    ShipProblem,
    ShipRecord,
    hash_at,
    line_hash,
    load_record,
    log_size,
    read_at,
    save_record,
)
from device.durable import storage_error
from device.errors import ConfigError, StorageError
from protocol.auditship import (
    AUDIT_HEADER_SIZE,
    MAX_AUDIT_MESSAGE,
    AuditAck,
    decode_audit_ack,
    encode_audit_range,
)
from protocol.errors import DecodeError, LocalProtocolError
from protocol.publish import Publish
from protocol.topics import DeviceChannel, Topics

log = logging.getLogger(__name__)

# Local problem codes (a receiver's rejection keeps the code it sent).
CODE_LOG_SHORTER: Final = "log_shorter"
CODE_DIVERGED: Final = "diverged"
CODE_RECEIVER_AHEAD: Final = "receiver_ahead"
CODE_LINE_TOO_LONG: Final = "line_too_long"


class ShipState(StrEnum):
    """Where the shipper stands."""

    DOWN = "down"  # no link
    IDLE = "idle"  # link up, nothing in flight (nothing new, or waiting to retry)
    WAITING = "waiting"  # one range in flight, waiting for its ack
    STOPPED = "stopped"  # a problem was found; nothing is shipped until ``release``


SHIP_TRANSITIONS: Final[dict[ShipState, frozenset[ShipState]]] = {
    ShipState.DOWN: frozenset({ShipState.IDLE, ShipState.STOPPED}),
    ShipState.IDLE: frozenset({ShipState.DOWN, ShipState.WAITING, ShipState.STOPPED}),
    ShipState.WAITING: frozenset({ShipState.DOWN, ShipState.IDLE, ShipState.STOPPED}),
    ShipState.STOPPED: frozenset({ShipState.DOWN, ShipState.IDLE}),
}


@dataclass(frozen=True, slots=True)
class AuditShipConfig:
    """Shipping settings, validated once. Sizes in bytes, times in seconds.

    ``max_message_bytes`` bounds a range message (header included); a single line longer than
    what that leaves still goes alone, so no message exceeds ``MAX_AUDIT_MESSAGE``. A range
    unanswered for ``ack_timeout_s`` is sent again after a jittered back-off from
    ``retry_base_s`` doubling to ``retry_max_s`` (also after a ``failed`` ack). ``durable``
    false skips the fsyncs of the state file (virtual-time runs).
    """

    max_message_bytes: int = MAX_AUDIT_MESSAGE
    ack_timeout_s: float = 10.0
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    idle_poll_s: float = 1.0
    durable: bool = True

    def __post_init__(self) -> None:
        if not AUDIT_HEADER_SIZE < self.max_message_bytes <= MAX_AUDIT_MESSAGE:
            raise ConfigError(
                f"audit shipping: max_message_bytes must be {AUDIT_HEADER_SIZE + 1} to "
                f"{MAX_AUDIT_MESSAGE}, not {self.max_message_bytes}"
            )
        for name in ("ack_timeout_s", "retry_base_s", "idle_poll_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"audit shipping: {name} must be > 0")
        if not self.retry_max_s >= self.retry_base_s:
            raise ConfigError("audit shipping: retry_max_s must be >= retry_base_s")


@dataclass(frozen=True, slots=True)
class AuditShipProgress:
    """For telemetry: bytes the receiver holds, bytes of the log not yet acknowledged, problem."""

    state: ShipState
    acked_bytes: int
    pending_bytes: int
    problem: ShipProblem | None
    ranges_sent: int

    def counters(self) -> dict[str, int]:
        """Telemetry ``counters`` entries (IDs, integers >= 0; no schema change needed)."""
        return {
            "audit_acked_bytes": self.acked_bytes,
            "audit_pending_bytes": self.pending_bytes,
            "audit_shipping_stopped": int(self.problem is not None),
        }


@dataclass(frozen=True, slots=True)
class _InFlight:
    offset: int
    end: int
    head: str | None  # hash of the last line sent
    deadline: float


class AuditShipper:
    """Ships ``audit_path`` to the receiver over ``topics``; see the module docstring."""

    def __init__(
        self,
        audit_path: Path,
        state_dir: Path,
        device_id: str,
        topics: Topics,
        *,
        config: AuditShipConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._path = audit_path
        self._config = config or AuditShipConfig()
        self._state_path = state_dir / STATE_FILE
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error("creating", state_dir, exc) from exc
        self._rng = rng if rng is not None else random.Random(f"auditship:{device_id}")
        self._topic = topics.device(device_id, DeviceChannel.AUDIT)
        self.ack_topic: Final = topics.device(device_id, DeviceChannel.AUDIT_ACK)
        """The topic to subscribe to before the first ``poll`` after ``link_up``."""
        doc = load_record(self._state_path)
        self._acked, self._head, self._problem = doc.acked, doc.head, doc.problem
        self._state = ShipState.DOWN if self._problem is None else ShipState.STOPPED
        self._new_problem: ShipProblem | None = None
        self._anchored = False
        self._budget = self._config.max_message_bytes - AUDIT_HEADER_SIZE
        self._in_flight: _InFlight | None = None
        self._link = False
        self._failures = 0
        self._retry_at = self._next_check = self._now = 0.0
        self._size = 0
        self.ranges_sent = 0
        self.ignored_acks = 0
        """Acks that did not decode or answer no range in flight (duplicates, late ones)."""

    # -- inputs ----------------------------------------------------------------------------------

    def link_up(self, now: float, *, max_message_size: int | None = None) -> None:
        """The link is up and ``ack_topic`` subscribed; shipping resumes from the acked offset.

        ``max_message_size`` is the largest payload the broker takes, if it announced one.
        """
        self._now, self._link = now, True
        limit = self._config.max_message_bytes
        if max_message_size is not None:
            limit = min(limit, max_message_size)
        self._budget = max(1, limit - AUDIT_HEADER_SIZE)
        self._in_flight, self._retry_at, self._failures = None, now, 0
        if self._state is not ShipState.STOPPED:
            self._move(ShipState.IDLE)

    def link_down(self, now: float) -> None:
        """The link is gone: the range in flight is forgotten (it is resent after ``link_up``)."""
        self._now, self._link, self._in_flight = now, False, None
        if self._state is not ShipState.STOPPED:
            self._move(ShipState.DOWN)

    def poll(self, now: float) -> list[Publish]:
        """The next range to publish, if the link is idle and the log has new complete lines."""
        self._now = now
        if self._state is not ShipState.IDLE or now < self._retry_at:
            return []
        self._next_check = now + self._config.idle_poll_s
        try:
            found = self._next_range()
        except StorageError as exc:
            log.warning("audit shipping cannot read the log: %s", exc)
            self._back_off(now)
            return []
        if found is None:
            return []
        data, head = found
        self._in_flight = _InFlight(
            self._acked, self._acked + len(data), head, now + self._config.ack_timeout_s
        )
        self._move(ShipState.WAITING)
        self.ranges_sent += 1
        return [Publish(self._topic, encode_audit_range(self._acked, data))]

    def on_message(self, topic: str, payload: bytes, now: float) -> None:
        """An incoming message; anything but an ack of the range in flight is ignored."""
        self._now = now
        if topic != self.ack_topic:
            return
        try:
            ack = decode_audit_ack(payload)
        except DecodeError:
            self.ignored_acks += 1
            return
        flight = self._in_flight
        if self._state is not ShipState.WAITING or flight is None or ack.offset != flight.offset:
            self.ignored_acks += 1
            return
        self._in_flight = None
        if ack.state == "rejected":
            why = ack.message or "no reason given"
            text = f"the receiver rejected the range at byte {ack.offset} ({ack.code}): {why}"
            self._stop(ShipProblem(str(ack.code), text, ack.offset, remote=True))
            return
        try:
            if not self._reposition(ack, flight):
                return
        except StorageError as exc:  # reading the log, or saving the new offset
            log.warning("audit shipping cannot check the receiver's position: %s", exc)
            self._back_off(now)
            return
        if ack.state == "failed":
            log.info("audit shipping: the receiver failed (%s); retrying later", ack.code)
            self._back_off(now)
        else:
            self._failures, self._retry_at = 0, now
            self._move(ShipState.IDLE)

    def handle_timeout(self, now: float) -> None:
        """Give up waiting for an unanswered range; it is sent again after a back-off."""
        self._now = now
        flight = self._in_flight
        if self._state is ShipState.WAITING and flight is not None and flight.deadline <= now:
            self._in_flight = None
            self._back_off(now)

    def release(self, now: float) -> bool:
        """Forget a problem (an operator dealt with it) and the acknowledged offset with it: the
        receiver's next answer says where to resume. ``False`` if there was no problem."""
        if self._problem is None:
            return False
        self._save(ShipRecord(acked=0, head=None))
        self._acked, self._head, self._problem, self._anchored = 0, None, None, False
        self._retry_at, self._now = now, now
        self._move(ShipState.IDLE if self._link else ShipState.DOWN)
        return True

    # -- outputs ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When to call ``handle_timeout`` and ``poll`` next, or ``None`` for no timer."""
        if self._state is ShipState.WAITING and self._in_flight is not None:
            return self._in_flight.deadline
        if self._state is not ShipState.IDLE:
            return None
        return self._retry_at if self._retry_at > self._now else max(self._next_check, self._now)

    def progress(self) -> AuditShipProgress:
        """Where shipping stands (``pending_bytes`` counts the log's size at the last poll)."""
        return AuditShipProgress(
            state=self._state,
            acked_bytes=self._acked,
            pending_bytes=max(0, self._size - self._acked),
            problem=self._problem,
            ranges_sent=self.ranges_sent,
        )

    def take_problem(self) -> ShipProblem | None:
        """The problem that stopped shipping, once, when it is new (for a fault and an audit)."""
        taken, self._new_problem = self._new_problem, None
        return taken

    @property
    def state(self) -> ShipState:
        """The current state."""
        return self._state

    # -- reading the log -------------------------------------------------------------------------

    def _next_range(self) -> tuple[bytes, str | None] | None:
        """Complete lines after the acked offset, within the budget (one long line goes alone)."""
        self._size = size = log_size(self._path)
        if size < self._acked:
            text = f"audit.log is {size} bytes, shorter than the {self._acked} the receiver holds"
            self._stop(
                ShipProblem(CODE_LOG_SHORTER, f"{text}: cut or replaced", self._acked, remote=False)
            )
            return None
        if not self._anchored:
            if hash_at(self._path, self._acked) != self._head:
                text = f"the line ending at byte {self._acked} is not the one the receiver acked"
                self._stop(ShipProblem(CODE_DIVERGED, text, self._acked, remote=False))
                return None
            self._anchored = True
        if size == self._acked:
            return None
        data = read_at(self._path, self._acked, min(self._budget, size - self._acked))
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) < size - self._acked:
            data = read_at(self._path, self._acked, min(MAX_LINE_BYTES, size - self._acked))
            cut = data.find(b"\n") + 1
            if cut == 0 and len(data) == MAX_LINE_BYTES:
                text = f"the line at byte {self._acked} is longer than {MAX_LINE_BYTES} bytes"
                self._stop(ShipProblem(CODE_LINE_TOO_LONG, text, self._acked, remote=False))
                return None
        if cut == 0:
            return None  # a line still being written (or a torn tail the next start repairs)
        return data[:cut], line_hash(data[:cut])

    def _reposition(self, ack: AuditAck, flight: _InFlight) -> bool:
        """Take the receiver's ``length`` as the acked offset, once it matches this log."""
        if ack.length == flight.end and ack.head == flight.head:
            pass  # the usual case: what was just sent
        elif ack.length > log_size(self._path):
            text = f"the receiver holds {ack.length} bytes, more than this audit.log"
            self._stop(ShipProblem(CODE_RECEIVER_AHEAD, text, ack.length, remote=False))
            return False
        elif hash_at(self._path, ack.length) != ack.head:
            text = f"the receiver's copy differs from this audit.log at byte {ack.length}"
            self._stop(ShipProblem(CODE_DIVERGED, text, ack.length, remote=False))
            return False
        if (ack.length, ack.head) != (self._acked, self._head):
            self._save(ShipRecord(acked=ack.length, head=ack.head))
            self._acked, self._head = ack.length, ack.head
        self._anchored = True
        return True

    # -- state -----------------------------------------------------------------------------------

    def _move(self, to: ShipState) -> None:
        if to is not self._state and to not in SHIP_TRANSITIONS[self._state]:
            raise LocalProtocolError(f"audit shipping cannot go from {self._state} to {to}")
        self._state = to

    def _back_off(self, now: float) -> None:
        self._failures += 1
        ceiling = min(
            self._config.retry_max_s, self._config.retry_base_s * 2 ** (self._failures - 1)
        )
        self._retry_at = now + ceiling * (0.5 + 0.5 * self._rng.random())
        self._move(ShipState.IDLE)

    def _stop(self, problem: ShipProblem) -> None:
        log.warning("audit shipping stopped: %s: %s", problem.code, problem.message)
        self._in_flight = None
        self._problem = self._new_problem = problem
        self._move(ShipState.STOPPED)
        try:
            self._save(ShipRecord(acked=self._acked, head=self._head, problem=problem))
        except StorageError as exc:  # stopped all the same; a restart finds the problem again
            log.warning("audit shipping could not record why it stopped: %s", exc)

    def _save(self, record: ShipRecord) -> None:
        save_record(self._state_path, record, durable=self._config.durable)


__all__ = [
    "CODE_DIVERGED",
    "CODE_LINE_TOO_LONG",
    "CODE_LOG_SHORTER",
    "CODE_RECEIVER_AHEAD",
    "SHIP_TRANSITIONS",
    "STATE_FILE",
    "AuditShipConfig",
    "AuditShipProgress",
    "AuditShipper",
    "ShipProblem",
    "ShipState",
]
