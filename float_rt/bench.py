"""Per-stage speed of what the product runs, on one device (``float-rt bench``).

The stages are timed on the paths the pipeline and the streaming engine use (the backends of
the config: on CPU the fused frame-by-frame decoder, oneDNN-packed linear layers, the heap and
denormal settings), with the decoder given one streaming step's frames.  fp32 is the product;
the ``fast`` precision rows (float_rt/precision.py; timed interleaved with fp32) and the bf16
autocast rows are opt-in measurements, each with its error against fp32.  Speed claims are
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
from .kernels import Decision, chosen_paths
from .packed import PackedLinear, unpacked
from .pipeline import FloatPipeline
from .precision import bf16_supported, fast_fmt, shared_copy
from .precision import resolve as resolve_precision
from .reference import relative_error
from .sampler import Conditions, Guidance, guided_velocity, pad_frames

OFFICIAL_KEYS = ("decode_s_per_frame", "fmt_guided_eval_s")


def median_time(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    """Median seconds of ``repeat`` calls after one warm-up (CUDA synchronised)."""
    return interleaved_medians([fn], repeat, device)[0]


def bf16_ok(device: torch.device) -> bool:
    return bf16_supported(device)


def interleaved_medians(fns: list[Callable[[], object]], repeat: int, device: torch.device) -> list[float]:
    """Median seconds of each of ``fns``, called in turn ``repeat`` times after one warm-up each: an A/B
    that a busy machine slows alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


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
    fast = fast_fmt(shared_copy(fmt)) if bf16_ok(dev) else None
    if fast is not None:
        err = relative_error(guided_velocity(fast, t, x, cond, g), v32)
        t32, t16 = interleaved_medians([lambda: guided_velocity(fmt, t, x, cond, g),
                                        lambda: guided_velocity(fast, t, x, cond, g)], repeat, dev)
        row("FMT guided eval, fast", t16, "per eval", f"(precision fast: x{t32 / t16:.2f} vs fp32 "
            f"{t32 * 1e3:.1f} ms timed in turn)", err)
        res.update(fast_fmt_guided_eval_s=t16, fast_fmt_rel_err=err, fast_fmt_speedup=t32 / t16)
    else:
        log("  precision fast: no bf16 hardware here (AVX-512 bf16, AMX or CUDA), it would run fp32")

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
    if fast is not None:    # the fast mode keeps the decoder in fp32 (float_rt/precision.py says why)
        err = relative_error(dec.decode(ref.s_r, motion, ref.feats), f32)
        row("decode, fast", res["decode_s_per_frame"], "per frame", "(precision fast: the fp32 decoder)", err)
        res.update(fast_decode_s_per_frame=res["decode_s_per_frame"], fast_decode_rel_err=err)
    res["fmt_guided_eval_s"] = res["rows"]["FMT guided eval, fp32"]["seconds"]

    # End to end, as `generate` runs it (without the video encoder), in the precision asked for.
    res["precision"] = resolve_precision(cfg.backends.get("precision", "fp32"), dev)
    if res["precision"] == "fast":
        pipe.model.fmt = fast
    speech = (0.1 * rng.standard_normal(int(e2e_seconds * m.sampling_rate))).astype(np.float32)
    start = time.perf_counter()
    ref = pipe.encode_reference(image)
    motion = pipe.sample(ref, pipe.input_values(speech), cfg.sampling)
    frames = sum(f.shape[0] for f in pipe.decode(ref, motion))
    res["e2e_fps"] = frames / (time.perf_counter() - start)
    log(f"  end to end: {res['e2e_fps']:.2f} frames per second ({frames} frames, nfe {cfg.sampling.nfe}, "
        f"precision {res['precision']})")
    res["chosen_paths"] = chosen_paths()
    for line in describe_paths(res["chosen_paths"]):
        log(f"  {line}")

    if official:
        res["official"] = {k: official[k] for k in OFFICIAL_KEYS if k in official}
        for key in OFFICIAL_KEYS:
            if key in official:
                log(f"  vs the official code ({key}): {official[key] * 1e3:.0f} ms / {res[key] * 1e3:.0f} ms "
                    f"= x{official[key] / res[key]:.2f}")
    else:
        log("  ratios: run shared/tools/official-bench right before and pass its JSON with --official")
    return res


def describe_paths(paths: dict[str, dict]) -> list[str]:
    """The kernel choices in a few lines: each decoder's in full, the linear layers counted."""
    lines, linear = [], {}
    for key, d in paths.items():
        if key.startswith("linear "):
            linear[d["choice"]] = linear.get(d["choice"], 0) + 1
        else:
            lines.append(f"chosen: {key}: {Decision(**d).describe()}")
    if linear:
        lines.append("chosen: linear layers: " + ", ".join(f"{k} for {n} shape{'s' * (n > 1)}"
                                                          for k, n in sorted(linear.items()))
                     + " (each in the JSON's chosen_paths)")
    return lines


def write_json(res: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(res, indent=2))
