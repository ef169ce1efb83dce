"""Driving the window step live: features arrive 5 per HuBERT chunk, motion rows leave per window.

This follows the official online worker (``stream_pipeline_online.py``): the feature buffer starts
with the features of ``overlap`` frames of silence; once at least ``valid`` new rows have come, a
window runs whenever L rows are buffered from the current position (and, at the end of the stream,
on the padded remainder); the first window is not emitted but fixes ``d0`` (its frame 0); every
later window emits the ``valid`` rows that start ``fuse_length`` rows before the end of the previous
window, i.e. the rows just fused.  Only the last 2L rows of the fused sequence are kept.

The state is plain data and every function returns a new one (nothing is changed in place), so a
session can keep earlier states to return to (barge-in) and the engine can compute a step on a
state and drop the result if the session was interrupted meanwhile.
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


@dataclass(frozen=True)
class LiveState:
    """Everything the window stream carries between calls."""
    carry: WindowCarry
    features: torch.Tensor             # (n, 1024) buffered rows from ``pos`` on
    pending: torch.Tensor              # rows received but not yet added (fewer than ``valid``)
    pos: int = 0                       # rows of the stream consumed before ``features[0]``
    valid_start: int | None = None     # first row of ``carry.result`` not emitted yet; None before window 1
    d0: torch.Tensor | None = None     # (265,) frame 0 of the first window

    @classmethod
    def start(cls, source_motion: torch.Tensor, initial_features) -> LiveState:
        initial = torch.as_tensor(initial_features, dtype=torch.float32)
        return cls(WindowCarry.start(source_motion), initial, initial[:0])


def live_options(opts: WindowOptions) -> WindowOptions:
    """The live fuse length is min(overlap, valid)."""
    return replace(opts, online=True)


def add_rows(s: LiveState, rows) -> LiveState:
    return replace(s, pending=torch.cat([s.pending, torch.as_tensor(rows, dtype=torch.float32)]))


def rows_short(s: LiveState, opts: WindowOptions, seq_len: int) -> int:
    """New feature rows still needed before the next window that emits rows can run (<= 0: none)."""
    valid = opts.valid(seq_len)
    short = max(seq_len - s.features.shape[0] - s.pending.shape[0], valid - s.pending.shape[0])
    return short + (valid if s.valid_start is None else 0)   # the first window emits nothing


def next_window(s: LiveState, opts: WindowOptions, seq_len: int, end: bool) -> tuple[LiveState, torch.Tensor, int] | None:
    """The next window's feature rows (L, 1024) and how many rows it advances by, or None.

    Rows are taken in once at least ``valid`` have come (or at the end of the stream); at the end a
    short remainder is padded with its last row and advances by its real rows only."""
    valid = opts.valid(seq_len)
    if s.pending.shape[0] and (s.pending.shape[0] >= valid or end):
        s = replace(s, features=torch.cat([s.features, s.pending]), pending=s.pending[:0])
    feats = s.features[:seq_len]
    if feats.shape[0] == seq_len:
        return s, feats, valid
    if not end or feats.shape[0] == 0:
        return None
    pad = feats[-1:].expand(seq_len - feats.shape[0], -1)
    return s, torch.cat([feats, pad]), feats.shape[0]


def apply_window(s: LiveState, window: torch.Tensor, step: int, opts: WindowOptions,
                 seq_len: int) -> tuple[LiveState, torch.Tensor]:
    """Fold one sampled (L, 265) window in; returns the new state and the rows it made final."""
    carry = advance(s.carry, window, opts)
    emitted = window[:0]
    if s.valid_start is None:
        valid_start, d0 = carry.result.shape[0] - opts.fuse_length(seq_len), carry.result[0].clone()
    else:
        emitted = carry.result[s.valid_start:s.valid_start + step]
        valid_start, d0 = s.valid_start + step, s.d0
        cut = carry.result.shape[0] - 2 * seq_len
        if cut > 0:
            carry = replace(carry, result=carry.result[cut:])
            valid_start -= cut
    return replace(s, carry=carry, features=s.features[step:], pos=s.pos + step, valid_start=valid_start,
                   d0=d0), emitted


def window_condition(feats: torch.Tensor, source: SourceCondition) -> torch.Tensor:
    return build_condition(feats, source)


class LiveMotion:
    """A live window stream driven one session at a time: ``push`` features as they arrive,
    ``finish`` at the end of the stream (the reference cases and tests use it)."""

    def __init__(self, source_motion: torch.Tensor, source: SourceCondition, initial_features: torch.Tensor,
                 sample: Sampler, opts: WindowOptions, seq_len: int):
        self.opts, self.seq_len, self.sample, self.source = live_options(opts), seq_len, sample, source
        self.state = LiveState.start(source_motion, initial_features)

    def push(self, features) -> torch.Tensor:
        """Add (k, 1024) feature rows; returns the (m, 265) motion rows that became final (m may be 0)."""
        self.state = add_rows(self.state, features)
        return self._run(end=False)

    def finish(self) -> torch.Tensor:
        """End of stream: run the remaining (padded) windows and return their rows."""
        return self._run(end=True)

    def _run(self, end: bool) -> torch.Tensor:
        out = [torch.zeros((0, self.state.carry.source.shape[0]))]
        while (nxt := next_window(self.state, self.opts, self.seq_len, end)) is not None:
            state, feats, step = nxt
            window = self.sample(state.carry.cond_frame, window_condition(feats, self.source))
            self.state, rows = apply_window(state, window, step, self.opts, self.seq_len)
            out.append(rows)
        return torch.cat(out)
