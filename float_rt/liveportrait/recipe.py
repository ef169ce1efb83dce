"""Deterministic "recipe" weights for the renderer files, computed from key names
(shared/reference/ditto/README.md, "The recipe").  The output is noise with realistic geometry:
source keypoints inside the warp volume, so every layer is exercised.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

from .keys import FILES, STITCH_ENTRY, published_shapes
from .renderer import Renderer
from .sizes import RendererSizes

# Keys whose weights get a 10x smaller gain, to keep the predicted geometry in range.
_SMALL_HEADS = ("detector.fc_kp.", "detector.fc_exp.", "detector.fc_t.", "detector.fc_scale.", "final_layer.")


def _normal(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


def recipe_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The recipe value of one key (not ``weight_v``: it is derived from its conv's
    ``weight_orig`` and ``weight_u``, see ``recipe_state``)."""
    shape = tuple(shape)
    n = _normal(key, shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros((), dtype=torch.int64)
    if key.endswith("rotary.freqs"):
        d = 2 * shape[0]
        return 1.0 / (10000 ** (torch.arange(0, d, 2)[: d // 2].float() / d))
    if key.endswith("weight_u"):
        return F.normalize(n, dim=0, eps=1e-12)
    if key.endswith("weight_v"):
        raise ValueError(f"{key}: weight_v needs its conv's weight_orig and weight_u (use recipe_state)")
    if key.endswith("running_var"):
        return 1 + 0.1 * n
    if key.endswith(("null_cond_embed", "null_cond_hidden")):
        return n
    if key == "detector.fc_scale.bias":
        return 1 + 0.1 * n
    if key.startswith(_SMALL_HEADS) and key.endswith("weight"):
        return n * (0.1 / math.sqrt(math.prod(shape[1:])))
    if key.endswith("bias"):
        return 0.1 * n
    if len(shape) >= 2:
        return n * (1.0 / math.sqrt(math.prod(shape[1:])))
    if key.endswith("weight"):
        return 1 + 0.1 * n
    return 0.1 * n


def recipe_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Recipe values for every key of one file's state dict."""
    out = {}
    for key, shape in shapes.items():
        if key.endswith("weight_v"):
            base = key[: -len("weight_v")]
            w = recipe_tensor(base + "weight_orig", tuple(shapes[base + "weight_orig"]))
            u = recipe_tensor(base + "weight_u", tuple(shapes[base + "weight_u"]))
            # Makes the spectral-norm divisor u.(W v) = ||W^T u|| > 0.
            out[key] = F.normalize(torch.mv(w.reshape(w.shape[0], -1).t(), u), dim=0, eps=1e-12)
        else:
            out[key] = recipe_tensor(key, tuple(shape))
    return out


def write_published_files(out_dir: str | Path, shapes_by_file: dict[str, dict[str, tuple[int, ...]]]) -> Path:
    """Write recipe files for ``{file: {key: shape}}``.  File names may be given with or without
    ``models/`` (a case's keys.json has bare names); other files (LMDM, HuBERT) are skipped."""
    out_dir = Path(out_dir)
    for name, shapes in shapes_by_file.items():
        rel = name if name.startswith("models/") else f"models/{name}"
        if rel not in FILES:
            continue
        state = recipe_state({k: tuple(s) for k, s in shapes.items()})
        if FILES[rel] == "stitch":
            state = {STITCH_ENTRY: state}
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, str(path))
    return out_dir


def write_recipe_renderer(out_dir: str | Path, sizes: RendererSizes | None = None) -> Path:
    """The five renderer files for ``sizes`` in the published layout, filled with recipe weights."""
    with torch.device("meta"):
        renderer = Renderer(sizes)
    return write_published_files(out_dir, published_shapes(renderer))
