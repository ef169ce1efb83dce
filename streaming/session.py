"""One live avatar stream: its input, its carried state, its output queue and clock.

A session holds only its own data; the `Engine` does the compute for many
sessions at once.  Everything shared with the engine's worker thread goes
through ``_lock``; the asyncio side is woken with ``call_soon_threadsafe``.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import math
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from float_rt.errors import FloatRTError
from float_rt.live import LiveModel

from .audio_input import SessionAudio
from .config import StreamConfig
from .options import SessionOptions

_ids = itertools.count(1)


@dataclass
class Frame:
    pts: int                 # output clock, 1/fps units, assigned when the frame is handed out
    index: int               # content frame: it shows the speech of [index, index + 1) / fps seconds
    image: np.ndarray | None # (S, S, 3) uint8 RGB (None when the session does not render)
    audio: np.ndarray        # float32 mono at the session's audio_out_rate: the speech this frame shows
    motion: np.ndarray | None
    features: np.ndarray | None  # (dim_a,) audio features the frame was sampled with
    arrived: float           # wall time the frame's audio had fully arrived
    ready: float             # wall time the frame was decoded
    duplicate: bool = False  # a repeat of the previous image, sent because nothing was ready


@dataclass
class SessionStats:
    frames_out: int = 0
    duplicated: int = 0          # images repeated because compute was late
    dropped_late: int = 0        # decoded frames skipped to keep latency bounded
    dropped_backlog: int = 0     # frames of input audio skipped because compute fell behind
    dropped_interrupt: int = 0   # queued frames discarded by interrupt()
    sanitised_samples: int = 0
    steps: int = 0
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=500))

    def summary(self) -> dict:
        lat = np.array(self.latencies) if self.latencies else np.zeros(0)
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "latencies"}
        if lat.size:
            d.update(latency_p50_ms=float(np.percentile(lat, 50) * 1e3),
                     latency_p95_ms=float(np.percentile(lat, 95) * 1e3))
        return d


class Session:
    """``wake`` is called when the session has new work for the engine that serves it, and
    ``release`` once when it closes; the session knows nothing else of that engine."""

    def __init__(self, model: LiveModel, stream_cfg: StreamConfig, ref, options: SessionOptions,
                 live: bool, *, wake: Callable[[], None], release: Callable[["Session"], None], clock=time.monotonic):
        self.id = next(_ids)
        self.model = model          # the family's live model: options and carry are its to read
        self.ref = ref
        self.options = options
        self.live = live
        self.clock = clock
        self._wake_engine, self._release = wake, release
        self.fps, self.spf = model.fps, model.samples_per_frame
        self.stream_cfg = stream_cfg
        # Frames computed but not shown yet (at most the output queue and one step) can be taken back.
        self.carry = model.new_carry(ref, options, rewind_limit=stream_cfg.max_output_frames)
        self.audio = SessionAudio(model.sampling_rate, options.audio_out_rate)
        self.spo = int(self.audio.out_rate / model.fps)   # output samples per frame
        self.features: torch.Tensor | None = None   # precomputed (T, dim_a) features, if fed
        self.stats = SessionStats()
        self.started = clock()
        self.ended = False
        self.closed = False
        self.error: str | None = None                # why the engine closed the session, if it did
        self.total_frames: int | None = None
        self.epoch = 0                               # bumped by interrupt(): in-flight results are void
        self._arrivals: collections.deque = collections.deque()   # (buffer end, wall time)
        self._out: collections.deque[Frame] = collections.deque()
        self.in_flight = 0      # frames committed by the engine and not yet delivered (being decoded)
        self.last_input = clock()   # when audio last came in (a transport's idle timeout)
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._pts = 0
        self._last: Frame | None = None

    # ------------------------------------------------------------------ input
    def push_audio(self, samples, sample_rate: int, pts: int | None = None) -> tuple[int, int]:
        """Queue speech (int16 or float, mono or (samples, channels), any rate, any chunk size).

        Returns where it landed on the session's output timeline, in samples at
        ``audio_out_rate``: frame j shows output samples [j * spo, (j + 1) * spo).
        """
        self._check_open()
        if self.ended:
            raise FloatRTError("push_audio after end_input()")
        with self._lock:
            # Silence we inserted while starved and nobody has committed yet was only a
            # placeholder: real audio takes its place, so the timeline stays on the wall clock.
            # A family that has already read some of it (Ditto's features run ahead of the frames)
            # forgets what it read of it first (as at a barge-in), so the speech drives the lips.
            if self.audio.has_filler:
                self.audio.drop_filler(self.carry.rewind(self.carry.next_frame) * self.spf)
            span = self.audio.push(samples, sample_rate, pts)
            self.stats.sanitised_samples = self.audio.sanitised
            limit = int(self.stream_cfg.max_input_seconds * self.audio.rate)
            if self._queued_samples() > limit:
                self.audio.drop_after(self.carry.next_frame * self.spf + limit)
                raise FloatRTError(f"more than {self.stream_cfg.max_input_seconds:g} s of audio queued; "
                                   "the excess was dropped")
            self.last_input = self.clock()
            self._arrivals.append((self.audio.end, self.last_input))
        self._wake_engine()
        return span

    def push_features(self, features: torch.Tensor) -> None:
        """Feed precomputed per-frame audio features (T, dim_a) instead of audio (tests, offline parity)."""
        with self._lock:
            self.features = features.to(self.model.device)
            self.total_frames = features.shape[0]
            self.ended = True
            now = self.clock()
            self._arrivals.append((self.total_frames * self.spf, now))
        self._wake_engine()

    def end_input(self) -> None:
        """No more audio: the remaining frames are produced, then ``frames()`` ends."""
        with self._lock:
            if self.ended:
                return
            self.audio.flush()
            self.total_frames = math.ceil(self.audio.end / self.spf)
            # The offline encoder pads the clip's last frame with its last sample.
            self.audio.pad_to(self.total_frames * self.spf)
            self._arrivals.append((self.audio.end, self.clock()))
            self.ended = True
        self._wake_engine()

    def update(self, **changes) -> None:
        """Change options mid-session (those ``streaming.options.SPECS`` marks changeable and the
        family takes); checked before anything changes."""
        opts = self.options.updated(changes, self.model)
        with self._lock:
            self.options = opts
            if "emotion" in changes:
                self.model.set_emotion(self.carry, opts.emotion)

    def set_emotion(self, emotion: str | None = None, e_cfg_scale: float | None = None,
                    a_cfg_scale: float | None = None, probs: torch.Tensor | None = None) -> None:
        """Change emotion (label, or None for predicted) and guidance scales mid-session; ``probs``:
        a fixed mix of the family's emotions."""
        changes = {"emotion": emotion, "e_cfg_scale": e_cfg_scale, "a_cfg_scale": a_cfg_scale}
        self.update(**{k: v for k, v in changes.items() if v is not None or k == "emotion"})
        if probs is not None:
            with self._lock:
                self.model.set_emotion(self.carry, None, probs)

    def interrupt(self) -> None:
        """Barge-in: drop queued speech and the frames not shown yet.

        The motion goes on from the last frame shown: frames computed ahead (a TTS reply is
        computed faster than it is spoken) are taken back, so the next frames, idle or a new
        reply, follow on from what the viewer saw, with no gap on the clock.
        """
        with self._lock:
            self.epoch += 1
            first_unshown = self._out[0].index if self._out else self.carry.next_frame
            self.stats.dropped_interrupt += len(self._out)
            self._out.clear()
            resume = self.carry.rewind(first_unshown)   # new input counts from this frame on
            self.audio.drop_after(resume * self.spf)
            if self.ended and self.features is None:
                self.total_frames = resume
        self._notify_out()

    def close(self) -> None:
        """Free everything the session holds; ``frames()`` ends."""
        if self.closed:
            return
        with self._lock:
            self.closed = True
            self._out.clear()
            self.audio = SessionAudio(self.audio.rate, self.audio.out_rate)
            self.features = None
            self.ref = None  # type: ignore[assignment]
        self._release(self)
        self._notify_out()

    def _check_open(self) -> None:
        if self.closed:
            raise FloatRTError("session is closed")

    # ------------------------------------------------------------------ engine side
    @property
    def finished(self) -> bool:
        return self.closed or (self.ended and self.total_frames is not None
                               and self.carry.next_frame >= self.total_frames)

    def _queued_samples(self) -> int:
        """Input audio (model samples) not yet turned into frames; the caller holds the lock."""
        return self.audio.end - self.carry.next_frame * self.spf

    def queued_seconds(self) -> float:
        """Input audio not yet turned into frames (a TTS reply pushed ahead of the clock)."""
        with self._lock:
            return max(0, self._queued_samples()) / self.audio.rate

    def available_frames(self) -> int:
        if self.features is not None:
            return self.features.shape[0]
        if self.ended:
            return self.total_frames or 0
        return self.audio.end // self.spf

    def needed_frames(self) -> int:
        return self.model.frames_needed(self.carry, self.options)

    def ready(self) -> bool:
        with self._lock:
            if self.closed or self.finished or len(self._out) >= self.stream_cfg.max_output_frames:
                return False
            if self.ended:
                return True
            return self.available_frames() >= self.needed_frames()

    def keep_up(self, now: float) -> None:
        """Live sessions: fill silence when starved, skip input when compute is behind."""
        if not self.live or self.closed:
            return
        with self._lock:
            # Compute behind the wall clock (not audio queued ahead, like a TTS reply):
            # skip input so that latency stays bounded.
            wall = int((now - self.started) * self.audio.rate)
            limit = self.stream_cfg.max_backlog_ms * self.audio.rate // 1000
            lag = wall - self.needed_frames() * self.spf
            if lag > limit and not self.finished:
                skip = (lag - limit // 2) // self.spf
                if self.total_frames is not None:
                    skip = min(skip, self.total_frames - self.carry.next_frame)
                self.carry.skip(skip)
                self.stats.dropped_backlog += skip
                self.audio.trim(min(self.carry.keep_from(), self.carry.next_frame * self.spf),
                                self.carry.next_frame * self.spo)
            if self.ended:
                return
            # Starved (no audio by the time it was due): idle on silence.
            need = self.needed_frames() * self.spf
            due = self.started + need / self.audio.rate + self.stream_cfg.jitter_ms / 1000.0
            if now >= due and self.audio.end < need:
                self.audio.fill_silence(need)
                self._arrivals.append((self.audio.end, now))

    def arrival_of(self, pos: int) -> float:
        for end, t in self._arrivals:
            if end >= pos:
                return t
        return self.clock()

    def deliver(self, frames: list[Frame], epoch: int) -> bool:
        """Engine hands over decoded frames; False if an interrupt made them void."""
        with self._lock:
            self.in_flight = max(0, self.in_flight - len(frames))
            if self.closed or epoch != self.epoch:
                return False
            self._out.extend(frames)
            for f in frames:
                self.stats.latencies.append(f.ready - f.arrived)
            self.stats.steps += 1
            while self._arrivals and self._arrivals[0][0] < self.carry.next_frame * self.spf:
                self._arrivals.popleft()
        self._notify_out()
        return True

    def _notify_out(self) -> None:
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------------ output
    def take_frames(self) -> list[Frame]:
        """All decoded frames waiting (no pacing), with output pts assigned."""
        with self._lock:
            out = list(self._out)
            self._out.clear()
        for f in out:
            self._stamp(f)
        return out

    def _stamp(self, f: Frame) -> Frame:
        f.pts = self._pts
        self._pts += 1
        self.stats.frames_out += 1
        self._last = f
        return f

    @property
    def done(self) -> bool:
        with self._lock:
            # Finished means every frame is committed; the last ones may still be decoding.
            return self.closed or (self.finished and not self._out and not self.in_flight)

    async def frames(self, realtime: bool = False) -> AsyncIterator[Frame]:
        """Decoded frames in order, each with its audio.

        ``realtime``: one frame every 1/fps on the session's clock.  A frame is due
        at its audio's place on the clock plus the algorithmic latency and a compute
        allowance; if none is ready the previous image is repeated (with silence),
        and frames later than ``max_late_ms`` are skipped, so latency stays bounded.
        """
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if not realtime:
            while True:
                batch = self.take_frames()
                for f in batch:
                    yield f
                if not batch:
                    if self.done:
                        return
                    self._wake.clear()
                    if not self._out and not self.done:
                        await self._wake.wait()
        cfg = self.stream_cfg
        period = 1.0 / self.fps
        delay = (self.model.algorithmic_latency_ms(self.options) + cfg.jitter_ms + cfg.output_delay_ms) / 1e3
        anchor = self.started + delay
        tick = self.clock()
        while not self.done:
            now = self.clock()
            if tick > now:
                await asyncio.sleep(tick - now)
            frame = self._pace(anchor, tick, period)
            if frame is not None:
                yield frame
            tick += period

    def _pace(self, anchor: float, tick: float, period: float) -> Frame | None:
        late_limit = self.stream_cfg.max_late_ms / 1e3
        with self._lock:
            while len(self._out) > 1 and tick - (anchor + self._out[0].index * period) > late_limit:
                self._out.popleft()
                self.stats.dropped_late += 1
            head = self._out[0] if self._out else None
            if head is not None and anchor + head.index * period <= tick + period / 2:
                return self._stamp(self._out.popleft())
        if self._last is None or self.done:
            return None
        self.stats.duplicated += 1
        return self._stamp(dataclasses.replace(self._last, audio=np.zeros_like(self._last.audio), duplicate=True))
