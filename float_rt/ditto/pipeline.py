"""Ditto audio-to-motion, offline: HuBERT features + source -> (N, 265) motion and its reference d0."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .condition import SourceCondition, build_condition
from .config import WindowOptions
from .ddim import DDIMScheduler
from .lmdm import MotionDecoder
from .sampler import sample_window
from .windows import OfflineTrace, offline_motion, window_conditions


@dataclass
class MotionNoise:
    """The random tensors of one clip: step noises (S-1, L, 265), drawn once per sampler setup and
    reused by every window, and one start noise per window (W, L, 265)."""
    steps: torch.Tensor
    starts: torch.Tensor

    @classmethod
    def draw(cls, scheduler: DDIMScheduler, windows: int, seq_len: int, dim: int,
             generator: torch.Generator | None = None) -> MotionNoise:
        return cls(torch.randn((scheduler.num_noises, seq_len, dim), generator=generator),
                   torch.randn((windows, seq_len, dim), generator=generator))


@dataclass
class OfflineResult:
    motion: torch.Tensor   # (N, 265)
    d0: torch.Tensor       # (1, 265): frame 0, the reference of relative motion
    cond: torch.Tensor     # (N, 1103)
    trace: OfflineTrace


def clip_windows(features: torch.Tensor, source: SourceCondition, seq_len: int, opts: WindowOptions) -> torch.Tensor:
    """(W, L, 1103) condition windows of a clip."""
    return window_conditions(build_condition(features, source), seq_len, opts.valid(seq_len))


@torch.no_grad()
def offline_audio2motion(model: MotionDecoder, scheduler: DDIMScheduler, features: torch.Tensor,
                         source: SourceCondition, source_motion: torch.Tensor, opts: WindowOptions,
                         noise: MotionNoise) -> OfflineResult:
    seq_len = model.sizes.seq_len
    cond = build_condition(features, source)

    steps = noise.steps.to(cond.device)

    def sample(w: int, cond_frame: torch.Tensor, window_cond: torch.Tensor) -> torch.Tensor:
        x_T = noise.starts[w][None].to(cond.device)
        return sample_window(model, scheduler, cond_frame[None], window_cond[None], x_T, steps)[0]

    trace = OfflineTrace()
    motion = offline_motion(cond, source_motion, opts, seq_len, sample, trace)
    return OfflineResult(motion, motion[0:1].clone(), cond, trace)
