"""The LMDM denoiser: a FiLM transformer decoder over motion frames, attending to audio tokens.

One forward maps a noisy motion window ``x`` (B, L, 265), the conditioning frame (B, 265), the
per-frame condition (B, L, 1103) and the diffusion time (B,) to the predicted clean window.
Every block is pre-norm (LayerNorm eps 1e-5), feed-forwards use exact GELU, and attention uses
rotary positions applied to the attention *inputs* (queries and keys, not values) before the
in-projection, as the published weights were trained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import packed
from .config import PUBLISHED_SIZES, LMDMSizes


def _packed_ok(x: torch.Tensor) -> bool:
    """Whether oneDNN-packed weights serve this input (CPU, fp32, inference, not being traced or
    exported; see ``float_rt.packed``)."""
    return packed.available() and packed.fast_cpu(x)


class PackedLinearNoTrace(packed.PackedLinear):
    """``float_rt.packed.PackedLinear`` that gives traced and exported graphs the plain ``F.linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if packed.exporting():
            return F.linear(x, self.weight, self.bias)
        return super().forward(x)


def pack_lmdm_linears(model: nn.Module) -> nn.Module:
    """Every ``nn.Linear`` of the model on oneDNN-packed weights (same parameters and names)."""
    if packed.available():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear:
                    setattr(parent, name, PackedLinearNoTrace(child))
    return model


def _packed_rows(linear: nn.Linear, name: str, rows: slice) -> torch.Tensor:
    """``linear.weight[rows]`` packed for oneDNN once, repacked when the weight changes."""
    key = (linear.weight._version, linear.weight.data_ptr())
    hit = linear.__dict__.get(name)
    if hit is None or hit[0] != key:
        with torch.no_grad():
            hit = (key, torch.ops.mkldnn._reorder_linear_weight(linear.weight[rows].contiguous(), None))
        linear.__dict__[name] = hit
    return hit[1]


class Rotary(nn.Module):
    """Rotary positions over interleaved pairs: (x0, x1) turns by angle pos * freq into
    (x0 cos - x1 sin, x1 cos + x0 sin).  One instance, owned by the decoder and handed to
    every block, serves every attention (positions restart at 0 for each sequence)."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        freqs = 1.0 / (base ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.register_buffer("freqs", freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[-2], device=x.device).to(self.freqs.dtype)
        angles = (pos[:, None] * self.freqs[None, :]).repeat_interleave(2, dim=-1).to(x.dtype)
        pairs = x.unflatten(-1, (-1, 2))
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * angles.cos() + turned * angles.sin()


class Attention(nn.Module):
    """Multi-head attention with packed q/k/v projections (the ``nn.MultiheadAttention`` layout)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)   # (B, H, n, d)

    def forward(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        # q and k are the rotated inputs, v the plain ones, so the three projections are separate
        if _packed_ok(q_in):
            return self._forward_packed(q_in, k_in, v_in)
        wq, wk, wv = self.qkv.weight.chunk(3)
        bq, bk, bv = self.qkv.bias.chunk(3)
        q, k, v = (self._heads(F.linear(x, w, b)) for x, w, b in ((q_in, wq, bq), (k_in, wk, bk), (v_in, wv, bv)))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out(out.transpose(1, 2).flatten(-2))

    def _forward_packed(self, q_in, k_in, v_in):
        """The same on oneDNN-packed weight slices; a self-attention's q and k (same input) in one product."""
        w = self.qkv.out_features // 3
        b = self.qkv.bias

        def proj(x, name, rows):
            return torch.ops.mkldnn._linear_pointwise(x, _packed_rows(self.qkv, name, rows), b[rows], "none", [], "")

        if q_in is k_in:
            q, k = proj(q_in, "_packed_qk", slice(0, 2 * w)).chunk(2, dim=-1)
        else:
            q, k = proj(q_in, "_packed_q", slice(0, w)), proj(k_in, "_packed_k", slice(w, 2 * w))
        v = proj(v_in, "_packed_v", slice(2 * w, 3 * w))
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        return self.out(out.transpose(1, 2).flatten(-2))


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))   # exact (erf) GELU


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + feed-forward over the audio-condition tokens."""

    def __init__(self, width: int, heads: int, ff_width: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ff_norm = nn.LayerNorm(width)
        self.ff = FeedForward(width, ff_width)

    def forward(self, x: torch.Tensor, rotary: Rotary) -> torch.Tensor:
        h = self.attn_norm(x)
        qk = rotary(h)
        x = x + self.attn(qk, qk, h)
        return x + self.ff(self.ff_norm(x))


class FiLM(nn.Module):
    """(scale, shift) for one sub-block from the time/condition vector; scale comes first."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = nn.Linear(width, 2 * width)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.proj(F.mish(t)).unsqueeze(1).chunk(2, dim=-1)
        return scale, shift


