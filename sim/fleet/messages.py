"""What the fleet's parent and workers tell each other over their pipe (pickled, small).

Worker to parent: ``Keys`` (its cameras' public keys, for the embedded receiver's trust store),
``Ready``, a ``Report`` every second, one ``FinalReport``, or ``Failed``. Parent to
worker: ``Start`` (the fleet's t = 0 as a ``time.monotonic`` instant) and ``Stop`` (Ctrl-C).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.fleet.stats import WorkerReport


@dataclass(frozen=True, slots=True)
class Keys:
    """Device ID -> Ed25519 public key of every camera of ``worker``."""

    worker: int
    keys: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class Ready:
    """``worker`` has made its cameras and waits for ``Start``."""

    worker: int


@dataclass(frozen=True, slots=True)
class Report:
    """A live snapshot of one worker's cameras."""

    report: WorkerReport


@dataclass(frozen=True, slots=True)
class FinalReport:
    """The worker's last report: the fleet's window is over and its cameras have stopped."""

    report: WorkerReport


@dataclass(frozen=True, slots=True)
class Failed:
    """The worker stopped on an unexpected error."""

    worker: int
    message: str


@dataclass(frozen=True, slots=True)
class Start:
    """Start the cameras: fleet time 0 is the ``time.monotonic()`` instant ``t0``."""

    t0: float


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop now (the fleet was interrupted)."""


WorkerMessage = Keys | Ready | Report | FinalReport | Failed
ParentMessage = Start | Stop
