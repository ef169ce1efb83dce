"""Frame-index stamps drawn into video frames (latency and lip-sync probes; numpy only).

The server draws a frame's source index when a client asks (`stamp` in the offer); the
Python client reads it back after VP8/H.264 to know which audio each frame answers.
"""
from __future__ import annotations

import numpy as np

STAMP_BITS = 16


def draw_stamp(img: np.ndarray, index: int) -> np.ndarray:
    """Write ``index`` as 16 black/white blocks along the bottom edge (decodable after VP8/H.264)."""
    img = img.copy()
    h, w, _ = img.shape
    bw = w // STAMP_BITS
    bh = max(8, h // 16)
    for b in range(STAMP_BITS):
        img[h - bh:, b * bw:(b + 1) * bw] = 255 if (index >> b) & 1 else 0
    return img


def read_stamp(img: np.ndarray) -> int:
    h, w, _ = img.shape
    bw, bh = w // STAMP_BITS, max(8, h // 16)
    value = 0
    for b in range(STAMP_BITS):
        block = img[h - bh + bh // 4:h - bh // 4, b * bw + bw // 4:(b + 1) * bw - bw // 4]
        value |= int(block.mean() > 127) << b
    return value
