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
    # Committed latents and features of frames [next_frame - L, next_frame), the context and up to
    # ``rewind_limit`` frames before it: a barge-in can take back frames that were never shown.
    past_x: torch.Tensor | None = None
    past_wa: torch.Tensor | None = None
    rewind_limit: int = 0

    @classmethod
    def initial(cls, num_prev: int, dim_w: int, dim_a: int, emotion: torch.Tensor,
                noise: WindowNoise, rewind_limit: int = 0) -> WindowCarry:
        # Like the offline sampler, the first window's context is all zeros (frames -P..-1).
        x, wa = emotion.new_zeros(1, num_prev, dim_w), emotion.new_zeros(1, num_prev, dim_a)
        return cls(0, x, wa, emotion, noise, past_x=x, past_wa=wa, rewind_limit=rewind_limit)

    def commit(self, x: torch.Tensor, wa: torch.Tensor) -> None:
        """Frames next_frame .. next_frame + n are final: latents (1, n, dim_w), features (1, n, dim_a)."""
        p = self.prev_x.shape[1]
        keep = p + self.rewind_limit
        self.past_x = torch.cat([self.past_x, x], dim=1)[:, -keep:]
        self.past_wa = torch.cat([self.past_wa, wa], dim=1)[:, -keep:]
        self.prev_x, self.prev_wa = self.past_x[:, -p:], self.past_wa[:, -p:]
        self.next_frame += x.shape[1]

    @property
    def rewind_floor(self) -> int:
        """The earliest frame ``rewind`` can go back to."""
        return self.next_frame - (self.past_x.shape[1] - self.prev_x.shape[1])

    def rewind(self, frame: int) -> int:
        """Make ``frame`` the next one to compute again, as far back as kept; returns the frame."""
        p = self.prev_x.shape[1]
        back = max(0, min(self.next_frame - frame, self.past_x.shape[1] - p))
        if back:
            self.past_x, self.past_wa = self.past_x[:, :-back], self.past_wa[:, :-back]
            self.prev_x, self.prev_wa = self.past_x[:, -p:], self.past_wa[:, -p:]
            self.next_frame -= back
        return self.next_frame
