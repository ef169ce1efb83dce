"""What each stage of a loaded model runs on.

The torch paths (the fused channels-last decoder, oneDNN-packed linear layers, CPU heap and
denormal settings, optional torch.compile) live here; where two paths compute the same thing,
``auto`` runs the one measured faster on this machine (float_rt/kernels.py), true/false force
one.  Other runtimes (onnxruntime, TensorRT) are plug-ins found through the
``float_rt.backends`` entry point, which `export/` provides, so the model layer never imports
the layer that plugs into it.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points

import torch
from torch import nn

from . import kernels
from .config import build_dataclass
from .cpu import tune as tune_cpu
from .errors import FloatRTError
from .model import FloatModel
from .motion.fused import FusedDecoder
from .packed import fast_cpu, pack_linears
from .precision import PRECISIONS, fast_fmt
from .precision import resolve as resolve_precision
from .side_by_side import SideBySide

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
    # auto: the path measured faster here (float_rt/kernels.py, cached per machine); true/false force it.
    fused_decoder: bool | str = "auto"   # torch decoder: the fused form (exact) instead of its modules
    channels_last: bool | str = "auto"   # the fused decoder on channels-last tensors
    winograd: bool | str = "auto"        # channels-last fused decoder: wide 3x3 convolutions by Winograd
    side_by_side: bool | str = "auto"    # CPU fused decoder: frames side by side, one thread each (float_rt/side_by_side.py)
    packed_linear: bool | str = "auto"   # torch on CPU: linear layers on oneDNN-packed weights (float_rt/packed.py)
    keep_heap: bool = True          # CPU: glibc keeps freed activations in the heap (float_rt/cpu.py)
    flush_denormal: bool = True     # CPU: denormals as zero
    compile: bool = False           # torch: torch.compile the FMT and the decoder
    precision: str = "fp32"         # fp32 | fast: the FMT's block linears as bf16 products (float_rt/precision.py)

    def __post_init__(self):
        for stage in STAGES:
            if getattr(self, stage) not in KINDS:
                raise ValueError(f"backend for {stage} must be one of {', '.join(KINDS)}, got {getattr(self, stage)!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("fused_decoder", "channels_last", "winograd", "side_by_side", "packed_linear"):
            setattr(self, name, kernels.check_mode(f"backends.{name}", getattr(self, name)))

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
    of 4); small models are faster batched.  With ``side_by_side`` set, those single frames run
    on its threads, one intra-op thread each (``float_rt.side_by_side``), as many frames at once
    as the calling thread has intra-op threads (fewer when the thread policy gives it fewer).
    """

    def __init__(self, decoder: nn.Module, device: torch.device, compile_: bool = False, channels_last: bool = True):
        super().__init__()
        self.decoder = FusedDecoder(decoder)
        self.channels_last = channels_last
        self.run = torch.compile(self.decoder) if compile_ else self.decoder
        self.size = output_size(decoder)
        self.frame_by_frame = device.type == "cpu" and self.size >= 256
        self.side_by_side: SideBySide | None = None
        self._cache: tuple[tuple[int, ...], list[torch.Tensor]] | None = None

    @property
    def channels_last(self) -> bool:
        return self._channels_last_on

    @channels_last.setter
    def channels_last(self, on: bool) -> None:
        self._channels_last_on = on
        self.decoder.set_channels_last(on)     # its constant and weights too: every activation follows
        self._winograd_on = False
        self.decoder.set_winograd(False)

    @property
    def path(self) -> str:
        """The fused path it runs: ``fused``, ``fused-channels-last`` or ``fused-winograd`` (channels-last
        with the wide 3x3 convolutions by Winograd, ``float_rt.winograd``)."""
        return "fused-winograd" if self._winograd_on else "fused-channels-last" if self.channels_last else "fused"

    @path.setter
    def path(self, path: str) -> None:
        if path not in DECODER_PATHS[1:]:
            raise ValueError(f"not a fused decoder path: {path!r}")
        self.channels_last = path != "fused"
        self._winograd_on = path == "fused-winograd"
        self.decoder.set_winograd(self._winograd_on)

    def _channels_last(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.channels_last:
            return feats
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

        def frame(i: int) -> torch.Tensor:
            return self.run(latent[i:i + 1], [f[i:i + 1] for f in feats] if per_frame else feats)
        n, paired = latent.shape[0], 0
        if self.side_by_side is not None and torch.get_num_threads() > 1 and fast_cpu(latent):
            # whole rounds side by side; a frame left over runs alone on every thread (not on one
            # thread while the others wait)
            paired = n - n % self.side_by_side.workers
        outs = self.side_by_side.map(frame, range(paired)) if paired else []
        outs += [frame(i) for i in range(paired, n)]
        return torch.cat(outs).contiguous()


DECODER_PATHS = ("module", "fused", "fused-channels-last", "fused-winograd")


def output_size(decoder: nn.Module) -> int:
    """The frame size a synthesis decoder renders: its constant's, doubled per scale."""
    return decoder.const.shape[-1] * 2 ** len(decoder.up_convs)


def timing_inputs(motion: nn.Module, size: int, frames: int, device: torch.device):
    """A fixed reference's features and ``frames`` latents near it: what the decoder paths are timed on."""
    gen = torch.Generator().manual_seed(0)
    image = (torch.rand(1, 3, size, size, generator=gen) * 2 - 1).to(device)
    with torch.no_grad():
        s_r, _, _, feats = motion.encode_reference(image)
    return s_r + 0.1 * torch.randn(frames, s_r.shape[1], generator=gen).to(device), feats


def decoder_paths(cfg: BackendConfig) -> tuple[str, ...]:
    """The decoder paths the config allows: more than one under ``auto``, timed to pick one."""
    options = (("fused", False, False), ("fused-channels-last", True, False), ("fused-winograd", True, True))
    fused = () if cfg.fused_decoder is False else tuple(
        p for p, cl, wino in options if cfg.channels_last in (kernels.AUTO, cl) and cfg.winograd in (kernels.AUTO, wino))
    return (("module",) if cfg.fused_decoder in (kernels.AUTO, False) else ()) + fused


def torch_decoder(motion: nn.Module, cfg: BackendConfig, device: torch.device,
                  chooser: kernels.KernelChooser | None = None) -> nn.Module:
    """The decoder the torch backend runs: the path the config names, or, among those it allows,
    the one timed fastest on this machine for one frame at the model's size (CPU; elsewhere the
    fused channels-last form).  The timing runs only when the choice is not cached."""
    decoder = motion.decoder
    paths = decoder_paths(cfg)
    if len(paths) > 1 and device.type != "cpu":
        paths = ("fused-channels-last",)     # Winograd is a CPU path
    fast = FastTorchDecoder(decoder, device, cfg.compile) if paths != ("module",) else None
    size = output_size(decoder)

    def runners():
        latent, feats = timing_inputs(motion, size, 1, device)

        def run(path: str):
            fast.path = path
            return fast.decoder(latent, fast._channels_last(feats))
        return {"module": lambda: decoder(latent, feats), **{p: functools.partial(run, p) for p in DECODER_PATHS[1:]}}

    with torch.no_grad():
        choice = (chooser or kernels.chooser()).choose("decoder", f"{size}px 1 frame", paths, runners)
    if choice == "module":
        return decoder
    fast.path = choice
    fast._cache = None
    if fast.frame_by_frame and device.type == "cpu" and not cfg.compile and cfg.side_by_side is not False:
        fast.side_by_side = side_by_side_frames(fast, motion, cfg, chooser)
    return fast


def side_by_side_frames(fast: FastTorchDecoder, motion: nn.Module, cfg: BackendConfig,
                        chooser: kernels.KernelChooser | None) -> SideBySide | None:
    """Threads for whole frames side by side when that is measured faster here for as many frames
    as there are intra-op threads (or when the config says so); None: frames one by one."""
    workers = torch.get_num_threads()
    if workers < 2:
        return None
    pool: list[SideBySide] = []

    def runners():
        latent, feats = timing_inputs(motion, fast.size, workers, torch.device("cpu"))
        pool.append(SideBySide(workers))

        def run(threads: SideBySide | None):
            fast.side_by_side = threads
            return fast(latent, feats)
        return {"one-by-one": lambda: run(None), "side-by-side": lambda: run(pool[0])}

    paths = ("one-by-one", "side-by-side") if cfg.side_by_side == kernels.AUTO else (
        ("side-by-side",) if cfg.side_by_side else ("one-by-one",))
    choice = (chooser or kernels.chooser()).choose("decoder frames", f"{fast.size}px {workers} frames", paths, runners)
    fast.side_by_side = None
    if choice == "one-by-one":
        for threads in pool:
            threads.close()
        return None
    return pool[0] if pool else SideBySide(workers)


def graph_runtime():
    """The plug-in that puts stages on exported graphs: ``fn(model, cfg, stages, device)``."""
    found = entry_points(group=PLUGIN_GROUP, name="graphs")
    if not found:
        raise FloatRTError("onnxruntime/tensorrt stages need float-rt's export package, which is not "
                           f"installed here (no {PLUGIN_GROUP!r} entry point); reinstall float-rt")
    return next(iter(found)).load()


def apply_backends(model: FloatModel, cfg: BackendConfig, device: torch.device | str = "cpu",
                   chooser: kernels.KernelChooser | None = None) -> FloatModel:
    """Put each stage of ``model`` on its configured backend (in place); returns the model.
    ``chooser`` keeps the measured kernel choices (default: the process's, cached on disk)."""
    device = torch.device(device)
    if device.type == "cpu":
        tune_cpu(cfg.keep_heap, cfg.flush_denormal)
    foreign = cfg.foreign()
    if foreign:
        graph_runtime()(model, cfg, foreign, device)
    bf16_fmt = "fmt" not in foreign and resolve_precision(cfg.precision, device) == "fast"
    for stage in STAGES:
        if stage in foreign:
            continue
        if stage == "decoder":
            model.motion.decoder = torch_decoder(model.motion, cfg, device, chooser)
        if cfg.packed_linear is not False and device.type == "cpu" and stage in ("fmt", "audio", "emotion"):
            pack_linears(getattr(model, stage), "auto" if cfg.packed_linear == kernels.AUTO else "packed", chooser)
        if stage == "fmt" and bf16_fmt:   # after packing: the bf16 layers replace packed ones
            fast_fmt(model.fmt)
        if stage == "fmt" and cfg.compile:
            model.fmt.forward = torch.compile(model.fmt.forward)
    return model
