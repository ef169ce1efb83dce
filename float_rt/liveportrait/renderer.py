"""The five networks together, and the per-frame steps Ditto runs with them."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .appearance import AppearanceEncoder
from .decoder import SpadeDecoder, to_frames
from .kinematics import MotionInfo, drive_info, transform_keypoints
from .motion_extractor import MotionExtractor
from .sizes import RendererSizes
from .stitch import StitchMLP
from .warp import Warper


@contextmanager
def exact_float32():
    """Disable TF32 in CUDA matmuls and convolutions for the duration (cuDNN allows TF32 by
    default; the reference tolerances assume true float32).  No effect on CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Renderer(nn.Module):
    def __init__(self, sizes: RendererSizes | None = None):
        super().__init__()
        sizes = self.sizes = sizes or RendererSizes()
        self.appearance = AppearanceEncoder(sizes.appearance)
        self.motion = MotionExtractor(sizes.motion)
        self.warp = Warper(sizes.warp)
        self.decoder = SpadeDecoder(sizes.decoder)
        self.stitch = StitchMLP(sizes.stitch)

    @torch.no_grad()
    def source(self, image: torch.Tensor) -> tuple[MotionInfo, torch.Tensor, torch.Tensor]:
        """Crop (1, 3, 256, 256) RGB in [0, 1] -> (head state, x_s (1,K,3), f_s (1,C,D,h,w))."""
        info = self.motion(image)
        return info, transform_keypoints(info), self.appearance(image)

    @torch.no_grad()
    def drive(self, source: MotionInfo, x_s: torch.Tensor, motion: torch.Tensor, d0: torch.Tensor | None,
              stitching: bool = True, drive_eye: bool = True) -> torch.Tensor:
        """Motion vectors (B, 265) -> driving keypoints x_d (B, K, 3)."""
        x_d = transform_keypoints(drive_info(source, motion, d0, drive_eye))
        return self.stitch.stitch(x_s, x_d) if stitching else x_d

    @torch.no_grad()
    def render(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        """-> frames (B, H, W, 3) float32 in [0, 255]."""
        return to_frames(self.decoder(self.warp(f_s, x_s, x_d)))
