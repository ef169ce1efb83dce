"""Linear layers on oneDNN with their weights packed once, for CPU inference.

PyTorch's CPU ``F.linear`` goes to the BLAS it was built with (MKL), which on some CPUs (AMD
with AVX-512, for one) runs fp32 GEMMs at well under half of what the cores can do; oneDNN,
given a weight reordered ahead of time into its blocked layout, runs the same fp32 product
near peak (2-3x on the FMT's shapes, measured by ``float-rt bench``).  The results are fp32
products in another summation order: within 1e-6 of ``F.linear``.

``pack_linears(module)`` swaps every ``nn.Linear`` inside a module for ``PackedLinear``, which
keeps the same parameters (state dicts, exports and other devices are unchanged) and falls
back to ``F.linear`` off the CPU, under autocast, or where oneDNN is missing.

Where MKL is as fast (Intel), packing gains nothing; ``pack_linears(module, "auto")`` lets each
layer time both for the rows it is called with (rounded up to a power of two) the first time,
through ``float_rt.kernels`` (remembered per machine on disk), and run the faster.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels

_state = threading.local()
LINEAR_PATHS = ("packed", "F.linear")


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Linear):
    """``nn.Linear`` whose CPU forward uses a oneDNN-packed copy of its weight."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)          # the parameters are the linear's own, not new ones
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self._packed: torch.Tensor | None = None
        self._version = -1
        self.path = "packed"       # or "auto": the faster of packed and F.linear, per row count (timed once)
        self.chooser: kernels.KernelChooser | None = None   # auto: whose choices (default: the process's)
        self._chosen: dict[int, bool] = {}                  # rows bucket -> packed?

    def _pack(self) -> torch.Tensor:
        # Repacked if the weight was changed in place (load_state_dict, .to(), ...).
        if self._packed is None or self._version != self.weight._version:
            with torch.no_grad():
                self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None)
            self._version = self.weight._version
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.dtype != torch.float32
                or torch.is_autocast_enabled("cpu") or torch.is_grad_enabled() or getattr(_state, "off", False)):
            return F.linear(x, self.weight, self.bias)
        if self.path == "auto" and not self._packed_faster(x):
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self._pack(), self.bias, "none", [], "")

    def _packed_faster(self, x: torch.Tensor) -> bool:
        rows = max(1, x.numel() // max(1, self.in_features))
        bucket = 1 << (rows - 1).bit_length()
        known = self._chosen.get(bucket)
        if known is None:
            shape = f"{self.in_features}x{self.out_features}{'' if self.bias is not None else ' no bias'} rows {bucket}"
            known = (self.chooser or kernels.chooser()).choose("linear", shape, LINEAR_PATHS,
                                                               lambda: self._runners(bucket)) == "packed"
            self._chosen[bucket] = known
        return known

    def _runners(self, rows: int) -> dict:
        x, w, b = torch.randn(rows, self.in_features), self.weight.detach(), self.bias
        b = None if b is None else b.detach()
        packed = self._pack()
        return {"packed": lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], ""),
                "F.linear": lambda: F.linear(x, w, b)}


def pack_linears(module: nn.Module, path: str = "packed", chooser: kernels.KernelChooser | None = None) -> nn.Module:
    """Swap every ``nn.Linear`` of ``module`` (in place) for a ``PackedLinear``; returns the module.
    ``path``: ``packed`` (always), or ``auto`` (per layer and row count, the faster of packed and
    ``F.linear`` as timed on this machine; ``chooser`` keeps the choices, default the process's)."""
    if path not in ("packed", "auto"):
        raise ValueError(f"pack_linears: path must be packed or auto, got {path!r}")
    if not available():
        return module
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                packed = PackedLinear(child)
                packed.path, packed.chooser = path, chooser
                setattr(parent, name, packed)
    return module


def plain() -> bool:
    """Whether this thread is inside ``unpacked()``: every fast path runs its plain PyTorch ops."""
    return getattr(_state, "off", False)


@contextlib.contextmanager
def switched_off(flags):
    """``flags.off`` set within it (a ``threading.local``: in this thread only), as it was after."""
    before = getattr(flags, "off", False)
    flags.off = True
    try:
        yield
    finally:
        flags.off = before


def unpacked():
    """Within it (in this thread), packed layers run ``F.linear`` and every other fast path of the
    model layer its plain PyTorch ops (side-by-side benchmarks, tests that force each path)."""
    return switched_off(_state)


def exporting() -> bool:
    """Tracing, scripting, ONNX export or compiling: graphs get the plain, portable ops."""
    onnx = sys.modules.get("torch.onnx")      # not imported: no export under way
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
            or (onnx is not None and onnx.is_in_onnx_export()))


def fast_cpu(x: torch.Tensor) -> bool:
    """Whether the CPU fast paths may run on ``x``: fp32 inference on the CPU, outside ``unpacked()``,
    autocast, autograd and exports (each computes what its plain ops compute, in another order)."""
    return (not plain() and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu") and not exporting())


def _key(*tensors) -> tuple:
    return tuple((t._version, t.data_ptr(), t.shape, t.stride(), t.dtype, t.device) if t is not None else None
                 for t in tensors)


def _root(t: torch.Tensor) -> torch.Tensor:
    """The tensor that owns t's memory: t itself, or the tensor t is a view of (views share its
    version counter, so the address/version key covers a view taken anew on each call)."""
    return t if t._base is None else t._base


def _same(refs: tuple, tensors: tuple) -> bool:
    """Each weak reference still points at the tensor owning that memory (a freed tensor's address
    may be reused by a new one of the same shape: a key on the address alone would hand out stale data)."""
    return len(refs) == len(tensors) and all((r is None and t is None) or (r is not None and r() is _root(t))
                                             for r, t in zip(refs, tensors))


def cached(module: nn.Module, name: str, tensors: tuple, build):
    """``build()`` cached on ``module`` under ``name`` until one of ``tensors`` changes (is modified
    in place, or is another tensor's memory; a new view of the same tensor is the same)."""
    key = _key(*tensors)
    hit = module.__dict__.get(name)
    if hit is None or hit[0] != key or not _same(hit[2], tensors):
        with torch.no_grad():
            hit = (key, build(), tuple(None if t is None else weakref.ref(_root(t)) for t in tensors))
        module.__dict__[name] = hit
    return hit[1]
