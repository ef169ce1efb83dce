"""What a session carries from one window to the next (one visible dataclass)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from float_rt.sampler import WindowNoise


@dataclass
class WindowCarry:
    next_frame: int             # first frame not committed yet (frames before it are final)
    prev_x: torch.Tensor        # (1, P, dim_w) last P committed motion latents
    prev_wa: torch.Tensor       # (1, P, dim_a) their audio features, as they were sampled with
    emotion: torch.Tensor       # (1, 1, dim_e) emotion condition in use
    noise: WindowNoise          # start noise of each window (official fixed seed, or fresh draws)
    norm_pos: int = 0           # audio (16 kHz samples) folded into the input normalisation so far
    emotion_at: int = -1        # frame index of the last emotion prediction (-1: never)

    @classmethod
    def initial(cls, num_prev: int, dim_w: int, dim_a: int, emotion: torch.Tensor,
                noise: WindowNoise) -> WindowCarry:
        # Like the offline sampler, the first window's context is all zeros.
        return cls(0, emotion.new_zeros(1, num_prev, dim_w), emotion.new_zeros(1, num_prev, dim_a),
                   emotion, noise)
