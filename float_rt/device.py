"""The torch device a command runs on (shared by every family)."""
from __future__ import annotations

import torch

from .errors import FloatRTError


def resolve_device(name: str | None) -> torch.device:
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FloatRTError(f"device {name!r} requested but CUDA is not available here (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise FloatRTError(f"unsupported device {name!r} (cpu or cuda[:N])")
    return device
