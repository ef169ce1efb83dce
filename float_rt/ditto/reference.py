"""A Ditto reference case (shared/reference/ditto/cases/*) through our real loaders and pipeline.

The case's weights are written as recipe files from its ``keys.json`` into a temporary folder in
the published layout (the HuBERT stand-in ONNX under the published name), loaded by the product's
loaders, and run with the case's inputs: the source crop, the eye measures, the recorded HuBERT
outputs (injected as the README prescribes: HuBERT is not part of the comparison) and the noises.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..liveportrait.decoder import to_frames
from ..liveportrait.kinematics import drive_info, transform_keypoints
from ..liveportrait.recipe import write_published_files
from ..liveportrait.renderer import exact_float32
from ..liveportrait.sizes import RendererSizes
from .config import EMOTION_LABELS, DittoConfig, LMDMSizes, SamplerOptions, WindowOptions
from .ddim import DDIMScheduler
from .hubert import HOP, chunk_features, offline_chunks, offline_features, online_chunks, write_stub_onnx
from .generate import audio_features, clip_motion, encode_source, load_ditto
from .layout import HUBERT_PATH, LMDM_PATH
from .live import LiveMotion
from .pipeline import MotionNoise, clip_windows
from .recipe import HUBERT_STUB_KEYS, recipe_tensor
from .sampler import guided_prediction, sample_window

STUB_FILE = "hubert_stub.onnx"


def case_config(raw: dict) -> DittoConfig:
    """Our config from the official names of a case's ``config.json``."""
    s, kw = raw["sizes"]["lmdm"], raw["setup_kwargs"]
    lmdm = LMDMSizes(motion_dim=s["motion_feat_dim"], cond_dim=s["audio_feat_dim"], seq_len=s["seq_frames"],
                     width=s["latent_dim"], ff_width=s["ff_size"], num_layers=s["num_layers"],
                     num_heads=s["num_heads"])
    windows = WindowOptions(overlap=kw["overlap_v2"], smooth_k=kw["smo_k_d"], fix_cond_every=kw["fix_kp_cond"],
                            fix_cond_dims=tuple(kw["fix_kp_cond_dim"]) if kw["fix_kp_cond_dim"] else None,
                            online=bool(kw["online_mode"]))
    sampler = SamplerOptions(steps=kw["sampling_timesteps"], guidance_weight=float(raw["run"]["guidance_weight"]))
    return DittoConfig(renderer=RendererSizes.from_dict(raw["sizes"]), lmdm=lmdm, sampler=sampler,
                       windows=windows, emotion=EMOTION_LABELS[kw["emo"]], name="case")


def write_case_weights(keys: dict[str, dict[str, list[int]]], root: Path) -> Path:
    """Recipe files for every file of ``keys.json``, in the published layout under ``root``."""
    write_published_files(root, keys)
    lmdm = {k: recipe_tensor(k, tuple(shape)) for k, shape in keys["lmdm_v0.4_hubert.pth"].items()}
    (root / LMDM_PATH).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": lmdm}, str(root / LMDM_PATH))
    stub = keys.get(STUB_FILE, {k: list(v) for k, v in HUBERT_STUB_KEYS.items()})
    weight, bias = (recipe_tensor(k, tuple(stub[k])) for k in HUBERT_STUB_KEYS)
    (root / HUBERT_PATH).parent.mkdir(parents=True, exist_ok=True)
    write_stub_onnx(root / HUBERT_PATH, weight, bias)
    return root


