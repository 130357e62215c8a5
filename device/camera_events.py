"""Events the camera produces for its uplink, queued until the shell publishes them.

The core only appends; the MQTT daemon drains the queue, journals and publishes. The queue is
bounded so a camera with no uplink (a scenario, a long offline shift) cannot grow without limit;
what falls off the end is counted, never silent.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from device.recording import RecordingStart
from protocol.common import Trigger
from protocol.events import Activation, AnyEvent, Deactivation, Fault, Marker, ModeChange
from protocol.messages import AnyPeerMessage, PeerActivation, PeerDeactivation
from protocol.vocabulary import FaultSeverity, Mode

MAX_QUEUED_EVENTS = 10_000


class EventOutbox:
    """Numbered events waiting for the uplink."""

    def __init__(self, device_id: str, *, capacity: int = MAX_QUEUED_EVENTS) -> None:
        self.device_id = device_id
        self.queue: deque[AnyEvent] = deque(maxlen=capacity)
        self.seq = 0
        self.overflowed = 0
        self.boot_tag = "b0"
        """Makes event IDs unique across restarts (``seq`` starts at 0 in every process)."""
        self.group: deque[AnyPeerMessage] = deque(maxlen=capacity)
        """Broadcasts to the camera's group (peer activation), for the shell to publish."""

    def drain(self) -> list[AnyEvent]:
        """Every queued event, oldest first; the queue is emptied."""
        events = list(self.queue)
        self.queue.clear()
        return events

    def _push(self, kind: type[AnyEvent], utc: datetime, **fields: Any) -> None:
        seq = self.seq
        self.seq += 1
        if len(self.queue) == self.queue.maxlen:
            self.overflowed += 1
        event_id = f"{self.boot_tag}-ev{seq:010d}"
        event = kind(ts=utc, device=self.device_id, id=event_id, seq=seq, **fields)
        self.queue.append(event)

    def activation(self, utc: datetime, start: RecordingStart) -> None:
        """A recording started."""
        self._push(
            Activation,
            utc,
            recording=start.recording_id,
            trigger=start.trigger,
            requested_pre_roll_s=start.requested_pre_roll_s,
            delivered_pre_roll_s=start.delivered_pre_roll_s,
        )

    def deactivation(
        self, utc: datetime, recording: str, trigger: Trigger, reason: str | None
    ) -> None:
        """A recording stopped."""
        self._push(Deactivation, utc, recording=recording, trigger=trigger, reason=reason)

    def marker(self, utc: datetime, recording: str, source: str, note: str | None) -> None:
        """A bookmark was placed."""
        self._push(Marker, utc, recording=recording, source=source, note=note)

    def mode_change(self, utc: datetime, mode: Mode, *, enabled: bool, source: str) -> None:
        """A mode was switched."""
        self._push(ModeChange, utc, mode=mode, enabled=enabled, source=source)

    def fault(self, utc: datetime, code: str, severity: FaultSeverity, message: str) -> None:
        """Something went wrong or a threshold was crossed."""
        self._push(Fault, utc, code=code, severity=severity, message=message[:1000])

    def peer_activation(
        self,
        utc: datetime,
        recording: str,
        trigger: Trigger,
        position: tuple[float, float] | None,
    ) -> None:
        """Tell the group this camera (the master) started recording."""
        self.group.append(
            PeerActivation(
                ts=utc,
                device=self.device_id,
                recording=recording,
                trigger=trigger,
                master=True,
                position=position,
            )
        )

    def peer_deactivation(self, utc: datetime, recording: str, reason: str | None) -> None:
        """Tell the group its master stopped."""
        self.group.append(
            PeerDeactivation(ts=utc, device=self.device_id, recording=recording, reason=reason)
        )
