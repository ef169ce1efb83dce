"""Ditto as a family (float_rt/family.py): HuBERT + LMDM motion on the LivePortrait renderer."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..resources import cache_dir
from .config import EMOTION_LABELS
from .layout import check_ditto_layout
from .weights import LICENCE, REPO


@dataclass
class DrivenMotion:
    """Motion rows (n, 265) and the frame they are relative to (official relative driving)."""
    rows: Any
    d0: Any


@dataclass
class DittoCarry:
    """One stream of windows: the fused sequence so far, the step noises (drawn once, as the
    official sampler does), the generator of the start noises, rows already handed out, and d0."""
    windows: Any          # windows.WindowCarry
    scheduler: Any        # ddim.DDIMScheduler
    step_noises: Any      # (S-1, L, 265)
    generator: Any        # torch.Generator for each window's x_T
    emitted: int = 0
    d0: Any = None


class DittoFamily:
    name = "ditto"
    emotions = EMOTION_LABELS
    generate_options = frozenset({"steps", "paste_back", "video_size", "motion_scale", "expression_scale", "pose",
                                  "pose_mode", "no_blink", "blink_rate", "gaze_camera"})
    # float_rt/controls.py names: all of them (the motion is explicit: pose angles, t, keypoint expression)
    supported_controls = frozenset({"paste_back", "video_size", "motion_scale", "expression_scale", "pose",
                                    "pose_mode", "blink", "blink_rate", "gaze_camera", "state"})
    bench_reads_weights = False
    demo_config = "ditto-tiny"
    stream_options = ()          # its windows are the official online mode's (configs' ``live:``)
    stream_bench_sections = ()
    commands = frozenset({"generate", "download", "demo-weights", "reference", "bench", "export", "engine"})
    default_repo = REPO
    licence = LICENCE
    licence_needs_acceptance = False   # Apache-2.0 and MIT: nothing to accept
    no_checkpoints = ("no Ditto checkpoint folder: pass --checkpoints DIR, or download the published files once with\n"
                      "  float-rt download --config ditto      (Apache-2.0 and MIT; into {default})\n"
                      "For stand-in weights that need no download (output is noise): "
                      "float-rt demo-weights --config ditto-tiny --out DIR")

    # ---- configs and files
    def parse_config(self, raw: dict, name: str):
        from .config import ditto_config
        return ditto_config(raw, name)

    def default_checkpoints(self) -> Path:
        return cache_dir() / "ditto"

    def check_layout(self, folder: Path) -> Path:
        check_ditto_layout(folder)
        return Path(folder)

    # ---- the model
    def load(self, cfg, checkpoints: Path, device: str | None):
        from .generate import load_ditto
        return load_ditto(cfg, checkpoints, device)

    def live_model(self, cfg, checkpoints: Path, stream_cfg, device: str | None):
        from .generate import load_ditto
        from .live_model import DittoLive
        return DittoLive(load_ditto(cfg, checkpoints, device), cfg)

    def encode_reference(self, model, image: np.ndarray, options: argparse.Namespace):
        from .generate import emotion_index, encode_photo, face_crop
        return encode_photo(model, image, face_crop(model.cfg, image),
                            emotion_index(getattr(options, "emo", None), model.cfg))

    def audio_features(self, model, samples: np.ndarray):
        from ..media import check_audio
        from .generate import audio_features
        return audio_features(model, check_audio(samples, warn_silence=False))

    def window_span(self, model) -> tuple[int, int]:
        L = model.cfg.lmdm.seq_len
        return L, model.cfg.windows.valid(L)

    def new_carry(self, model, reference, options: argparse.Namespace) -> DittoCarry:
        import torch

        from .ddim import DDIMScheduler
        from .windows import WindowCarry
        cfg = model.cfg
        steps = getattr(options, "steps", None)
        scheduler = DDIMScheduler(replace(cfg.sampler, steps=steps) if steps else cfg.sampler)
        seed = getattr(options, "seed", None)
        gen = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
        L, dim = cfg.lmdm.seq_len, cfg.lmdm.motion_dim
        noises = torch.randn((scheduler.num_noises, L, dim), generator=gen)
        return DittoCarry(WindowCarry.start(reference.motion), scheduler, noises, gen)

    def window(self, model, reference, carry: DittoCarry, features):
        """``features`` (L, 1024), the window's rows (a short last window repeats its last row).
        Returns the rows no later window changes (the next fuse and its smoothing touch only the last
        ``fuse_length`` rows) and the next carry."""
        import torch

        from .condition import build_condition
        from .sampler import sample_window
        from .windows import advance
        cfg = model.cfg
        L = cfg.lmdm.seq_len
        features = torch.as_tensor(features, dtype=torch.float32)
        if features.shape[0] < L:
            features = torch.cat([features, features[-1:].expand(L - features.shape[0], -1)])
        cond = build_condition(features.to(model.device), reference.condition)
        x_T = torch.randn((1, L, cfg.lmdm.motion_dim), generator=carry.generator).to(model.device)
        window = sample_window(model.lmdm, carry.scheduler, carry.windows.cond_frame[None].to(model.device),
                               cond[None], x_T, carry.step_noises.to(model.device))[0]
        windows = advance(carry.windows, window, cfg.windows)
        d0 = windows.result[0:1].clone() if carry.d0 is None else carry.d0
        final = windows.result.shape[0] - cfg.windows.fuse_length(L)
        rows = windows.result[carry.emitted:final]
        return DrivenMotion(rows, d0), replace(carry, windows=windows, emitted=final, d0=d0)

    def render(self, model, reference, motion: DrivenMotion) -> np.ndarray:
        from .generate import render_frames, to_uint8
        return np.concatenate([to_uint8(f) for f in render_frames(model, reference, motion.rows, motion.d0)])

    # ---- controls (float_rt/controls.py), per window of motion
    def control_motion(self, model, reference, motion: DrivenMotion, controls, start: int = 0) -> DrivenMotion:
        """The window's rows of frames [start, start + n) under ``controls`` (intensity, pose, blinks,
        gaze, attentive motion while listening); default controls return ``motion`` itself."""
        from .controls import control_rows
        rows = control_rows(motion.rows, motion.d0, reference.info, controls, start, model.cfg.fps)
        return motion if rows is motion.rows else replace(motion, rows=rows)

    def state_inputs(self, model, reference, carry, controls, options: argparse.Namespace):
        """(reference, carry) for the windows sampled in ``controls.state``: the emotion condition
        (in Ditto's reference) is a mild one while listening or thinking, else the session's (--emo)."""
        from .condition import emotion_vector
        from .controls import listening_emotion, with_emotion
        from .generate import emotion_index
        emotion = listening_emotion() if controls.attentive else emotion_vector(
            emotion_index(getattr(options, "emo", None), model.cfg))
        return replace(reference, condition=with_emotion(reference.condition, emotion)), carry

    def paster(self, model, reference, photo: np.ndarray, controls, limit=(1920, 1080)):
        """The FramePaster putting frames back into ``photo`` (None without paste_back)."""
        from ..media import FramePaster
        from .generate import frame_size
        if not controls.paste_back:
            return None
        return FramePaster(photo, reference.crop, frame_size(model.cfg), controls.video_size, limit=limit)

    # ---- commands
    def generate(self, cfg, checkpoints: Path, args: argparse.Namespace) -> int:
        from ..controls import check_supported, controls_from_args
        from ..media import load_audio, load_image
        from .generate import emotion_index, face_crop, load_ditto, write_clip
        controls = check_supported(controls_from_args(args), self.supported_controls, self.name)
        photo = load_image(args.ref)
        crop = face_crop(cfg, photo)                      # no face: one error line before loading anything
        samples = load_audio(args.audio, cfg.sampling_rate)
        model = load_ditto(cfg, checkpoints, args.device)
        return write_clip(model, photo, crop, samples, args.out, emotion_index(args.emo, cfg), steps=args.steps,
                          seed=args.seed, controls=controls)

    def write_demo_weights(self, cfg, out: Path) -> Path:
        from .weights import write_demo_folder
        return write_demo_folder(cfg, out)

    def download(self, repo: str, revision: str | None, dest: Path, cfg, cfg_name: str) -> Path:
        from ..download import fetch_chosen
        from .weights import check_folder, choose_files
        fetch_chosen(repo, revision, dest, choose_files)
        print(f"checked {dest} against {cfg_name} with the loaders' key and shape checks:")
        for line in check_folder(cfg, dest, cfg_name):
            print(line)
        return dest

    def bench(self, cfg, args: argparse.Namespace, official: dict | None) -> dict:
        # The cost of a network does not depend on its weights: the config's sizes on recipe
        # weights, written and loaded through the product's loaders.
        import sys

        import torch

        from .bench import run_ditto_bench
        if args.checkpoints:
            print("note: the Ditto bench times the config's sizes on recipe weights (the time does not depend "
                  "on the weights); --checkpoints is not read", file=sys.stderr)
        return run_ditto_bench(threads=args.threads or torch.get_num_threads(), repeat=args.repeat,
                               official=official, renderer_sizes=cfg.renderer, lmdm_sizes=cfg.lmdm)

    def recognises_case(self, raw: dict) -> bool:
        return "lmdm" in raw.get("sizes", {}) and "setup_kwargs" in raw

    def run_case(self, case_dir: Path) -> dict[str, np.ndarray]:
        from .reference import run_ditto_case
        return run_ditto_case(case_dir)


FAMILY = DittoFamily()
