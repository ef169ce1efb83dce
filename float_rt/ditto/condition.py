"""The LMDM's per-frame condition: 1103 values = HuBERT 1024 | emotion 8 | eye open 2 | eye ball 6 | sc 63.

Only the first 1024 change from frame to frame for a still source; the other 79 describe the source
(its MediaPipe eye measures and its canonical keypoints ``sc``) and the chosen emotion.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

EMOTIONS = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise", "Contempt")
NEUTRAL = EMOTIONS.index("Neutral")
AUDIO_DIM = 1024
COND_DIM = AUDIO_DIM + len(EMOTIONS) + 2 + 6 + 63   # 1103


def emotion_vector(labels: int | tuple[int, ...] | list[int] = NEUTRAL) -> torch.Tensor:
    """A soft one-hot over the 8 emotions: softmax of 8 at the chosen labels, 0 elsewhere."""
    picks = [labels] if isinstance(labels, int) else list(labels)
    if not picks or any(not 0 <= j < len(EMOTIONS) for j in picks):
        raise ValueError(f"emotion labels must lie in 0..{len(EMOTIONS) - 1}, got {labels!r}")
    logits = torch.zeros(len(EMOTIONS), dtype=torch.float32)
    logits[picks] = 8.0
    return torch.softmax(logits, dim=0)


def _flat(values, n: int) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32).reshape(n)


@dataclass
class SourceCondition:
    """The 79 per-frame values that do not come from audio (one still source, one emotion)."""
    emotion: torch.Tensor    # (8,)
    eye_open: torch.Tensor   # (2,)
    eye_ball: torch.Tensor   # (6,)
    sc: torch.Tensor         # (63,) canonical keypoints of the source

    @classmethod
    def build(cls, eye_open, eye_ball, sc, emotion: int | tuple[int, ...] = NEUTRAL) -> SourceCondition:
        return cls(emotion_vector(emotion), _flat(eye_open, 2), _flat(eye_ball, 6), _flat(sc, 63))

    def vector(self) -> torch.Tensor:
        return torch.cat([self.emotion, self.eye_open, self.eye_ball, self.sc])


def build_condition(features: torch.Tensor, source: SourceCondition) -> torch.Tensor:
    """(N, 1024) HuBERT features -> (N, 1103) condition rows."""
    features = torch.as_tensor(features, dtype=torch.float32)
    rest = source.vector().to(features.device).expand(features.shape[0], -1)
    return torch.cat([features, rest], dim=1)
