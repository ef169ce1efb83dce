"""Warping network: dense motion from keypoint pairs, then the source volume resampled along it.

Coordinates follow F.grid_sample: the last axis is (x, y, z) = (width, height, depth), each in
[-1, 1] with the corner samples at -1 and 1 (``2*i/(n-1) - 1``); sampling uses align_corners=False.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fast
from .layers import ConvBN
from .sizes import WarpSizes

KP_VARIANCE = 0.01


def coordinate_grid(depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(D, H, W, 3) identity grid, last axis (x, y, z)."""
    def axis(n):
        i = torch.arange(n, dtype=like.dtype, device=like.device)
        return 2 * (i / (n - 1)) - 1

    zz, yy, xx = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


def gaussian_heatmaps(grid: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
    """grid (D,H,W,3), kp (B,K,3) -> (B,K,D,H,W) isotropic Gaussians around each keypoint."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * diff.pow(2).sum(-1) / KP_VARIANCE)


class Hourglass3d(nn.Module):
    """U-Net over (depth, H, W) that pools and upsamples H and W only; the output is the
    last decoder features concatenated with the input (block_expansion + in channels)."""

    def __init__(self, in_channels: int, block_expansion: int, max_features: int, num_blocks: int):
        super().__init__()

        def width(i):
            return min(max_features, block_expansion * 2 ** i)

        self.down = nn.ModuleList(ConvBN(3, in_channels if i == 0 else width(i), width(i + 1), 3, 1)
                                  for i in range(num_blocks))
        self.up = nn.ModuleList(ConvBN(3, (1 if i == num_blocks - 1 else 2) * width(i + 1), width(i), 3, 1)
                                for i in reversed(range(num_blocks)))
        self.out_channels = block_expansion + in_channels
        self.fuse = ConvBN(3, self.out_channels, self.out_channels, 3, 1)

    def forward(self, x):
        pool, upsample = ((fast.pool_hw, fast.upsample_hw) if fast.active(x) and fast.channels_last_3d(x)
                          else (lambda t: F.avg_pool3d(t, (1, 2, 2)), lambda t: F.interpolate(t, scale_factor=(1, 2, 2))))
        skips = [x]
        for block in self.down:
            skips.append(pool(F.relu(block(skips[-1]))))
        y = skips.pop()
        for block in self.up:
            y = F.relu(block(upsample(y)))
            y = torch.cat([y, skips.pop()], dim=1)
        return F.relu(self.fuse(y))


class DenseMotion(nn.Module):
    """Predicts, per voxel, a softmax blend of K+1 candidate motions (background identity and
    one rigid shift per keypoint) and a 2-D occlusion map."""

    def __init__(self, sizes: WarpSizes | None = None):
        super().__init__()
        sizes = sizes or WarpSizes()
        dm = sizes.dense_motion
        self.num_kp = sizes.num_kp
        self.squeeze = ConvBN(3, sizes.reshape_channel, dm.compress, 1, 0)
        self.hourglass = Hourglass3d((sizes.num_kp + 1) * (dm.compress + 1), dm.block_expansion,
                                     dm.max_features, dm.num_blocks)
        out = self.hourglass.out_channels
        self.mask_head = nn.Conv3d(out, sizes.num_kp + 1, 7, padding=3)
        self.occlusion_head = (nn.Conv2d(out * dm.reshape_depth, 1, 7, padding=3)
                               if sizes.estimate_occlusion_map else None)

    def forward(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor):
        """feature (B,C,D,H,W), keypoints (B,K,3) -> deformation (B,D,H,W,3), occlusion (B,1,H,W) or None."""
        f = F.relu(self.squeeze(feature))
        b, c, d, h, w = f.shape
        n = self.num_kp + 1
        grid = coordinate_grid(d, h, w, f)
        # Candidate k maps a driving-frame voxel near x_d[k] to the same offset around x_s[k].
        shifted = grid[None, None] - x_d[:, :, None, None, None, :] + x_s[:, :, None, None, None, :]
        motions = torch.cat([grid[None, None].expand(b, 1, d, h, w, 3), shifted], dim=1)
        heat = gaussian_heatmaps(grid, x_d) - gaussian_heatmaps(grid, x_s)
        quick = fast.active(f)
        # channels-last-3d (oneDNN's native layout for the 3-D convolutions below), sampled in place
        inp = fast.candidate_volume(f, motions, heat) if quick else None
        if inp is None:
            copies = f.unsqueeze(1).expand(b, n, c, d, h, w).reshape(b * n, c, d, h, w)
            warped = F.grid_sample(copies, motions.reshape(b * n, d, h, w, 3), align_corners=False)
            warped = warped.view(b, n, c, d, h, w)
            heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1)  # background has none
            inp = torch.cat([heat.unsqueeze(2), warped], dim=2).view(b, -1, d, h, w)
            if quick:
                inp = inp.contiguous(memory_format=torch.channels_last_3d)
        pred = self.hourglass(inp)

        if quick and fast.fft_ok(self.mask_head):
            logits = fast.fft_conv3d(self.mask_head, pred)
        elif quick and fast.stacked_ok(self.mask_head):
            logits = fast.conv3d_stacked(pred, self.mask_head)
        else:
            logits = self.mask_head(pred)
        weights = torch.softmax(logits, dim=1)  # over the K+1 candidates
        deformation = (motions.permute(0, 1, 5, 2, 3, 4) * weights.unsqueeze(2)).sum(dim=1)
        deformation = deformation.permute(0, 2, 3, 4, 1)
        occlusion = None
        if self.occlusion_head is not None:
            if quick and fast.one_output_ok(self.occlusion_head):
                occlusion = torch.sigmoid(fast.volume_conv2d_one_output(self.occlusion_head, pred))
            else:
                occlusion = torch.sigmoid(self.occlusion_head(pred.reshape(b, -1, h, w)))
        return deformation, occlusion


class Warper(nn.Module):
    """f_s (B,C,D,H,W), x_s, x_d (B,K,3) -> the warped 2-D feature (B, out_channels, H, W)."""

    def __init__(self, sizes: WarpSizes | None = None):
        super().__init__()
        sizes = self.sizes = sizes or WarpSizes()
        self.dense = DenseMotion(sizes)
        self.mix = ConvBN(2, sizes.max_features, sizes.out_channels, 3, 1)
        self.project = nn.Conv2d(sizes.out_channels, sizes.out_channels, 1)

    def forward(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        b = x_d.shape[0]
        if f_s.shape[0] != b:
            f_s = f_s.expand(b, *f_s.shape[1:])
        if x_s.shape[0] != b:
            x_s = x_s.expand(b, *x_s.shape[1:])
        deformation, occlusion = self.dense(f_s, x_s, x_d)
        planes = fast.warped_planes(self, f_s, deformation) if fast.active(f_s) else None
        if planes is None:
            out = F.grid_sample(f_s, deformation, align_corners=False)
            b, c, d, h, w = out.shape
            planes = out.reshape(b, c * d, h, w)
        out = F.leaky_relu(self.mix(planes), 0.01)
        out = self.project(out)
        return out * occlusion if occlusion is not None else out
