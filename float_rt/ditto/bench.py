"""CPU speed of the Ditto family at the published sizes, timed as the official bench times it.

``run_ditto_bench()`` writes recipe weights for the published sizes (renderer files and the LMDM
file) into a temporary folder, loads them through our loaders (the product path), and returns the
official bench's figures (``shared/tools/official-bench/ditto_bench.py``) under the same names:

- ``warp_s_per_frame``, ``decoder_s_per_frame``, ``render_s_per_frame`` (warp then decoder, with
  the decoder's output turned into a (512, 512, 3) frame in [0, 255]) for one frame;
- ``lmdm_guided_step_s``: one guided DDIM step on an 80-frame window, counted in full: the audio
  condition encoded (once: the sampler keeps it for the window), the two forwards (unconditional,
  conditional), the guidance combine and the DDIM update;
- ``lmdm_step_cached_s``: the same step with the window's audio encoding already done (what each
  step of a window costs after the first), and ``lmdm_window_s_10steps``.

Every figure is the median of ``repeat`` timed calls after one warm-up, with ``threads`` threads.
``chosen_paths`` says which internal paths ran (``float_rt.liveportrait.fast``).

    python -m float_rt.ditto.bench --json OUT.json [--official OFFICIAL.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..bench import median_time, write_json
from ..cpu import cpu_info, tune

KEYS = ("render_s_per_frame", "warp_s_per_frame", "decoder_s_per_frame", "lmdm_guided_step_s")
RATIO_KEYS = ("render_s_per_frame", "warp_s_per_frame", "decoder_s_per_frame", "lmdm_guided_step_s",
              "lmdm_window_s_10steps")


def _renderer_inputs(renderer):
    """f_s of a (1,3,256,256) crop, its x_s, and x_d of a turned head (stitched), as the official bench."""
    from ..liveportrait.kinematics import transform_keypoints
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 256, 256), generator=gen).float() / 255
    info, x_s, f_s = renderer.source(image)
    turned = replace(info, yaw=torch.roll(info.yaw, 2, dims=1), pitch=torch.roll(info.pitch, -1, dims=1),
                     exp=info.exp + 0.02 * torch.randn(info.exp.shape, generator=gen))
    x_d = renderer.stitch.stitch(x_s, transform_keypoints(turned))
    return info, f_s, x_s, x_d


def _lmdm_inputs(lmdm, info):
    from .condition import COND_DIM
    gen = torch.Generator().manual_seed(1)
    s = lmdm.sizes
    cond_frame = torch.cat([info.to_vector()], dim=-1)                               # (1, 265)
    cond = torch.cat([0.3 * torch.randn(1, s.seq_len, 1024, generator=gen),
                      torch.rand(1, s.seq_len, COND_DIM - 1024, generator=gen)], dim=-1)
    x = torch.randn(1, s.seq_len, s.motion_dim, generator=gen)
    return cond_frame, cond, x


@torch.no_grad()
def run_ditto_bench(threads: int = 2, repeat: int = 3, official: dict | None = None, log=print,
                    renderer_sizes=None, lmdm_sizes=None) -> dict:
    """Time our renderer and LMDM (published sizes unless given) on recipe weights, loaded through
    the product's loaders; returns the figures in seconds and what ran."""
    from ..liveportrait import load_renderer
    from ..liveportrait.decoder import to_frames
    from ..liveportrait.recipe import write_recipe_renderer
    from ..liveportrait.sizes import RendererSizes
    from .config import DEFAULT_SAMPLER, PUBLISHED_SIZES
    from .ddim import DDIMScheduler
    from .loader import load_lmdm
    from .recipe import write_lmdm_recipe
    from .sampler import guided_prediction, sample_window

    torch.set_num_threads(threads)
    settings = tune()
    start = time.perf_counter()
    cpu = torch.device("cpu")
    renderer_sizes = renderer_sizes or RendererSizes()
    lmdm_sizes = lmdm_sizes or PUBLISHED_SIZES
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_recipe_renderer(root, renderer_sizes)
        write_lmdm_recipe(root / "lmdm.pth", lmdm_sizes)
        renderer, _ = load_renderer(root, renderer_sizes)
        lmdm, _ = load_lmdm(root / "lmdm.pth", lmdm_sizes)

    info, f_s, x_s, x_d = _renderer_inputs(renderer)
    f_3d = renderer.warp(f_s, x_s, x_d)
    res: dict = {}
    res["warp_s_per_frame"] = median_time(lambda: renderer.warp(f_s, x_s, x_d), repeat, cpu)
    res["decoder_s_per_frame"] = median_time(lambda: to_frames(renderer.decoder(f_3d))[0], repeat, cpu)
    res["render_s_per_frame"] = median_time(lambda: renderer.render(f_s, x_s, x_d)[0], repeat, cpu)

    scheduler = DDIMScheduler(DEFAULT_SAMPLER)
    cond_frame, cond, x = _lmdm_inputs(lmdm, info)
    t = scheduler.timestep(0)
    w = scheduler.options.guidance_weight
    noise = torch.randn(x.shape)

    def step(audio=None):
        audio = audio if audio is not None else lmdm.audio_context(cond)
        return scheduler.step(x, guided_prediction(lmdm, x, cond_frame, audio, t, w), 0, noise)

    audio = lmdm.audio_context(cond)
    res["lmdm_guided_step_s"] = median_time(step, repeat, cpu)
    res["lmdm_step_cached_s"] = median_time(lambda: step(audio), repeat, cpu)
    s10 = DDIMScheduler(replace(DEFAULT_SAMPLER, steps=10))
    noises = torch.randn(s10.num_noises, *x.shape[1:])
    res["lmdm_window_s_10steps"] = median_time(lambda: sample_window(lmdm, s10, cond_frame, cond, x, noises),
                                               repeat, cpu)

    from ..liveportrait.fast import chosen_paths
    from ..packed import PackedLinear
    info_cpu = cpu_info()
    lmdm_paths = {"linear": "oneDNN packed" if any(isinstance(m, PackedLinear) for m in lmdm.modules()) else "F.linear",
                  "guidance": "one batch-2 forward", "audio_encoding": "once per window"}
    res.update(cpu=info_cpu["cpu"], threads=torch.get_num_threads(), torch=torch.__version__, repeats=repeat,
               cpu_settings=settings, chosen_paths={"renderer": chosen_paths(renderer), "lmdm": lmdm_paths},
               wall_s=round(time.perf_counter() - start, 1))
    log(f"{res['cpu']}, {res['threads']} threads, torch {res['torch']}, fp32")
    for k in ("warp_s_per_frame", "decoder_s_per_frame", "render_s_per_frame", "lmdm_guided_step_s",
              "lmdm_step_cached_s", "lmdm_window_s_10steps"):
        line = f"  {k:24s} {res[k] * 1e3:9.1f} ms"
        if official and k in official:
            line += f"   official {official[k] * 1e3:9.1f} ms   x{official[k] / res[k]:.2f}"
        log(line)
    if official:
        res["official"] = {k: official[k] for k in (*RATIO_KEYS, "other_cpu_s") if k in official}
        res["ratios"] = {k: official[k] / res[k] for k in RATIO_KEYS if k in official}
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m float_rt.ditto.bench", description=__doc__.split("\n")[0])
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--official", help="the official bench's JSON (ditto_bench.py), for ratios")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)
    official = json.loads(Path(a.official).read_text().strip().splitlines()[-1]) if a.official else None
    res = run_ditto_bench(a.threads, a.repeat, official, log=lambda s: print(s, file=sys.stderr))
    if a.json:
        write_json(res, a.json)
    print(json.dumps({k: res[k] for k in (*KEYS, "lmdm_step_cached_s", "lmdm_window_s_10steps")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
