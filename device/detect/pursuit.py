"""Foot-pursuit (running) detection from the body-worn IMU's acceleration magnitude.

Every ``hop_s`` the detector looks at the last ``window_s`` of |a| (orientation-free, so the way
the camera is clipped on does not matter) and measures three features: the step cadence (the
strongest frequency of the de-meaned, Hann-windowed signal between 0.5 and 6 Hz, refined by
parabolic interpolation), the amplitude (standard deviation of |a|, in g) and the periodicity
(share of the band's power within ``peak_band_hz`` of that frequency). A frame is "running" when
the cadence lies in [``min_cadence_hz``, ``max_cadence_hz``], the amplitude is at least
``min_std_g`` and the periodicity at least ``min_periodicity``. Walking has a lower cadence
(1.6-2.2 Hz) and about a third of running's amplitude, so it fails two tests out of three.

Running frames that persist for ``sustain_s`` (gaps shorter than ``dropout_s`` forgiven) start a
pursuit (active=True); no running frame for ``stop_s`` ends it (active=False).

Frames fall on fixed sample counts from the start of the stream, so the same samples split into
batches anywhere give the same frames and the same detections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from device.detect.common import Detection, FloatArray, SampleHistory, check_imu_batch
from device.validate import check_number

_BAND_HZ = (0.5, 6.0)  # where step cadences live, from slow walking to sprinting


@dataclass(frozen=True, slots=True)
class FootPursuitConfig:
    """Thresholds of the foot-pursuit detector (Hz, g, seconds)."""

    rate_hz: float = 100.0
    window_s: float = 2.0
    hop_s: float = 0.25
    min_cadence_hz: float = 2.3
    max_cadence_hz: float = 3.7
    min_std_g: float = 0.45
    min_periodicity: float = 0.3
    peak_band_hz: float = 0.3
    sustain_s: float = 3.0
    dropout_s: float = 0.75
    stop_s: float = 3.0

    def __post_init__(self) -> None:
        owner = "foot_pursuit"
        check_number(owner, "rate_hz", self.rate_hz, 20.0, 2000.0, integer=False)
        check_number(owner, "window_s", self.window_s, 0.5, 10.0, integer=False)
        check_number(owner, "hop_s", self.hop_s, 0.01, self.window_s, integer=False)
        check_number(owner, "min_cadence_hz", self.min_cadence_hz, 0.5, 6.0, integer=False)
        check_number(
            owner, "max_cadence_hz", self.max_cadence_hz, self.min_cadence_hz, 6.0, integer=False
        )
        check_number(owner, "min_std_g", self.min_std_g, 0.01, 5.0, integer=False)
        check_number(owner, "min_periodicity", self.min_periodicity, 0.0, 1.0, integer=False)
        check_number(owner, "peak_band_hz", self.peak_band_hz, 0.05, 2.0, integer=False)
        check_number(owner, "sustain_s", self.sustain_s, 0.0, 60.0, integer=False)
        check_number(owner, "dropout_s", self.dropout_s, 0.0, 10.0, integer=False)
        check_number(owner, "stop_s", self.stop_s, 0.0, 120.0, integer=False)


def _row_sum(x: FloatArray) -> FloatArray:
    """Sum of each row, added in order: numpy's ``sum(axis=1)`` may round a row differently
    depending on how many rows there are, and a frame's features must be bit-identical however
    the stream was split into batches."""
    return np.asarray(np.cumsum(x, axis=1)[:, -1], dtype=np.float64)


def gait_features(
    windows: FloatArray, rate_hz: float, peak_band_hz: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cadence (Hz), amplitude (std, g) and periodicity (0-1) of each row of ``windows``."""
    n = windows.shape[1]
    centred = windows - (_row_sum(windows) / n)[:, None]
    std = np.sqrt(_row_sum(centred * centred) / n)
    nfft = 1 << max(10, math.ceil(math.log2(n)) + 1)  # zero padding: bins of about 0.1 Hz
    # One 1-D FFT per row: a batched FFT may round a row differently with the number of rows.
    tapered = centred * np.hanning(n)
    power = np.abs(np.stack([np.fft.rfft(row, n=nfft) for row in tapered])) ** 2
    freqs = np.fft.rfftfreq(nfft, 1.0 / rate_hz)
    band = (freqs >= _BAND_HZ[0]) & (freqs <= _BAND_HZ[1])
    lo = int(np.argmax(band))
    in_band = power[:, band]
    k = np.argmax(in_band, axis=1)
    rows = np.arange(power.shape[0])
    left = in_band[rows, np.maximum(k - 1, 0)]
    mid = in_band[rows, k]
    right = in_band[rows, np.minimum(k + 1, in_band.shape[1] - 1)]
    denom = left - 2.0 * mid + right
    shift = np.where(denom < 0.0, 0.5 * (left - right) / np.where(denom < 0.0, denom, -1.0), 0.0)
    cadence = (lo + k + np.clip(shift, -0.5, 0.5)) * (freqs[1] - freqs[0])
    near = np.abs(freqs[band][None, :] - cadence[:, None]) <= peak_band_hz
    total = _row_sum(in_band)
    periodicity = np.where(total > 0.0, _row_sum(in_band * near) / np.maximum(total, 1e-300), 0)
    return cadence, std, periodicity


