"""Windowed Euler sampler with classifier-free guidance (pure tensor code).

Semantics of the official inference: the time grid is ``linspace(0, 1, nfe)``
(nfe - 1 evaluations), each window starts from noise, the previous window's last
``num_prev_frames`` latents and audio features are carried as context, and the
last window's audio features are replicate-padded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from .config import ModelConfig, SamplingConfig
from .fmt import FlowMatchingTransformer


@dataclass
class Conditions:
    """Per-window conditions of B streams (sessions)."""
    wa: torch.Tensor        # (B, F, dim_a) audio features of the frames being sampled
    wr: torch.Tensor        # (B, dim_w) reference motion
    we: torch.Tensor        # (B, 1, dim_e) emotion (probabilities or one-hot)
    prev_x: torch.Tensor    # (B, P, dim_w) carried latents
    prev_wa: torch.Tensor   # (B, P, dim_a) carried audio features


@dataclass
class Guidance:
    audio: float | torch.Tensor = 2.0      # scalar or (B, 1, 1)
    emotion: float | torch.Tensor = 1.0
    enabled: bool = True

    @classmethod
    def from_config(cls, s: SamplingConfig) -> "Guidance":
        return cls(audio=s.a_cfg_scale, emotion=s.e_cfg_scale, enabled=s.guided)


def time_grid(nfe: int, device=None) -> torch.Tensor:
    if nfe < 2:
        raise ValueError(f"nfe must be >= 2 (grid points), got {nfe}")
    return torch.linspace(0, 1, nfe, device=device)


def guided_velocity(fmt: FlowMatchingTransformer, t: torch.Tensor, x: torch.Tensor,
                    c: Conditions, g: Guidance) -> torch.Tensor:
    """Velocity of the whole window (context + current frames)."""
    if not g.enabled:
        return fmt(t, x, c.wa, c.wr, c.we, c.prev_x, c.prev_wa)
    null_wa, null_we = torch.zeros_like(c.wa), torch.zeros_like(c.we)
    # One batch of 3B: unconditional, all conditions, audio only.
    out = fmt(t, x.repeat(3, 1, 1), torch.cat([null_wa, c.wa, c.wa]), c.wr.repeat(3, 1),
              torch.cat([null_we, c.we, null_we]), c.prev_x.repeat(3, 1, 1), c.prev_wa.repeat(3, 1, 1))
    uncond, cond, audio_only = out.chunk(3)
    return uncond + g.audio * (audio_only - uncond) + g.emotion * (cond - audio_only)


def sample_window(fmt: FlowMatchingTransformer, x0: torch.Tensor, c: Conditions, g: Guidance,
                  grid: torch.Tensor) -> torch.Tensor:
    """Integrate one window from noise x0 (B, F, dim_w) along ``grid`` with Euler steps."""
    x = x0
    p = c.prev_x.shape[1]
    for i in range(grid.numel() - 1):
        t0, t1 = grid[i], grid[i + 1]
        v = guided_velocity(fmt, t0.reshape(1), x, c, g)[:, p:]
        x = x + (t1 - t0) * v
    return x


class WindowNoise:
    """Start noise per window: the same seeded draw every window (official) or fresh draws."""

    def __init__(self, shape: tuple[int, ...], seed: int, fixed: bool = True, device="cpu"):
        self.shape, self.seed, self.fixed = shape, seed, fixed
        self.device = torch.device(device)
        self._gen = torch.Generator(self.device.type).manual_seed(seed)

    def next(self) -> torch.Tensor:
        if self.fixed:
            self._gen.manual_seed(self.seed)
        return torch.randn(self.shape, generator=self._gen, device=self.device)


def pad_frames(x: torch.Tensor, length: int) -> torch.Tensor:
    """Replicate-pad (B, n, D) along time to ``length`` frames."""
    if x.shape[1] >= length:
        return x[:, :length]
    return torch.cat([x, x[:, -1:].expand(-1, length - x.shape[1], -1)], dim=1)


@torch.no_grad()
def sample_motion(fmt: FlowMatchingTransformer, wa: torch.Tensor, wr: torch.Tensor, we: torch.Tensor,
                  cfg: ModelConfig, sampling: SamplingConfig, noise: WindowNoise | None = None,
                  progress: Callable[[Iterable], Iterable] | None = None) -> torch.Tensor:
    """Offline sampling of motion latents (B, T, dim_w) for audio features wa (B, T, dim_a)."""
    b, total, _ = wa.shape
    n, p = cfg.num_frames, cfg.num_prev_frames
    noise = noise or WindowNoise((b, n, cfg.dim_w), sampling.seed, sampling.fix_noise_seed, wa.device)
    grid = time_grid(sampling.nfe, wa.device)
    guidance = Guidance.from_config(sampling)
    prev_x = wa.new_zeros(b, p, cfg.dim_w)
    prev_wa = wa.new_zeros(b, p, wa.shape[-1])
    windows = range(math.ceil(total / n))
    out = []
    for k in (progress(windows) if progress else windows):
        wa_k = pad_frames(wa[:, k * n:(k + 1) * n], n)
        x = sample_window(fmt, noise.next(), Conditions(wa_k, wr, we, prev_x, prev_wa), guidance, grid)
        out.append(x)
        prev_x, prev_wa = x[:, -p:], wa_k[:, -p:]
    return torch.cat(out, dim=1)[:, :total]


def emotion_condition(label: str | None, probs: torch.Tensor | None, dim_e: int, labels: tuple[str, ...]) -> torch.Tensor:
    """(B, 1, dim_e) emotion condition: one-hot of ``label`` or predicted probabilities."""
    if label is None:
        if probs is None:
            raise ValueError("no emotion label and no predicted emotion")
        return probs[:, None]
    idx = labels.index(label.lower())
    return F.one_hot(torch.tensor([idx]), dim_e).float()[:, None]
