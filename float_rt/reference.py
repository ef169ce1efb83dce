"""Run a reference case (shared/reference/cases/*) through the real loader and model."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from .checkpoint import AUDIO_DIR, feature_extractor, load_model
from .config import config_from_official
from .recipe import write_recipe_checkpoints
from .sampler import (Conditions, Guidance, WindowNoise, emotion_condition, guided_velocity, pad_frames,
                      sample_motion)

TOLERANCES = {"motion": 1e-3, "frames": 5e-3}
DEFAULT_TOLERANCE = 1e-4


def tolerance(key: str) -> float:
    return TOLERANCES.get(key, DEFAULT_TOLERANCE)


def relative_error(ours, ref) -> float:
    """||ours - ref|| / ||ref|| in float64 (arrays or tensors); inf on a shape mismatch, nan if not finite."""
    ours, ref = (x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in (ours, ref))
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return float("inf")
    err = float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-12))
    return err if np.isfinite(err) and np.all(np.isfinite(ours)) else float("nan")


@torch.no_grad()
def run_case(case_dir: str | Path, expected_keys: list[str] | None = None,
             workdir: str | Path | None = None) -> dict[str, np.ndarray]:
    case_dir = Path(case_dir)
    raw = json.loads((case_dir / "config.json").read_text())
    cfg = config_from_official(raw["float"], raw["audio_encoder"], raw["emotion_encoder"])
    inputs = np.load(case_dir / "inputs.npz")
    if expected_keys is None and (case_dir / "expected.npz").is_file():
        expected_keys = list(np.load(case_dir / "expected.npz").files)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        write_recipe_checkpoints(cfg, tmp)
        model, _ = load_model(cfg.model, tmp)
        prep = feature_extractor(Path(tmp) / AUDIO_DIR)

    out: dict[str, np.ndarray] = {}
    waveform = inputs["waveform"].astype(np.float32)
    input_values = torch.from_numpy(prep(waveform[0], sampling_rate=cfg.model.sampling_rate,
                                         return_tensors="np").input_values.astype(np.float32))
    out["input_values"] = input_values.numpy()
    image = torch.from_numpy(inputs["image"].astype(np.float32))

    s_r, coeffs, r_s, feats = model.motion.encode_reference(image)
    out.update(s_r=s_r.numpy(), r_s_lambda=coeffs.numpy(), r_s=r_s.numpy())
    for i, f in enumerate(feats):
        out[f"feat_{i}"] = f.numpy()

    wa = model.encode_audio(input_values)
    out["wa"] = wa.numpy()
    probs = model.emotion(input_values)
    out["we"] = probs[:, None].numpy()
    we = emotion_condition(cfg.sampling.emotion, probs, cfg.model.dim_e, model.labels)

    m = cfg.model
    x0 = torch.from_numpy(inputs["x0"]) if "x0" in inputs.files else \
        WindowNoise((1, m.num_frames, m.dim_w), cfg.sampling.seed).next()
    first = Conditions(wa=pad_frames(wa[:, :m.num_frames], m.num_frames), wr=r_s, we=we,
                       prev_x=wa.new_zeros(1, m.num_prev_frames, m.dim_w),
                       prev_wa=wa.new_zeros(1, m.num_prev_frames, wa.shape[-1]))
    out["fmt_vf_t03"] = guided_velocity(model.fmt, torch.tensor([0.3]), x0, first,
                                        Guidance.from_config(cfg.sampling)).numpy()

    motion = sample_motion(model.fmt, wa, r_s, we, m, cfg.sampling)
    out["motion"] = motion.numpy()
    idx = inputs["frame_index"] if "frame_index" in inputs.files else None
    if idx is None and expected_keys and (case_dir / "expected.npz").is_file():
        idx = np.load(case_dir / "expected.npz")["frame_index"]
    if idx is not None:
        out["frame_index"] = np.asarray(idx)
        out["frames"] = model.motion.decode(s_r, motion[0, torch.as_tensor(idx)], feats).numpy()
    if expected_keys:
        out = {k: v for k, v in out.items() if k in expected_keys}
    return out


def compare(ours: dict[str, np.ndarray], expected: dict[str, np.ndarray],
            tolerances: dict[str, float] | None = None) -> dict[str, tuple[float, float, bool]]:
    """Per key: (relative error, tolerance, passed).  ``tolerances``: a case's own table
    (``tolerances.json``, with a ``default``), else FLOAT's."""
    result = {}
    for key in expected:
        if key == "frame_index":
            continue
        err = relative_error(ours[key], expected[key]) if key in ours else float("inf")
        tol = tolerances.get(key, tolerances.get("default", DEFAULT_TOLERANCE)) if tolerances else tolerance(key)
        result[key] = (err, tol, bool(err <= tol))
    return result
