"""Streaming options (``configs/stream.yaml``): window geometry, latency and bounds."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from float_rt.config import build_dataclass



@dataclass
class StreamConfig:
    # Sampler: each step commits ``chunk_frames`` new frames of the fixed 10 + 50 window.
    chunk_frames: int = 5
    nfe: int = 4                    # Euler grid points per step (nfe - 1 evaluations)
    noise: str = "fixed"            # "fixed": the official same-seed noise every window; "fresh"
    seed: int = 15
    # Streaming wav2vec2: audio seen before / after the frames being encoded.
    left_context_ms: int = 2000
    lookahead_ms: int = 160
    # Emotion predicted from recent speech when no label is fixed.
    emotion_window_ms: int = 3000
    emotion_every_frames: int = 25
    emotion_smoothing: float = 0.3  # weight of each new prediction (exponential moving average)
    # Bounds that keep memory and latency flat when compute or consumers fall behind.
    max_output_frames: int = 50     # decoded frames waiting for the consumer
    max_backlog_ms: int = 1000      # unprocessed audio kept when compute is behind real time
    max_input_seconds: float = 60.0 # audio a client may queue ahead (e.g. a whole TTS reply)
    jitter_ms: int = 80             # how late live audio may be before silence is filled in
    output_delay_ms: int = 120      # realtime output: compute allowance on top of chunk + lookahead
    max_late_ms: int = 200          # realtime output: frames later than this are skipped
    decode_batch: int = 16

    def __post_init__(self):
        if not 1 <= self.chunk_frames <= 50:
            raise ValueError(f"chunk_frames must be in 1..50, got {self.chunk_frames}")
        if self.nfe < 2:
            raise ValueError(f"nfe must be >= 2 (Euler grid points), got {self.nfe}")
        if self.noise not in ("fixed", "fresh"):
            raise ValueError(f"noise must be 'fixed' or 'fresh', got {self.noise!r}")
        if self.left_context_ms < 0 or self.lookahead_ms < 0:
            raise ValueError("left_context_ms and lookahead_ms must be >= 0")
        if not 0.0 < self.emotion_smoothing <= 1.0:
            raise ValueError("emotion_smoothing must be in (0, 1]")

    def frames_of(self, ms: float, fps: float) -> int:
        return int(round(ms * fps / 1000.0))

    def algorithmic_latency_ms(self, fps: float) -> float:
        """Audio a frame waits for before it can be computed: its chunk plus the lookahead."""
        return (self.chunk_frames + self.frames_of(self.lookahead_ms, fps)) * 1000.0 / fps


def load_stream_config(path: str | Path | None = None, **overrides) -> StreamConfig:
    data = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"stream config not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        data = data.get("streaming", data)
    return build_dataclass(StreamConfig, data, "streaming", **overrides)
