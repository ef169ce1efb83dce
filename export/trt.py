"""TensorRT: engines built from the exported ONNX graphs, and a runner for them.

`build_engines` uses the TensorRT Python API: fp16 everywhere except the layers that need
fp32 (normalisations, softmax and the reductions around them), one optimisation profile per
graph sized for real use (guided batch of up to `max_sessions` sessions, 1..`max_frames`
decoded frames, streaming audio windows).  Needs CUDA and the `tensorrt` package.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from float_rt.errors import FloatRTError

from .backends import MANIFEST

log = logging.getLogger(__name__)


def _require_trt():
    if not torch.cuda.is_available():
        raise FloatRTError("TensorRT needs a CUDA GPU; none is available here")
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise FloatRTError("TensorRT is not installed (pip install tensorrt)") from exc
    return trt


def profiles(manifest: dict, max_sessions: int = 8, max_frames: int = 16, max_audio_s: float = 10.0) -> dict:
    """(min, opt, max) shapes per graph input."""
    out: dict[str, dict[str, tuple[list[int], list[int], list[int]]]] = {}
    for name, g in manifest["graphs"].items():
        shapes = {}
        for inp, shape in g["inputs"].items():
            dyn = {int(a): n for a, n in g["dynamic"].get(inp, {}).items()}
            lo, opt, hi = list(shape), list(shape), list(shape)
            for axis, label in dyn.items():
                if label == "frames":
                    lo[axis], opt[axis], hi[axis] = 1, max(1, max_frames // 2), max_frames
                elif label == "ref_batch":
                    lo[axis], opt[axis], hi[axis] = 1, 1, max_frames
                elif label == "samples":
                    lo[axis], opt[axis], hi[axis] = 640, shape[axis], int(max_audio_s * 16000)
                elif name == "fmt":     # guided batch: 3 rows per session
                    lo[axis], opt[axis], hi[axis] = 1, 3, 3 * max_sessions
                else:
                    lo[axis], opt[axis], hi[axis] = 1, 1, max_sessions
            shapes[inp] = (lo, opt, hi)
        out[name] = shapes
    return out


FP32_LAYER_HINTS = ("LayerNorm", "layer_norm", "ReduceMean", "Softmax", "Pow", "Sqrt", "Div", "Erf")


def build_engines(folder: str | Path, fp16: bool = True, max_sessions: int = 8, max_frames: int = 16,
                  log_fn=print, keep_going: bool = False) -> dict:
    """An engine per graph of the folder, listed in its manifest.  With ``keep_going`` a graph TensorRT
    cannot parse or build is recorded (``trt_error``) and left to onnxruntime instead of stopping."""
    trt = _require_trt()
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    shapes = profiles(manifest, max_sessions, max_frames)
    logger = trt.Logger(trt.Logger.WARNING)
    for name, g in manifest["graphs"].items():
        try:
            g["trt"] = _build_one(trt, logger, folder, name, g, shapes[name], fp16)
            g.pop("trt_error", None)
        except FloatRTError as exc:
            if not keep_going:
                raise
            g.pop("trt", None)
            g["trt_error"] = str(exc)
            log_fn(f"  {name:8s} left to onnxruntime: {exc}")
            continue
        log_fn(f"  {name:8s} -> {g['trt']} ({(folder / g['trt']).stat().st_size / 2**20:.1f} MB)")
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def _build_one(trt, logger, folder: Path, name: str, g: dict, shapes: dict, fp16: bool) -> str:
    """Parse one graph, build and write its engine; returns the plan's file name."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(folder / g["onnx"])):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise FloatRTError(f"TensorRT cannot parse {g['onnx']}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.NORMALIZATION or any(h in layer.name for h in FP32_LAYER_HINTS):
                layer.precision = trt.float32
                for o in range(layer.num_outputs):
                    layer.set_output_type(o, trt.float32)
    profile = builder.create_optimization_profile()
    for inp, (lo, opt, hi) in shapes.items():
        profile.set_shape(inp, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise FloatRTError(f"TensorRT failed to build the {name} engine")
    path = folder / f"{name}.{'fp16' if fp16 else 'fp32'}.plan"
    path.write_bytes(bytes(plan))
    return path.name


class TrtGraph:
    """Runs one serialized engine on torch CUDA tensors (inputs/outputs by name)."""

    def __init__(self, path: Path, device: torch.device):
        trt = _require_trt()
        self.trt = trt
        self.device = device if device.type == "cuda" else torch.device("cuda")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]

    def __call__(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        stream = torch.cuda.current_stream(self.device)
        keep = []
        for name in self.inputs:
            x = inputs[name].to(self.device, torch.float32).contiguous()
            keep.append(x)
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
        outs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            y = torch.empty(shape, device=self.device, dtype=torch.float32)
            self.context.set_tensor_address(name, y.data_ptr())
            outs.append(y)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise FloatRTError("TensorRT execution failed")
        return outs
