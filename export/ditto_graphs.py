"""Ditto's stages as plain tensor-in/tensor-out modules, with example inputs taken from the model itself.

Each graph wraps the loaded networks (no copies of their weights, no change to them):
- appearance  image (B, 3, 256, 256) in [0, 1]          -> f_s (B, C, D, h, w)
- motion      image (B, 3, 256, 256) in [0, 1]          -> scale, pitch, yaw, roll, t, exp, kp (raw head outputs)
- stitch      x_s (1|B, K, 3), x_d (B, K, 3)             -> stitched x_d (B, K, 3)
- warp        f_s (1|B, ...), x_s (1|B, K, 3), x_d (B, K, 3) -> warped feature (B, C', h, w)  (two 5-D grid samples)
- decoder     feature (B, C', h, w)                      -> rgb (B, 3, H, W) in [0, 1]
- lmdm_audio  cond (B, L, 1103)                          -> tokens (B, L, W), pooled (B, W)   (once per window)
- lmdm        x (B, L, 265), cond_frame (B, 265), tokens, pooled, t (B,), guidance (1,)
              -> the guided clean-window prediction ``unc + (cond - unc) * guidance`` (one DDIM step's model work;
              the DDIM update itself is a few multiply-adds and stays with the sampler)

Batches of frames are dynamic ("frames"), the source's tensors broadcast from batch 1 ("ref_batch"); the LMDM
graphs take a dynamic batch of windows ("batch") of the model's fixed length.  Every input is float32 (the
diffusion time too), so the same graphs serve onnxruntime and TensorRT.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from float_rt.ditto.generate import DittoModel
from float_rt.ditto.lmdm import AudioContext, MotionDecoder
from float_rt.liveportrait.kinematics import transform_keypoints

from .backends import fingerprint
from .graphs import GraphSpec
from .onnx import export_specs

OPSET = 18        # as FLOAT's graphs
OPSET_WARP = 20   # GridSample on 5-D (volumetric) inputs exists from opset 20 on
MOTION_OUTPUTS = ["scale", "pitch", "yaw", "roll", "t", "exp", "kp"]


class MotionGraph(nn.Module):
    """The motion extractor's head outputs as a tuple (the graph's outputs, in MOTION_OUTPUTS order)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image):
        info = self.net(image)
        return tuple(getattr(info, name) for name in MOTION_OUTPUTS)


class StitchGraph(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x_s, x_d):
        return self.net.stitch(x_s, x_d)


class WarpGraph(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, f_s, x_s, x_d):
        b = x_d.shape[0]     # the source broadcast here, so the graph takes batch 1 or B for it
        return self.net(f_s.expand(b, -1, -1, -1, -1), x_s.expand(b, -1, -1), x_d)


class PairedRotary(nn.Module):
    """The LMDM's rotary positions with each pair's angle duplicated by stack-and-flatten: the exporter
    mis-sizes ``repeat_interleave`` on a computed length.  Same values, same frequencies buffer."""

    def __init__(self, freqs: torch.Tensor):
        super().__init__()
        self.register_buffer("freqs", freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[-2], device=x.device).to(self.freqs.dtype)
        half = pos[:, None] * self.freqs[None, :]
        angles = torch.stack((half, half), dim=-1).flatten(-2).to(x.dtype)
        pairs = x.unflatten(-1, (-1, 2))
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * angles.cos() + turned * angles.sin()


def exportable_lmdm(lmdm: MotionDecoder) -> MotionDecoder:
    """A view of the loaded LMDM (the same parameters, the original left untouched) whose rotary
    positions trace into ONNX correctly."""
    view = copy.copy(lmdm)
    view._modules = dict(lmdm._modules)
    view._modules["rotary"] = PairedRotary(lmdm.rotary.freqs)
    return view


class LMDMAudioGraph(nn.Module):
    def __init__(self, net: MotionDecoder):
        super().__init__()
        self.net = net

    def forward(self, cond):
        ctx = self.net.audio_context(cond)
        return ctx.tokens, ctx.pooled


class LMDMGuidedGraph(nn.Module):
    """Both predictions of classifier-free guidance as one forward of twice the batch (learned null
    audio first), then ``unc + (cond - unc) * guidance``."""

    def __init__(self, net: MotionDecoder):
        super().__init__()
        self.net = net

    def forward(self, x, cond_frame, tokens, pooled, t, guidance):
        b = x.shape[0]
        null = self.net.null_context(b)
        both = AudioContext(torch.cat([null.tokens, tokens]), torch.cat([null.pooled, pooled]))
        out = self.net(torch.cat([x, x]), torch.cat([cond_frame, cond_frame]), both, torch.cat([t, t]))
        unc, cond = out[:b], out[b:]
        return unc + (cond - unc) * guidance