def _center(x: torch.Tensor, half: int, spatial_last: bool = True) -> torch.Tensor:
    """The centre 2*half square of the last two axes (or of axes 1, 2 for (n, H, W, 3) frames)."""
    if spatial_last:
        h, w = x.shape[-2:]
        return x[..., h // 2 - half:h // 2 + half, w // 2 - half:w // 2 + half]
    h, w = x.shape[1:3]
    return x[:, h // 2 - half:h // 2 + half, w // 2 - half:w // 2 + half, :]


@torch.no_grad()
def run_ditto_case(case_dir: str | Path, workdir: str | Path | None = None) -> dict[str, np.ndarray]:
    case_dir = Path(case_dir)
    raw = json.loads((case_dir / "config.json").read_text())
    cfg = case_config(raw)
    keys = json.loads((case_dir / "keys.json").read_text())
    inputs = dict(np.load(case_dir / "inputs.npz"))
    expected_path = case_dir / "expected.npz"
    wanted = set(np.load(expected_path).files) if expected_path.is_file() else None
    recorded = iter(inputs["hubert_chunk_out"])    # the i-th HuBERT call returns the i-th recorded output
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, exact_float32():
        model = load_ditto(cfg, write_case_weights(keys, Path(tmp)), "cpu", hubert=lambda chunk: next(recorded))
        out = _run(model, cfg, raw, inputs, wanted)
    return {k: v for k, v in out.items() if wanted is None or k in wanted}


@dataclass
class _Motion:
    """What the window loop saw and made."""
    chunks: np.ndarray                       # every chunk fed to HuBERT, in call order
    features: torch.Tensor                   # the 25 Hz rows the windows read
    cond_windows: list[torch.Tensor] = field(default_factory=list)   # (L, 1103) each
    cond_frames: list[torch.Tensor] = field(default_factory=list)    # (265,) each
    windows: list[torch.Tensor] = field(default_factory=list)        # (L, 265) sampled, before fuse
    motion: torch.Tensor | None = None
    d0: torch.Tensor | None = None


def _offline(model, cfg: DittoConfig, ref, waveform: np.ndarray, noise: MotionNoise) -> _Motion:
    features = audio_features(model, waveform)
    result = clip_motion(model, ref, features, noise=noise)
    windows = clip_windows(features, ref.condition, cfg.lmdm.seq_len, cfg.windows)
    return _Motion(offline_chunks(waveform)[0], features, list(windows), result.trace.cond_frames,
                   result.trace.windows, result.motion, result.d0)


def online_run(model, cfg: DittoConfig, ref, waveform: np.ndarray, noise: MotionNoise) -> _Motion:
    """The official online worker: a buffer that starts with the features of ``overlap`` frames of
    silence (offline chunking), then 5 rows per streamed chunk; d0 and the emitted rows as live.py."""
    scheduler = DDIMScheduler(cfg.sampler)
    silence = np.zeros(cfg.windows.overlap * HOP, np.float32)
    stream = online_chunks(waveform)
    initial = torch.from_numpy(offline_features(silence, model.hubert))
    seen = _Motion(np.concatenate([offline_chunks(silence)[0], np.stack(stream)]), initial)

    def sample(cond_frame, cond):
        x_T = noise.starts[len(seen.windows)][None]
        window = sample_window(model.lmdm, scheduler, cond_frame[None], cond[None], x_T, noise.steps)[0]
        seen.cond_windows.append(cond)
        seen.cond_frames.append(cond_frame.clone())
        seen.windows.append(window)
        return window

    live = LiveMotion(ref.motion, ref.condition, initial, sample, cfg.windows, cfg.lmdm.seq_len)
    rows, feats = [], [initial]
    for chunk in stream:
        f = torch.from_numpy(chunk_features(model.hubert(chunk)))
        feats.append(f)
        rows.append(live.push(f))
    rows.append(live.finish())
    seen.features, seen.motion, seen.d0 = torch.cat(feats), torch.cat(rows), live.state.d0[None]
    return seen


def _run(model, cfg: DittoConfig, raw: dict, inputs: dict, wanted: set[str] | None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    ref = encode_source(model, torch.from_numpy(inputs["image"]), raw["setup_kwargs"]["emo"],
                        inputs["eye_open"], inputs["eye_ball"])
    for k in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp"):
        out[f"kp_{k}"] = getattr(ref.info, k).numpy()
    out.update(f_s=ref.f_s.numpy(), f_s_center=_center(ref.f_s, 8).numpy(), x_s=ref.x_s.numpy())

    noise = MotionNoise(torch.from_numpy(inputs["noise_steps"]), torch.from_numpy(inputs["noise_init"]))
    run = (online_run if cfg.windows.online else _offline)(model, cfg, ref, inputs["waveform"].astype(np.float32),
                                                         noise)
    out.update(hubert_chunks=run.chunks, aud_feat=run.features.numpy(),
               aud_cond_windows=torch.stack(run.cond_windows).numpy(),
               kp_cond_windows=torch.stack(run.cond_frames).numpy(), lmdm_windows=torch.stack(run.windows).numpy(),
               motion=run.motion.numpy(), d0=run.d0.numpy())

    # the first guided step of window 0, its two forwards and what DDIM derives from them
    lmdm, scheduler = model.lmdm, DDIMScheduler(cfg.sampler)
    x, t = noise.starts[:1], scheduler.timestep(0)
    cond_frame, audio = run.cond_frames[0][None], lmdm.audio_context(run.cond_windows[0][None])
    out["lmdm_step_uncond"] = lmdm(x, cond_frame, lmdm.null_context(), t).numpy()
    out["lmdm_step_cond"] = lmdm(x, cond_frame, audio, t).numpy()
    x_start = guided_prediction(lmdm, x, cond_frame, audio, t, cfg.sampler.guidance_weight)
    out["lmdm_step_x_start"] = x_start.numpy()
    out["lmdm_step_pred_noise"] = scheduler.noise_from_start(x, x_start, 0).numpy()

    renderer = model.renderer
    out["x_d_prestitch"] = transform_keypoints(drive_info(ref.info, run.motion, run.d0)).numpy()
    x_d = renderer.drive(ref.info, ref.x_s, run.motion, run.d0)
    out["x_d"] = x_d.numpy()

    idx = np.asarray(raw.get("full_frames", []), np.int64)
    out["frame_index"] = idx
    if len(idx):
        f_3d = renderer.warp(ref.f_s, ref.x_s, x_d[torch.from_numpy(idx)])
        out.update(f_3d=f_3d.numpy(), f_3d_center=_center(f_3d, 8).numpy(),
                   frames=to_frames(renderer.decoder(f_3d)).numpy())
    if wanted is None or "frames_center" in wanted:
        order = raw.get("render_frames", "all")
        rows = list(range(len(x_d))) if order == "all" else list(order)
        centres = [_center(renderer.render(ref.f_s, ref.x_s, x_d[rows[s:s + 8]]), 16, spatial_last=False)
                   for s in range(0, len(rows), 8)]
        out["frames_center"] = torch.cat(centres).numpy()
    return out
