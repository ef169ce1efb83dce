"""Ditto behind the live seam (``float_rt/live.py``): the official online mode, batched over sessions.

Audio goes to HuBERT in the official online chunks: a chunk of 6480 samples every 5 frames, 1920
samples (3 frames) of left context, so the chunk whose rows start at frame r reads the input
samples [640 r - 1920, 640 r + 4560) (before the stream, silence).  Its 5 feature rows feed the
window stream of ``live.py`` (``LiveState``): with the online settings each window advances 10
frames and the rows it emits lag its end by one window.  A step of a session computes the chunks
the next emitting window needs and runs the windows up to it; the windows of every session in a
step are sampled in one batched LMDM call per step count.

Barge-in returns to the state kept at the last window boundary at or before the first unshown
frame, keeps the feature rows before that frame (the speech that was shown) and recomputes the
rest from the new input; frames before it are not handed out again.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..live import AudioView, Committed
from .condition import SourceCondition, emotion_vector
from .config import EMOTION_LABELS, DittoConfig
from .controls import control_rows, listening_emotion, with_emotion
from .family import FAMILY
from .ddim import DDIMScheduler
from .generate import (DittoModel, DittoReference, crop_tensor, encode_source, eye_crop, face_crop, frame_size,
                       to_uint8)
from .hubert import DITTO_CHUNK, HOP, chunk_features
from .live import LiveState, add_rows, apply_window, live_options, next_window, rows_short, silence_features, window_condition
from .sampler import sample_window

OPTION_NAMES = frozenset({"emotion", "seed", "steps"})
CHUNK_ROWS = DITTO_CHUNK.valid                                       # 5 feature rows per chunk
CHUNK_BEFORE = DITTO_CHUNK.left * HOP                                # 1920 samples of left context
CHUNK_AHEAD = DITTO_CHUNK.samples - CHUNK_BEFORE                     # 4560 samples from the chunk's first row
AHEAD_FRAMES = math.ceil(CHUNK_AHEAD / HOP)                          # 8: frames of audio a chunk reads from its first row


@dataclass(frozen=True)
class DittoPhoto:
    """A prepared photo: the extractors' 256-px face crop, and the 512-px square its eye measures are
    taken on (None without the eye models)."""
    face: torch.Tensor              # (1, 3, 256, 256) in [0, 1]
    eyes: np.ndarray | None         # (512, 512, 3) uint8 RGB


@dataclass(frozen=True)
class _Mark:
    """A window boundary a barge-in can return to."""
    next_frame: int
    audio_row: int
    stream: LiveState
    windows_run: int


@dataclass
class DittoStreamCarry:
    """What a live Ditto session carries from one window to the next."""
    stream: LiveState               # the window stream (features buffered, fused rows, d0)
    source: SourceCondition         # the 79 non-audio condition values (the emotion may change)
    step_noises: torch.Tensor       # (S-1, L, 265): drawn once per session, as the official setup does
    generator: torch.Generator      # each window's start noise x_T
    starts: torch.Tensor | None = None   # injected start noises, one per window (reference cases)
    windows_run: int = 0
    next_frame: int = 0             # first frame not handed out yet
    audio_row: int = 0              # frame where the next HuBERT chunk's rows start
    drop_before: int = 0            # after a barge-in: frames before this one were shown already
    rewind_limit: int = 0
    marks: deque = field(default_factory=deque)

    @property
    def rewind_floor(self) -> int:
        return self.marks[0].next_frame if self.marks else self.next_frame

    def keep_from(self) -> int:
        oldest = min([self.audio_row] + [m.next_frame for m in self.marks])
        return max(0, oldest * HOP - CHUNK_BEFORE)

    def skip(self, n: int) -> None:
        """Input of frames next_frame .. next_frame + n is never read; the window stream goes on
        with the audio after it (its buffered rows are handed out first)."""
        self.next_frame += n
        self.audio_row += n
        self.drop_before = max(self.drop_before, self.next_frame)
        self.marks.clear()

    def rewind(self, frame: int) -> int:
        usable = [m for m in self.marks if m.next_frame <= frame]
        if not usable:
            return self.next_frame
        m = usable[-1]
        keep = min(m.audio_row, frame)
        self.stream = _drop_last_rows(m.stream, m.audio_row - keep)
        self.next_frame, self.audio_row, self.windows_run = m.next_frame, keep, m.windows_run
        self.drop_before = max(frame, m.next_frame)
        while self.marks and self.marks[-1].next_frame > m.next_frame:
            self.marks.pop()
        return keep

    def mark(self) -> None:
        self.marks.append(_Mark(self.next_frame, self.audio_row, self.stream, self.windows_run))
        while self.marks and self.marks[0].next_frame < self.next_frame - self.rewind_limit:
            self.marks.popleft()


def _drop_last_rows(s: LiveState, k: int) -> LiveState:
    """The stream without its last ``k`` buffered feature rows (input that a barge-in discarded)."""
    if k <= 0:
        return s
    rows = torch.cat([s.features, s.pending])
    rows = rows[:max(0, rows.shape[0] - k)]
    nf = min(s.features.shape[0], rows.shape[0])
    return replace(s, features=rows[:nf], pending=rows[nf:])


@dataclass
class DittoPlan:
    ref: DittoReference
    carry: DittoStreamCarry
    steps: int
    stream: LiveState               # the state the step starts from (the carry's is not changed)
    source: SourceCondition
    chunks: list[np.ndarray] = field(default_factory=list)   # HuBERT inputs, in order
    rows: torch.Tensor | None = None      # precomputed feature rows instead of chunks
    new_rows: int = 0               # feature rows this step adds
    finish: bool = False            # the input has ended and every chunk is in this step
    total: int | None = None        # the session's frame count once its input has ended
    options: Any = None             # the session's SessionOptions at plan time (its controls)
    windows_run: int = 0
    emitted: list[torch.Tensor] = field(default_factory=list)


class DittoLive:
    name = "ditto"
    option_names = OPTION_NAMES
    supported_controls = FAMILY.supported_controls
    emotions = EMOTION_LABELS

    def __init__(self, model: DittoModel, cfg: DittoConfig):
        self.model, self.cfg = model, cfg
        self.device = model.device
        self.fps, self.sampling_rate, self.samples_per_frame = int(cfg.fps), cfg.sampling_rate, HOP
        self.image_size, self.frame_size = cfg.source.crop_size, frame_size(cfg)
        self.windows = live_options(cfg.live.windows(cfg.windows))
        self.seq_len = cfg.lmdm.seq_len
        self.valid = self.windows.valid(self.seq_len)
        # The features of ``overlap`` frames of silence start every session's stream: computed once.
        self._silence = torch.from_numpy(silence_features(self.windows.overlap, model.hubert))
        self._schedulers: dict[int, DDIMScheduler] = {}

    # ------------------------------------------------------------------ sessions
    def option_defaults(self, stream_cfg) -> dict:
        return dict(emotion=self.cfg.emotion, seed=self.cfg.seed, steps=self.cfg.live.steps)

    def algorithmic_latency_ms(self, options) -> float:
        """The first frame of a window: its rows leave with the next window, which needs feature rows up
        to 2 * valid past it, the last of them from a chunk that reads 8 frames of audio from its
        first row (23 frames, 920 ms, with the online settings)."""
        return (2 * self.valid - CHUNK_ROWS + AHEAD_FRAMES) * 1000.0 / self.fps

    def prepare(self, image: np.ndarray, crop: bool = True) -> DittoPhoto:
        square = face_crop(self.cfg, image) if crop else None
        if square is not None:
            face = crop_tensor(square.cut(image))
        else:
            import cv2
            side = self.cfg.source.crop_size
            face = crop_tensor(cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=cv2.INTER_AREA))
        return DittoPhoto(face, eye_crop(image, square) if self.model.eyes is not None else None)

    def crop_box(self, image: np.ndarray):
        return face_crop(self.cfg, image)

    def encode_reference(self, prepared: DittoPhoto) -> DittoReference:
        return encode_source(self.model, prepared.face, EMOTION_LABELS.index(self.cfg.emotion),
                             eye_image=prepared.eyes)

    def scheduler(self, steps: int) -> DDIMScheduler:
        if steps not in self._schedulers:
            self._schedulers[steps] = DDIMScheduler(replace(self.cfg.sampler, steps=steps))
        return self._schedulers[steps]

    def new_carry(self, reference: DittoReference, options, rewind_limit: int,
                  starts: torch.Tensor | None = None, step_noises: torch.Tensor | None = None) -> DittoStreamCarry:
        gen = torch.Generator().manual_seed(options.seed)
        L, dim = self.seq_len, self.cfg.lmdm.motion_dim
        if step_noises is None:
            step_noises = torch.randn((self.scheduler(options.steps).num_noises, L, dim), generator=gen)
        carry = DittoStreamCarry(LiveState.start(reference.motion.cpu(), self._silence), reference.condition,
                                 step_noises, gen, starts, rewind_limit=rewind_limit + self.valid)
        self.set_emotion(carry, options.emotion)
        carry.mark()
        return carry

    def set_emotion(self, carry: DittoStreamCarry, label: str | None, probs=None) -> None:
        if probs is not None:
            emotion = torch.as_tensor(probs, dtype=torch.float32).reshape(len(EMOTION_LABELS))
        else:   # Ditto has no emotion predictor: no label means the config's
            lower = [e.lower() for e in EMOTION_LABELS]
            emotion = emotion_vector(lower.index((label or self.cfg.emotion).lower()))
        carry.source = replace(carry.source, emotion=emotion)

    def emotion_of(self, carry: DittoStreamCarry) -> dict[str, float]:
        return dict(zip(EMOTION_LABELS, carry.source.emotion.tolist()))

    def frames_needed(self, carry: DittoStreamCarry, options) -> int:
        short = rows_short(carry.stream, self.windows, self.seq_len)
        if short <= 0:
            return 0
        last = carry.audio_row + CHUNK_ROWS * (math.ceil(short / CHUNK_ROWS) - 1)
        return last + AHEAD_FRAMES

    # ------------------------------------------------------------------ one step
    def plan(self, ref: DittoReference, carry: DittoStreamCarry, options, audio: AudioView, features,
             ended: bool, total_frames: int | None) -> DittoPlan:
        source = with_emotion(carry.source, listening_emotion()) if options.controls.attentive else carry.source
        p = DittoPlan(ref, carry, options.steps, carry.stream, source, windows_run=carry.windows_run,
                      total=total_frames, options=options)
        short = rows_short(carry.stream, self.windows, self.seq_len)
        want = max(0, math.ceil(short / CHUNK_ROWS))
        row = carry.audio_row
        if features is not None:          # rows fed directly (tests, parity with the offline features)
            p.rows = features[row:row + want * CHUNK_ROWS].to(torch.float32).cpu()
            p.new_rows = p.rows.shape[0]
            p.finish = row + p.new_rows >= features.shape[0]
            return p
        end = audio.input_end if ended and audio.input_end is not None else audio.end
        for _ in range(want):
            lo, hi = row * HOP - CHUNK_BEFORE, row * HOP + CHUNK_AHEAD
            if ended:
                if lo >= end:
                    break
            elif hi > audio.end:
                break
            chunk = audio.read(lo, hi)
            if hi > end:
                chunk[max(0, end - lo):] = 0.0    # the official stream pads its last chunk with zeros
            p.chunks.append(chunk)
            row += CHUNK_ROWS
        p.new_rows = row - carry.audio_row
        p.finish = ended and row * HOP - CHUNK_BEFORE >= end
        return p

    @torch.no_grad()
    def compute(self, plans: list[DittoPlan], times) -> None:
        tick = time.perf_counter()
        for p in plans:
            rows = p.rows if p.rows is not None else (
                torch.from_numpy(np.concatenate([chunk_features(self.model.hubert(c)) for c in p.chunks]))
                if p.chunks else torch.zeros((0, self._silence.shape[1])))
            p.stream = add_rows(p.stream, rows)
        times.audio += time.perf_counter() - tick

        tick = time.perf_counter()
        todo = list(plans)
        while todo:   # one window per session per round, sampled together
            ready = []
            for p in todo:
                if p.emitted and not p.finish:
                    continue      # one emitting window per step keeps steps short and evenly paced
                nxt = next_window(p.stream, self.windows, self.seq_len, p.finish)
                if nxt is not None:
                    ready.append((p, nxt))
            if not ready:
                break
            groups: dict[int, list] = {}
            for item in ready:
                groups.setdefault(item[0].steps, []).append(item)
            for steps, group in groups.items():
                self._sample(steps, group)
            todo = [p for p, _ in ready]
        times.sample += time.perf_counter() - tick

    def _sample(self, steps: int, group: list) -> None:
        dev, L, dim = self.device, self.seq_len, self.cfg.lmdm.motion_dim
        cond_frames, conds, starts = [], [], []
        for p, (state, feats, _) in group:
            k = p.carry
            if k.starts is not None:
                x_T = k.starts[p.windows_run]
            else:
                x_T = torch.randn((L, dim), generator=k.generator)
            cond_frames.append(state.carry.cond_frame)
            conds.append(window_condition(feats, p.source))
            starts.append(x_T)
        noises = torch.stack([p.carry.step_noises for p, _ in group], dim=1)
        windows = sample_window(self.model.lmdm, self.scheduler(steps), torch.stack(cond_frames).to(dev),
                                torch.stack(conds).to(dev), torch.stack(starts).to(dev), noises.to(dev)).cpu()
        for (p, (state, feats, step)), window in zip(group, windows):
            p.stream, rows = apply_window(state, window, step, self.windows, self.seq_len)
            p.windows_run += 1
            if rows.shape[0]:
                p.emitted.append(rows)

    def commit(self, carry: DittoStreamCarry, p: DittoPlan) -> Committed | None:
        carry.stream, carry.windows_run = p.stream, p.windows_run
        carry.audio_row += p.new_rows
        first = carry.next_frame
        if p.emitted:
            carry.next_frame += sum(r.shape[0] for r in p.emitted)
            carry.mark()
        if p.finish and p.total is not None and next_window(p.stream, self.windows, self.seq_len, True) is None:
            carry.next_frame = max(carry.next_frame, p.total)   # drained: the session is complete
        if not p.emitted:
            return None
        rows = torch.cat(p.emitted)
        cut = max(0, carry.drop_before - first)    # shown before a barge-in
        if cut >= rows.shape[0]:
            return None
        # Rows leave a window one window after their features came in: frames carry no feature rows.
        # The controls shape what is shown; the stream keeps the model's own motion.
        rows, d0 = rows[cut:], carry.stream.d0
        shown = control_rows(rows, d0[None], p.ref.info, p.options.controls, first + cut, self.fps,
                             p.options.seed)
        return Committed(first + cut, shown, None, context=d0)

    @torch.no_grad()
    def render(self, items: list[tuple[DittoReference, Committed]]) -> list[np.ndarray]:
        if not items:
            return []
        r, dev = self.model.renderer, self.device
        f_s, x_s, x_d = [], [], []
        for ref, done in items:
            rows = done.motion.to(dev)
            x_d.append(r.drive(ref.info, ref.x_s, rows, done.context[None].to(dev)))
            x_s.append(ref.x_s.expand(rows.shape[0], -1, -1))
            f_s.append(ref.f_s.expand(rows.shape[0], *ref.f_s.shape[1:]))
        f_s, x_s, x_d = torch.cat(f_s), torch.cat(x_s), torch.cat(x_d)
        out = []
        for a in range(0, x_d.shape[0], 8):
            out.append(to_uint8(r.render(f_s[a:a + 8], x_s[a:a + 8], x_d[a:a + 8])))
        images = np.concatenate(out)
        return np.split(images, np.cumsum([len(done.motion) for _, done in items])[:-1])
