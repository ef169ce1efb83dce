"""Per-stage speed of the model on one device (``float-rt bench``)."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import FloatConfig
from .pipeline import FloatPipeline
from .sampler import Conditions, Guidance, guided_velocity, pad_frames

# The official code on this 2-core CPU (issue #2), for comparison.
OFFICIAL_CPU = {"reference_encode_s": None, "audio_encode_s_per_s": 0.45 / 2,
                "fmt_guided_eval_s": 0.48, "decode_s_per_frame": 1.6}


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


@torch.no_grad()
def run_bench(pipe: FloatPipeline, cfg: FloatConfig, repeat: int = 3, audio_seconds: float = 2.0,
              decode_batch: int = 4, e2e_seconds: float = 2.0, log=print) -> dict:
    m, dev = cfg.model, pipe.device
    rng = np.random.default_rng(0)
    image = torch.rand(1, 3, m.input_size, m.input_size) * 2 - 1
    res: dict[str, float | str | int] = {"config": cfg.name, "device": str(dev),
                                         "threads": torch.get_num_threads()}

    res["reference_encode_s"] = median_time(lambda: pipe.encode_reference(image), repeat, dev)
    log(f"reference image encode      {res['reference_encode_s']:.3f} s")
    ref = pipe.encode_reference(image)

    speech = (0.1 * rng.standard_normal(int(audio_seconds * m.sampling_rate))).astype(np.float32)
    iv = pipe.input_values(speech)
    t = median_time(lambda: pipe.model.encode_audio(iv), repeat, dev)
    res["audio_encode_s_per_s"] = t / audio_seconds
    log(f"audio encode                {res['audio_encode_s_per_s']:.3f} s per s of audio")

    wa = pipe.model.encode_audio(iv)
    n, p = m.num_frames, m.num_prev_frames
    wa_w = pad_frames(wa[:, :n], n)
    cond = Conditions(wa_w, ref.r_s, torch.full((1, 1, m.dim_e), 1.0 / m.dim_e, device=dev),
                      torch.zeros(1, p, m.dim_w, device=dev), torch.zeros(1, p, m.dim_a, device=dev))
    x = torch.randn(1, n, m.dim_w, device=dev)
    g = Guidance(2.0, 1.0, True)
    res["fmt_guided_eval_s"] = median_time(lambda: guided_velocity(pipe.model.fmt, torch.tensor([0.5], device=dev),
                                                               x, cond, g), repeat, dev)
    log(f"guided FMT evaluation       {res['fmt_guided_eval_s']:.3f} s (batch of 3 x {m.window} frames)")

    motion = torch.randn(decode_batch, m.dim_w, device=dev) * 0.1
    t = median_time(lambda: pipe.model.motion.decode(ref.s_r, motion, ref.feats), repeat, dev)
    res["decode_s_per_frame"] = t / decode_batch
    res["decode_batch"] = decode_batch
    log(f"decode                      {res['decode_s_per_frame']:.3f} s per frame (batch {decode_batch})")

    # End to end, as `generate` runs it (without the video encoder).
    speech = (0.1 * rng.standard_normal(int(e2e_seconds * m.sampling_rate))).astype(np.float32)
    start = time.perf_counter()
    ref = pipe.encode_reference(image)
    motion = pipe.sample(ref, pipe.input_values(speech), cfg.sampling)
    frames = sum(f.shape[0] for f in pipe.decode(ref, motion))
    res["e2e_fps"] = frames / (time.perf_counter() - start)
    res["e2e_frames"] = frames
    log(f"end to end                  {res['e2e_fps']:.2f} frames per second "
        f"({frames} frames, nfe {cfg.sampling.nfe})")
    if dev.type == "cpu" and m.input_size == 512:
        for key, ref_value in OFFICIAL_CPU.items():
            if ref_value:
                log(f"  {key:26s} ours {res[key]:.3f}  official {ref_value:.3f}  "
                    f"speed-up x{ref_value / res[key]:.2f}")
    return res


def write_json(res: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(res, indent=2))