class DecoderBlock(nn.Module):
    """Pre-norm self-attention, cross-attention to the memory and feed-forward, each output
    modulated by FiLM as ``(1 + scale) * out + shift`` before the residual add."""

    def __init__(self, width: int, heads: int, ff_width: int):
        super().__init__()
        self.self_norm = nn.LayerNorm(width)
        self.self_attn = Attention(width, heads)
        self.self_film = FiLM(width)
        self.cross_norm = nn.LayerNorm(width)
        self.cross_attn = Attention(width, heads)
        self.cross_film = FiLM(width)
        self.ff_norm = nn.LayerNorm(width)
        self.ff = FeedForward(width, ff_width)
        self.ff_film = FiLM(width)

    @staticmethod
    def _modulate(out: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        scale, shift = film
        return (scale + 1) * out + shift

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_keys: torch.Tensor, t: torch.Tensor,
                rotary: Rotary) -> torch.Tensor:
        h = self.self_norm(x)
        qk = rotary(h)
        x = x + self._modulate(self.self_attn(qk, qk, h), self.self_film(t))
        h = self.cross_norm(x)
        x = x + self._modulate(self.cross_attn(rotary(h), memory_keys, memory), self.cross_film(t))
        return x + self._modulate(self.ff(self.ff_norm(x)), self.ff_film(t))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``[sin | cos]`` of integer diffusion times, (B,) -> (B, dim)."""
    half = dim // 2
    rate = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=t.device) * -rate)
    args = t[:, None] * freqs[None, :]
    return torch.cat((args.sin(), args.cos()), dim=-1)


@dataclass
class AudioContext:
    """The audio side of one window: encoded tokens (B, L, W) and their pooled FiLM vector (B, W).

    It depends on the condition only, not on x or t, so a sampler computes it once per window.
    """
    tokens: torch.Tensor
    pooled: torch.Tensor


class MotionDecoder(nn.Module):
    def __init__(self, sizes: LMDMSizes = PUBLISHED_SIZES):
        super().__init__()
        self.sizes = sizes
        w = sizes.width
        self.rotary = Rotary(w)
        self.time_in = nn.Linear(w, 4 * w)
        self.time_to_film = nn.Linear(4 * w, w)
        self.time_to_tokens = nn.Linear(4 * w, 2 * w)   # two memory tokens
        self.null_tokens = nn.Parameter(torch.zeros(1, sizes.seq_len, w))   # unconditional audio tokens
        self.null_pooled = nn.Parameter(torch.zeros(1, w))
        self.memory_norm = nn.LayerNorm(w)
        self.motion_in = nn.Linear(2 * sizes.motion_dim, w)
        self.audio_in = nn.Linear(sizes.cond_dim, w)
        self.audio_encoder = nn.ModuleList(
            EncoderBlock(w, sizes.num_heads, sizes.ff_width) for _ in range(sizes.encoder_layers))
        self.pool_norm = nn.LayerNorm(w)
        self.pool_fc1 = nn.Linear(w, w)
        self.pool_fc2 = nn.Linear(w, w)
        self.blocks = nn.ModuleList(
            DecoderBlock(w, sizes.num_heads, sizes.ff_width) for _ in range(sizes.num_layers))
        self.motion_out = nn.Linear(w, sizes.motion_dim)

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pool_fc2(F.silu(self.pool_fc1(self.pool_norm(tokens.mean(dim=-2)))))

    def audio_context(self, cond: torch.Tensor) -> AudioContext:
        """Encode the (B, L, 1103) condition."""
        tokens = self.audio_in(cond)
        for block in self.audio_encoder:
            tokens = block(tokens, self.rotary)
        return AudioContext(tokens, self._pool(tokens))

    def null_context(self, batch: int = 1) -> AudioContext:
        """The learned stand-in for 'no audio', used by classifier-free guidance."""
        return AudioContext(self.null_tokens.expand(batch, -1, -1), self.null_pooled.expand(batch, -1))

    def forward(self, x: torch.Tensor, cond_frame: torch.Tensor, context: AudioContext,
                t: torch.Tensor) -> torch.Tensor:
        frames = cond_frame.unsqueeze(1).expand(-1, x.shape[1], -1)
        h = self.motion_in(torch.cat([x, frames], dim=-1))
        t_hidden = F.mish(self.time_in(timestep_embedding(t, self.sizes.width)))
        film = self.time_to_film(t_hidden) + context.pooled
        t_tokens = self.time_to_tokens(t_hidden).unflatten(-1, (2, -1))
        memory = self.memory_norm(torch.cat([context.tokens, t_tokens], dim=-2))
        memory_keys = self.rotary(memory)
        for block in self.blocks:
            h = block(h, memory, memory_keys, film, self.rotary)
        return self.motion_out(h)
