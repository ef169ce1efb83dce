"""The ``fast`` precision mode: bf16 products where the error they make was measured to be small.

``precision: fp32`` (the default) changes nothing.  ``precision: fast`` runs the large linear
layers of the FMT's blocks (qkv, attention output, the MLP and the AdaLN modulation) as bf16
products with fp32 accumulation and an fp32 bias, on weights converted (and on CPU prepacked for
oneDNN) once; their inputs are rounded to bf16, their outputs come back as fp32 (the MLP's hidden
layer, its GELU applied to the fp32 sums, stays bf16 between its two products).  Everything else
stays fp32: the residual stream, the layer norms and modulation, attention, the embeddings of the
inputs and the time, the final projection, and the whole motion decoder.

Why the decoder stays fp32: measured one layer at a time (``python -m float_rt.precision --config
C --checkpoints D`` prints the table; the README quotes it), every layer of its feature/flow path
turns bf16 rounding into a 3e-2 to 8e-2 relative error of the frames on the reference case and
0.15 to 0.66 at 512 px on recipe weights.  Each layer's features decide the next flow field, and the flow resamples the
reference features, so a rounding of 1e-3 moves sampling positions by a fraction of a pixel; with
recipe weights those features are noise at the pixel scale and the error grows 10-100x per layer.
Only the skip-image convolutions (``to_rgbs``) tolerate bf16 (about 5e-4 each), and they cost
nothing worth saving.

bf16 needs hardware for it: AVX-512 bf16 or AMX on x86 CPUs, bf16 on CUDA.  Elsewhere ``fast``
falls back to fp32 with a one-line warning.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from . import packed
from .cpu import cpu_info

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fast")
# The linear layers of each FMT block that run as bf16 products in ``fast`` (by attribute name).
FMT_BF16_LAYERS = ("qkv", "attn_out", "fc1", "fc2", "ada")


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bf16 products in hardware (not emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    info = cpu_info()
    return bool(info["avx512_bf16"] or info["amx_bf16"]) and torch.backends.mkldnn.is_available()


def resolve(precision: str, device: torch.device | str = "cpu") -> str:
    """The precision that will run: ``fast`` becomes ``fp32`` (with a warning) without bf16 hardware."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fast" and not bf16_supported(device):
        where = cpu_info()["cpu"] if torch.device(device).type == "cpu" else str(device)
        log.warning("precision fast needs bf16 hardware (AVX-512 bf16 or AMX; bf16 on CUDA), which %s lacks: "
                    "running fp32", where)
        return "fp32"
    return precision


