"""FLOAT behind the live seam (``float_rt/live.py``): streamed wav2vec2 windows, the guided
flow-matching sampler per window with carried context, and the LIA decoder, batched over sessions.

One step of a session commits ``chunk_frames`` frames: its audio window is encoded with up to
``left_frames`` of committed context and ``lookahead_frames`` ahead, the emotion is re-predicted
every few frames unless fixed, then the 10 + 50 frame window is sampled from the carried context.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .config import EMOTIONS, FloatConfig
from .float_carry import WindowCarry
from .float_controls import control_motion, listening_emotion
from .float_family import FAMILY
from .live import AudioView, Committed
from .media import frames_to_uint8, prepare_reference
from .model import FloatModel
from .pipeline import Reference
from .sampler import (Conditions, Guidance, WindowNoise, emotion_condition, pad_frames, sample_window,
                      time_grid)
from .stream_audio import encode_windows

# SessionOptions fields that FLOAT reads (the rest of its fields are shared by every family).
OPTION_NAMES = frozenset({"emotion", "a_cfg_scale", "e_cfg_scale", "nfe", "chunk_frames", "lookahead_frames",
                          "left_frames", "noise", "seed"})


@dataclass
class FloatPlan:
    """One session's share of a step (gathered under its lock, computed without it)."""
    ref: Reference
    options: Any                        # the session's SessionOptions at plan time
    carry: WindowCarry
    t: int                              # first frame of the window
    commit: int                         # frames committed by this step
    known: int                          # frames from t with audio features (the rest replicate-padded)
    left: int = 0                       # context frames in the encoder window before t
    window: torch.Tensor | None = None  # normalised samples of the encoder window
    feats: torch.Tensor | None = None   # (known, dim_a)
    emotion_audio: torch.Tensor | None = None
    emotion_probs: torch.Tensor | None = None   # computed: the new prediction, folded in at commit
    we: torch.Tensor | None = None      # computed: (1, 1, dim_e) the emotion the window was sampled with
    x: torch.Tensor | None = None       # computed: (1, num_frames, dim_w) the sampled window
    wa: torch.Tensor | None = None      # computed: (1, num_frames, dim_a) its padded features


