"""Per-stage speed of what the product runs, on one device (``float-rt bench``).

The stages are timed on the paths the pipeline and the streaming engine use (the backends of
the config: on CPU the fused frame-by-frame decoder, oneDNN-packed linear layers, the heap and
denormal settings), with the decoder given one streaming step's frames.  fp32 is the product;
bf16 autocast rows are opt-in measurements, each with its error against fp32.  Speed claims are
ratios against the official code measured on the same machine in the same run: pass the JSON
that ``shared/tools/official-bench`` printed right before with ``--official``.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import FloatConfig
from .cpu import cpu_info
from .packed import PackedLinear, unpacked
from .pipeline import FloatPipeline
from .reference import relative_error
from .sampler import Conditions, Guidance, guided_velocity, pad_frames

OFFICIAL_KEYS = ("decode_s_per_frame", "fmt_guided_eval_s")


def median_time(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    """Median seconds of ``repeat`` calls after one warm-up (CUDA synchronised)."""
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bf16_ok(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    info = cpu_info()
    return info["avx512_bf16"] or info["amx_bf16"]


@torch.no_grad()
def run_bench(pipe: FloatPipeline, cfg: FloatConfig, repeat: int = 3, audio_seconds: float = 2.0,
              decode_frames: int = 5, e2e_seconds: float = 2.0, official: dict | None = None, log=print) -> dict:
    m, dev = cfg.model, pipe.device
    rng = np.random.default_rng(0)
    info = cpu_info() if dev.type == "cpu" else {"gpu": torch.cuda.get_device_name(dev)}
    res: dict = {"config": cfg.name, "device": str(dev), **info, "backends": dict(cfg.backends), "rows": {}}
    if dev.type == "cpu":
        log(f"{info['cpu']}, {info['threads']} threads; AVX-512 {'yes' if info['avx512f'] else 'no'}, "
            f"AVX-512 bf16 {'yes' if info['avx512_bf16'] else 'no'}, AMX {'yes' if info['amx_tile'] else 'no'}; "
            f"torch {info['torch']}, oneDNN {'yes' if info['onednn'] else 'no'}")
    else:
        log(f"{info['gpu']}")

    def row(key: str, seconds: float, unit: str, note: str = "", err: float | None = None) -> None:
        res["rows"][key] = {"seconds": seconds, "rel_err_vs_fp32": err}
        e = "" if err is None else f"  rel.err vs fp32 {err:.1e}"
        log(f"  {key:34s} {seconds * 1e3:9.1f} ms {unit}{e}{'  ' + note if note else ''}")

    image = torch.rand(1, 3, m.input_size, m.input_size) * 2 - 1
    row("reference encode", median_time(lambda: pipe.encode_reference(image), repeat, dev), "per image")
    ref = pipe.encode_reference(image)

    speech = (0.1 * rng.standard_normal(int(audio_seconds * m.sampling_rate))).astype(np.float32)
    iv = pipe.input_values(speech)
    row("audio encode", median_time(lambda: pipe.model.encode_audio(iv), repeat, dev) / audio_seconds,
        "per s of audio")

    # One guided evaluation: the batch of 3 (uncond, all conditions, audio only) over 10 + 50 frames.
    wa = pipe.model.encode_audio(iv)
    n, p = m.num_frames, m.num_prev_frames
    cond = Conditions(pad_frames(wa[:, :n], n), ref.r_s, torch.full((1, 1, m.dim_e), 1.0 / m.dim_e, device=dev),
                      0.1 * torch.randn(1, p, m.dim_w, device=dev), pad_frames(wa[:, :p], p))
    x = torch.randn(1, n, m.dim_w, device=dev)
    t = torch.tensor([0.5], device=dev)
    g = Guidance(2.0, 1.0, True)
    fmt = pipe.model.fmt
    v32 = guided_velocity(fmt, t, x, cond, g)
    row("FMT guided eval, fp32", median_time(lambda: guided_velocity(fmt, t, x, cond, g), repeat, dev), "per eval",
        "(the product)")
    if any(isinstance(mod, PackedLinear) for mod in fmt.modules()):
        with unpacked():
            row("FMT guided eval, fp32 F.linear", median_time(lambda: guided_velocity(fmt, t, x, cond, g), repeat, dev),
                "per eval", "(PyTorch's default linear, for comparison)",
                relative_error(guided_velocity(fmt, t, x, cond, g), v32))
    if bf16_ok(dev):
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            v16 = guided_velocity(fmt, t, x, cond, g).float()
            row("FMT guided eval, bf16 autocast", median_time(lambda: guided_velocity(fmt, t, x, cond, g), repeat, dev),
                "per eval", "(opt-in)", relative_error(v16, v32))

    # Decode as the engine does: one streaming step's frames through the configured decoder.
    motion = torch.randn(decode_frames, m.dim_w, device=dev) * 0.1
    dec = pipe.model.motion
    f32 = dec.decode(ref.s_r, motion, ref.feats)
    row(f"decode, fp32 ({decode_frames} frames a step)",
        median_time(lambda: dec.decode(ref.s_r, motion, ref.feats), repeat, dev) / decode_frames, "per frame",
        "(the product)")
    if bf16_ok(dev):
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            f16 = dec.decode(ref.s_r, motion, ref.feats).float()
            row("decode, bf16 autocast", median_time(lambda: dec.decode(ref.s_r, motion, ref.feats), repeat, dev)
                / decode_frames, "per frame", "(opt-in)", relative_error(f16, f32))
    res["decode_s_per_frame"] = res["rows"][f"decode, fp32 ({decode_frames} frames a step)"]["seconds"]
    res["fmt_guided_eval_s"] = res["rows"]["FMT guided eval, fp32"]["seconds"]

    # End to end, as `generate` runs it (without the video encoder).
    speech = (0.1 * rng.standard_normal(int(e2e_seconds * m.sampling_rate))).astype(np.float32)
    start = time.perf_counter()
    ref = pipe.encode_reference(image)
    motion = pipe.sample(ref, pipe.input_values(speech), cfg.sampling)
    frames = sum(f.shape[0] for f in pipe.decode(ref, motion))
    res["e2e_fps"] = frames / (time.perf_counter() - start)
    log(f"  end to end: {res['e2e_fps']:.2f} frames per second ({frames} frames, nfe {cfg.sampling.nfe})")

    if official:
        res["official"] = {k: official[k] for k in OFFICIAL_KEYS if k in official}
        for key in OFFICIAL_KEYS:
            if key in official:
                log(f"  vs the official code ({key}): {official[key] * 1e3:.0f} ms / {res[key] * 1e3:.0f} ms "
                    f"= x{official[key] / res[key]:.2f}")
    else:
        log("  ratios: run shared/tools/official-bench right before and pass its JSON with --official")
    return res


def write_json(res: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(res, indent=2))
