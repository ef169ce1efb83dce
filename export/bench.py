"""`float-rt bench-backends`: decoder and FMT on every available path, side by side in one run.

Decoder paths: the torch module as loaded (the official order of operations), the fused
channels-last form (fp32, batch 1 and batched), bf16 autocast of it where the CPU has bf16,
onnxruntime (when an engines folder is given).  FMT: one guided evaluation (batch of 3) in
torch fp32, bf16 autocast and onnxruntime.  Errors are relative to the torch module; on
recipe weights the 512 decoder amplifies rounding, so its fp32 errors are also given
against a float64 run of the torch module, next to the torch module's own fp32 error.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from float_rt.bench import bf16_ok, median_time
from float_rt.model import FloatModel
from float_rt.motion.fused import FusedDecoder, to_channels_last
from float_rt.packed import pack_linears, unpacked
from float_rt.reference import relative_error as rel_err


@torch.no_grad()
def bench_backends(model: FloatModel, engines: str | Path | None = None, repeat: int = 3, batch: int = 4,
                   log=print) -> dict:
    from .backends import OrtGraph, read_manifest
    m = model.cfg
    dev = model.device
    image = torch.rand(1, 3, m.input_size, m.input_size, device=dev) * 2 - 1
    s_r, _, r_s, feats = model.motion.encode_reference(image)
    g = torch.Generator().manual_seed(0)
    lat1 = s_r + 0.1 * torch.randn(1, m.dim_w, generator=g).to(dev)
    latb = s_r + 0.1 * torch.randn(batch, m.dim_w, generator=g).to(dev)
    dec = model.motion.decoder
    fused = FusedDecoder(dec)
    fcl = to_channels_last(feats)
    ref = dec(lat1, feats)
    d64 = copy.deepcopy(dec).double()
    ref64 = d64(lat1.double(), [f.double() for f in feats])
    del d64
    rows = []

    def timed(fn):
        return median_time(fn, repeat, dev)

    def add(stage, path, seconds, per, err, err64=None):
        rows.append({"stage": stage, "path": path, "seconds": seconds, "per": per, "rel_err": err, "rel_err_f64": err64})
        e64 = "" if err64 is None else f"  (vs float64 {err64:.1e})"
        log(f"  {stage:8s} {path:34s} {seconds * 1e3:9.1f} ms/{per}  rel.err {err:.1e}{e64}")

    log(f"[decoder] {m.input_size}x{m.input_size}, {torch.get_num_threads()} threads")
    add("decoder", "torch module, batch 1", timed(lambda: dec(lat1, feats)), "frame", 0.0, rel_err(ref, ref64))
    add("decoder", f"torch module, batch {batch}", timed(lambda: dec(latb, feats)) / batch, "frame",
        rel_err(dec(latb, feats)[:1], dec(latb[:1], feats)))
    out = fused(lat1, fcl)
    add("decoder", "fused channels-last fp32, batch 1", timed(lambda: fused(lat1, fcl)), "frame",
        rel_err(out, ref), rel_err(out, ref64))
    add("decoder", f"fused channels-last fp32, batch {batch}", timed(lambda: fused(latb, fcl)) / batch,
        "frame", rel_err(fused(latb, fcl)[:1], dec(latb, feats)[:1]))
    if dev.type == "cpu" and bf16_ok(dev):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fused(lat1, fcl).float()
            t = timed(lambda: fused(lat1, fcl))
        add("decoder", "fused channels-last bf16, batch 1", t, "frame", rel_err(out, ref), rel_err(out, ref64))
    manifest = None
    if engines:
        manifest = read_manifest(Path(engines), model)
        ort = OrtGraph(Path(engines) / manifest["graphs"]["decoder"]["onnx"], dev)
        names = {f"feat_{i}": f for i, f in enumerate(feats)}
        out = ort(latent=lat1, **names)[0]
        add("decoder", "onnxruntime fp32, batch 1", timed(lambda: ort(latent=lat1, **names)), "frame",
            rel_err(out, ref), rel_err(out, ref64))

    log(f"[fmt] one guided evaluation (batch 3, window {m.window})")
    b3 = 3
    args = dict(t=torch.full((1,), 0.5, device=dev), x=torch.randn(b3, m.num_frames, m.dim_w, generator=g).to(dev),
                wa=torch.randn(b3, m.num_frames, m.dim_a, generator=g).to(dev), wr=r_s.repeat(b3, 1),
                we=torch.softmax(torch.randn(b3, 1, m.dim_e, generator=g), -1).to(dev),
                prev_x=torch.randn(b3, m.num_prev_frames, m.dim_w, generator=g).to(dev),
                prev_wa=torch.randn(b3, m.num_prev_frames, m.dim_a, generator=g).to(dev))
    fmt = pack_linears(model.fmt)          # as the torch backend runs it on CPU
    with unpacked():
        vref = fmt(**args)
        add("fmt", "torch fp32, F.linear", timed(lambda: fmt(**args)), "eval", 0.0)
    add("fmt", "torch fp32, oneDNN packed linear", timed(lambda: fmt(**args)), "eval", rel_err(fmt(**args), vref))
    if dev.type == "cpu" and bf16_ok(dev):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fmt(**args).float()
            t = timed(lambda: fmt(**args))
        add("fmt", "torch bf16 autocast", t, "eval", rel_err(out, vref))
    if manifest is not None:
        ort = OrtGraph(Path(engines) / manifest["graphs"]["fmt"]["onnx"], dev)
        out = ort(**args)[0]
        add("fmt", "onnxruntime fp32", timed(lambda: ort(**args)), "eval", rel_err(out, vref))
    return {"config": {"input_size": m.input_size, "threads": torch.get_num_threads()}, "rows": rows}
