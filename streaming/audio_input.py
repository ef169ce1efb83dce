"""Live audio input of one session: validation, stateful resampling to 16 kHz, a bounded buffer.

Chunks of any size, rate and layout go through one PyAV (libswresample) resampler
per session, so chunk boundaries leave no clicks and the sample count never drifts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import av
import numpy as np

from float_rt.errors import FloatRTError

log = logging.getLogger(__name__)

MIN_RATE, MAX_RATE = 8000, 192000
MAX_CHANNELS = 8
CLIP_PEAK = 2.0   # float audio above this is not audio in [-1, 1] (int16 values sent as float?)


class AudioInputError(FloatRTError):
    """Rejected audio chunk; the session and the engine carry on."""


def to_mono_float(samples, sample_rate: int) -> tuple[np.ndarray, int]:
    """Validate one chunk and return (mono float32 in [-1, 1], number of sanitised samples).

    1-D arrays are mono; 2-D arrays are (samples, channels), as sounddevice and
    soundfile give them.  int16/int32 are scaled to [-1, 1].  NaN/inf samples are
    replaced by 0 and slightly hot float audio is clipped (both counted); anything
    that cannot be audio is rejected with a clear message.
    """
    if not isinstance(sample_rate, (int, np.integer)) or not MIN_RATE <= sample_rate <= MAX_RATE:
        raise AudioInputError(f"sample rate must be an integer in {MIN_RATE}..{MAX_RATE} Hz, got {sample_rate!r}")
    try:
        x = np.asarray(samples)
    except Exception as exc:
        raise AudioInputError(f"audio chunk is not an array: {exc}") from exc
    if x.ndim == 2:
        if not 1 <= x.shape[1] <= MAX_CHANNELS:
            raise AudioInputError(f"2-D audio must be (samples, channels) with 1..{MAX_CHANNELS} channels, "
                                  f"got shape {x.shape}")
    elif x.ndim != 1:
        raise AudioInputError(f"audio must be 1-D (mono) or 2-D (samples, channels), got shape {x.shape}")
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif x.dtype == np.int32:
        x = x.astype(np.float32) / 2147483648.0
    elif x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
    else:
        raise AudioInputError(f"audio dtype must be int16, int32 or float, got {x.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1)
    bad = ~np.isfinite(x)
    fixed = int(bad.sum())
    if fixed:
        x = np.where(bad, np.float32(0), x)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > CLIP_PEAK:
        raise AudioInputError(f"float audio must lie in [-1, 1]; this chunk peaks at {peak:.3g} "
                              "(int16 values sent as float?)")
    if peak > 1.0:
        fixed += int((np.abs(x) > 1.0).sum())
        x = np.clip(x, -1.0, 1.0)
    return np.ascontiguousarray(x, dtype=np.float32), fixed


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples -> int16: the inverse of ``to_mono_float``'s int16 / 32768, so int16 speech that
    went through a session comes back sample for sample."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


class Samples:
    """A growable float32 sample store: append is O(chunk) amortised, forgetting the front O(1).

    Clients push audio in chunks as small as one sample; a plain ``concatenate`` per chunk would
    copy the whole queue each time (quadratic in what is queued).  The storage doubles when full
    and is compacted only when the forgotten front outweighs what is kept.
    """

    def __init__(self):
        self._data = np.zeros(0, np.float32)
        self._lo = self._hi = 0

    @property
    def view(self) -> np.ndarray:
        return self._data[self._lo:self._hi]

    def __len__(self) -> int:
        return self._hi - self._lo

    def append(self, x: np.ndarray) -> None:
        n = x.size
        if not n:
            return
        if self._hi + n > self._data.size:
            kept = self._hi - self._lo
            data = np.empty(max(2 * (kept + n), 4096), np.float32)
            data[:kept] = self._data[self._lo:self._hi]
            self._data, self._lo, self._hi = data, 0, kept
        self._data[self._hi:self._hi + n] = x
        self._hi += n

    def drop_front(self, n: int) -> None:
        self._lo += min(n, len(self))
        if self._lo > len(self) and self._lo > 65536:      # reclaim the memory of forgotten samples
            self._data = self._data[self._lo:self._hi].copy()
            self._lo, self._hi = 0, self._data.size

    def keep_front(self, n: int) -> None:
        self._hi = self._lo + max(0, min(n, len(self)))


@dataclass
class AudioInput:
    """16 kHz samples of one session, addressed by absolute sample index."""
    rate: int = 16000
    start: int = 0                                  # absolute index of buffer[0]
    samples: Samples = field(default_factory=Samples)
    sanitised: int = 0                              # NaN/inf/clipped samples repaired
    _resampler: av.AudioResampler | None = None
    _in_rate: int | None = None
    _in_pos: int = 0                                # input samples fed at _in_rate (for pts gaps)

    @property
    def buffer(self) -> np.ndarray:
        """The buffered samples (a view: valid until the next change)."""
        return self.samples.view

    @property
    def end(self) -> int:
        """Absolute index one past the last buffered sample."""
        return self.start + len(self.samples)

    def _resample(self, x: np.ndarray | None, rate: int) -> np.ndarray:
        if rate == self.rate:
            return x if x is not None else np.zeros(0, np.float32)
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        frame = None
        if x is not None:
            frame = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")
            frame.sample_rate = rate
        outs = [f.to_ndarray()[0] for f in self._resampler.resample(frame)]
        return np.concatenate(outs).astype(np.float32) if outs else np.zeros(0, np.float32)

    def push(self, samples, sample_rate: int, pts: int | None = None) -> int:
        """Append a chunk; returns the number of 16 kHz samples added.

        ``pts`` (in samples at ``sample_rate`` since the session's first chunk) lets a
        transport report lost packets: a gap is filled with silence, an overlap dropped.
        """
        x, fixed = to_mono_float(samples, sample_rate)
        self.sanitised += fixed
        if fixed:
            log.warning("audio chunk: %d NaN/inf/out-of-range samples repaired", fixed)
        added = []
        if self._in_rate is not None and sample_rate != self._in_rate:
            added.append(self._resample(None, self._in_rate))     # flush the old rate's tail
            self._resampler, self._in_pos = None, int(self._in_pos * sample_rate / self._in_rate)
        self._in_rate = sample_rate
        if pts is not None:
            gap = int(pts) - self._in_pos
            if gap > 0:
                x = np.concatenate([np.zeros(min(gap, sample_rate * 5), np.float32), x])
            elif gap < 0:
                x = x[-gap:]
        self._in_pos += x.size
        if x.size:
            added.append(self._resample(x, sample_rate))
        for a in added:
            self.samples.append(a)
        return sum(a.size for a in added)

    def flush(self) -> int:
        """End of input: drain the resampler's delay line."""
        if self._in_rate is None or self._in_rate == self.rate:
            return 0
        tail = self._resample(None, self._in_rate)
        self._resampler = None
        self.samples.append(tail)
        return tail.size

    def append_silence(self, n: int) -> None:
        if n > 0:
            self.samples.append(np.zeros(n, np.float32))

    def append_repeat(self, n: int) -> None:
        """``n`` copies of the last sample (silence when there is none)."""
        if n > 0:
            last = self.buffer[-1] if len(self.samples) else np.float32(0)
            self.samples.append(np.full(n, last, np.float32))

    def read(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b) by absolute index; positions outside the buffer read as silence."""
        out = np.zeros(max(0, b - a), np.float32)
        lo, hi = max(a, self.start), min(b, self.end)
        if hi > lo:
            out[lo - a:hi - a] = self.buffer[lo - self.start:hi - self.start]
        return out

    def trim(self, keep_from: int) -> None:
        """Forget samples before absolute index ``keep_from``."""
        if keep_from > self.start:
            cut = min(keep_from - self.start, len(self.samples))
            self.samples.drop_front(cut)
            self.start += cut

    def drop_after(self, pos: int) -> int:
        """Forget samples from absolute index ``pos`` on (barge-in); returns how many."""
        keep = max(0, pos - self.start)
        dropped = max(0, len(self.samples) - keep)
        self.samples.keep_front(keep)
        if pos < self.start:      # the timeline goes back to ``pos`` (nothing was kept before it)
            self.start = pos
        return dropped


class SessionAudio:
    """A session's audio on one timeline at two rates.

    ``model`` is what the encoder reads (16 kHz).  ``out`` is the speech handed back with each
    frame, at the rate the transport plays (a TTS's 24 kHz, say): pushed at that rate it is the
    very input samples, not a round trip through 16 kHz.  When the two rates agree they are one
    buffer.  Positions are model samples; ``out`` positions follow as ``pos * out_rate / rate``.
    """

    def __init__(self, rate: int = 16000, out_rate: int | None = None):
        self.model = AudioInput(rate=rate)
        self.out = self.model if out_rate in (None, rate) else AudioInput(rate=out_rate)
        self._filler: tuple[int, int] | None = None    # where inserted silence began (model, out)
        self.input_end: int | None = None   # samples received, once the input has ended (before padding)

    @property
    def rate(self) -> int:
        return self.model.rate

    @property
    def out_rate(self) -> int:
        return self.out.rate

    @property
    def end(self) -> int:
        return self.model.end

    @property
    def start(self) -> int:
        return self.model.start

    @property
    def sanitised(self) -> int:
        return self.model.sanitised

    def _out_pos(self, pos: int) -> int:
        return pos * self.out.rate // self.model.rate

    def _both(self) -> tuple[AudioInput, ...]:
        return (self.model,) if self.out is self.model else (self.model, self.out)

    def push(self, samples, sample_rate: int, pts: int | None = None) -> tuple[int, int]:
        """Append a chunk; returns where it landed on the ``out`` timeline, [start, end)."""
        start = self.out.end
        for buf in self._both():
            buf.push(samples, sample_rate, pts)
        return start, self.out.end

    def fill_silence(self, until: int) -> None:
        """Live and starved: silence up to model position ``until`` (real audio may replace it)."""
        if self._filler is None:
            self._filler = (self.model.end, self.out.end)
        self.model.append_silence(until - self.model.end)
        if self.out is not self.model:
            self.out.append_silence(self._out_pos(until) - self.out.end)

    @property
    def has_filler(self) -> bool:
        """Silence was inserted while starved (real audio may still replace it)."""
        return self._filler is not None

    def drop_filler(self, keep_until: int) -> None:
        """Real audio arrived: inserted silence after ``keep_until`` (model) makes way for it."""
        if self._filler is not None:
            self.model.drop_after(max(self._filler[0], keep_until))
            if self.out is not self.model:
                self.out.drop_after(max(self._filler[1], self._out_pos(keep_until)))
            self._filler = None

    def drop_after(self, pos: int) -> None:
        self._filler = None
        self.model.drop_after(pos)
        if self.out is not self.model:
            self.out.drop_after(self._out_pos(pos))

    def trim(self, model_from: int, out_from: int) -> None:
        """Forget model samples before ``model_from`` and out samples before ``out_from``."""
        self.model.trim(model_from)
        if self.out is not self.model:
            self.out.trim(out_from)

    def flush(self) -> None:
        for buf in self._both():
            buf.flush()

    def pad_to(self, pos: int) -> None:
        """End of input: repeat the last sample up to ``pos`` (the offline clip padding)."""
        self.input_end = self.model.end
        self.model.append_repeat(pos - self.model.end)

    def read(self, a: int, b: int) -> np.ndarray:
        return self.model.read(a, b)

    def read_out(self, a: int, b: int) -> np.ndarray:
        return self.out.read(a, b)
