"""Deterministic "recipe" weights for Ditto files, computed from key names and shapes.

The rules are those of shared/reference/ditto/README.md ("The recipe"), one table for every file
of the family, kept in ``float_rt/liveportrait/recipe.py``; they make a file any implementation can
regenerate, so our loader and math can be checked against the official code without the
published weights.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..liveportrait.recipe import recipe_tensor
from .config import PUBLISHED_SIZES, LMDMSizes
from .keys import lmdm_keys
from .lmdm import MotionDecoder

HUBERT_STUB_KEYS = {"hubert_stub.conv.weight": (1024, 1, 400), "hubert_stub.conv.bias": (1024,)}


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
