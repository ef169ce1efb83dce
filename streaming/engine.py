"""One engine, many sessions: one model family's model lives once on one device, work is batched per step.

Each `step()` takes every session that has enough audio (or has ended), asks the family for each
one's next window (``plan``, under the session's lock), computes all of them in one batched call
(``compute``), commits each result to its session, and renders every committed frame in one call.
The family behind ``float_rt.live.LiveModel`` does the model work; the engine knows sessions,
their clocks and their locks.  The batch dimension keeps sessions apart: no layer mixes samples.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from float_rt.config import build_dataclass, load_config
from float_rt.cpu import flush_denormal
from float_rt.errors import FloatRTError
from float_rt.family import family_of, require
from float_rt.live import Committed, LiveModel
from float_rt.resources import config_path, resolve_checkpoints

from .config import StreamConfig, load_stream_config
from .options import fold_controls
from .session import Frame, Session, SessionOptions

log = logging.getLogger(__name__)


@dataclass
class _Plan:
    """One session's share of a step."""
    s: Session
    ref: Any                            # taken under the lock: close() may drop the session's copy
    epoch: int
    t: int                              # the session's next frame when planned
    work: Any                           # the family's plan
    done: Committed | None = None
    audio: list[np.ndarray] = field(default_factory=list)   # per committed frame
    arrived: list[float] = field(default_factory=list)


@dataclass
class StepTimes:
    """Seconds spent per stage in the last step (for benchmarks)."""
    audio: float = 0.0
    emotion: float = 0.0
    sample: float = 0.0
    decode: float = 0.0
    frames: int = 0
    sessions: int = 0

    @property
    def total(self) -> float:
        return self.audio + self.emotion + self.sample + self.decode


