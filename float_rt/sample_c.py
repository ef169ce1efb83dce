"""Trilinear ``F.grid_sample`` of a channels-last volume, compiled (``float_rt.native``).

PyTorch's CPU grid sampler has a vectorised kernel for 2-D inputs only; in 3-D it walks each channel
of a channels-first volume apart, so every sample gathers 8 corners per channel from far apart.
Here the source volume is channels-last (D, H, W, C): a corner is C contiguous floats, read once
per sample for all channels.  The result is written through strides, so it lands directly in the
layout its reader wants (the warp's 2-D channels-last (C*D, H, W) input; the dense-motion net's
channels-last-3d input beside the heatmaps).  Same semantics as ``F.grid_sample(mode='bilinear',
padding_mode='zeros', align_corners=False)``: the grid's last axis is (x, y, z) in [-1, 1],
corners outside the volume read zeros.
"""
from __future__ import annotations

import ctypes

import torch

from . import native

SOURCE = r"""
#include <math.h>

/* src (D, H, W, C) + sb per batch; grid (B, Do, Ho, Wo, 3); out[b*ob + d*od + h*oh + w*ow + c*oc]. */
void sample3d(const float *restrict src, long sb, long D, long H, long W, long C,
              const float *restrict grid, long B, long Do, long Ho, long Wo,
              float *restrict out, long ob, long od, long oh, long ow, long oc, int threads) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (long row = 0; row < B * Do * Ho; ++row) {
    long b = row / (Do * Ho), d = (row / Ho) % Do, h = row % Ho;
    const float *vol = src + b * sb;
    const float *g = grid + row * Wo * 3;
    for (long w = 0; w < Wo; ++w, g += 3) {
      float ix = ((g[0] + 1.0f) * W - 1.0f) * 0.5f;
      float iy = ((g[1] + 1.0f) * H - 1.0f) * 0.5f;
      float iz = ((g[2] + 1.0f) * D - 1.0f) * 0.5f;
      float fx = floorf(ix), fy = floorf(iy), fz = floorf(iz);
      long x0 = (long)fx, y0 = (long)fy, z0 = (long)fz;
      float ax[2] = {fx + 1.0f - ix, ix - fx}, ay[2] = {fy + 1.0f - iy, iy - fy}, az[2] = {fz + 1.0f - iz, iz - fz};
      const float *corner[8];
      float weight[8];
      int n = 0;
      for (int k = 0; k < 2; ++k)
        for (int j = 0; j < 2; ++j)
          for (int i = 0; i < 2; ++i) {
            long z = z0 + k, y = y0 + j, x = x0 + i;
            if (z < 0 || z >= D || y < 0 || y >= H || x < 0 || x >= W) continue;
            corner[n] = vol + ((z * H + y) * W + x) * C;
            weight[n++] = az[k] * ay[j] * ax[i];
          }
      float *dst = out + b * ob + d * od + h * oh + w * ow;
      for (long c = 0; c < C; ++c) {
        float acc = 0.0f;
        for (int q = 0; q < n; ++q) acc += weight[q] * corner[q][c];
        dst[c * oc] = acc;
      }
    }
  }
}
"""


class Sampler:
    def __init__(self, lib: ctypes.CDLL):
        self._fn = lib.sample3d
        ptr, long = ctypes.c_void_p, ctypes.c_long
        self._fn.argtypes = [ptr] + [long] * 5 + [ptr] + [long] * 4 + [ptr] + [long] * 5 + [ctypes.c_int]
        self._fn.restype = None

    def __call__(self, volume: torch.Tensor, grid: torch.Tensor, out: torch.Tensor,
                 strides: tuple[int, int, int, int, int]) -> None:
        """volume (Bs, D, H, W, C) contiguous per sample (Bs = 1 or B: a batch stride of 0 shares it);
        grid (B, Do, Ho, Wo, 3) contiguous; ``out`` a tensor whose storage receives sample (b, d, h, w)
        channel c at element b*s0 + d*s1 + h*s2 + w*s3 + c*s4 of its data pointer."""
        bs, d, h, w, c = volume.shape
        b, do, ho, wo, _ = grid.shape
        assert volume.stride()[1:] == (h * w * c, w * c, c, 1) and grid.is_contiguous()
        assert volume.dtype == grid.dtype == out.dtype == torch.float32
        self._fn(volume.data_ptr(), 0 if bs == 1 else volume.stride(0), d, h, w, c, grid.data_ptr(), b, do, ho, wo,
                 out.data_ptr(), *strides, torch.get_num_threads())


def sampler() -> Sampler | None:
    """The compiled sampler, or None (no compiler, build failed, switched off)."""
    return native.kernel("sample3d", lambda: SOURCE, Sampler)
