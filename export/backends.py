"""Per-stage backends: torch (eager, optionally compiled), onnxruntime, tensorrt.

`apply_backends(model, BackendConfig)` swaps the model's stages for drop-in runners with
the same call signatures, so the offline pipeline and the streaming engine use whichever
backend the config names without knowing about it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from float_rt.audio import pad_to_frames
from float_rt.config import build_dataclass
from float_rt.errors import FloatRTError
from float_rt.model import FloatModel
from float_rt.motion.fused import FusedDecoder
from float_rt.cpu import tune as tune_cpu
from float_rt.packed import pack_linears

from .graphs import STAGES

log = logging.getLogger(__name__)

KINDS = ("torch", "onnxruntime", "tensorrt")
MANIFEST = "manifest.json"


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


def fingerprint(model: FloatModel) -> str:
    """A cheap identity of the weights and shapes (sums per tensor), to tell engines apart."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(np.float64(p.double().sum().item()).tobytes())
    return h.hexdigest()[:16]


def rebuild_hint() -> str:
    return ("rebuild them with: float-rt export onnx --checkpoints CKPT_DIR --config CONFIG --out ENGINES_DIR"
            " (then `float-rt export trt --onnx ENGINES_DIR` for TensorRT)")


def read_manifest(folder: Path, model: FloatModel) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise FloatRTError(f"no exported engines in {folder} ({MANIFEST} missing); {rebuild_hint()}")
    manifest = json.loads(path.read_text())
    want = fingerprint(model)
    if manifest.get("fingerprint") != want:
        raise FloatRTError(f"engines in {folder} were exported from other weights or another config "
                           f"(fingerprint {manifest.get('fingerprint')} != {want}); {rebuild_hint()}")
    return manifest


# ---------------------------------------------------------------- graph runners
class OrtGraph:
    """One ONNX graph in onnxruntime (CUDA provider where the device is CUDA and it is available)."""

    def __init__(self, path: Path, device: torch.device):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = torch.get_num_threads()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.device = device

    def __call__(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        feed = {k: inputs[k].detach().float().cpu().numpy() for k in self.inputs}
        return [torch.from_numpy(o).to(self.device) for o in self.session.run(None, feed)]


def open_graph(kind: str, folder: Path, stage: str, manifest: dict, device: torch.device):
    entry = manifest["graphs"].get(stage)
    if entry is None:
        raise FloatRTError(f"{folder} has no {stage} graph")
    if kind == "onnxruntime":
        path = folder / entry["onnx"]
        if not path.is_file():
            raise FloatRTError(f"missing {path}; {rebuild_hint()}")
        return OrtGraph(path, device)
    from .trt import TrtGraph
    plan = entry.get("trt")
    if not plan or not (folder / plan).is_file():
        raise FloatRTError(f"no TensorRT engine for {stage} in {folder}; build it with: "
                           f"float-rt export trt --onnx {folder}")
    return TrtGraph(folder / plan, device)


# ---------------------------------------------------------------- drop-in stages
class DecoderStage(nn.Module):
    def __init__(self, graph, num_feats: int):
        super().__init__()
        self.graph, self.names = graph, [f"feat_{i}" for i in range(num_feats)]

    def forward(self, latent: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.graph(latent=latent, **dict(zip(self.names, feats)))[0]


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


class FMTStage(nn.Module):
    def __init__(self, graph, base: nn.Module):
        super().__init__()
        self.graph = graph
        self.pos_embed = base.pos_embed   # the model reads its device from here

    def forward(self, t, x, wa, wr, we, prev_x, prev_wa):
        t = t.reshape(1).to(x.dtype)
        return self.graph(t=t, x=x, wa=wa, wr=wr, we=we, prev_x=prev_x, prev_wa=prev_wa)[0]


class AudioStage(nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def encode_frames(self, samples: torch.Tensor) -> torch.Tensor:
        return self.graph(samples=samples)[0]

    def forward(self, input_values, num_frames, sampling_rate, fps):
        input_values = pad_to_frames(input_values, num_frames, sampling_rate, fps)
        return self.encode_frames(input_values[:, :int(num_frames * sampling_rate / fps)])


class EmotionStage(nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        return self.graph(samples=samples)[0]


def apply_backends(model: FloatModel, cfg: BackendConfig, device: torch.device | str = "cpu") -> FloatModel:
    """Swap the model's stages for the configured backends (in place); returns the model."""
    device = torch.device(device)
    if device.type == "cpu":
        tune_cpu(cfg.keep_heap, cfg.flush_denormal)
    folder = Path(cfg.engines) if cfg.engines else None
    used = {getattr(cfg, s) for s in STAGES}
    manifest = None
    if used - {"torch"}:
        if folder is None:
            raise FloatRTError("onnxruntime/tensorrt backends need the engines folder (backends.engines / --engines); "
                               + rebuild_hint())
        manifest = read_manifest(folder, model)
    num_feats = len(model.motion.decoder.to_flows)
    for stage in STAGES:
        kind = getattr(cfg, stage)
        if kind == "torch":
            if stage == "decoder" and cfg.fused_decoder:
                model.motion.decoder = FastTorchDecoder(model.motion.decoder, device, cfg.compile)
            if cfg.packed_linear and device.type == "cpu" and stage in ("fmt", "audio", "emotion"):
                pack_linears(getattr(model, stage))
            if stage == "fmt" and cfg.compile:
                model.fmt.forward = torch.compile(model.fmt.forward)
            continue
        graph = open_graph(kind, folder, stage, manifest, device)
        if stage == "decoder":
            model.motion.decoder = DecoderStage(graph, num_feats)
        elif stage == "fmt":
            model.fmt = FMTStage(graph, model.fmt)
        elif stage == "audio":
            model.audio = AudioStage(graph)
        elif stage == "emotion":
            model.emotion = EmotionStage(graph)
        elif stage == "encoder":
            model.motion.encode_reference = _encoder_stage(graph)
        log.info("stage %s runs on %s", stage, kind)
    return model


def _encoder_stage(graph):
    @torch.no_grad()
    def encode_reference(image: torch.Tensor):
        s_r, r_s, *feats = graph(image=image)
        return s_r, None, r_s, feats
    return encode_reference