class FloatLive:
    name = "float"
    option_names = OPTION_NAMES
    supported_controls = FAMILY.supported_controls
    emotions = EMOTIONS

    def __init__(self, model: FloatModel, cfg: FloatConfig, stream_cfg, normalize_audio: bool = True,
                 device: torch.device | str = "cpu", decode_batch: int = 16):
        self.model, self.cfg, self.stream_cfg = model, cfg, stream_cfg
        self.device = torch.device(device)
        self.normalize_audio = normalize_audio
        self.decode_batch = decode_batch
        m = cfg.model
        self.fps, self.sampling_rate, self.samples_per_frame = m.fps, m.sampling_rate, m.samples_per_frame
        self.image_size = self.frame_size = m.input_size

    # ------------------------------------------------------------------ sessions
    def option_defaults(self, stream_cfg) -> dict:
        sc, s, fps = stream_cfg, self.cfg.sampling, self.fps
        return dict(emotion=s.emotion, a_cfg_scale=s.a_cfg_scale, e_cfg_scale=s.e_cfg_scale, nfe=sc.nfe,
                    chunk_frames=sc.chunk_frames, lookahead_frames=sc.frames_of(sc.lookahead_ms, fps),
                    left_frames=sc.frames_of(sc.left_context_ms, fps), noise=sc.noise, seed=sc.seed)

    def algorithmic_latency_ms(self, options) -> float:
        return (options.chunk_frames + options.lookahead_frames) * 1000.0 / self.fps

    def prepare(self, image: np.ndarray, crop: bool = True) -> torch.Tensor:
        return prepare_reference(image, self.image_size, crop=crop)

    def crop_box(self, image: np.ndarray):
        from .media import official_crop_box
        return official_crop_box(image, self.image_size)

    @torch.no_grad()
    def encode_reference(self, prepared: torch.Tensor) -> Reference:
        return Reference.encode(self.model, prepared)

    def _one_hot(self, label: str) -> torch.Tensor:
        return emotion_condition(label, None, self.cfg.model.dim_e, self.model.labels).to(self.device)

    def new_carry(self, reference: Reference, options, rewind_limit: int) -> WindowCarry:
        m, sc = self.cfg.model, self.stream_cfg
        noise = WindowNoise((1, m.num_frames, m.dim_w), options.seed, options.noise == "fixed", self.device)
        keep = max(options.left_frames, sc.emotion_window_ms * self.fps // 1000)
        carry = WindowCarry.initial(m.num_prev_frames, m.dim_w, m.dim_a, self._one_hot(options.emotion or "neutral"),
                                    noise, rewind_limit=rewind_limit + options.chunk_frames, keep_frames=int(keep),
                                    spf=self.samples_per_frame)
        carry.fixed_emotion = options.emotion is not None
        return carry

    def set_emotion(self, carry: WindowCarry, label: str | None, probs: torch.Tensor | None = None) -> None:
        if probs is not None:
            carry.emotion = probs.reshape(1, 1, -1).to(carry.emotion)
            carry.fixed_emotion = True
        elif label is not None:
            carry.emotion = self._one_hot(label).to(carry.emotion)
            carry.fixed_emotion = True
        else:
            carry.fixed_emotion = False
            carry.emotion_at = -1   # predict at the next step

    def emotion_of(self, carry: WindowCarry) -> dict[str, float]:
        return dict(zip(self.emotions, carry.emotion.flatten().tolist()))

    def frames_needed(self, carry: WindowCarry, options) -> int:
        return carry.next_frame + options.chunk_frames + options.lookahead_frames

    # ------------------------------------------------------------------ one step
    def plan(self, ref: Reference, carry: WindowCarry, options, audio: AudioView, features, ended: bool,
             total_frames: int | None) -> FloatPlan:
        spf = self.samples_per_frame
        t = carry.next_frame
        avail = features.shape[0] if features is not None else (
            (total_frames or 0) if ended else audio.end // spf)
        commit = options.chunk_frames if not ended else min(options.chunk_frames, total_frames - t)
        known = min(t + options.chunk_frames + options.lookahead_frames, avail) - t
        p = FloatPlan(ref, options, carry, t, commit, known)
        if features is not None:
            p.feats = features[t:t + known]
            return p
        a = max(t - options.left_frames, audio.start // spf + (audio.start % spf > 0), 0)
        p.left = t - a
        end = (t + known) * spf
        if self.normalize_audio:
            carry.norm_pos = max(carry.norm_pos, audio.start)   # input skipped by a backlog is never read
            carry.norm.update(audio.read(carry.norm_pos, end))
            carry.norm_pos = max(carry.norm_pos, end)
        raw = audio.read(a * spf, end)
        p.window = torch.from_numpy(carry.norm.apply(raw) if self.normalize_audio else raw)
        sc = self.stream_cfg
        if not carry.fixed_emotion and (carry.emotion_at < 0 or t - carry.emotion_at >= sc.emotion_every_frames):
            emo = audio.read(max(0, end - sc.emotion_window_ms * audio.rate // 1000), end)
            p.emotion_audio = torch.from_numpy(carry.norm.apply(emo) if self.normalize_audio else emo)
        return p

    @torch.no_grad()
    def compute(self, plans: list[FloatPlan], times) -> None:
        m, dev = self.cfg.model, self.device
        tick = time.perf_counter()
        todo = [p for p in plans if p.feats is None]
        if todo:
            out = encode_windows(self.model.audio, [p.window.to(dev) for p in todo], self.samples_per_frame)
            for p, f in zip(todo, out):
                p.feats = f[p.left:]
        times.audio += time.perf_counter() - tick

        tick = time.perf_counter()
        by_len: dict[int, list[FloatPlan]] = {}
        for p in plans:
            if p.emotion_audio is not None:
                by_len.setdefault(p.emotion_audio.numel(), []).append(p)
        for group in by_len.values():
            probs = self.model.emotion(torch.stack([p.emotion_audio for p in group]).to(dev))
            for p, pr in zip(group, probs):
                p.emotion_probs = pr.reshape(1, 1, -1)
        times.emotion += time.perf_counter() - tick

        tick = time.perf_counter()
        groups: dict[tuple[int, bool], list[FloatPlan]] = {}
        for p in plans:
            groups.setdefault((p.options.nfe, p.options.guided), []).append(p)
        for (nfe, guided), group in groups.items():
            wa = [pad_frames(p.feats[None], m.num_frames) for p in group]
            for p in group:
                p.we = self._window_emotion(p)
            c = Conditions(torch.cat(wa), torch.cat([p.ref.r_s for p in group]), torch.cat([p.we for p in group]),
                           torch.cat([p.carry.prev_x for p in group]), torch.cat([p.carry.prev_wa for p in group]))
            g = Guidance(audio=torch.tensor([p.options.a_cfg_scale for p in group], device=dev).view(-1, 1, 1),
                         emotion=torch.tensor([p.options.e_cfg_scale for p in group], device=dev).view(-1, 1, 1),
                         enabled=guided)
            # Fixed noise is aligned to the frame clock: frame f always starts from row f mod 50,
            # as in the offline windows, whatever the chunk size.
            x0 = torch.cat([p.carry.noise.next().roll(-(p.t % m.num_frames), dims=1)
                            if p.carry.noise.fixed else p.carry.noise.next() for p in group])
            x = sample_window(self.model.fmt, x0, c, g, time_grid(nfe, dev))
            for i, p in enumerate(group):
                p.x, p.wa = x[i:i + 1], wa[i]
        times.sample += time.perf_counter() - tick

    def _window_emotion(self, p: FloatPlan) -> torch.Tensor:
        """The emotion this window is sampled with: a new prediction blends into the carried one."""
        k = p.carry
        if p.options.controls.attentive:     # listening: a mild emotion, whatever the speech
            return listening_emotion(self.model.labels, self.cfg.model.dim_e).to(k.emotion)
        if p.emotion_probs is None or k.fixed_emotion:
            return k.emotion
        if k.emotion_at < 0:
            return p.emotion_probs
        a = self.stream_cfg.emotion_smoothing
        return (1 - a) * k.emotion + a * p.emotion_probs

    def commit(self, carry: WindowCarry, p: FloatPlan) -> Committed | None:
        if p.emotion_probs is not None and not carry.fixed_emotion and not p.options.controls.attentive:
            carry.emotion, carry.emotion_at = p.we, p.t
        c = p.commit
        if c <= 0:
            return None
        carry.commit(p.x[:, :c], p.wa[:, :c])     # the carry keeps the model's own motion
        shown = control_motion(p.x[0, :c], p.ref.r_s, p.options.controls)
        return Committed(p.t, shown, p.feats[:c].cpu().numpy())

    @torch.no_grad()
    def render(self, items: list[tuple[Reference, Committed]]) -> list[np.ndarray]:
        """Decode the committed latents of several sessions in shared decoder batches."""
        if not items:
            return []
        items = [(ref, done.motion) for ref, done in items]
        latents = torch.cat([ref.s_r + mo for ref, mo in items])
        owners = torch.cat([torch.full((mo.shape[0],), i) for i, (_, mo) in enumerate(items)])
        dec = self.model.motion.decoder
        out = []
        bs = self.decode_batch
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

