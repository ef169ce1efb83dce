"""The five exported stages as plain tensor-in/tensor-out modules, with their input specs.

Each graph mirrors what the pipeline and the streaming engine call:
- encoder   image (1|B, 3, S, S)                  -> s_r, r_s, feat_0..feat_k
- decoder   latent (N, dim_w), feat_i (1|N, ...)  -> frames (N, 3, S, S)   (activation-scaled form)
- fmt       t (1,), x (B, 50, dim_w), conditions  -> velocity (B, 60, dim_w)  (B covers the guided 3x batch)
- audio     samples (B, n) normalised 16 kHz      -> features (B, n // 640, dim_a)  (frame j <- conv feature 2j)
- emotion   samples (B, n)                        -> probabilities (B, dim_e)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from float_rt.model import FloatModel
from float_rt.motion.fused import FusedDecoder


class EncoderGraph(nn.Module):
    def __init__(self, model: FloatModel):
        super().__init__()
        self.encoder = model.motion.encoder
        # The QR of the direction matrix is constant at inference: computed once, stored as a constant.
        self.register_buffer("basis", model.motion.direction.basis().clone())

    def forward(self, image):
        s_r, feats = self.encoder(image)
        r_s = self.encoder.motion_coefficients(s_r) @ self.basis.T
        return (s_r, r_s, *feats)


class DecoderGraph(nn.Module):
    def __init__(self, model: FloatModel):
        super().__init__()
        # Activation-scaled form: constant weights, any batch of frames.
        self.decoder = FusedDecoder(model.motion.decoder, weight_mod=False)

    def forward(self, latent, *feats):
        n = latent.shape[0]
        return self.decoder(latent, [f.expand(n, -1, -1, -1) for f in feats])


class FMTGraph(nn.Module):
    def __init__(self, model: FloatModel):
        super().__init__()
        self.fmt = model.fmt

    def forward(self, t, x, wa, wr, we, prev_x, prev_wa):
        return self.fmt(t, x, wa, wr, we, prev_x, prev_wa)


class AudioGraph(nn.Module):
    def __init__(self, model: FloatModel):
        super().__init__()
        self.audio = model.audio

    def forward(self, samples):
        return self.audio.encode_frames(samples)


class EmotionGraph(nn.Module):
    def __init__(self, model: FloatModel):
        super().__init__()
        self.emotion = model.emotion

    def forward(self, samples):
        return self.emotion(samples)


@dataclass
class GraphSpec:
    name: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]           # example inputs (names in order)
    outputs: list[str]
    dynamic: dict[str, dict[int, str]]        # dynamic axes per input/output name
    opset: int = 18                           # the lowest that exports it (grid_sample >= 16, LayerNorm one op from 17)
    make: Callable[[int, int], dict[str, torch.Tensor]] | None = None   # (batch, seed) -> inputs at another batch
    traced: nn.Module | None = None           # an export-friendly form of ``module`` (same weights) to trace instead;
                                              # the graph is still checked against ``module``, the product's path


def graph_specs(model: FloatModel, audio_seconds: float = 2.6, batch: int = 2) -> list[GraphSpec]:
    """Example inputs sized like the real calls (the streaming audio window by default)."""
    m = model.cfg
    dev = model.device
    s = m.input_size
    with torch.no_grad():
        _, feats = model.motion.encoder(torch.zeros(1, 3, s, s, device=dev))
    feat_names = [f"feat_{i}" for i in range(len(feats))]
    n = int(audio_seconds * m.sampling_rate) // m.samples_per_frame * m.samples_per_frame
    rnd = lambda *shape: torch.randn(*shape, device=dev)  # noqa: E731
    b3 = 3 * batch
    return [
        GraphSpec("encoder", EncoderGraph(model), {"image": rnd(1, 3, s, s).clamp(-1, 1)},
                  ["s_r", "r_s", *feat_names], {"image": {0: "batch"}, "s_r": {0: "batch"}, "r_s": {0: "batch"},
                                                **{f: {0: "batch"} for f in feat_names}}),
        GraphSpec("decoder", DecoderGraph(model),
                  {"latent": rnd(batch, m.dim_w), **{f: x for f, x in zip(feat_names, feats)}}, ["frames"],
                  {"latent": {0: "frames"}, "frames": {0: "frames"}, **{f: {0: "ref_batch"} for f in feat_names}}),
        GraphSpec("fmt", FMTGraph(model),
                  {"t": torch.full((1,), 0.5, device=dev), "x": rnd(b3, m.num_frames, m.dim_w),
                   "wa": rnd(b3, m.num_frames, m.dim_a), "wr": rnd(b3, m.dim_w),
                   "we": torch.softmax(rnd(b3, 1, m.dim_e), -1), "prev_x": rnd(b3, m.num_prev_frames, m.dim_w),
                   "prev_wa": rnd(b3, m.num_prev_frames, m.dim_a)}, ["velocity"],
                  {k: {0: "batch"} for k in ("x", "wa", "wr", "we", "prev_x", "prev_wa", "velocity")}),
        GraphSpec("audio", AudioGraph(model), {"samples": rnd(batch, n)}, ["features"],
                  {"samples": {0: "batch", 1: "samples"}, "features": {0: "batch", 1: "frames"}}),
        GraphSpec("emotion", EmotionGraph(model), {"samples": rnd(batch, n)}, ["probs"],
                  {"samples": {0: "batch", 1: "samples"}, "probs": {0: "batch"}}),
    ]