class Bf16Linear(nn.Linear):
    """``nn.Linear`` computed as a bf16 product (fp32 accumulation, fp32 bias), fp32 in and out.

    It keeps the linear's own parameters (state dicts are unchanged); the bf16 copy of the weight
    (on CPU, packed for oneDNN) is made on first use and again if the weight changes in place.
    ``gelu_tanh``: the tanh GELU is applied to the fp32 sums before the one rounding, and the
    output stays bf16 for the next bf16 product (the FMT's MLP).
    """

    def __init__(self, linear: nn.Linear, gelu_tanh: bool = False):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.gelu_tanh = gelu_tanh
        self._low: torch.Tensor | None = None
        self._key: tuple | None = None

    def _use_packed(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and packed.available() and not packed.plain()

    def _weight(self, packed_form: bool) -> torch.Tensor:
        key = (self.weight._version, self.weight.device, packed_form)
        if self._low is None or self._key != key:
            with torch.no_grad():
                w = self.weight.detach().to(torch.bfloat16)
                self._low = torch.ops.mkldnn._reorder_linear_weight(w, None) if packed_form else w
            self._key = key
        return self._low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.weight.requires_grad:      # training: fp32 (bf16 is inference only)
            out = F.linear(x, self.weight, self.bias)
            return F.gelu(out, approximate="tanh") if self.gelu_tanh else out
        x16 = x.to(torch.bfloat16)
        if self._use_packed(x):
            bias = None if self.bias is None else self.bias.float()
            if self.gelu_tanh:
                return torch.ops.mkldnn._linear_pointwise(x16, self._weight(True), bias, "gelu", [], "tanh")
            return torch.ops.mkldnn._linear_pointwise(x16, self._weight(True), bias, "none", [], "").float()
        out = F.linear(x16, self._weight(False)).float()
        out = out if self.bias is None else out + self.bias
        return F.gelu(out, approximate="tanh").to(torch.bfloat16) if self.gelu_tanh else out


def fast_fmt(fmt: nn.Module) -> nn.Module:
    """Put the FMT's block linears of ``FMT_BF16_LAYERS`` on bf16 (in place); returns ``fmt``.
    The MLP's GELU moves into its first product (one rounding less, two passes fewer)."""
    from .fmt import FMTBlock
    for block in list(fmt.modules()):
        if isinstance(block, FMTBlock):
            for name in FMT_BF16_LAYERS:
                layer = getattr(block, name)
                if isinstance(layer, nn.Linear) and not isinstance(layer, Bf16Linear):
                    fuse = name == "fc1" and "fc2" in FMT_BF16_LAYERS and isinstance(block.act, nn.GELU)
                    setattr(block, name, Bf16Linear(layer, gelu_tanh=fuse))
                    if fuse:
                        block.act = nn.Identity()
    return fmt


def shared_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s tree of submodules sharing its parameters and buffers, so that one
    of the two can have layers swapped (``fast_fmt``) without touching the other."""
    new = module.__class__.__new__(module.__class__)
    # Own dicts (parameters, buffers, hooks), the same tensors in them.
    new.__dict__.update({k: v.copy() if isinstance(v, (dict, set)) else v for k, v in module.__dict__.items()})
    new._modules = {name: None if child is None else shared_copy(child) for name, child in module._modules.items()}
    return new


# ---- the measurement behind the choice of layers (``python -m float_rt.precision``)

def _bf16_alone(module: nn.Module):
    """Make ``module`` run under bf16 autocast with fp32 outputs; returns the undo."""
    run = module.forward

    def forward(*args, **kwargs):
        with torch.autocast(args[0].device.type, dtype=torch.bfloat16):
            out = run(*args, **kwargs)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()
    module.forward = forward
    return lambda: module.__dict__.pop("forward", None)


@torch.no_grad()
def decoder_layer_errors(decoder: nn.Module, latent: torch.Tensor, feats: list[torch.Tensor]) -> dict[str, float]:
    """Relative error of the frames when each layer of a (fused) decoder alone runs in bf16, and
    with all of them (``all``)."""
    from .reference import relative_error
    frames = lambda: torch.cat([decoder(latent[i:i + 1], feats) for i in range(latent.shape[0])])
    ref = frames()
    errors = {}
    with torch.autocast(latent.device.type, dtype=torch.bfloat16):
        errors["all"] = relative_error(frames().float(), ref)
    for name, child in decoder.named_children():
        for sub, layer in (child.named_children() if isinstance(child, nn.ModuleList) else [("", child)]):
            undo = _bf16_alone(layer)
            try:
                errors[f"{name}.{sub}" if sub else name] = relative_error(frames(), ref)
            finally:
                undo()
    return errors


@torch.no_grad()
def fmt_layer_errors(fmt: nn.Module, run) -> dict[str, float]:
    """Relative error of ``run(fmt)`` (a guided evaluation) when the linear layers of each name
    (in every block) alone are bf16 products, with those of ``FMT_BF16_LAYERS`` (``fast``), and
    with every linear layer of the FMT (``all``)."""
    from .reference import relative_error
    ref = run(fmt)
    names = sorted({n.rsplit(".", 1)[-1] for n, m in fmt.named_modules() if isinstance(m, nn.Linear)})
    errors = {"fast": relative_error(run(fast_fmt(shared_copy(fmt))), ref)}
    for label, chosen in [(n, {n}) for n in names] + [("all", set(names))]:
        copy = shared_copy(fmt)
        for parent in list(copy.modules()):
            for name, child in list(parent.named_children()):
                if name in chosen and isinstance(child, nn.Linear):
                    setattr(parent, name, Bf16Linear(child))
        errors[label] = relative_error(run(copy), ref)
    return errors


def main(argv: list[str] | None = None) -> int:
    """Per-layer bf16 errors of a FLOAT model: ``python -m float_rt.precision --config C --checkpoints D``."""
    import argparse

    import numpy as np

    from .backends import BackendConfig, apply_backends
    from .checkpoint import load_model
    from .config import load_config
    from .motion.fused import FusedDecoder, to_channels_last
    from .resources import config_path
    from .sampler import Conditions, Guidance, guided_velocity

    ap = argparse.ArgumentParser(prog="python -m float_rt.precision", description=main.__doc__)
    ap.add_argument("--config", default="float-512")
    ap.add_argument("--checkpoints", required=True)
    ap.add_argument("--frames", type=int, default=2)
    a = ap.parse_args(argv)
    cfg = load_config(config_path(a.config))
    m = cfg.model
    model, _ = load_model(m, a.checkpoints)
    apply_backends(model, BackendConfig(fused_decoder=False), "cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        image = torch.rand(1, 3, m.input_size, m.input_size, generator=gen) * 2 - 1
        s_r, _, r_s, feats = model.motion.encode_reference(image)
        latent = s_r + 0.1 * torch.randn(a.frames, m.dim_w, generator=gen)
        dec = FusedDecoder(model.motion.decoder)
        print(f"decoder at {m.input_size} px, {a.frames} frames: frames' relative error, each layer alone in bf16")
        for name, err in decoder_layer_errors(dec, latent, to_channels_last(feats)).items():
            print(f"  {name:14s} {err:.2e}")
        n, p = m.num_frames, m.num_prev_frames
        wa = torch.from_numpy(np.random.default_rng(0).standard_normal((1, n + p, m.dim_a)).astype(np.float32))
        cond = Conditions(wa[:, p:], r_s, torch.full((1, 1, m.dim_e), 1.0 / m.dim_e),
                          0.1 * torch.randn(1, p, m.dim_w, generator=gen), wa[:, :p])
        x, t = torch.randn(1, n, m.dim_w, generator=gen), torch.tensor([0.5])
        print("FMT: guided evaluation's relative error, the linear layers of each name alone as bf16 products")
        for name, err in fmt_layer_errors(model.fmt, lambda f: guided_velocity(f, t, x, cond, Guidance())).items():
            print(f"  {name:14s} {err:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
