"""Flow Matching Transformer: predicts the motion-latent velocity field of a window.

A window holds ``num_prev_frames`` frames of carried context followed by
``num_frames`` frames being sampled.  Conditions (reference motion, audio feature,
emotion) and the flow time are embedded per frame and drive frame-wise AdaLN;
attention is restricted to +/- ``attention_window`` frames.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

TIME_FREQ_DIM = 256


def timestep_embedding(t: torch.Tensor, dim: int = TIME_FREQ_DIM, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def local_attention_mask(length: int, radius: int, device=None) -> torch.Tensor:
    """Boolean (L, L) mask, True where frame i may attend to frame j (|i - j| <= radius)."""
    idx = torch.arange(length, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= radius


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class FMTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.dim = dim   # static normalized shape (keeps exported graphs free of shape arithmetic)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU(approximate="tanh")   # a module, so that precision fast can fuse it into fc1
        self.ada = nn.Linear(dim, 6 * dim)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.attn_out(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c)).chunk(6, dim=-1)
        x = x + g1 * self.attention(modulate(F.layer_norm(x, (self.dim,), eps=1e-6), sh1, sc1), mask)
        h = modulate(F.layer_norm(x, (self.dim,), eps=1e-6), sh2, sc2)
        return x + g2 * self.fc2(self.act(self.fc1(h)))


class FlowMatchingTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_prev = cfg.num_prev_frames
        self.window = cfg.window
        h = self.dim_h = cfg.dim_h
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.window, h))
        self.x_proj = nn.Linear(cfg.dim_w, h)
        self.t_fc1 = nn.Linear(TIME_FREQ_DIM, h)
        self.t_fc2 = nn.Linear(h, h)
        self.cond_proj = nn.Linear(cfg.dim_w + cfg.dim_a + cfg.dim_e, h)
        self.blocks = nn.ModuleList(FMTBlock(h, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.fmt_depth))
        self.final_ada = nn.Linear(h, 2 * h)
        self.out = nn.Linear(h, cfg.dim_w)
        self.register_buffer("mask", local_attention_mask(cfg.window, cfg.attention_window), persistent=False)

    def forward(self, t: torch.Tensor, x: torch.Tensor, wa: torch.Tensor, wr: torch.Tensor,
                we: torch.Tensor, prev_x: torch.Tensor, prev_wa: torch.Tensor) -> torch.Tensor:
        """Velocity for the whole window (B, window, dim_w).

        t: (1,) or (B,) flow time; x: (B, F, dim_w) current frames; wa: (B, F, dim_a);
        wr: (B, dim_w) reference motion; we: (B, 1, dim_e); prev_x/prev_wa: (B, P, .).
        """
        temb = self.t_fc2(F.silu(self.t_fc1(timestep_embedding(t.reshape(-1)))))[:, None]
        x = torch.cat([prev_x, x], dim=1)
        wa = torch.cat([prev_wa, wa], dim=1)
        n = wa.shape[1]
        h = self.x_proj(x) + self.pos_embed[:, :n]
        cond = torch.cat([wr[:, None].expand(-1, n, -1), wa, we.to(wa.dtype).expand(-1, n, -1)], dim=-1)
        c = self.cond_proj(cond) + temb
        mask = self.mask[:n, :n]
        for block in self.blocks:
            h = block(h, c, mask)
        shift, scale = self.final_ada(F.silu(c)).chunk(2, dim=-1)
        return self.out(modulate(F.layer_norm(h, (self.dim_h,), eps=1e-6), shift, scale))
