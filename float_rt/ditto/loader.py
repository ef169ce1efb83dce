"""Loading the published ``lmdm_v0.4_hubert.pth`` into our MotionDecoder, key by key."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError
from .config import PUBLISHED_SIZES, LMDMSizes
from .keys import KeyEntry, lmdm_keys
from .lmdm import MotionDecoder, pack_lmdm_linears

LMDM_FILE = "lmdm_v0.4_hubert.pth"
STATE_ENTRY = "model_state_dict"   # the file is {"model_state_dict": state, ...maybe training entries}


@dataclass
class LMDMLoadReport:
    path: Path
    ignored: list[str] = field(default_factory=list)        # keys of the file we do not use
    other_entries: list[str] = field(default_factory=list)  # top-level entries besides the state dict

    def summary(self) -> str:
        parts = []
        if self.ignored:
            parts.append(f"{len(self.ignored)} unused key(s) ignored ({', '.join(self.ignored[:3])}"
                         f"{', ...' if len(self.ignored) > 3 else ''})")
        if self.other_entries:
            parts.append(f"other entries ignored: {', '.join(self.other_entries)}")
        return f"{self.path.name}: " + "; ".join(parts) if parts else ""


def read_lmdm_state(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict inside the file and the names of any other top-level entries."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"LMDM weights not found: {path}")
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} does not hold a dict")
    if isinstance(raw.get(STATE_ENTRY), dict):
        return raw[STATE_ENTRY], sorted(k for k in raw if k != STATE_ENTRY)
    if raw and all(isinstance(v, torch.Tensor) for v in raw.values()):   # a bare state dict
        return raw, []
    raise CheckpointError(f"{path} has no '{STATE_ENTRY}' entry (found: {', '.join(map(str, list(raw)[:5]))})")


def match_state(entries: list[KeyEntry], state: dict[str, torch.Tensor],
                source: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our tensors taken from ``state`` by ``entries``, and the file's unused keys.

    A missing or mis-shaped key is an error naming the file, the key and the shapes.
    """
    problems, ours, used = [], {}, set()
    for e in entries:
        if e.published not in state:
            problems.append(f"missing key {e.published} (expected shape {list(e.shape)})")
            continue
        used.add(e.published)
        tensor = state[e.published]
        if tuple(tensor.shape) != e.shape:
            problems.append(f"key {e.published}: expected shape {list(e.shape)}, file has {list(tensor.shape)}")
            continue
        if e.ours is not None:
            ours[e.ours] = tensor
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"{source}: " + "; ".join(problems[:5]) + more +
                              " - do the LMDM sizes match these weights?")
    return ours, sorted(set(state) - used)


def load_lmdm(path: str | Path, sizes: LMDMSizes = PUBLISHED_SIZES,
              device: str | torch.device = "cpu") -> tuple[MotionDecoder, LMDMLoadReport]:
    """Build MotionDecoder(sizes) and fill every tensor from the published file (float32, eval)."""
    path = Path(path)
    state, others = read_lmdm_state(path)
    with torch.device("meta"):
        model = MotionDecoder(sizes)
    tensors, ignored = match_state(lmdm_keys(model), state, path)
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True, assign=True)
    # Linear layers on oneDNN with packed weights on the CPU (same parameters, F.linear elsewhere).
    model = pack_lmdm_linears(model.to(device).eval())
    return model, LMDMLoadReport(path, ignored, others)


def check_lmdm(path: str | Path, sizes: LMDMSizes = PUBLISHED_SIZES) -> LMDMLoadReport:
    """The loader's key and shape check without allocating the model."""
    path = Path(path)
    state, others = read_lmdm_state(path)
    with torch.device("meta"):
        model = MotionDecoder(sizes)
    _, ignored = match_state(lmdm_keys(model), state, path)
    return LMDMLoadReport(path, ignored, others)
