"""Driving the window step live: features arrive 5 per HuBERT chunk, motion rows leave per window.

This follows the official online worker (``stream_pipeline_online.py``): the feature buffer starts
with the features of ``overlap`` frames of silence, a window runs whenever L rows are available
from the current position (and, at the end of the stream, on the padded remainder); the first
window is not emitted but fixes ``d0`` (its frame 0); every later window emits the ``valid`` rows
that start ``fuse_length`` rows before the end of the previous window, i.e. the rows just fused.
Only the last 2L rows of the fused sequence are kept.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from .condition import SourceCondition, build_condition
from .config import WindowOptions
from .hubert import DITTO_CHUNK, HOP, ChunkSpec, offline_features
from .windows import WindowCarry, advance

Sampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (cond_frame (265,), cond (L, 1103)) -> (L, 265)


def silence_features(rows: int, encode: Callable[[np.ndarray], np.ndarray],
                     spec: ChunkSpec = DITTO_CHUNK) -> np.ndarray:
    """The features of ``rows`` frames of silence (the initial buffer of a live session)."""
    return offline_features(np.zeros(rows * HOP, np.float32), encode, spec)


@dataclass
class LiveState:
    """Everything a live session carries between calls."""
    carry: WindowCarry
    features: torch.Tensor             # (n, 1024) buffered rows from ``pos`` on
    pos: int = 0                       # rows of the stream consumed before ``features[0]``
    valid_start: int | None = None     # first row of ``carry.result`` not emitted yet; None before window 1
    d0: torch.Tensor | None = None     # (265,) frame 0 of the first window
    pending: torch.Tensor | None = None   # rows received but not yet added (fewer than ``valid``)


class LiveMotion:
    """A live session: ``push`` features as they arrive, ``finish`` at the end of the stream."""

    def __init__(self, source_motion: torch.Tensor, source: SourceCondition, initial_features: torch.Tensor,
                 sample: Sampler, opts: WindowOptions, seq_len: int):
        opts = replace(opts, online=True)   # the live fuse length is min(overlap, valid)
        self.opts, self.seq_len, self.sample, self.source = opts, seq_len, sample, source
        self.valid = opts.valid(seq_len)
        initial = torch.as_tensor(initial_features, dtype=torch.float32)
        self.state = LiveState(WindowCarry.start(source_motion), initial, pending=initial[:0])

    def push(self, features) -> torch.Tensor:
        """Add (k, 1024) feature rows; returns the (m, 265) motion rows that became final (m may be 0)."""
        s = self.state
        s.pending = torch.cat([s.pending, torch.as_tensor(features, dtype=torch.float32)])
        if s.pending.shape[0] < self.valid:    # wait for at least ``valid`` new rows
            return self._empty()
        return self._run(end=False)

    def finish(self) -> torch.Tensor:
        """End of stream: run the remaining (padded) windows and return their rows."""
        return self._run(end=True)

    def _empty(self) -> torch.Tensor:
        return torch.zeros((0, self.state.carry.source.shape[0]))

    def _run(self, end: bool) -> torch.Tensor:
        s, L = self.state, self.seq_len
        s.features, s.pending = torch.cat([s.features, s.pending]), s.pending[:0]
        out = []
        while s.features.shape[0] > 0:
            feats, step = s.features[:L], self.valid
            if feats.shape[0] < L:
                if not end:
                    break
                step = feats.shape[0]   # the last window counts only its real rows
                feats = torch.cat([feats, feats[-1:].expand(L - feats.shape[0], -1)])
            window = self.sample(s.carry.cond_frame, build_condition(feats, self.source))
            s.carry = advance(s.carry, window, self.opts)
            if s.valid_start is None:
                s.valid_start = s.carry.result.shape[0] - self.opts.fuse_length(L)
                s.d0 = s.carry.result[0].clone()
            else:
                out.append(s.carry.result[s.valid_start:s.valid_start + step])
                s.valid_start += step
                cut = s.carry.result.shape[0] - 2 * L
                if cut > 0:
                    s.carry = replace(s.carry, result=s.carry.result[cut:])
                    s.valid_start -= cut
            s.features, s.pos = s.features[step:], s.pos + step
        return torch.cat(out) if out else self._empty()
