"""Gunshot detection from the camera's microphone.

Input: mono PCM, float (any dtype numpy converts to float64), at ``rate_hz`` (16 kHz), calibrated
so that full scale (|x| = 1.0) is ``full_scale_db`` dB SPL peak (150 dB: louder sound clips, as a
real ADC does). ``feed(t0, pcm)`` takes a block and the sensor time of its first sample; blocks
that continue the previous one (``t0`` within half a sample of where it ended) are one stream,
anything else starts a new stream (short clips around events are fine).

Two stages, so the cost on continuous audio is a few vectorized operations per millisecond:

1. Onsets. The stream is cut into 1 ms blocks. A block is an onset when its peak reaches
   ``trigger_db`` and jumps at least ``jump_db`` over the loudest block of the previous
   ``lookback_s`` (a decaying tail or a slow swell never qualifies), and no onset was taken in the
   last ``refractory_s``.
2. Classification, once ``window_s`` of audio after the onset has arrived (the decision time):
   peak level (dB SPL), rise time from 10 % to 90 % of the Hilbert envelope, decay time to 10 %
   of the peak, spectral centroid and share of energy above 2 kHz over the first 16 ms, and crest
   factor (peak over RMS of the window). A gunshot's muzzle blast rises within a sample or two,
   is very loud, broadband and short; a slammed door swells over milliseconds, peaks lower, is
   dominated by low panel modes and rings. The rule: peak >= ``min_peak_db``, rise <=
   ``max_rise_ms``, centroid >= ``min_centroid_hz`` and crest >= ``min_crest_db``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from device.detect.common import Detection, FloatArray
from device.validate import check_number

_PRE_S = 0.004  # audio kept before an onset: the envelope's 10 % point may precede the block
_SPECTRUM_N = 256  # 16 ms at 16 kHz: the blast, not the reverberation
_HF_HZ = 2000.0
_HOLD_S = 0.005  # longer than half a period of the lowest door mode (100 Hz and up)


@dataclass(frozen=True, slots=True)
class GunshotConfig:
    """Thresholds of the gunshot detector (Hz, dB SPL, dB, ms, seconds)."""

    rate_hz: int = 16000
    full_scale_db: float = 150.0
    trigger_db: float = 110.0
    jump_db: float = 12.0
    lookback_s: float = 0.01
    refractory_s: float = 0.1
    window_s: float = 0.064
    min_peak_db: float = 120.0
    max_rise_ms: float = 0.5
    min_centroid_hz: float = 150.0
    min_crest_db: float = 4.0
    max_decay_ms: float = 20.0
    loud_db: float = 140.0

    def __post_init__(self) -> None:
        owner = "gunshot"
        check_number(owner, "rate_hz", self.rate_hz, 8000, 192000, integer=True)
        check_number(owner, "full_scale_db", self.full_scale_db, 90.0, 200.0, integer=False)
        check_number(owner, "trigger_db", self.trigger_db, 40.0, self.full_scale_db, integer=False)
        check_number(owner, "jump_db", self.jump_db, 0.0, 60.0, integer=False)
        check_number(owner, "lookback_s", self.lookback_s, 0.002, 1.0, integer=False)
        check_number(owner, "refractory_s", self.refractory_s, 0.0, 10.0, integer=False)
        check_number(owner, "window_s", self.window_s, 0.03, 1.0, integer=False)
        check_number(owner, "min_peak_db", self.min_peak_db, 40.0, 200.0, integer=False)
        check_number(owner, "max_rise_ms", self.max_rise_ms, 0.0, 100.0, integer=False)
        check_number(owner, "min_centroid_hz", self.min_centroid_hz, 0.0, 20000.0, integer=False)
        check_number(owner, "min_crest_db", self.min_crest_db, 0.0, 60.0, integer=False)
        check_number(owner, "max_decay_ms", self.max_decay_ms, 0.0, 1000.0, integer=False)
        check_number(owner, "loud_db", self.loud_db, 40.0, 200.0, integer=False)


def _envelope(x: FloatArray) -> FloatArray:
    """Magnitude of the analytic signal (Hilbert envelope) of ``x``."""
    n = x.shape[0]
    nfft = 1 << math.ceil(math.log2(max(2, n)))
    spectrum = np.fft.fft(x, nfft)
    gain = np.zeros(nfft)
    gain[0] = gain[nfft // 2] = 1.0
    gain[1 : nfft // 2] = 2.0
    return np.asarray(np.abs(np.fft.ifft(spectrum * gain)[:n]), dtype=np.float64)


def impulse_features(
    w: FloatArray, onset: int, rate_hz: int, full_scale_db: float
) -> dict[str, float]:
    """Features of the impulse starting near index ``onset`` of window ``w`` (see module doc)."""
    env = _envelope(w)
    # Rise on a 5 ms peak-hold of |x|: it ignores the dips of a ringing door's zero crossings
    # (the Hilbert envelope of a one-sided blast creeps up over its whole positive phase).
    hold = max(1, round(_HOLD_S * rate_hz))
    padded = np.concatenate((np.zeros(hold - 1), np.abs(w)))
    held = np.lib.stride_tricks.sliding_window_view(padded, hold).max(axis=1)
    search = held[onset : onset + max(1, rate_hz // 50)]  # the peak lies within 20 ms
    pk = onset + int(np.argmax(search))
    top = held[pk]
    # Rise of the first peak reaching a quarter of the maximum: a supersonic crack, a ground
    # reflection or a second mode arriving milliseconds later can make a higher peak, but the
    # first onset is what tells a blast from a swell.
    first = int(np.argmax(held[: pk + 1] >= 0.25 * top))
    flat = np.flatnonzero(np.diff(held[first : pk + 1]) <= 0.0)
    local = held[first + int(flat[0]) if flat.size else pk]
    t90 = int(np.argmax(held[: pk + 1] >= 0.9 * local))
    below = np.flatnonzero(held[:t90] < 0.1 * local)
    t10 = int(below[-1]) + 1 if below.size else 0
    pk = onset + int(np.argmax(env[onset : onset + max(1, rate_hz // 50)]))
    top = env[pk]
    ms = rate_hz // 1000 or 1
    smooth = np.convolve(env[pk:], np.full(ms, 1.0 / ms), mode="valid")
    quiet = np.flatnonzero(smooth < 0.1 * top)
    decay_n = int(quiet[0]) if quiet.size else smooth.shape[0]
    start = max(0, t10 - _SPECTRUM_N // 8)
    seg = w[start : start + _SPECTRUM_N]
    power = np.abs(np.fft.rfft(seg * np.hanning(seg.shape[0]), n=_SPECTRUM_N)) ** 2
    freqs = np.fft.rfftfreq(_SPECTRUM_N, 1.0 / rate_hz)
    total = float(power.sum()) or 1e-300
    peak = float(np.max(np.abs(w[onset:]))) or 1e-12
    rms = float(np.sqrt(np.mean(w[onset:] ** 2))) or 1e-12
    return {
        "peak_db": full_scale_db + 20.0 * math.log10(peak),
        "rise_ms": 1000.0 * (t90 - t10) / rate_hz,
        "decay_ms": 1000.0 * decay_n / rate_hz,
        "centroid_hz": float((power * freqs).sum()) / total,
        "hf_ratio": float(power[freqs >= _HF_HZ].sum()) / total,
        "crest_db": 20.0 * math.log10(peak / rms),
    }


def _is_gunshot(f: dict[str, float], c: GunshotConfig) -> bool:
    # Above ``loud_db`` no door, clap or voice is plausible, and a clipped blast with loud
    # reverberation decays slowly: the decay test applies only below it.
    short = f["decay_ms"] <= c.max_decay_ms or f["peak_db"] >= c.loud_db
    return (
        f["peak_db"] >= c.min_peak_db
        and f["rise_ms"] <= c.max_rise_ms
        and short
        and f["centroid_hz"] >= c.min_centroid_hz
        and f["crest_db"] >= c.min_crest_db
    )


class GunshotDetector:
    """Streaming gunshot detector: ``feed(t0, pcm)`` returns gunshots decided in that block."""

    def __init__(self, config: GunshotConfig | None = None) -> None:
        self.config = config or GunshotConfig()
        c = self.config
        self._block = max(1, c.rate_hz // 1000)
        self._lookback = max(1, round(c.lookback_s * 1000))
        self._pre = round(_PRE_S * c.rate_hz)
        self._post = round(c.window_s * c.rate_hz)
        self._refractory = round(c.refractory_s * c.rate_hz)
        self._trigger = 10.0 ** ((c.trigger_db - c.full_scale_db) / 20.0)
        self._jump = 10.0 ** (c.jump_db / 20.0)
        self._reset(math.nan)

    def _reset(self, t0: float) -> None:
        self._t0 = t0  # sensor time of the stream's first sample
        self._buf: FloatArray = np.zeros(0)
        self._buf_start = 0  # stream index of _buf[0]
        self._blocks = 0  # complete 1 ms blocks examined
        self._peaks: FloatArray = np.zeros(self._lookback)  # peaks of the last blocks
        self._last_onset = -(10**18)
        self._pending: list[int] = []  # onset sample indices awaiting their window

    def feed(self, t0: float, pcm: npt.ArrayLike) -> list[Detection]:
        """Process a block of PCM whose first sample was taken at sensor time ``t0``."""
        x = np.asarray(pcm, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"PCM must be mono, a 1-D array; got shape {x.shape}")
        if not math.isfinite(t0):
            raise ValueError(f"t0 must be a finite time, got {t0!r}")
        end = self._buf_start + self._buf.shape[0]
        expected = self._t0 + end / self.config.rate_hz
        if math.isnan(self._t0) or abs(t0 - expected) > 0.5 / self.config.rate_hz:
            self._reset(t0)  # a gap, an overlap or the first block: a new stream
        self._buf = np.concatenate((self._buf, x))
        self._find_onsets()
        found = self._decide()
        keep = min(
            [self._blocks * self._block - self._pre, *(p - self._pre for p in self._pending)]
        )
        drop = max(0, keep - self._buf_start)
        self._buf = self._buf[drop:]
        self._buf_start += drop
        return found

    def _find_onsets(self) -> None:
        end = self._buf_start + self._buf.shape[0]
        count = end // self._block - self._blocks
        if count <= 0:
            return
        first = self._blocks * self._block - self._buf_start
        blocks = self._buf[first : first + count * self._block].reshape(count, self._block)
        peaks = np.abs(blocks).max(axis=1)
        history = np.concatenate((self._peaks, peaks))
        before = np.lib.stride_tricks.sliding_window_view(history, self._lookback)[:count]
        onset = (peaks >= self._trigger) & (peaks >= self._jump * before.max(axis=1))
        for k in np.flatnonzero(onset).tolist():
            sample = (self._blocks + k) * self._block
            if sample - self._last_onset >= self._refractory:
                self._pending.append(sample)
                self._last_onset = sample
        self._peaks = history[-self._lookback :]
        self._blocks += count

    def _decide(self) -> list[Detection]:
        c = self.config
        end = self._buf_start + self._buf.shape[0]
        found: list[Detection] = []
        while self._pending and self._pending[0] + self._post <= end:
            onset = self._pending.pop(0)
            lo = onset - self._pre - self._buf_start
            w = self._buf[max(0, lo) : onset + self._post - self._buf_start]
            if lo < 0:  # the stream began less than _PRE_S before the onset
                w = np.concatenate((np.zeros(-lo), w))
            f = impulse_features(w, self._pre, c.rate_hz, c.full_scale_db)
            if _is_gunshot(f, c):
                at = self._t0 + (onset + self._post - 1) / c.rate_hz
                found.append(Detection("gunshot", at, active=True, features=f))
        return found
