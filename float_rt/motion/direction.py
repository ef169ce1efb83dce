"""Learned motion directions: an orthonormal basis (QR of the stored matrix)."""
from __future__ import annotations

import torch
from torch import nn


class MotionDirections(nn.Module):
    def __init__(self, dim_w: int, dim_m: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim_w, dim_m))
        self._basis: torch.Tensor | None = None

    def basis(self) -> torch.Tensor:
        # Constant at inference: computed once and cached (cleared on reload).
        if self._basis is None or self._basis.device != self.weight.device:
            q, _ = torch.linalg.qr(self.weight.detach() + 1e-8)
            self._basis = q
        return self._basis

    def invalidate(self) -> None:
        self._basis = None

    def forward(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Map motion coefficients (B, dim_m) to a latent offset (B, dim_w)."""
        return coefficients @ self.basis().T
