"""Streaming wav2vec2 features of the FLOAT family (pure tensor code).

wav2vec2 is bidirectional, so each step encodes a window of audio: up to
``left`` frames already committed, the new frames, and ``lookahead`` frames,
and keeps the features of the frames it was asked for.

Frame clock: frame j owns the 16 kHz samples [640 j, 640 (j + 1)).  The 50 Hz
convolutional feature i sees samples [320 i, 320 i + 400), and frame j takes
feature 2 j.  This is also exactly where the offline align_corners resampling
lands (a clip of T frames has 2T - 1 conv features and T points spaced 2 apart),
so the streamed features differ from the offline ones only through the window's
bounded context (normalisation, GroupNorm, positional convolution, attention).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch



@dataclass
class RunningNorm:
    """Zero-mean unit-variance input normalisation with statistics of all audio so far.

    The offline feature extractor normalises by the statistics of the whole clip;
    live audio has no whole clip, so the running statistics stand in for them.
    ``floor`` keeps a silent start from amplifying noise without limit.
    """
    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    floor: float = 1e-6

    def update(self, x: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        self.count += x.size
        self.total += float(x64.sum())
        self.total_sq += float((x64 * x64).sum())

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.count == 0:
            return x
        mean = self.total / self.count
        var = max(self.total_sq / self.count - mean * mean, self.floor)
        return ((x - mean) / np.sqrt(var + 1e-7)).astype(np.float32)


def window_bounds(first: int, count: int, left: int, lookahead: int, available: int,
                  oldest: int) -> tuple[int, int]:
    """Frame range [a, b) of the encoder window for frames [first, first + count)."""
    a = max(oldest, first - left, 0)
    b = min(available, first + count + lookahead)
    return a, max(b, first + count)


@torch.no_grad()
def encode_windows(encoder, windows: list[torch.Tensor], spf: int) -> list[torch.Tensor]:
    """Encode normalised 16 kHz windows of whole frames; windows of equal length are batched.

    windows[i]: (n_i * spf,) samples -> (n_i, dim_a) features, one per frame.
    """
    out: list[torch.Tensor | None] = [None] * len(windows)
    by_len: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_len.setdefault(w.numel(), []).append(i)
    for idx in by_len.values():
        feats = encoder.encode_frames(torch.stack([windows[i] for i in idx]))   # frame j <- conv feature 2j
        for k, i in enumerate(idx):
            out[i] = feats[k]
    return out  # type: ignore[return-value]
