"""Stitching LMDM windows into one motion sequence: fuse, smooth, pick the next conditioning frame.

Windows of L frames start every ``valid = L - overlap`` frames.  Each new window's overlap is
cross-faded into the tail of the sequence so far, its remaining rows are appended, the seam is
smoothed over time, and the conditioning frame of the next window is taken from the result.
``WindowCarry`` holds everything that has to survive between windows, so a live session can drive
``advance`` one window at a time; ``offline_motion`` is the whole-clip loop.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .config import WindowOptions


@dataclass
class WindowCarry:
    """Per-session state between windows."""
    source: torch.Tensor        # (265,) the source's motion vector, the first conditioning frame
    cond_frame: torch.Tensor    # (265,) conditioning frame of the next window
    result: torch.Tensor | None = None   # (n, 265) fused and smoothed rows so far
    windows_done: int = 0

    @classmethod
    def start(cls, source: torch.Tensor) -> WindowCarry:
        source = source.reshape(-1).to(torch.float32)
        return cls(source=source, cond_frame=source.clone())


def smooth_rows(seq: torch.Tensor, start: int, stop: int, k: int, dims: int) -> torch.Tensor:
    """Rows [start, stop) of ``seq`` (n, D) replaced, on dims [0, dims), by the mean of the rows
    within k//2 of them *that exist* (edge rows average fewer rows, no padding), read from an
    unsmoothed copy."""
    if k <= 1:
        return seq
    half, n = k // 2, seq.shape[0]
    src = seq[:, :dims].clone()
    out = seq.clone()
    for i in range(start, stop):
        out[i, :dims] = src[max(0, i - half):min(n, i + half + 1)].mean(dim=0)
    return out


def fuse(result: torch.Tensor, window: torch.Tensor, valid: int, fuse_len: int) -> torch.Tensor:
    """Cross-fade the last ``fuse_len`` rows of ``result`` into the new window's rows just before
    its ``valid`` new ones (linear weights 0, 1/F, ..., (F-1)/F on the new window), then append
    those ``valid`` rows."""
    L = window.shape[0]
    alpha = (torch.arange(fuse_len, dtype=torch.float32, device=result.device) / fuse_len)[:, None]
    old = result[result.shape[0] - fuse_len:]
    new = window[L - valid - fuse_len:L - valid]
    blended = old * (1 - alpha) + new * alpha
    return torch.cat([result[:result.shape[0] - fuse_len], blended, window[L - valid:]])


def next_cond_frame(carry: WindowCarry, result: torch.Tensor, opts: WindowOptions, windows_done: int) -> torch.Tensor:
    """The conditioning frame of the next window: the row ``overlap + 1`` from the end of the
    result, or every ``fix_cond_every`` windows the source vector (keeping ``fix_cond_dims`` of
    that row)."""
    row = result[result.shape[0] - opts.overlap - 1]
    if opts.fix_cond_every > 0 and windows_done % opts.fix_cond_every == 0:
        frame = carry.source.to(row.device, copy=True)
        if opts.fix_cond_dims is not None:
            ds, de = opts.fix_cond_dims
            frame[ds:de] = row[ds:de]
        return frame
    return row.clone()


def advance(carry: WindowCarry, window: torch.Tensor, opts: WindowOptions) -> WindowCarry:
    """Add one sampled (L, 265) window to the sequence; returns the new carry."""
    L = window.shape[0]
    valid, fuse_len = opts.valid(L), opts.fuse_length(L)
    if carry.result is None:
        result = smooth_rows(window, 0, L, opts.smooth_k, opts.smooth_dims)
    else:
        result = fuse(carry.result, window, valid, fuse_len)
        n = result.shape[0]
        result = smooth_rows(result, n - valid - fuse_len, n - valid + 1, opts.smooth_k, opts.smooth_dims)
    done = carry.windows_done + 1
    return replace(carry, result=result, windows_done=done,
                   cond_frame=next_cond_frame(carry, result, opts, done))


def num_windows(num_frames: int, seq_len: int, opts: WindowOptions) -> int:
    """Windows of the offline loop: one per ``valid`` rows, started while the start is in the clip."""
    return len(range(0, num_frames, opts.valid(seq_len)))


def window_conditions(cond: torch.Tensor, seq_len: int, valid: int) -> torch.Tensor:
    """(N, C) condition of a clip -> (W, L, C) windows starting every ``valid`` rows while the start
    is inside the clip; a short window repeats its last row."""
    out = []
    for s in range(0, cond.shape[0], valid):
        w = cond[s:s + seq_len]
        if w.shape[0] < seq_len:
            w = torch.cat([w, w[-1:].expand(seq_len - w.shape[0], -1)])
        out.append(w)
    return torch.stack(out) if out else cond.new_zeros((0, seq_len, cond.shape[1]))


@dataclass
class OfflineTrace:
    """What the offline loop saw per window (for inspection and the reference comparison)."""
    cond_frames: list[torch.Tensor] = field(default_factory=list)   # (265,) each
    windows: list[torch.Tensor] = field(default_factory=list)       # (L, 265) sampled, before fuse


def offline_motion(cond: torch.Tensor, source: torch.Tensor, opts: WindowOptions, seq_len: int,
                   sample: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor],
                   trace: OfflineTrace | None = None) -> torch.Tensor:
    """(N, 1103) clip condition -> (N, 265) motion.

    ``sample(w, cond_frame (265,), window_cond (L, 1103))`` returns the (L, 265) window w.  After
    the last window the sequence is cut to N rows and smoothed once more over all of them.
    """
    n = cond.shape[0]
    carry = WindowCarry.start(source.to(cond.device))
    for w, window_cond in enumerate(window_conditions(cond, seq_len, opts.valid(seq_len))):
        window = sample(w, carry.cond_frame, window_cond)
        if trace is not None:
            trace.cond_frames.append(carry.cond_frame)
            trace.windows.append(window)
        carry = advance(carry, window, opts)
    motion = carry.result[:n]
    return smooth_rows(motion, 0, motion.shape[0], opts.smooth_k, opts.smooth_dims)
