"""DDIM over the cosine schedule, as the published LMDM samples (x0-prediction, eta 1, no clipping).

The schedule is built in float64 and kept as float32; every coefficient is then computed from
the float32 ``alphas_cumprod`` in float32, which is what the official sampler does.
"""
from __future__ import annotations

import itertools
import math

import torch

from .config import DEFAULT_SAMPLER, SamplerOptions


def cosine_betas(steps: int, s: float = 8e-3) -> torch.Tensor:
    """Betas of the cosine schedule (float64): 1 - f(t+1)/f(t), f(t) = cos^2(((t/T)+s)/(1+s) * pi/2)."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps + s
    f = torch.cos(t / (1 + s) * math.pi / 2).pow(2)
    f = f / f[0]
    return (1 - f[1:] / f[:-1]).clamp(0, 0.999)


class DDIMScheduler:
    """Time pairs, per-step coefficients and the update rule for a fixed number of steps.

    The model predicts the clean sample; the noise is derived from it.  Step noises are not drawn
    here: the caller passes them (the official sampler draws the S-1 of them once and reuses them
    for every window).
    """

    def __init__(self, options: SamplerOptions = DEFAULT_SAMPLER):
        self.options = options
        betas = cosine_betas(options.train_steps, options.cosine_s).to(torch.float32)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.time_pairs = self._time_pairs(options.steps, options.train_steps)
        self._coeffs = [self._step_coeffs(t, t_next) for t, t_next in self.time_pairs if t_next >= 0]

    @staticmethod
    def _time_pairs(steps: int, train_steps: int) -> list[tuple[int, int]]:
        # float32 linspace truncated to int: S=50 gives (999, 979), ..., (19, -1)
        times = torch.linspace(-1, train_steps - 1, steps=steps + 1).int().tolist()[::-1]
        return list(itertools.pairwise(times))

    def _step_coeffs(self, t: int, t_next: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, a_next = self.alphas_cumprod[t], self.alphas_cumprod[t_next]
        sigma = self.options.eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
        c = (1 - a_next - sigma ** 2).sqrt()
        return a_next.sqrt(), c, sigma

    @property
    def num_noises(self) -> int:
        """Step noises one window needs (every step but the last)."""
        return len(self._coeffs)

    def timestep(self, k: int, batch: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.full((batch,), self.time_pairs[k][0], dtype=torch.long, device=device)

    def noise_from_start(self, x: torch.Tensor, x_start: torch.Tensor, k: int) -> torch.Tensor:
        """The noise implied by predicting ``x_start`` from ``x`` at step k."""
        a = self.alphas_cumprod[self.time_pairs[k][0]]
        return torch.sqrt(1.0 / (1.0 - a)) * x - x_start / torch.sqrt(1.0 / a - 1)

    def step(self, x: torch.Tensor, x_start: torch.Tensor, k: int, noise: torch.Tensor | None) -> torch.Tensor:
        """x at step k -> x at step k+1 (the last step returns ``x_start``)."""
        if self.time_pairs[k][1] < 0:
            return x_start
        pred_noise = self.noise_from_start(x, x_start, k)
        a_next_sqrt, c, sigma = self._coeffs[k]
        return x_start * a_next_sqrt + c * pred_noise + sigma * noise
