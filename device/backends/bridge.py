"""Between a hardware backend and the camera: inputs to the sensor hub, indications to outputs.

Sans-IO like the camera: ``HardwareBridge.apply(event, now)`` hands one backend event to the
camera's ``SensorHub`` at camera time ``now`` (the daemon's clock), and ``outputs(indications)``
says what the hardware should show, sound and vibrate (``device.backends.indication_map``).

Inputs:

- ``ButtonInput`` of the Event button -> ``hub.button_edge`` (the hub debounces and recognises
  double press, hold and press). The other buttons (power, function, volume) have no camera
  function yet: they are logged and counted as ``ignored``, never audited (they decide nothing).
- ``LineInput`` -> ``hub.line`` (holster, lightbar, siren, door, TASER armed).
- ``SpeedInput`` -> ``hub.vehicle_speed``; ``TaserInput`` -> ``hub.taser`` (trigger, arc).
- ``ImuInput`` -> ``hub.imu`` with the samples' own times (spacing ``period_s``) mapped to camera
  time; ``GpsInput`` -> ``hub.gps``.
- ``BatteryInput``: kept as ``battery`` and counted; the camera's battery model stays what the
  policy and telemetry use (the core has no API for a measured gauge yet).
- Inputs while the camera is off are dropped (counted ``while_off``), as the virtual-time runner
  drops a scenario's sensor inputs then: an off camera reads no sensors.
- ``LinkUpEvent`` / ``LinkDownEvent`` are written to the camera's audit log as ``hardware_link``
  records (``state`` ``up``/``down``, ``description``, ``rebooted`` or ``reason``). The camera
  keeps buffering and recording without its hardware; after a LinkUp the status LED and display
  are sent again and the hardware clock is estimated afresh.

Time (``HardwareClock``): inputs carry ``hw_time_s`` on the hardware's clock, and the interval
between two inputs matters (a 3 s hold, the gap of a double press). Camera time of an input is
``hw_time_s + offset``, where ``offset`` estimates (camera clock - hardware clock + the smallest
transit delay): it is set from the first input after a LinkUp (``now - hw_time_s``) and then
follows the smallest ``now - hw_time_s`` seen, so a late frame never stretches later intervals.
It may creep up by at most ``max_drift`` seconds per hardware second, so a hardware clock slower
than the camera's cannot leave inputs ever further in the past. The result is clamped: never
after ``now`` (unless ``floor`` is), never before the previous input's camera time, and never
before ``floor`` (the time the caller has already advanced the camera and hub to: their timers
do not go back). A hardware clock that jumps back by more than ``resync_s`` without a LinkUp
(a reboot the link missed) is estimated afresh (counted ``resyncs``).

So intervals are exact while the transit delay is steady, and a frame delayed by jitter keeps
its hardware spacing as long as the camera has not yet been advanced past that time (the daemon
advances it on every tick and at every timer, so jitter beyond about a tick is absorbed only in
part). The Event button is the exception that matters: its gestures are decided by the hardware's
spacing even when the camera ran ahead (a host stall delays the edges behind it, and the camera
loop may run first). The hub gets each edge with the time it belongs at before the ``floor``
pull (``HardwareClock.last``), and the gesture recognizer takes it there unless it has already
decided something later; the camera acts on the gesture at its own clock.

A frame lost and resent 0.25 s later is another matter: the serial backend then holds the
inputs that follow, hands them over in ``t_ms`` order, each with the time it would have arrived
(``now``), and meanwhile the daemon holds the camera's world (``floor``) back before the loss
(``HardwareShell.horizon``), so they are placed at their hardware times with their spacing.

The hub's and the camera's timers run on one clock: before an input is applied at camera time
``t``, ``apply``'s ``advance`` callback plays everything due up to ``t``, so no timer runs later
at an earlier time than an input the hub has seen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Final

import numpy as np

from device.backends.events import (
    CAPABILITIES,
    BackendEvent,
    BatteryInput,
    ButtonInput,
    DisplayOutput,
    GpsInput,
    ImuInput,
    LineInput,
    LinkDownEvent,
    LinkUpEvent,
    Output,
    SpeedInput,
    TaserInput,
)
from device.backends.indication_map import capability_of, signal_outputs, status_led, status_text
from device.camera import Camera, CameraState
from device.indications import Indication
from device.sensorhub import SensorHub

log = logging.getLogger(__name__)

MAX_DRIFT: Final = 0.005
"""How fast the clock offset may grow, in seconds per hardware second (a 0.5 % slow clock)."""
RESYNC_S: Final = 1.0
"""A hardware clock this far behind the last mapping restarted without a LinkUp."""
LINK_RECORD: Final = "hardware_link"
"""The audit record kind of LinkUp / LinkDown."""


class HardwareClock:
    """Maps hardware timestamps to camera time (the rule is in the module docstring)."""

    def __init__(self, *, max_drift: float = MAX_DRIFT, resync_s: float = RESYNC_S) -> None:
        self.max_drift = max_drift
        self.resync_s = resync_s
        self.offset: float | None = None
        """Camera time minus hardware time of the fastest input seen; None before the first."""
        self.last = -math.inf
        """Where the previous input belongs in camera time, by the hardware's clock: what
        ``to_camera`` returned, or earlier when that was pulled up to its ``floor``."""
        self.resyncs = 0
        self._last_hw = -math.inf

    def reset(self) -> None:
        """Estimate afresh from the next input (after a LinkUp: the hardware may have rebooted).

        ``last`` is kept: camera time never goes back, whatever the hardware's clock does.
        """
        self.offset = None
        self._last_hw = -math.inf

    def to_camera(self, hw_time_s: float, now: float, *, floor: float = -math.inf) -> float:
        """The camera time of an input stamped ``hw_time_s`` that arrived at camera time ``now``.

        ``floor``: the camera has already been advanced to it (an input that arrived before it
        is placed at it). Where the input belongs without that pull (``last`` after the call) is
        what the gesture recognizer, which decides by the hardware's times, is given.
        """
        if not (math.isfinite(hw_time_s) and math.isfinite(now)):
            raise ValueError(f"hardware and camera times must be finite: {hw_time_s}, {now}")
        candidate = now - hw_time_s
        offset = self.offset
        if offset is None:
            offset = candidate
        else:
            aged = offset + self.max_drift * max(0.0, hw_time_s - self._last_hw)
            if hw_time_s + aged < self.last - self.resync_s:
                offset = candidate
                self.resyncs += 1
                self._last_hw = -math.inf
            else:
                offset = min(aged, candidate)
        self.offset = offset
        self._last_hw = max(self._last_hw, hw_time_s)
        self.last = max(min(now, hw_time_s + offset), self.last)
        return max(self.last, floor)


class HardwareBridge:
    """Feeds one camera's hub from a backend's events, and says what its outputs should show."""

    def __init__(
        self,
        camera: Camera,
        hub: SensorHub,
        *,
        capabilities: Iterable[str] = CAPABILITIES,
        clock: HardwareClock | None = None,
    ) -> None:
        self.camera = camera
        self.hub = hub
        self.clock = clock or HardwareClock()
        self.capabilities = frozenset(capabilities)
        self.link_up = False
        self.battery: BatteryInput | None = None
        """The latest battery gauge report."""
        self.counters: dict[str, int] = dict.fromkeys(
            ("inputs", "ignored", "while_off", "link_ups", "link_downs"), 0
        )
        self._shown_led: Output | None = None
        self._shown_text: str | None = None
        self._imu_last_t = -math.inf

    # -- inputs ---------------------------------------------------------------------------------

    def apply(
        self,
        event: BackendEvent,
        now: float,
        *,
        floor: float = -math.inf,
        advance: Callable[[float], None] | None = None,
    ) -> None:
        """Hand ``event``, which arrived at camera time ``now``, to the hub (or the audit log).

        ``floor``: how far the caller has already advanced the camera and hub (an input is never
        placed before it, even one that arrived earlier: a held one).
        ``advance(t)`` is called with the input's camera time before the input is applied: the
        caller plays the camera's world (media, the hub's and the camera's timers) up to ``t``
        first, so that nothing is later run at an earlier time than the input.
        """
        if isinstance(event, LinkUpEvent | LinkDownEvent):
            self._link(event, now)
            return
        self.counters["inputs"] += 1
        hw_time = event.hw_time_s
        if isinstance(event, ImuInput) and event.accel_g:
            # The batch is reported when its last sample is taken.
            hw_time += (len(event.accel_g) - 1) * event.period_s
        at = self.clock.to_camera(hw_time, now, floor=floor)
        if advance is not None:
            advance(at)
        if self.camera.state is CameraState.OFF:
            self.counters["while_off"] += 1
            return
        self._input(event, at, self.clock.last)

    def _input(self, event: BackendEvent, at: float, placed: float) -> None:
        hub = self.hub
        match event:
            case ButtonInput(button="event", pressed=pressed):
                # Late after a stall (placed < at), an edge still counts from its own time.
                hub.button_edge(pressed=pressed, now=at, at=placed)
            case ButtonInput(button=button):
                self.counters["ignored"] += 1
                log.info("the %s button has no camera function: ignored", button)
            case LineInput(line=line, level=level):
                hub.line(line, level=level, now=at)
            case SpeedInput(kmh=kmh):
                hub.vehicle_speed(kmh, at)
            case TaserInput(kind=kind):
                hub.taser(kind, at)
            case ImuInput():
                self._imu(event, at)
            case GpsInput(position=position):
                hub.gps(at, position, at)
            case BatteryInput():
                self.battery = event

    def _imu(self, event: ImuInput, at: float) -> None:
        count = len(event.accel_g)
        if count == 0 or len(event.gyro_dps) != count or not event.period_s > 0:
            self.counters["ignored"] += 1
            log.warning("malformed IMU batch ignored: %d samples, period %s", count, event.period_s)
            return
        # Sample times keep the hardware's spacing and end at the batch's camera time; a batch
        # pulled back by the clamp still follows the previous one (the detectors need order).
        t = at - event.period_s * np.arange(count - 1, -1, -1, dtype=np.float64)
        if t[0] <= self._imu_last_t:
            t += self._imu_last_t + event.period_s - t[0]
        self._imu_last_t = float(t[-1])
        self.hub.imu(t, np.asarray(event.accel_g), np.asarray(event.gyro_dps), at)

    def _link(self, event: LinkUpEvent | LinkDownEvent, now: float) -> None:
        camera = self.camera
        utc, mono = camera.clock.utc(now), round(now, 6)
        if isinstance(event, LinkUpEvent):
            self.link_up = True
            self.counters["link_ups"] += 1
            self.capabilities = event.capabilities
            self.clock.reset()
            # Send the status again: rebooted hardware forgot it, and an unknown backend may not
            # have kept it.
            self._shown_led = self._shown_text = None
            camera.audit.append(
                LINK_RECORD,
                utc,
                mono,
                state="up",
                description=event.description,
                rebooted=event.rebooted,
            )
        else:
            self.link_up = False
            self.counters["link_downs"] += 1
            camera.audit.append(LINK_RECORD, utc, mono, state="down", reason=event.reason)

    # -- outputs --------------------------------------------------------------------------------

    def outputs(self, indications: Iterable[Indication]) -> list[Output]:
        """What to send for ``indications`` (silent ones: nothing) and any status change."""
        camera = self.camera
        muted, stealth = camera.muted, camera.indicator.stealth
        wanted: list[Output] = []
        led = status_led(camera.state, muted=muted, stealth=stealth)
        if led != self._shown_led:
            self._shown_led = led
            wanted.append(led)
        text = status_text(camera.state, muted=muted, stealth=stealth)
        if text != self._shown_text:
            self._shown_text = text
            wanted.append(DisplayOutput(text))
        for indication in indications:
            if not indication.silent:
                wanted.extend(signal_outputs(indication.signal))
        return [output for output in wanted if capability_of(output) in self.capabilities]