class Engine:
    def __init__(self, live: LiveModel, stream_cfg: StreamConfig, clock=time.monotonic):
        self.live, self.stream_cfg = live, stream_cfg
        self.cfg = getattr(live, "cfg", None)   # the family's model config
        self.model = getattr(live, "model", None)
        self.device = live.device
        self.feature_extractor = getattr(live, "feature_extractor", None)
        self.clock = clock
        self.last_times = StepTimes()
        self.history: collections.deque[StepTimes] = collections.deque(maxlen=10000)
        self._sessions: list[Session] = []
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_checkpoints(cls, ckpt_dir: str | Path, cfg: Any, stream_cfg: StreamConfig,
                         device: str | None = None) -> Engine:
        fam = require(family_of(cfg), "engine")
        return cls(fam.live_model(cfg, Path(ckpt_dir), stream_cfg, device), stream_cfg)

    @classmethod
    def load(cls, checkpoints: str | Path | None = None, config: str | Path = "float-512",
             stream_config: str | Path = "stream", device: str | None = None) -> Engine:
        """An engine from config names or paths and a checkpoint folder (None: the downloaded one)."""
        try:
            cfg = load_config(config_path(config))
            stream_cfg = load_stream_config(config_path(stream_config))
        except (OSError, ValueError) as exc:
            raise FloatRTError(str(exc)) from exc
        fam = family_of(cfg)
        folder = resolve_checkpoints(checkpoints, fam.default_checkpoints(), fam.no_checkpoints)
        return cls.from_checkpoints(folder, cfg, stream_cfg, device)

    # ------------------------------------------------------------------ what the doors show
    @property
    def name(self) -> str:
        """The model config's name (``float-512``, ``ditto``, ...)."""
        return getattr(self.cfg, "name", self.live.name)

    @property
    def family(self) -> str:
        return self.live.name

    @property
    def fps(self) -> int:
        return self.live.fps

    @property
    def sampling_rate(self) -> int:
        return self.live.sampling_rate

    @property
    def image_size(self) -> int:
        return self.live.image_size

    @property
    def frame_size(self) -> int:
        return self.live.frame_size

    @property
    def emotions(self) -> tuple[str, ...]:
        return self.live.emotions

    @property
    def option_names(self) -> frozenset[str]:
        """The session options this engine's family takes (its own and those every family has)."""
        return self.live.option_names | SessionOptions.COMMON

    @property
    def control_names(self) -> frozenset[str]:
        """The avatar controls (float_rt/controls.py) this engine's family can express."""
        return self.live.supported_controls

    def prepare(self, image: np.ndarray, crop: bool = True):
        """A photo (H, W, 3) uint8 RGB -> what ``open_session`` takes."""
        return self.live.prepare(image, crop)

    def paster(self, photo: np.ndarray, video_size: tuple[int, int] | None = None):
        """Frames of a session on ``photo`` put back into it (``float_rt.media.FramePaster``), at
        ``video_size`` (default the photo's, fitted into 1920x1080)."""
        from float_rt.media import FramePaster
        return FramePaster(photo, self.live.crop_box(photo), self.frame_size, video_size)

    # ------------------------------------------------------------------ sessions
    def default_options(self, **overrides) -> SessionOptions:
        """The family's defaults with ``overrides`` (options by name, controls by name or as
        ``controls=Controls(...)``); what the family does not take is refused."""
        overrides = fold_controls(overrides)
        unknown = sorted(k for k in overrides if k not in self.option_names and overrides[k] is not None)
        if unknown:
            raise FloatRTError(f"{', '.join(unknown)}: not an option of the {self.live.name} family "
                               f"(it takes: {', '.join(sorted(self.option_names))})")
        base = self.live.option_defaults(self.stream_cfg)
        return self._checked(build_dataclass(SessionOptions, base, "session", **overrides))

    def _checked(self, options: SessionOptions) -> SessionOptions:
        return options.validate(self.emotions, self.live.name, self.live.supported_controls)

    def open_session(self, image, options: SessionOptions | None = None, live: bool = False) -> Session:
        """Start a session for a prepared reference image (``prepare``'s output).

        ``live``: the session runs on the wall clock (silence is filled in when no audio
        comes, input is skipped when compute falls behind); otherwise it waits for audio.
        """
        options = self._checked(options or self.default_options())
        ref = self.live.encode_reference(image)
        session = Session(self.live, self.stream_cfg, ref, options, live, wake=self.notify, release=self.remove,
                          clock=self.clock)
        with self._lock:
            self._sessions.append(session)
        return session

    def remove(self, session: Session) -> None:
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)

    @property
    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions)

    def notify(self) -> None:
        self._wakeup.set()

    # ------------------------------------------------------------------ worker thread
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="float-rt-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        if getattr(self.device, "type", "cpu") == "cpu" and getattr(self.live, "flush_denormal", True):
            flush_denormal()    # per thread: the model's thread needs it too (float_rt/cpu.py)
        while not self._stop.is_set():
            if self.step() == 0:
                self._wakeup.wait(0.005)
                self._wakeup.clear()

    # ------------------------------------------------------------------ one step
    def step(self) -> int:
        """Advance every ready session by one window; returns how many advanced."""
        now = self.clock()
        sessions = self.sessions
        for s in sessions:
            s.keep_up(now)
        plans = [p for p in (self._plan(s) for s in sessions if s.ready()) if p is not None]
        if not plans:
            return 0
        try:
            self._compute(plans)
        except Exception as exc:
            log.exception("engine step failed; closing the %d session(s) in it", len(plans))
            for p in plans:
                p.s.error = f"internal error: {exc}"
                p.s.close()
        return len(plans)

    def _plan(self, s: Session) -> _Plan | None:
        with s._lock:
            if s.closed or s.finished:
                return None
            work = self.live.plan(s.ref, s.carry, s.options, s.audio, s.features, s.ended, s.total_frames)
            return _Plan(s, s.ref, s.epoch, s.carry.next_frame, work)

    def _compute(self, plans: list[_Plan]) -> None:
        times = StepTimes(sessions=len(plans))
        self.live.compute([p.work for p in plans], times)
        for p in plans:
            self._commit(p)
        tick = time.perf_counter()
        live = [p for p in plans if p.done is not None]
        shown = [p for p in live if p.s.options.render]
        images = dict(zip(map(id, shown), self.live.render([(p.ref, p.done) for p in shown])))
        times.decode = time.perf_counter() - tick
        ready = self.clock()
        for p in live:
            d, imgs = p.done, images.get(id(p))
            motion = d.motion.cpu().numpy() if hasattr(d.motion, "cpu") else np.asarray(d.motion)
            n = len(p.audio)
            frames = [Frame(0, d.first + i, None if imgs is None else imgs[i], p.audio[i], motion[i],
                            None if d.features is None else d.features[i], p.arrived[i], ready)
                      for i in range(n)]
            p.s.deliver(frames, p.epoch)
        times.frames = sum(len(p.audio) for p in live)
        self.last_times = times
        self.history.append(times)

    def _commit(self, p: _Plan) -> None:
        s = p.s
        with s._lock:
            if s.closed or s.epoch != p.epoch or s.carry.next_frame != p.t:
                return
            done = self.live.commit(s.carry, p.work)
            if done is None or len(done.motion) == 0:
                return
            n = len(done.motion)
            if s.total_frames is not None and s.ended:    # a family may pad past the end of the input
                n = max(0, min(n, s.total_frames - done.first))
                if n == 0:
                    return
                done = Committed(done.first, done.motion[:n], None if done.features is None else done.features[:n],
                                 done.context)
            p.done = done
            for j in range(done.first, done.first + n):
                p.audio.append(s.audio.read_out(j * s.spo, (j + 1) * s.spo).copy())
                p.arrived.append(s.arrival_of((j + 1) * s.spf))
            s.in_flight += n          # delivered after rendering: until then the session is not done
            # Output speech is kept back to the rewind floor: a barge-in may take those frames back.
            s.audio.trim(s.carry.keep_from(), max(0, s.carry.rewind_floor) * s.spo)
