"""From raw inputs to the camera's requests: gestures, debounced lines, detectors.

The hardware backend (the simulator, or bench hardware over a serial port) reports what it sees:
Event-button edges, input lines (holster, lightbar, siren, door, TASER armed), vehicle speed,
TASER trigger pulls and arcs, IMU samples, audio blocks and GPS fixes. The hub conditions them
(debounce, gesture recognition, hysteresis, detectors) and turns what survives into triggers,
stops, presses and markers on the camera. What it filters out is written to the audit log with
the reason, so a debounced bounce or a glitch on a line is as visible as a trigger.

Pure like the camera: every entry point takes ``now``; ``next_deadline`` and ``handle_timeout``
run the debounce and gesture timers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import numpy.typing as npt

from device.camera import Camera
from device.detect import Detection, Geofence, GeofenceTracker, GunshotDetector, ImuDetectors
from device.gestures import ButtonOutput, Gesture, GestureConfig, GestureKind, GestureRecognizer
from device.inputs import DigitalInput, InputChange, InputEvent, InputIgnored, SpeedThreshold
from device.rules import PolicyRules
from device.triggers import TriggerEvent
from protocol.common import Trigger
from protocol.vocabulary import TriggerKind

LINES: Final[dict[str, TriggerKind]] = {
    "holster": "holster",
    "lightbar": "vehicle_lightbar",
    "siren": "vehicle_siren",
    "door": "vehicle_door",
    "taser_armed": "taser_armed",
}
"""Input lines the hub debounces, and the trigger each one is."""

LINE_DEBOUNCE_S: Final = 0.05
BUTTON_SOURCE: Final = "button:event"


class SensorHub:
    """Conditions one camera's raw inputs and hands the camera what they mean."""

    def __init__(
        self,
        camera: Camera,
        rules: PolicyRules,
        *,
        gestures: GestureConfig | None = None,
        speed_threshold_kmh: float = 100.0,
    ) -> None:
        self.camera = camera
        self.button = GestureRecognizer(gestures)
        self.lines = {name: DigitalInput(name, LINE_DEBOUNCE_S) for name in LINES}
        self.speed = SpeedThreshold(speed_threshold_kmh, 10.0, 3.0, name="speed")
        self.imu_detectors = ImuDetectors()
        self.gunshot_detector = GunshotDetector()
        fences = tuple(
            Geofence(fence.name, tuple((lat, lon) for lat, lon in fence.polygon))
            for fence in rules.geofences
        )
        self.geofences = GeofenceTracker(fences) if fences else None
        self.stated_reason: str | None = None
        """The reason the officer states before the next hold (spoken: the recording has it)."""

    # -- inputs ---------------------------------------------------------------------------------

    def button_edge(self, *, pressed: bool, now: float, at: float | None = None) -> None:
        """The Event button went down (``pressed``) or up, at ``now`` or, delivered late, at
        ``at`` (its hardware time): the recognizer decides by ``at``, the camera acts at ``now``."""
        self._gestures(self.button.edge(pressed=pressed, now=now, at=at), now)

    def line(self, name: str, *, level: bool, now: float) -> None:
        """An input line (``holster``, ``lightbar``, ``siren``, ``door``, ``taser_armed``)."""
        if name not in self.lines:
            raise ValueError(f"unknown input line {name!r}; expected one of {', '.join(LINES)}")
        self._inputs(self.lines[name].change(level, now), now)

    def vehicle_speed(self, speed_kmh: float, now: float) -> None:
        """A vehicle speed sample."""
        self._inputs(self.speed.sample(speed_kmh, now), now)

    def taser(self, kind: TriggerKind, now: float) -> None:
        """A TASER trigger pull or arc (instants, reported by the TASER itself)."""
        self.camera.trigger(TriggerEvent(kind=kind, source="taser"), now)

    def imu(self, t: npt.ArrayLike, accel: npt.ArrayLike, gyro: npt.ArrayLike, now: float) -> None:
        """A batch of IMU samples (100 Hz; g and deg/s)."""
        self._detections(self.imu_detectors.feed(t, accel, gyro), "detector:imu", now)

    def audio(self, t0: float, pcm: npt.ArrayLike, now: float) -> None:
        """A block of 16 kHz mono audio starting at sensor time ``t0``."""
        self._detections(self.gunshot_detector.feed(t0, pcm), "detector:audio", now)

    def gps(self, t: float, fix: tuple[float, float] | None, now: float) -> None:
        """A GPS fix (latitude, longitude), or None when the fix is lost."""
        if fix is not None:
            self.camera.position = fix
        if self.geofences is not None:
            self._detections(self.geofences.update(t, fix), "detector:gps", now)

    # -- time -----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must run next, or None."""
        deadlines = [self.button.next_deadline(), self.speed.next_deadline()]
        deadlines += [line.next_deadline() for line in self.lines.values()]
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timeout(self, now: float) -> None:
        """Run the gesture and debounce timers that are due."""
        self._gestures(self.button.handle_timeout(now), now)
        for line in self.lines.values():
            self._inputs(line.handle_timeout(now), now)
        self._inputs(self.speed.handle_timeout(now), now)

    # -- internals ------------------------------------------------------------------------------

    def _gestures(self, outputs: Iterable[ButtonOutput], now: float) -> None:
        for output in outputs:
            if isinstance(output, InputIgnored):
                self._ignored(output, now)
            else:
                self._gesture(output, now)

    def _gesture(self, gesture: Gesture, now: float) -> None:
        button = Trigger(kind="button", source=BUTTON_SOURCE)
        if gesture.kind is GestureKind.DOUBLE_PRESS:
            self.camera.activate(button, now)
        elif gesture.kind is GestureKind.HOLD:
            reason, self.stated_reason = self.stated_reason, None
            self.camera.deactivate(button, reason, now)
        else:
            self.camera.press(BUTTON_SOURCE, None, now)

    def _inputs(self, events: Iterable[InputEvent], now: float) -> None:
        for event in events:
            if isinstance(event, InputIgnored):
                self._ignored(event, now)
            else:
                self._change(event, now)

    def _change(self, change: InputChange, now: float) -> None:
        kind: TriggerKind = "vehicle_speed" if change.name == "speed" else LINES[change.name]
        source = f"input:{change.name}"
        self.camera.trigger(TriggerEvent(kind=kind, source=source, active=change.level), now)

    def _detections(self, detections: Iterable[Detection], source: str, now: float) -> None:
        for detection in detections:
            kind: TriggerKind = detection.kind  # type: ignore[assignment]
            event = TriggerEvent(
                kind=kind, source=source, active=detection.active, name=detection.name
            )
            self.camera.audit_detection(detection.kind, dict(detection.features), now)
            self.camera.trigger(event, now)

    def _ignored(self, ignored: InputIgnored, now: float) -> None:
        self.camera.audit_input_ignored(ignored.name, ignored.reason.value, ignored.edges, now)
