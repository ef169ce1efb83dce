"""The live seam: what the streaming engine asks of a loaded model family, batched over sessions.

The engine (``streaming/engine.py``) owns everything family-free: sessions, their audio, pacing,
barge-in, backlog, stats.  Each step it asks the family, per ready session and under that
session's lock, for a *plan* (the audio and state the next window reads), then computes every
plan of the step in one batched ``compute`` call without any lock, commits each result under the
session's lock again, and renders all committed frames in one ``render`` call.

What a session carries from one window to the next is the family's carry, one dataclass
(FLOAT: ``float_rt.float_carry.WindowCarry``; Ditto: ``float_rt.ditto.live.DittoCarry``).  The
engine reads and calls only what ``Carry`` below lists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class AudioView(Protocol):
    """A session's 16 kHz input as the family sees it (``streaming.audio_input.SessionAudio``)."""
    rate: int
    start: int          # first sample still held
    end: int            # samples received so far
    input_end: int | None   # at the end of input: samples received before the last frame was padded

    def read(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b) by absolute index; outside what is held reads as silence."""


class Carry(Protocol):
    next_frame: int     # first frame not committed yet

    @property
    def rewind_floor(self) -> int:
        """The earliest frame ``rewind`` can go back to."""

    def rewind(self, frame: int) -> int:
        """Barge-in: the frames from ``frame`` on (or from the rewind floor) are computed again from
        new input; returns the frame from which new input counts."""

    def skip(self, n: int) -> None:
        """Frames next_frame .. next_frame + n are never computed (compute fell behind the clock)."""

    def keep_from(self) -> int:
        """The earliest input sample a later window (or a rewind) may still read."""


@dataclass
class Committed:
    """What one session's window committed: frames ``first .. first + n``."""
    first: int
    motion: Any                     # (n, D) the family's motion rows
    features: np.ndarray | None     # (n, F) the audio features the rows were made from
    context: Any = None             # what ``render`` needs besides the rows (Ditto: the frame they are relative to)


class LiveModel(Protocol):
    """A loaded family behind the live seam (one model on one device, many sessions)."""
    name: str
    fps: int
    sampling_rate: int
    samples_per_frame: int
    image_size: int                 # side of the prepared reference image
    frame_size: int                 # side of the rendered frames
    emotions: tuple[str, ...]
    option_names: frozenset[str]    # the family's own ``SessionOptions`` fields
    supported_controls: frozenset[str]   # the avatar controls it can express (float_rt/controls.py)
    device: Any

    def option_defaults(self, stream_cfg: Any) -> dict:
        """Default values of the family's own session options."""

    def algorithmic_latency_ms(self, options: Any) -> float:
        """Audio a frame waits for before it can be computed (its window's lookahead)."""

    def prepare(self, image: np.ndarray, crop: bool = True) -> Any:
        """A photo (H, W, 3) uint8 RGB -> what ``encode_reference`` takes (checked, cropped)."""

    def crop_box(self, image: np.ndarray) -> Any:
        """Where ``prepare`` cuts the face from the photo (a ``float_rt.media.SquareCrop``: paste-back)."""

    def encode_reference(self, prepared: Any) -> Any:
        """Everything a session needs about its photo, computed once."""

    def new_carry(self, reference: Any, options: Any, rewind_limit: int) -> Carry:
        """The state a session starts from; ``rewind_limit``: frames waiting to be shown, which a
        barge-in may take back (the family adds what one step computes ahead)."""

    def set_emotion(self, carry: Carry, label: str | None, probs: Any = None) -> None:
        """Fix the emotion (a label or probabilities), or None: predict it from speech where the family can."""

    def emotion_of(self, carry: Carry) -> dict[str, float]:
        """The emotion a session's motion follows now, as label -> weight (the stats a client sees)."""

    def frames_needed(self, carry: Carry, options: Any) -> int:
        """Frames of audio (from 0) that must have arrived before the next window can run."""

    def plan(self, reference: Any, carry: Carry, options: Any, audio: AudioView, features: Any, ended: bool,
             total_frames: int | None) -> Any:
        """The next window's inputs (called under the session's lock: cheap, copies what it reads).
        ``features``: precomputed feature rows fed instead of audio, or None."""

    def compute(self, plans: list, times: Any) -> None:
        """Run every plan of a step, batched; each plan then holds its result.  ``times`` (a
        ``StepTimes``) gets the seconds per stage."""

    def commit(self, carry: Carry, plan: Any) -> Committed | None:
        """Fold a computed plan into the carry (under the session's lock); the frames it made final."""

    def render(self, items: list[tuple[Any, Committed]]) -> list[np.ndarray]:
        """Frames (n, S, S, 3) uint8 for (reference, committed rows) pairs, batched across sessions."""
