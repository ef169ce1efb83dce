"""Our LMDM parameter names -> the keys of the published ``lmdm_v0.4_hubert.pth``.

The published state dict names follow the official module tree; ours follow lmdm.py.  The one
rotary buffer we hold is listed by the official tree under every module that shares it (11 keys);
the top-level one is loaded and the copies are only checked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# Whole-name renames, then per-block renames (ours -> published).
_TOP = {
    "rotary.freqs": "rotary.freqs",
    "time_in.weight": "time_mlp.1.weight", "time_in.bias": "time_mlp.1.bias",
    "time_to_film.weight": "to_time_cond.0.weight", "time_to_film.bias": "to_time_cond.0.bias",
    "time_to_tokens.weight": "to_time_tokens.0.weight", "time_to_tokens.bias": "to_time_tokens.0.bias",
    "null_tokens": "null_cond_embed", "null_pooled": "null_cond_hidden",
    "memory_norm.weight": "norm_cond.weight", "memory_norm.bias": "norm_cond.bias",
    "motion_in.weight": "input_projection.weight", "motion_in.bias": "input_projection.bias",
    "audio_in.weight": "cond_projection.weight", "audio_in.bias": "cond_projection.bias",
    "pool_norm.weight": "non_attn_cond_projection.0.weight", "pool_norm.bias": "non_attn_cond_projection.0.bias",
    "pool_fc1.weight": "non_attn_cond_projection.1.weight", "pool_fc1.bias": "non_attn_cond_projection.1.bias",
    "pool_fc2.weight": "non_attn_cond_projection.3.weight", "pool_fc2.bias": "non_attn_cond_projection.3.bias",
    "motion_out.weight": "final_layer.weight", "motion_out.bias": "final_layer.bias",
}
_ENCODER = {
    "attn_norm": "norm1", "ff_norm": "norm2", "attn.out": "self_attn.out_proj",
    "ff.up": "linear1", "ff.down": "linear2",
}
_DECODER = {
    "self_norm": "norm1", "cross_norm": "norm2", "ff_norm": "norm3",
    "self_attn.out": "self_attn.out_proj", "cross_attn.out": "multihead_attn.out_proj",
    "self_film.proj": "film1.block.1", "cross_film.proj": "film2.block.1", "ff_film.proj": "film3.block.1",
    "ff.up": "linear1", "ff.down": "linear2",
}
# packed q/k/v: "<attn>.qkv.weight" -> "<published attn>.in_proj_weight"
_QKV = {"attn": "self_attn", "self_attn": "self_attn", "cross_attn": "multihead_attn"}


@dataclass(frozen=True)
class KeyEntry:
    published: str
    ours: str | None          # None: present in the file, checked for shape, not loaded (rotary copies)
    shape: tuple[int, ...]


def _block_name(rest: str, table: dict[str, str]) -> str:
    m = re.fullmatch(r"(\w+)\.qkv\.(weight|bias)", rest)
    if m:
        return f"{_QKV[m.group(1)]}.in_proj_{m.group(2)}"
    module, _, leaf = rest.rpartition(".")
    if module not in table:
        raise KeyError(rest)
    return f"{table[module]}.{leaf}"


def published_name(ours: str) -> str:
    """The published key of one of our parameter/buffer names."""
    if ours in _TOP:
        return _TOP[ours]
    m = re.fullmatch(r"audio_encoder\.(\d+)\.(.+)", ours)
    if m:
        return f"cond_encoder.{m.group(1)}.{_block_name(m.group(2), _ENCODER)}"
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", ours)
    if m:
        return f"seqTransDecoder.stack.{m.group(1)}.{_block_name(m.group(2), _DECODER)}"
    raise KeyError(f"no published name for {ours!r}")


def lmdm_keys(model: torch.nn.Module) -> list[KeyEntry]:
    """Every key of the published file for ``model``'s sizes (our parameter order, then the rotary
    copies the official module tree also lists)."""
    state = model.state_dict(keep_vars=True)
    entries = [KeyEntry(published_name(k), k, tuple(v.shape)) for k, v in state.items()]
    freqs = tuple(state["rotary.freqs"].shape)
    copies = [f"cond_encoder.{i}.rotary.freqs" for i in range(len(model.audio_encoder))]
    copies += [f"seqTransDecoder.stack.{i}.rotary.freqs" for i in range(len(model.blocks))]
    return entries + [KeyEntry(name, None, freqs) for name in copies]
