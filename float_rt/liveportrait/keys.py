"""Name table between the published LivePortrait/Ditto files and our modules.

``published_keys(renderer, file)`` lists every tensor of one published file with its shape and
where it goes in ``Renderer``.  Spectrally normalised convolutions of the decoder are stored as
``weight_orig``/``weight_u``/``weight_v``; they fill one plain ``weight`` (role ``sn_*``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

FILES = {  # published file -> the Renderer attribute it fills
    "models/appearance_extractor.pth": "appearance",
    "models/motion_extractor.pth": "motion",
    "models/warp_network.pth": "warp",
    "models/decoder.pth": "decoder",
    "models/stitch_network.pth": "stitch",
}
STITCH_ENTRY = "retarget_shoulder"  # the stitch file holds {entry: state dict}


@dataclass(frozen=True)
class PublishedKey:
    official: str
    shape: tuple[int, ...]
    ours: str            # parameter or buffer name in Renderer
    role: str = "copy"   # copy | sn_orig | sn_u | sn_v


class _Table:
    def __init__(self, root: nn.Module, prefix: str):
        self.root, self.prefix, self.rows = root, prefix, []

    def _mod(self, ours):
        return self.root.get_submodule(f"{self.prefix}.{ours}")

    def tensor(self, official: str, ours: str):
        full = f"{self.prefix}.{ours}"
        mod_name, _, leaf = full.rpartition(".")
        t = getattr(self.root.get_submodule(mod_name), leaf)
        self.rows.append(PublishedKey(official, tuple(t.shape), full))

    def affine(self, official: str, ours: str):  # conv / linear / layer norm
        self.tensor(f"{official}.weight", f"{ours}.weight")
        if self._mod(ours).bias is not None:
            self.tensor(f"{official}.bias", f"{ours}.bias")

    def bn(self, official: str, ours: str):
        for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            self.tensor(f"{official}.{leaf}", f"{ours}.{leaf}")

    def conv_bn(self, official: str, ours: str, conv="conv", norm="norm"):
        self.affine(f"{official}.{conv}", f"{ours}.conv")
        self.bn(f"{official}.{norm}", f"{ours}.bn")

    def spectral(self, official: str, ours: str):
        conv = self._mod(ours)
        w = tuple(conv.weight.shape)
        full = f"{self.prefix}.{ours}.weight"
        if conv.bias is not None:
            self.tensor(f"{official}.bias", f"{ours}.bias")
        self.rows += [PublishedKey(f"{official}.weight_orig", w, full, "sn_orig"),
                      PublishedKey(f"{official}.weight_u", (w[0],), full, "sn_u"),
                      PublishedKey(f"{official}.weight_v", (math.prod(w[1:]),), full, "sn_v")]


def _appearance(t: _Table, m):
    t.conv_bn("first", "stem")
    for i in range(len(m.down)):
        t.conv_bn(f"down_blocks.{i}", f"down.{i}")
    t.affine("second", "project")
    for i in range(len(m.res3d)):
        o = f"resblocks_3d.3dr{i}"
        for a, b in (("1", "a"), ("2", "b")):
            t.affine(f"{o}.conv{a}", f"res3d.{i}.conv_{b}")
            t.bn(f"{o}.norm{a}", f"res3d.{i}.bn_{b}")


def _motion(t: _Table, m):
    d = "detector"
    t.affine(f"{d}.downsample_layers.0.0", "backbone.stem_conv")
    t.affine(f"{d}.downsample_layers.0.1", "backbone.stem_norm")
    for i in range(len(m.backbone.transitions)):
        t.affine(f"{d}.downsample_layers.{i + 1}.0", f"backbone.transitions.{i}.norm")
        t.affine(f"{d}.downsample_layers.{i + 1}.1", f"backbone.transitions.{i}.conv")
    for i, stage in enumerate(m.backbone.stages):
        for j in range(len(stage)):
            o, b = f"{d}.stages.{i}.{j}", f"backbone.stages.{i}.{j}"
            t.affine(f"{o}.dwconv", f"{b}.spatial")
            t.affine(f"{o}.norm", f"{b}.norm")
            t.affine(f"{o}.pwconv1", f"{b}.expand")
            t.tensor(f"{o}.grn.gamma", f"{b}.grn_gamma")
            t.tensor(f"{o}.grn.beta", f"{b}.grn_beta")
            t.affine(f"{o}.pwconv2", f"{b}.reduce")
    t.affine(f"{d}.norm", "backbone.head_norm")
    for official, ours in (("kp", "canonical"), ("scale", "scale"), ("pitch", "pitch"), ("yaw", "yaw"),
                           ("roll", "roll"), ("t", "shift"), ("exp", "expression")):
        t.affine(f"{d}.fc_{official}", ours)


def _warp(t: _Table, m):
    dm = "dense_motion_network"
    hg = m.dense.hourglass
    for i in range(len(hg.down)):
        t.conv_bn(f"{dm}.hourglass.encoder.down_blocks.{i}", f"dense.hourglass.down.{i}")
    for i in range(len(hg.up)):
        t.conv_bn(f"{dm}.hourglass.decoder.up_blocks.{i}", f"dense.hourglass.up.{i}")
    t.conv_bn(f"{dm}.hourglass.decoder", "dense.hourglass.fuse")
    t.affine(f"{dm}.mask", "dense.mask_head")
    t.affine(f"{dm}.compress", "dense.squeeze.conv")
    t.bn(f"{dm}.norm", "dense.squeeze.bn")
    if m.dense.occlusion_head is not None:
        t.affine(f"{dm}.occlusion", "dense.occlusion_head")
    t.conv_bn("third", "mix")
    t.affine("fourth", "project")


def _decoder(t: _Table, m):
    t.affine("fc", "entry")
    blocks = [(f"G_middle_{i}", f"middle.{i}") for i in range(len(m.middle))] + [("up_0", "up_a"), ("up_1", "up_b")]
    for official, ours in blocks:
        t.spectral(f"{official}.conv_0", f"{ours}.conv_in")
        t.spectral(f"{official}.conv_1", f"{ours}.conv_out")
        if m.get_submodule(ours).learned_skip:
            t.spectral(f"{official}.conv_s", f"{ours}.conv_skip")
        norms = [("norm_0", "mod_in"), ("norm_1", "mod_out")]
        if m.get_submodule(ours).learned_skip:
            norms.append(("norm_s", "mod_skip"))
        for on, un in norms:
            t.affine(f"{official}.{on}.mlp_shared.0", f"{ours}.{un}.shared")
            t.affine(f"{official}.{on}.mlp_gamma", f"{ours}.{un}.gamma")
            t.affine(f"{official}.{on}.mlp_beta", f"{ours}.{un}.beta")
    t.affine("conv_img.0" if m.shuffle > 1 else "conv_img", "to_rgb")


def _stitch(t: _Table, m):
    for i in range(len(m.layers)):
        t.affine(f"mlp.{2 * i}", f"layers.{i}")  # ReLUs sit at the odd indices


_BUILDERS = {"appearance": _appearance, "motion": _motion, "warp": _warp, "decoder": _decoder, "stitch": _stitch}


def published_keys(renderer: nn.Module, file: str) -> list[PublishedKey]:
    """Every tensor of ``file`` (a key of FILES) as published, with our name for it."""
    attr = FILES[file]
    table = _Table(renderer, attr)
    _BUILDERS[attr](table, getattr(renderer, attr))
    return table.rows


def published_shapes(renderer: nn.Module) -> dict[str, dict[str, tuple[int, ...]]]:
    """{file: {key: shape}} for all five files (the manifest of these sizes)."""
    return {f: {e.official: e.shape for e in published_keys(renderer, f)} for f in FILES}
