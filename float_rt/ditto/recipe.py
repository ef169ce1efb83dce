"""Deterministic "recipe" weights for Ditto files, computed from key names and shapes.

The rules are those of shared/reference/ditto/README.md ("The recipe"); they make a file any
implementation can regenerate, so our loader and math can be checked against the official code
without the published weights.  Only the rules LMDM and the HuBERT stand-in need are here.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch

from .config import PUBLISHED_SIZES, LMDMSizes
from .keys import lmdm_keys
from .lmdm import MotionDecoder

HUBERT_STUB_KEYS = {"hubert_stub.conv.weight": (1024, 1, 400), "hubert_stub.conv.bias": (1024,)}


def _normal(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


def rotary_freqs(dim: int) -> torch.Tensor:
    return 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))


def recipe_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The recipe value of one LMDM / HuBERT-stub key (the rules in the README's order)."""
    shape = tuple(shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros((), dtype=torch.int64)
    if key.endswith("rotary.freqs"):
        return rotary_freqs(2 * shape[0])
    n = _normal(key, shape)
    if key.endswith(("null_cond_embed", "null_cond_hidden")):
        return n
    if key.startswith("final_layer.") and key.endswith("weight"):
        return n * (0.1 / math.sqrt(math.prod(shape[1:])))
    # the FLOAT fallback (float_rt/recipe.py): biases, matrices, norm weights, the rest
    if key.endswith("bias"):
        return 0.1 * n
    if len(shape) >= 2:
        return n * (1.0 / math.sqrt(math.prod(shape[1:])))
    if key.endswith("weight"):
        return 1 + 0.1 * n
    return 0.1 * n


def lmdm_recipe_state(sizes: LMDMSizes = PUBLISHED_SIZES) -> dict[str, torch.Tensor]:
    """Every key of the published LMDM file for ``sizes``, filled with recipe values."""
    with torch.device("meta"):
        model = MotionDecoder(sizes)
    return {e.published: recipe_tensor(e.published, e.shape) for e in lmdm_keys(model)}


def write_lmdm_recipe(path: str | Path, sizes: LMDMSizes = PUBLISHED_SIZES) -> Path:
    """A file in the published layout ``{"model_state_dict": state}`` with recipe weights."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": lmdm_recipe_state(sizes)}, str(path))
    return path


def hubert_stub_weights() -> tuple[torch.Tensor, torch.Tensor]:
    w, b = (recipe_tensor(k, s) for k, s in HUBERT_STUB_KEYS.items())
    return w, b
