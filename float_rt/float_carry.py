"""What a live FLOAT session carries from one window to the next (one visible dataclass)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .sampler import WindowNoise
from .stream_audio import RunningNorm


@dataclass
class WindowCarry:
    next_frame: int             # first frame not committed yet (frames before it are final)
    # Committed latents (1, L, dim_w) and their audio features (1, L, dim_a), as they were sampled
    # with, of frames [next_frame - L, next_frame): the last ``num_prev`` are the next window's
    # context, and up to ``rewind_limit`` before them let a barge-in take back unshown frames.
    past_x: torch.Tensor
    past_wa: torch.Tensor
    num_prev: int
    emotion: torch.Tensor       # (1, 1, dim_e) emotion condition in use
    noise: WindowNoise          # start noise of each window (official fixed seed, or fresh draws)
    norm_pos: int = 0           # audio (16 kHz samples) folded into the input normalisation so far
    emotion_at: int = -1        # frame index of the last emotion prediction (-1: never)
    fixed_emotion: bool = False # False: predicted from recent speech every few frames
    rewind_limit: int = 0
    keep_frames: int = 0        # audio frames before next_frame a later window still reads
    spf: int = 640              # 16 kHz samples per frame
    norm: RunningNorm = field(default_factory=RunningNorm)

    @classmethod
    def initial(cls, num_prev: int, dim_w: int, dim_a: int, emotion: torch.Tensor,
                noise: WindowNoise, rewind_limit: int = 0, **kw) -> WindowCarry:
        # Like the offline sampler, the first window's context is all zeros (frames -P..-1).
        return cls(0, emotion.new_zeros(1, num_prev, dim_w), emotion.new_zeros(1, num_prev, dim_a),
                   num_prev, emotion, noise, rewind_limit=rewind_limit, **kw)

    @property
    def prev_x(self) -> torch.Tensor:
        """(1, P, dim_w) the last P committed motion latents: the next window's context."""
        return self.past_x[:, -self.num_prev:]

    @property
    def prev_wa(self) -> torch.Tensor:
        return self.past_wa[:, -self.num_prev:]

    def commit(self, x: torch.Tensor, wa: torch.Tensor) -> None:
        """Frames next_frame .. next_frame + n are final: latents (1, n, dim_w), features (1, n, dim_a)."""
        keep = self.num_prev + self.rewind_limit
        self.past_x = torch.cat([self.past_x, x], dim=1)[:, -keep:]
        self.past_wa = torch.cat([self.past_wa, wa], dim=1)[:, -keep:]
        self.next_frame += x.shape[1]

    def skip(self, n: int) -> None:
        """Frames next_frame .. next_frame + n are never computed (compute fell behind the clock).

        The context stays the last frames computed; what came before the gap cannot be
        returned to, since a frame after it would then follow the wrong context."""
        self.past_x, self.past_wa = self.prev_x, self.prev_wa
        self.next_frame += n
        # The skipped input is not read, nor folded into the normalisation.
        self.norm_pos = max(self.norm_pos, (self.next_frame - self.keep_frames) * self.spf)

    @property
    def rewind_floor(self) -> int:
        """The earliest frame ``rewind`` can go back to."""
        return self.next_frame - (self.past_x.shape[1] - self.num_prev)

    def rewind(self, frame: int) -> int:
        """Make ``frame`` the next one to compute again, as far back as kept; returns the frame."""
        back = max(0, self.next_frame - max(frame, self.rewind_floor))
        if back:
            self.past_x, self.past_wa = self.past_x[:, :-back], self.past_wa[:, :-back]
            self.next_frame -= back
        return self.next_frame

    def keep_from(self) -> int:
        """The earliest 16 kHz sample a later window reads (left context, emotion window, normalisation)."""
        return min((self.next_frame - self.keep_frames) * self.spf, self.norm_pos)
