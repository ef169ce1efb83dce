"""One engine, many sessions: the models live once on one device, work is batched per step.

Each `step()` takes every session that has enough audio (or has ended), encodes
their audio windows (equal lengths batched), predicts emotions where asked, runs
one guided sampler call per (nfe, guided) group and one decoder call over all
committed frames, then hands each session its frames.  The batch dimension keeps
sessions apart: no layer mixes samples of a batch.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from float_rt.backends import BackendConfig
from float_rt.checkpoint import AUDIO_DIR, feature_extractor
from float_rt.config import FloatConfig, build_dataclass, load_config
from float_rt.cpu import flush_denormal
from float_rt.errors import FloatRTError
from float_rt.media import frames_to_uint8
from float_rt.model import FloatModel
from float_rt.pipeline import Reference, load_with_backends, resolve_device
from float_rt.resources import config_path, resolve_checkpoints
from float_rt.sampler import Conditions, Guidance, emotion_condition, pad_frames, sample_window, time_grid

from .config import StreamConfig, load_stream_config
from .features import encode_windows
from .session import Frame, Session, SessionOptions

log = logging.getLogger(__name__)


@dataclass
class _Plan:
    """One session's share of a step (gathered under its lock, computed without it)."""
    s: Session
    ref: Reference                      # taken under the lock: close() may drop the session's copy
    epoch: int
    t: int                              # first frame of the window
    commit: int                         # frames committed by this step
    known: int                          # frames from t with audio features (the rest replicate-padded)
    left: int = 0                       # context frames in the encoder window before t
    window: torch.Tensor | None = None  # normalised samples of the encoder window
    feats: torch.Tensor | None = None   # (known, dim_a)
    emotion_audio: torch.Tensor | None = None
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
    def __init__(self, model: FloatModel, cfg: FloatConfig, stream_cfg: StreamConfig,
                 normalize_audio: bool = True, device: torch.device | str = "cpu", clock=time.monotonic,
                 feature_extractor=None):
        self.model, self.cfg, self.stream_cfg = model, cfg, stream_cfg
        self.device = torch.device(device)
        self.normalize_audio = normalize_audio
        self.feature_extractor = feature_extractor   # the checkpoint's wav2vec2 preprocessor, if loaded
        self.clock = clock
        self.last_times = StepTimes()
        self.history: collections.deque[StepTimes] = collections.deque(maxlen=10000)
        self._sessions: list[Session] = []
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_checkpoints(cls, ckpt_dir: str | Path, cfg: FloatConfig, stream_cfg: StreamConfig,
                         device: str | None = None) -> Engine:
        dev = resolve_device(device)
        model = load_with_backends(cfg, ckpt_dir, dev)
        fx = feature_extractor(Path(ckpt_dir) / AUDIO_DIR)
        return cls(model, cfg, stream_cfg, bool(getattr(fx, "do_normalize", True)), dev, feature_extractor=fx)

    @classmethod
    def load(cls, checkpoints: str | Path | None = None, config: str | Path = "float-512",
             stream_config: str | Path = "stream", device: str | None = None) -> Engine:
        """An engine from config names or paths and a checkpoint folder (None: the downloaded one)."""
        try:
            cfg = load_config(config_path(config))
            stream_cfg = load_stream_config(config_path(stream_config))
        except (OSError, ValueError) as exc:
            raise FloatRTError(str(exc)) from exc
        return cls.from_checkpoints(resolve_checkpoints(checkpoints), cfg, stream_cfg, device)

    # ------------------------------------------------------------------ sessions
    def default_options(self, **overrides) -> SessionOptions:
        sc, s, fps = self.stream_cfg, self.cfg.sampling, self.cfg.model.fps
        base = dict(emotion=s.emotion, a_cfg_scale=s.a_cfg_scale, e_cfg_scale=s.e_cfg_scale,
                    nfe=sc.nfe, chunk_frames=sc.chunk_frames,
                    lookahead_frames=sc.frames_of(sc.lookahead_ms, fps),
                    left_frames=sc.frames_of(sc.left_context_ms, fps), noise=sc.noise, seed=sc.seed)
        return build_dataclass(SessionOptions, base, "session", **overrides).validate()

    def one_hot(self, label: str) -> torch.Tensor:
        return emotion_condition(label, None, self.cfg.model.dim_e, self.model.labels).to(self.device)

    @torch.no_grad()
    def open_session(self, image: torch.Tensor, options: SessionOptions | None = None,
                     live: bool = False) -> Session:
        """Start a session for a prepared reference image (1, 3, S, S) in [-1, 1].

        ``live``: the session runs on the wall clock (silence is filled in when no audio
        comes, input is skipped when compute falls behind); otherwise it waits for audio.
        """
        options = (options or self.default_options()).validate()
        ref = Reference.encode(self.model, image)
        emotion = self.one_hot(options.emotion or "neutral")
        session = Session(self.cfg.model, self.stream_cfg, ref, options, live, emotion, wake=self.notify,
                          release=self.remove, clock=self.clock)
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
        if self.device.type == "cpu" and BackendConfig.from_dict(self.cfg.backends).flush_denormal:
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
        o, spf = s.options, s.spf
        with s._lock:
            if s.closed or s.finished:
                return None
            t = s.carry.next_frame
            avail = s.available_frames()
            commit = o.chunk_frames if not s.ended else min(o.chunk_frames, s.total_frames - t)
            known = min(t + o.chunk_frames + o.lookahead_frames, avail) - t
            plan = _Plan(s, s.ref, s.epoch, t, commit, known)
            if s.features is not None:
                plan.feats = s.features[t:t + known]
            else:
                a = max(t - o.left_frames, s.audio.start // spf + (s.audio.start % spf > 0), 0)
                plan.left = t - a
                end = (t + known) * spf
                if self.normalize_audio:
                    s.norm.update(s.audio.read(s.carry.norm_pos, end))
                    s.carry.norm_pos = max(s.carry.norm_pos, end)
                raw = s.audio.read(a * spf, end)
                plan.window = torch.from_numpy(s.norm.apply(raw) if self.normalize_audio else raw)
                cfg = self.stream_cfg
                every = cfg.emotion_every_frames
                if not s.fixed_emotion and (s.carry.emotion_at < 0 or t - s.carry.emotion_at >= every):
                    n = cfg.emotion_window_ms * s.audio.rate // 1000
                    emo = s.audio.read(max(0, end - n), end)
                    plan.emotion_audio = torch.from_numpy(s.norm.apply(emo) if self.normalize_audio else emo)
            for j in range(t, t + commit):
                plan.audio.append(s.audio.read_out(j * s.spo, (j + 1) * s.spo).copy())
                plan.arrived.append(s.arrival_of((j + 1) * spf))
        return plan

    @torch.no_grad()
    def _compute(self, plans: list[_Plan]) -> None:
        m, dev, times = self.cfg.model, self.device, StepTimes(sessions=len(plans))
        tick = time.perf_counter()
        todo = [p for p in plans if p.feats is None]
        if todo:
            out = encode_windows(self.model.audio, [p.window.to(dev) for p in todo], self.cfg.model.samples_per_frame)
            for p, f in zip(todo, out):
                p.feats = f[p.left:]
        times.audio = time.perf_counter() - tick

        tick = time.perf_counter()
        emo = [p for p in plans if p.emotion_audio is not None]
        by_len: dict[int, list[_Plan]] = {}
        for p in emo:
            by_len.setdefault(p.emotion_audio.numel(), []).append(p)
        for group in by_len.values():
            probs = self.model.emotion(torch.stack([p.emotion_audio for p in group]).to(dev))
            for p, pr in zip(group, probs):
                self._update_emotion(p, pr)
        times.emotion = time.perf_counter() - tick

        tick = time.perf_counter()
        groups: dict[tuple[int, bool], list[_Plan]] = {}
        for p in plans:
            groups.setdefault((p.s.options.nfe, p.s.options.guided), []).append(p)
        motions: dict[int, torch.Tensor] = {}
        for (nfe, guided), group in groups.items():
            wa = [pad_frames(p.feats[None], m.num_frames) for p in group]
            c = Conditions(torch.cat(wa), torch.cat([p.ref.r_s for p in group]),
                           torch.cat([p.s.carry.emotion for p in group]),
                           torch.cat([p.s.carry.prev_x for p in group]),
                           torch.cat([p.s.carry.prev_wa for p in group]))
            g = Guidance(audio=torch.tensor([p.s.options.a_cfg_scale for p in group], device=dev).view(-1, 1, 1),
                         emotion=torch.tensor([p.s.options.e_cfg_scale for p in group], device=dev).view(-1, 1, 1),
                         enabled=guided)
            # Fixed noise is aligned to the frame clock: frame f always starts from row f mod 50,
            # as in the offline windows, whatever the chunk size.
            x0 = torch.cat([p.s.carry.noise.next().roll(-(p.t % m.num_frames), dims=1)
                            if p.s.carry.noise.fixed else p.s.carry.noise.next() for p in group])
            x = sample_window(self.model.fmt, x0, c, g, time_grid(nfe, dev))
            for i, p in enumerate(group):
                motions[id(p)] = x[i:i + 1]
                self._commit(p, x[i:i + 1], wa[i])
        times.sample = time.perf_counter() - tick

        tick = time.perf_counter()
        live = [p for p in plans if p.commit > 0]
        shown = [p for p in live if p.s.options.render]
        images = dict(zip(map(id, shown), self._decode([(p.ref, motions[id(p)][0, :p.commit]) for p in shown])))
        times.decode = time.perf_counter() - tick
        ready = self.clock()
        for p in live:
            motion = motions[id(p)][0, :p.commit].cpu().numpy()
            feats = p.feats[:p.commit].cpu().numpy()
            imgs = images.get(id(p))
            frames = [Frame(0, p.t + i, None if imgs is None else imgs[i], p.audio[i], motion[i], feats[i],
                            p.arrived[i], ready) for i in range(p.commit)]
            p.s.deliver(frames, p.epoch)
        times.frames = sum(p.commit for p in live)
        self.last_times = times
        self.history.append(times)

    def _update_emotion(self, p: _Plan, probs: torch.Tensor) -> None:
        s = p.s
        with s._lock:
            if s.fixed_emotion:
                return
            probs = probs.reshape(1, 1, -1)
            a = self.stream_cfg.emotion_smoothing
            s.carry.emotion = probs if s.carry.emotion_at < 0 else (1 - a) * s.carry.emotion + a * probs
            s.carry.emotion_at = p.t

    def _commit(self, p: _Plan, x: torch.Tensor, wa: torch.Tensor) -> None:
        s, c = p.s, p.commit
        with s._lock:
            if s.closed or s.epoch != p.epoch or s.carry.next_frame != p.t:
                p.commit = 0
                return
            k = s.carry
            k.commit(x[:, :c], wa[:, :c])
            s.in_flight += c          # delivered after decoding: until then the session is not done
            keep = max(s.options.left_frames, self.stream_cfg.emotion_window_ms * s.fps // 1000)
            # Output speech is kept back to the rewind floor: a barge-in may take those frames back.
            s.audio.trim(min((k.next_frame - int(keep)) * s.spf, k.norm_pos), max(0, k.rewind_floor) * s.spo)

    def _decode(self, items: list[tuple[Reference, torch.Tensor]]) -> list[np.ndarray]:
        """Render the committed latents of several sessions in shared decoder batches."""
        if not items:
            return []
        latents = torch.cat([ref.s_r + mo for ref, mo in items])
        owners = torch.cat([torch.full((mo.shape[0],), i) for i, (_, mo) in enumerate(items)])
        dec = self.model.motion.decoder
        out = []
        bs = self.stream_cfg.decode_batch
        for a in range(0, latents.shape[0], bs):
            idx = owners[a:a + bs]
            if len(items) == 1:
                feats = items[0][0].feats
            else:
                feats = [torch.cat([items[i][0].feats[level] for i in idx.tolist()])
                         for level in range(len(items[0][0].feats))]
            out.append(frames_to_uint8(dec(latents[a:a + bs], feats)))
        images = np.concatenate(out)
        counts = [mo.shape[0] for _, mo in items]
        return np.split(images, np.cumsum(counts)[:-1])

