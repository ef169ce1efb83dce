"""Sizes and options of Ditto's audio-to-motion stage, as plain dataclasses.

The defaults are the published model (``lmdm_v0.4_hubert.pth``) and the offline defaults of the
official ``StreamSDK.setup``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LMDMSizes:
    motion_dim: int = 265      # the LivePortrait motion vector (see motion.py)
    cond_dim: int = 1103       # the per-frame condition (see condition.py)
    seq_len: int = 80          # frames per diffusion window
    width: int = 512
    ff_width: int = 1024
    num_layers: int = 8        # FiLM decoder layers
    num_heads: int = 8
    encoder_layers: int = 2    # audio-condition encoder layers (fixed at 2 in the published model)

    @classmethod
    def tiny(cls) -> LMDMSizes:
        """The reduced sizes of the shared reference case ``cases/tiny``."""
        return cls(seq_len=40, width=64, ff_width=128, num_layers=2, num_heads=4)


@dataclass(frozen=True)
class SamplerOptions:
    steps: int = 50                # DDIM sampling steps
    guidance_weight: float = 2.0   # unc + (cond - unc) * w
    train_steps: int = 1000        # length of the cosine schedule
    cosine_s: float = 8e-3
    eta: float = 1.0


PUBLISHED_SIZES = LMDMSizes()
DEFAULT_SAMPLER = SamplerOptions()


@dataclass(frozen=True)
class WindowOptions:
    overlap: int = 10          # rows shared by consecutive windows (official ``overlap_v2``)
    smooth_k: int = 3          # moving-average width over time (``smo_k_d``); <= 1 turns it off
    smooth_dims: int = 202     # scale, angle bins and t are smoothed; the expression is not
    # ``fix_kp_cond``: 0 = carry the generated row; n > 0 = reset to the source every n windows
    fix_cond_every: int = 0
    fix_cond_dims: tuple[int, int] | None = None   # ``fix_kp_cond_dim``: dims kept from the generated row on a reset
    online: bool = False       # the online fuse length is min(overlap, valid)

    def valid(self, seq_len: int) -> int:
        """New rows contributed by each window after the first."""
        return seq_len - self.overlap

    def fuse_length(self, seq_len: int) -> int:
        return min(self.overlap, self.valid(seq_len)) if self.online else self.overlap
