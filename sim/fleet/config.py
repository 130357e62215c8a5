"""The fleet's configuration: validated once, frozen, and small enough to hand to each worker.

``FleetConfig`` says how many cameras, how they are named and seeded, what they do (buffer and
send telemetry; a seeded ``recording_fraction`` of them also record and upload), how fast they
connect, for how long the fleet runs and where it keeps its data. Anything wrong raises
``ConfigError`` naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from device.errors import ConfigError
from device.mqtt.settings import BrokerSettings
from protocol.ids import is_safe_id
from sim.scenario import Scenario, load_scenario

MAX_CAMERAS: Final = 100_000
MAX_WORKERS: Final = 256
MAX_DURATION_S: Final = 7 * 24 * 3600.0
DEFAULT_CONNECT_RATE: Final = 200.0
"""Connections per second, fleet-wide: a broker takes bursts badly (TLS, session lookups)."""
MEDIA_BATCH_S: Final = 0.5
"""How often (camera seconds) a recording camera is fed its media."""
IDLE_POLL_S: Final = 30.0
"""The uploader's and audit shipper's safety-net poll: acks, links and new data wake them."""


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """Everything a fleet run needs; see the module docstring and docs/fleet.md.

    Camera ``i`` (0-based) is ``{id_prefix}{id_offset + i:0{id_width}d}``; ``broker`` None
    means a private broker; ``embedded_receiver`` runs an evidence receiver in the parent
    process (the default with a private broker). The ``--scenario`` file is what the
    recording cameras play (``scenario_file``, read by each process: parsed scenarios do not
    pickle), None for a generated recording at a random time.
    """

    count: int
    data_dir: Path
    workers: int = 1
    duration_s: float = 120.0
    seed: int = 1
    id_prefix: str = "cam-"
    id_offset: int = 1
    id_width: int = 5
    recording_fraction: float = 0.05
    telemetry_interval_s: float = 10.0
    connect_rate: float = DEFAULT_CONNECT_RATE
    broker: BrokerSettings | None = None
    embedded_receiver: bool = True
    store: Path | None = None
    scenario_file: Path | None = None

    def __post_init__(self) -> None:
        _check("--count", self.count, 1, MAX_CAMERAS, integer=True)
        _check("--workers", self.workers, 1, MAX_WORKERS, integer=True)
        if self.workers > self.count:
            raise ConfigError(f"--workers ({self.workers}) cannot exceed --count ({self.count})")
        _check("--duration", self.duration_s, 1.0, MAX_DURATION_S, integer=False)
        _check("--seed", self.seed, 0, 2**63 - 1, integer=True)
        _check("--id-offset", self.id_offset, 0, 10**12, integer=True)
        _check("--id-width", self.id_width, 1, 12, integer=True)
        for index in (0, self.count - 1):
            if not is_safe_id(self.device_id(index)):
                raise ConfigError(
                    f"--id-prefix {self.id_prefix!r} makes the device ID "
                    f"{self.device_id(index)!r}: IDs are 1-64 characters from A-Z a-z 0-9 _ . -"
                    ", starting with a letter or digit"
                )
        _check("--recording-fraction", self.recording_fraction, 0.0, 1.0, integer=False)
        _check("--telemetry-interval", self.telemetry_interval_s, 1.0, 3600.0, integer=False)
        _check("--connect-rate", self.connect_rate, 0.1, 100_000.0, integer=False)
        if self.duration_s <= self.connect_phase_s:
            raise ConfigError(
                f"--duration {self.duration_s:g} s ends before the {self.count} cameras have "
                f"started connecting ({self.connect_phase_s:g} s at {self.connect_rate:g}/s): "
                "give more --duration or a higher --connect-rate"
            )
        if self.scenario_file is not None:
            self.scenario()  # read now: its errors are the command line's
        elif self.recording_count:
            self.recording_window()  # raises if the duration leaves no room for recordings

    def scenario(self) -> Scenario | None:
        """The ``--scenario`` file, parsed and checked (``ConfigError`` names what is wrong)."""
        if self.scenario_file is None:
            return None
        scenario = load_scenario(self.scenario_file)
        if any(entry.action == "power_loss" for entry in scenario.timeline):
            raise ConfigError(
                f"{self.scenario_file}: power_loss is played in virtual time only "
                "(bwc-sim scenario): a fleet runs in real time"
            )
        return scenario

    def device_id(self, index: int) -> str:
        """The device ID of camera ``index`` (0-based)."""
        return f"{self.id_prefix}{self.id_offset + index:0{self.id_width}d}"

    @property
    def recording_count(self) -> int:
        """How many cameras record: ``recording_fraction`` of the fleet, rounded."""
        return round(self.count * self.recording_fraction)

    @property
    def connect_phase_s(self) -> float:
        """When the last camera starts connecting (fleet seconds)."""
        return (self.count - 1) / self.connect_rate

    @property
    def camera_dirs(self) -> Path:
        """Where the cameras' data directories are (one per device ID)."""
        return self.data_dir / "cameras"

    @property
    def receiver_store(self) -> Path:
        """The embedded receiver's store."""
        return self.store if self.store is not None else self.data_dir / "receiver"

    def recording_window(self) -> RecordingWindow:
        """When generated recordings may start and how long they last (fleet seconds).

        They start once every camera has had time to connect (so the idle memory is measured
        before any camera records), last 20-40 s (less in short runs) and end early enough for
        the upload to finish before the fleet stops.
        """
        window = _window(self.duration_s, self.connect_phase_s)
        if window is None:
            need = next(
                d for d in range(1, 10**7) if _window(float(d), self.connect_phase_s) is not None
            )
            raise ConfigError(
                f"--duration {self.duration_s:g} s leaves no time for recordings after "
                f"{self.count} cameras connect at {self.connect_rate:g}/s; give at least "
                f"{need} s, a higher --connect-rate, or --recording-fraction 0"
            )
        return window


def _window(duration: float, connect_phase_s: float) -> RecordingWindow | None:
    shortest, longest = min(20.0, 0.2 * duration), min(40.0, 0.3 * duration)
    first = connect_phase_s + min(10.0, max(2.0, 0.1 * duration))
    last_end = duration - max(5.0, 0.25 * duration)
    if first + shortest > last_end:
        return None
    return RecordingWindow(first, last_end, shortest, longest)


@dataclass(frozen=True, slots=True)
class RecordingWindow:
    """Generated recordings start at ``first_s`` or later and end by ``last_end_s``."""

    first_s: float
    last_end_s: float
    shortest_s: float
    longest_s: float


def _check(option: str, value: object, lo: float, hi: float, *, integer: bool) -> None:
    """``ConfigError`` naming ``option`` unless ``value`` is a number (an integer) in [lo, hi]."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if integer:
        number = number and isinstance(value, int)
    if not (number and isinstance(value, int | float) and lo <= value <= hi):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{option} must be {kind} from {lo:g} to {hi:g}, got {value!r}")
