"""What every trigger detector shares: the detection record, input checks and streaming helpers.

The detectors are sans-clock and streaming: they see only sample timestamps, and feeding one
long array or the same samples split anywhere gives the same detections. Two helpers make that
cheap to get right: ``SampleHistory`` prepends the last few samples to each batch, so windowed
features see the same samples wherever a batch boundary falls, and ``RunTracker`` carries the
start of a run of "true" samples (free fall, stillness) across batches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

KINDS = frozenset({"officer_down", "foot_pursuit", "gunshot", "geofence"})
INSTANT_KINDS = frozenset({"officer_down", "gunshot"})  # no "ended" event for these


@dataclass(frozen=True, slots=True)
class Detection:
    """A trigger decision, with the measured features that justify it (for the audit log).

    ``at_s`` is the sensor time when the decision was made (the time of the last sample it
    needed). ``active`` is True when the condition started and False when it ended; falls and
    gunshots are instantaneous and only ever active. ``name`` is the geofence's name, else "".
    """

    kind: str
    at_s: float
    active: bool
    name: str = ""
    features: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Detection.kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if not self.active and self.kind in INSTANT_KINDS:
            raise ValueError(f"a {self.kind} detection is instantaneous: active must be True")
        # A read-only copy: the record goes to the audit log and must not change afterwards.
        object.__setattr__(self, "features", MappingProxyType(dict(self.features)))


def check_imu_batch(
    t: npt.ArrayLike, accel: npt.ArrayLike, gyro: npt.ArrayLike, last_t: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return ``t`` (N,), ``accel`` (N,3) and ``gyro`` (N,3) as float64 arrays, or raise.

    Raises ``ValueError`` (a caller's bug, not a configuration fault) when shapes disagree or
    timestamps do not strictly increase, within the batch or after ``last_t``.
    """
    tt = np.asarray(t, dtype=np.float64)
    aa = np.asarray(accel, dtype=np.float64)
    gg = np.asarray(gyro, dtype=np.float64)
    n = tt.shape[0] if tt.ndim == 1 else -1
    if n < 0 or aa.shape != (n, 3) or gg.shape != (n, 3):
        raise ValueError(
            f"IMU batch needs t (N,), accel (N,3), gyro (N,3); got {tt.shape}, {aa.shape}, "
            f"{gg.shape}"
        )
    if n and (tt[0] <= last_t or np.any(np.diff(tt) <= 0.0) or not np.all(np.isfinite(tt))):
        raise ValueError("IMU timestamps must be finite and strictly increasing across feeds")
    return tt, aa, gg


class SampleHistory:
    """Keeps the last ``keep`` rows fed, and prepends them to the next batch.

    Features computed on ``history + batch`` for the batch's rows then depend only on the
    samples, never on where the batches were split.
    """

    def __init__(self, keep: int, width: int) -> None:
        self._keep = keep
        self._rows: FloatArray = np.empty((0, width), dtype=np.float64)

    def extend(self, batch: FloatArray) -> tuple[FloatArray, int]:
        """Return ``history + batch`` and the number of history rows in front of the batch."""
        h = self._rows.shape[0]
        joined = np.concatenate((self._rows, batch)) if h else batch
        self._rows = joined[max(0, joined.shape[0] - self._keep) :].copy()
        return joined, h


class RunTracker:
    """Start times of runs of consecutive true samples, and the sample where each run confirms.

    A run confirms at its first sample at least ``min_s`` after its start. The start of a run
    still going at the end of a batch, and whether it had confirmed, carry to the next batch.
    """

    def __init__(self) -> None:
        self._start = math.nan  # nan: the last sample fed was not in a run
        self._confirmed = False

    def update(self, cond: BoolArray, t: FloatArray, min_s: float) -> tuple[FloatArray, BoolArray]:
        """Per sample: the start time of its run (nan outside runs), and the confirming edges."""
        n = cond.shape[0]
        prev = np.empty(n, dtype=np.bool_)
        prev[0] = not math.isnan(self._start)
        prev[1:] = cond[:-1]
        begins = np.where(cond & ~prev, np.arange(n), -1)
        last_begin = np.maximum.accumulate(begins)
        starts = np.where(last_begin >= 0, t[np.maximum(last_begin, 0)], self._start)
        starts[~cond] = math.nan
        ok = cond & (t - starts >= min_s)  # nan compares false: outside runs is never ok
        ok_prev = np.empty(n, dtype=np.bool_)
        ok_prev[0] = self._confirmed
        ok_prev[1:] = ok[:-1]
        self._start = float(starts[-1])
        self._confirmed = bool(ok[-1])
        return starts, ok & ~ok_prev


def window_mean(rows: FloatArray, end: int, length: int) -> FloatArray:
    """Mean of ``rows[end - length + 1 : end + 1]`` (fewer rows at the very start of a stream).

    Summed in order (``cumsum``), so the result never depends on where the rows sit in memory.
    """
    window = rows[max(0, end - length + 1) : end + 1]
    return np.asarray(np.cumsum(window, axis=0)[-1] / window.shape[0], dtype=np.float64)


def angle_deg(a: FloatArray, b: FloatArray) -> float:
    """Angle between two 3-vectors in degrees (0 when either is zero)."""
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    cos = float(np.dot(a, b)) / (na * nb)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))
