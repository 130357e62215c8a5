"""A battery model: charge drains at a rate set by what the camera is doing.

Linear and deterministic: ``capacity_h`` is the runtime while buffering; recording draws
``recording_draw`` times that rate, sleep ``sleep_draw`` times. The camera reports crossing the
low threshold (percent) and the critical one (minutes left at the present draw), and powers off
when the charge is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from device.validate import check_number

_EPSILON = 1e-6


class Load(Enum):
    """What the camera is doing, as far as the battery is concerned."""

    OFF = "off"
    SLEEP = "sleep"
    BUFFERING = "buffering"
    RECORDING = "recording"


class BatteryAlert(Enum):
    """Thresholds crossed, each reported once per discharge."""

    LOW = "battery_low"
    CRITICAL = "battery_critical"
    EMPTY = "battery_empty"


@dataclass(frozen=True, slots=True)
class BatteryConfig:
    """Battery parameters. ``capacity_h``: hours of buffering on a full charge."""

    capacity_h: float = 12.0
    recording_draw: float = 1.4
    sleep_draw: float = 0.15
    start_percent: float = 100.0
    low_percent: float = 10.0
    critical_minutes: float = 10.0

    def __post_init__(self) -> None:
        check_number("battery", "capacity_h", self.capacity_h, 0.01, 1000.0, integer=False)
        check_number("battery", "recording_draw", self.recording_draw, 0.0, 100.0, integer=False)
        check_number("battery", "sleep_draw", self.sleep_draw, 0.0, 100.0, integer=False)
        check_number("battery", "start_percent", self.start_percent, 0.0, 100.0, integer=False)
        check_number("battery", "low_percent", self.low_percent, 0.0, 100.0, integer=False)
        check_number(
            "battery", "critical_minutes", self.critical_minutes, 0.0, 600.0, integer=False
        )


class Battery:
    """State of charge, advanced in steps of monotonic time."""

    def __init__(self, config: BatteryConfig, now: float) -> None:
        self.config = config
        self.percent = config.start_percent
        self._since = now
        self._load = Load.OFF
        self._reported: set[BatteryAlert] = set()

    def _rate(self, load: Load) -> float:
        """Percent per second drawn under ``load``."""
        factor = {
            Load.OFF: 0.0,
            Load.SLEEP: self.config.sleep_draw,
            Load.BUFFERING: 1.0,
            Load.RECORDING: self.config.recording_draw,
        }[load]
        return factor * 100.0 / (self.config.capacity_h * 3600.0)

    def switch(self, now: float, load: Load) -> None:
        """Drain up to ``now`` under the load in force, then switch to ``load``.

        Reports nothing: thresholds crossed are reported by the next ``advance`` (and
        ``next_deadline`` says that is due at once).
        """
        elapsed = max(0.0, now - self._since)
        self.percent = max(0.0, self.percent - elapsed * self._rate(self._load))
        self._since = now
        self._load = load

    def advance(self, now: float, load: Load) -> list[BatteryAlert]:
        """``switch``, then return the thresholds crossed and not yet reported."""
        self.switch(now, load)
        return self._alerts()

    def minutes_left(self) -> float | None:
        """Minutes until empty at the present draw; None when nothing draws."""
        rate = self._rate(self._load)
        return None if rate == 0.0 else self.percent / rate / 60.0

    def next_deadline(self) -> float | None:
        """When the next unreported threshold is crossed at the present draw."""
        rate = self._rate(self._load)
        if rate == 0.0:
            return None
        # A threshold already crossed but not yet reported is due at once (distance 0).
        targets = []
        if BatteryAlert.LOW not in self._reported:
            targets.append(max(0.0, self.percent - self.config.low_percent))
        critical = self.config.critical_minutes * 60.0 * rate
        if BatteryAlert.CRITICAL not in self._reported:
            targets.append(max(0.0, self.percent - critical))
        if BatteryAlert.EMPTY not in self._reported:
            targets.append(self.percent)
        return self._since + min(targets) / rate if targets else None

    def _alerts(self) -> list[BatteryAlert]:
        new = []
        minutes = self.minutes_left()
        # The tolerance makes a wake-up at next_deadline() count as crossing despite rounding.
        crossed = {
            BatteryAlert.LOW: self.percent <= self.config.low_percent + _EPSILON,
            BatteryAlert.CRITICAL: minutes is not None
            and minutes <= self.config.critical_minutes + _EPSILON,
            BatteryAlert.EMPTY: self.percent <= _EPSILON,
        }
        for alert, hit in crossed.items():
            if hit and alert not in self._reported:
                self._reported.add(alert)
                new.append(alert)
        return new