class FootPursuitDetector:
    """Streaming running detector: active=True when a pursuit starts, False when it ends."""

    def __init__(self, config: FootPursuitConfig | None = None) -> None:
        self.config = config or FootPursuitConfig()
        c = self.config
        self._window_n = max(8, round(c.window_s * c.rate_hz))
        self._hop_n = max(1, round(c.hop_s * c.rate_hz))
        self._history = SampleHistory(self._window_n - 1, 1)
        self._count = 0  # samples fed so far: frames fall on fixed sample counts
        self._last_t = -math.inf
        self._active = False
        self._streak_start = math.nan  # time of the first running frame of the current streak
        self._last_running = math.nan

    @property
    def active(self) -> bool:
        """True while a pursuit is in progress."""
        return self._active

    def feed(self, t: npt.ArrayLike, accel: npt.ArrayLike, gyro: npt.ArrayLike) -> list[Detection]:
        """Process a batch of samples; return pursuit starts and ends decided in it."""
        tt, aa, _ = check_imu_batch(t, accel, gyro, self._last_t)
        n = tt.shape[0]
        if n == 0:
            return []
        self._last_t = float(tt[-1])
        joined, offset = self._history.extend(np.linalg.norm(aa, axis=1)[:, None])
        signal = joined[:, 0]
        first = self._count
        self._count += n
        # Frames end at global sample e with (e + 1) a multiple of hop_n and a full window behind.
        start = max(self._window_n - 1, first)
        start += (-(start + 1)) % self._hop_n
        ends = np.arange(start, self._count, self._hop_n)
        if ends.size == 0:
            return []
        local = ends - first + offset  # index of each frame's last sample in ``signal``
        view = np.lib.stride_tricks.sliding_window_view(signal, self._window_n)
        windows = view[local - self._window_n + 1]
        c = self.config
        cadence, std, periodicity = gait_features(windows, c.rate_hz, c.peak_band_hz)
        running = (
            (cadence >= c.min_cadence_hz)
            & (cadence <= c.max_cadence_hz)
            & (std >= c.min_std_g)
            & (periodicity >= c.min_periodicity)
        )
        found: list[Detection] = []
        for j in range(ends.size):
            features = {
                "cadence_hz": float(cadence[j]),
                "std_g": float(std[j]),
                "periodicity": float(periodicity[j]),
            }
            detection = self._frame(float(tt[ends[j] - first]), bool(running[j]), features)
            if detection is not None:
                found.append(detection)
        return found

    def _frame(self, now: float, running: bool, features: dict[str, float]) -> Detection | None:
        c = self.config
        if running:
            if math.isnan(self._streak_start):
                self._streak_start = now
            self._last_running = now
            if not self._active and now - self._streak_start >= c.sustain_s:
                self._active = True
                features["running_s"] = now - self._streak_start
                return Detection("foot_pursuit", now, active=True, features=features)
            return None
        if math.isnan(self._last_running):
            return None
        idle = now - self._last_running
        if self._active and idle >= c.stop_s:
            self._active = False
            features["running_s"] = self._last_running - self._streak_start
            self._streak_start = self._last_running = math.nan
            return Detection("foot_pursuit", now, active=False, features=features)
        if not self._active and idle > c.dropout_s:
            self._streak_start = self._last_running = math.nan
        return None