@torch.no_grad()
def example_inputs(model: DittoModel, frames: int = 2, windows: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs as the pipeline makes them: a source crop, its keypoints and features, driven keypoints of a
    turned head, the warped feature, an LMDM condition and a noisy window at a middle diffusion time."""
    dev = model.device
    r, lm = model.renderer, model.lmdm
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(dev)

    size = model.cfg.source.crop_size
    image = torch.rand(1, 3, size, size, generator=gen).to(dev)
    info, x_s, f_s = r.source(image)
    turned = replace(info, pitch=info.pitch.expand(frames, -1) + rnd(frames, info.pitch.shape[1], scale=0.5),
                     yaw=info.yaw.expand(frames, -1) + rnd(frames, info.yaw.shape[1], scale=0.5),
                     roll=info.roll.expand(frames, -1), scale=info.scale.expand(frames, -1),
                     t=info.t.expand(frames, -1) + rnd(frames, 3, scale=0.02),
                     exp=info.exp.expand(frames, -1) + rnd(frames, info.exp.shape[1], scale=0.02))
    x_d = r.stitch.stitch(x_s, transform_keypoints(turned))
    s = lm.sizes
    cond = torch.cat([rnd(windows, s.seq_len, 1024, scale=0.3),
                      torch.rand(windows, s.seq_len, s.cond_dim - 1024, generator=gen).to(dev)], dim=-1)
    ctx = lm.audio_context(cond)
    return {"image": torch.rand(frames, 3, size, size, generator=gen).to(dev), "f_s": f_s, "x_s": x_s,
            "x_d": x_d, "feature": r.warp(f_s, x_s, x_d), "cond": cond, "x": rnd(windows, s.seq_len, s.motion_dim),
            "cond_frame": info.to_vector().expand(windows, -1) + rnd(windows, s.motion_dim, scale=0.01),
            "tokens": ctx.tokens, "pooled": ctx.pooled,
            "t": torch.full((windows,), 500.0, device=dev), "guidance": torch.full((1,), 2.0, device=dev)}


def graph_specs(model: DittoModel, batch: int = 2) -> list[GraphSpec]:
    """The seven graphs with example inputs (``batch`` frames, one window); ``make(n, seed)`` on each
    spec gives inputs at another batch ``n`` (the source's tensors stay at batch 1)."""
    ex = example_inputs(model, frames=batch)
    made: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def other(n, seed, keys):
        if (n, seed) not in made:
            made[(n, seed)] = example_inputs(model, frames=n, windows=n, seed=seed)
        return {k: made[(n, seed)][k] for k in keys}

    def spec(name, module, inputs, outputs, axes, opset=OPSET, traced=None):
        dynamic = {k: {0: axes[k]} for k in [*inputs, *outputs] if k in axes}
        return GraphSpec(name, module, {k: ex[k] for k in inputs}, outputs, dynamic, opset,
                         lambda n, seed: other(n, seed, inputs), traced)

    r, lm = model.renderer, model.lmdm
    lm_export = exportable_lmdm(lm)

    per_frame = {"image": "batch", "f_s": "ref_batch", "x_s": "ref_batch", "x_d": "frames", "feature": "frames",
                 "rgb": "frames", "x_d_stitched": "frames", **{k: "batch" for k in MOTION_OUTPUTS}}
    per_window = {k: "batch" for k in ("cond", "tokens", "pooled", "x", "cond_frame", "t", "x_start")}
    return [
        spec("appearance", r.appearance, ["image"], ["f_s"], {"image": "batch", "f_s": "batch"}),
        spec("motion", MotionGraph(r.motion), ["image"], MOTION_OUTPUTS, per_frame),
        spec("stitch", StitchGraph(r.stitch), ["x_s", "x_d"], ["x_d_stitched"], per_frame),
        spec("warp", WarpGraph(r.warp), ["f_s", "x_s", "x_d"], ["feature"], per_frame, OPSET_WARP),
        spec("decoder", r.decoder, ["feature"], ["rgb"], per_frame),
        spec("lmdm_audio", LMDMAudioGraph(lm), ["cond"], ["tokens", "pooled"], per_window,
             traced=LMDMAudioGraph(lm_export)),
        spec("lmdm", LMDMGuidedGraph(lm), ["x", "cond_frame", "tokens", "pooled", "t", "guidance"], ["x_start"],
             per_window, traced=LMDMGuidedGraph(lm_export)),
    ]


def ditto_fingerprint(model: DittoModel) -> str:
    """The weights' identity (as for FLOAT's engines): the renderer's and the LMDM's tensors."""
    return fingerprint(nn.ModuleDict({"renderer": model.renderer, "lmdm": model.lmdm}))


def export_ditto_onnx(model: DittoModel, config_name: str, out, log=print) -> dict:
    """Ditto's seven graphs into ``out`` with their manifest (HuBERT is published as ONNX already)."""
    return export_specs(graph_specs(model), out, {"config": config_name, "family": "ditto",
                                                  "fingerprint": ditto_fingerprint(model)}, log)
