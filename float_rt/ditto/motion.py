"""The 265-value motion vector the LMDM generates, one per 25 Hz frame.

Layout: ``scale - 1 (1) | pitch (66) | yaw (66) | roll (66) | t (3) | exp (63)``.  The three angles
are the motion extractor's 66 bin logits, not degrees; storing ``scale - 1`` centres it near 0.
"""
from __future__ import annotations

import torch

FIELDS: tuple[tuple[str, int], ...] = (("scale", 1), ("pitch", 66), ("yaw", 66), ("roll", 66), ("t", 3), ("exp", 63))
MOTION_DIM = sum(n for _, n in FIELDS)   # 265


def _slices() -> dict[str, slice]:
    out, start = {}, 0
    for name, n in FIELDS:
        out[name] = slice(start, start + n)
        start += n
    return out


SLICES = _slices()
SMOOTHED_DIMS = SLICES["t"].stop   # 202: everything before the expression


def pack_motion(scale, pitch, yaw, roll, t, exp) -> torch.Tensor:
    """Extractor outputs (any shapes holding 1, 66, 66, 66, 3, 63 values) -> (265,) float32."""
    parts = {"scale": scale, "pitch": pitch, "yaw": yaw, "roll": roll, "t": t, "exp": exp}
    flat = []
    for name, n in FIELDS:
        v = torch.as_tensor(parts[name], dtype=torch.float32).reshape(n)
        flat.append(v - 1 if name == "scale" else v)
    return torch.cat(flat)


def unpack_motion(vec: torch.Tensor) -> dict[str, torch.Tensor]:
    """(265,) -> {name: (1, n)} with scale restored (``scale - 1`` stored)."""
    out = {name: vec[s].reshape(1, -1) for name, s in SLICES.items()}
    out["scale"] = out["scale"] + 1
    return out
