"""What each stage of a loaded model runs on.

The torch paths (the fused channels-last decoder, oneDNN-packed linear layers, CPU heap and
denormal settings, optional torch.compile) live here. Other runtimes (onnxruntime, TensorRT)
are plug-ins found through the ``float_rt.backends`` entry point, which `export/` provides,
so the model layer never imports the layer that plugs into it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points

import torch
from torch import nn

from .config import build_dataclass
from .cpu import tune as tune_cpu
from .errors import FloatRTError
from .model import FloatModel
from .motion.fused import FusedDecoder
from .packed import pack_linears

log = logging.getLogger(__name__)

STAGES = ("encoder", "decoder", "fmt", "audio", "emotion")
KINDS = ("torch", "onnxruntime", "tensorrt")
PLUGIN_GROUP = "float_rt.backends"


@dataclass
class BackendConfig:
    encoder: str = "torch"
    decoder: str = "torch"
    fmt: str = "torch"
    audio: str = "torch"
    emotion: str = "torch"
    engines: str | None = None      # folder written by `float-rt export onnx` / `export trt`
    fused_decoder: bool = True      # torch decoder: the fused channels-last form (exact, faster)
    packed_linear: bool = True      # torch on CPU: linear layers on oneDNN with prepacked weights (float_rt/packed.py)
    keep_heap: bool = True          # CPU: glibc keeps freed activations in the heap (float_rt/cpu.py)
    flush_denormal: bool = True     # CPU: denormals as zero
    compile: bool = False           # torch: torch.compile the FMT and the decoder

    def __post_init__(self):
        for stage in STAGES:
            if getattr(self, stage) not in KINDS:
                raise ValueError(f"backend for {stage} must be one of {', '.join(KINDS)}, got {getattr(self, stage)!r}")

    @classmethod
    def from_dict(cls, data: dict | None, **overrides) -> "BackendConfig":
        return build_dataclass(cls, data, "backend", **overrides)

    def foreign(self) -> dict[str, str]:
        """The stages that run on something other than torch: stage -> kind."""
        return {s: getattr(self, s) for s in STAGES if getattr(self, s) != "torch"}


class FastTorchDecoder(nn.Module):
    """The fused decoder on channels-last tensors.

    On CPU at 256 px and up, frames go one at a time: the weight-folded single-frame path
    keeps the large activations in cache (measured 0.38 vs 0.67 s per 512 frame in batches
    of 4); small models are faster batched.
    """

    def __init__(self, decoder: nn.Module, device: torch.device, compile_: bool = False):
        super().__init__()
        self.decoder = FusedDecoder(decoder)
        self.run = torch.compile(self.decoder) if compile_ else self.decoder
        size = decoder.const.shape[-1] * 2 ** len(decoder.up_convs)
        self.frame_by_frame = device.type == "cpu" and size >= 256
        self._cache: tuple[tuple[int, ...], list[torch.Tensor]] | None = None

    def _channels_last(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        key = tuple(f.data_ptr() for f in feats)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, [f.contiguous(memory_format=torch.channels_last) for f in feats])
        return self._cache[1]

    @torch.no_grad()
    def forward(self, latent: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        feats = self._channels_last(feats)
        if not self.frame_by_frame or latent.shape[0] == 1:
            return self.run(latent, feats).contiguous()
        per_frame = feats[0].shape[0] == latent.shape[0]
        outs = [self.run(latent[i:i + 1], [f[i:i + 1] for f in feats] if per_frame else feats)
                for i in range(latent.shape[0])]
        return torch.cat(outs).contiguous()


def graph_runtime():
    """The plug-in that puts stages on exported graphs: ``fn(model, cfg, stages, device)``."""
    found = entry_points(group=PLUGIN_GROUP, name="graphs")
    if not found:
        raise FloatRTError("onnxruntime/tensorrt stages need float-rt's export package, which is not "
                           f"installed here (no {PLUGIN_GROUP!r} entry point); reinstall float-rt")
    return next(iter(found)).load()


def apply_backends(model: FloatModel, cfg: BackendConfig, device: torch.device | str = "cpu") -> FloatModel:
    """Put each stage of ``model`` on its configured backend (in place); returns the model."""
    device = torch.device(device)
    if device.type == "cpu":
        tune_cpu(cfg.keep_heap, cfg.flush_denormal)
    foreign = cfg.foreign()
    if foreign:
        graph_runtime()(model, cfg, foreign, device)
    for stage in STAGES:
        if stage in foreign:
            continue
        if stage == "decoder" and cfg.fused_decoder:
            model.motion.decoder = FastTorchDecoder(model.motion.decoder, device, cfg.compile)
        if cfg.packed_linear and device.type == "cpu" and stage in ("fmt", "audio", "emotion"):
            pack_linears(getattr(model, stage))
        if stage == "fmt" and cfg.compile:
            model.fmt.forward = torch.compile(model.fmt.forward)
    return model
