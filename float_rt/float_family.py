"""FLOAT as a family (float_rt/family.py): an adapter over the modules at the top of ``float_rt``."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import EMOTIONS
from .errors import FloatRTError
from .resources import NO_CHECKPOINTS, default_checkpoints


@dataclass
class FloatCarry:
    """What one stream of FLOAT windows carries: the last latents and their audio features."""
    prev_x: Any       # (1, P, dim_w)
    prev_wa: Any      # (1, P, dim_a)
    we: Any           # (1, 1, dim_e) emotion condition
    noise: Any        # sampler.WindowNoise
    sampling: Any     # config.SamplingConfig


class FloatFamily:
    name = "float"
    emotions = EMOTIONS
    generate_options = frozenset({"a_cfg_scale", "e_cfg_scale", "nfe", "no_crop", "decode_batch", "engines",
                                  "backend", "paste_back", "video_size", "motion_scale", "precision"})
    # float_rt/controls.py names FLOAT can express; its motion latent has no pose, eyelid, gaze or
    # separate expression axis (see float_controls.py), so those are refused rather than guessed.
    supported_controls = frozenset({"paste_back", "video_size", "motion_scale", "state"})
    bench_reads_weights = True
    demo_config = "small"
    stream_options = ("chunk_frames", "lookahead_ms", "left_context_ms", "nfe")
    stream_bench_sections = ("features", "nfe", "offline", "configs")   # deviation from offline, NFE, chunks
    commands = frozenset({"generate", "download", "demo-weights", "reference", "convert", "bench", "engine", "export"})
    default_repo = "yuvraj108c/float"    # the mirror the ComfyUI FLOAT wrapper downloads from
    licence_needs_acceptance = True
    no_checkpoints = NO_CHECKPOINTS

    @property
    def licence(self) -> str:
        from .licence import LICENSE
        return LICENSE

    # ---- configs and files
    def parse_config(self, raw: dict, name: str):
        from .config import float_config
        return float_config(raw, name)

    def default_checkpoints(self) -> Path:
        return default_checkpoints()

    def check_layout(self, folder: Path) -> Path:
        from .layout import check_layout
        return check_layout(folder)

    # ---- the model
    def load(self, cfg, checkpoints: Path, device: str | None, **kw):
        from .pipeline import FloatPipeline
        return FloatPipeline.from_checkpoints(checkpoints, cfg, device, **kw)

    def live_model(self, cfg, checkpoints: Path, stream_cfg, device: str | None):
        from .checkpoint import AUDIO_DIR, feature_extractor
        from .float_live import FloatLive
        from .pipeline import load_with_backends, resolve_device
        dev = resolve_device(device)
        model = load_with_backends(cfg, checkpoints, dev)
        fx = feature_extractor(Path(checkpoints) / AUDIO_DIR)
        live = FloatLive(model, cfg, stream_cfg, bool(getattr(fx, "do_normalize", True)), dev,
                         decode_batch=stream_cfg.decode_batch)
        live.feature_extractor = fx
        return live

    def encode_reference(self, model, image: np.ndarray, options: argparse.Namespace):
        from .media import prepare_reference
        crop = not getattr(options, "no_crop", False)
        return model.encode_reference(prepare_reference(image, model.cfg.model.input_size, crop=crop))

    def audio_features(self, model, samples: np.ndarray):
        return model.model.encode_audio(model.input_values(samples))[0]

    def window_span(self, model) -> tuple[int, int]:
        n = model.cfg.model.num_frames
        return n, n

    def _sampling(self, model, options: argparse.Namespace):
        from .pipeline import sampling_with
        return sampling_with(model.cfg.sampling, emotion=getattr(options, "emo", None),
                             a_cfg_scale=getattr(options, "a_cfg_scale", None),
                             e_cfg_scale=getattr(options, "e_cfg_scale", None),
                             nfe=getattr(options, "nfe", None), seed=getattr(options, "seed", None))

    def new_carry(self, model, reference, options: argparse.Namespace) -> FloatCarry:
        import torch

        from .sampler import WindowNoise, emotion_condition
        m, sampling = model.cfg.model, self._sampling(model, options)
        if sampling.emotion is None:
            raise FloatRTError("a FLOAT window stream needs a fixed emotion (--emo)")
        we = emotion_condition(sampling.emotion, None, m.dim_e, model.model.labels).to(model.device)
        zeros = torch.zeros
        return FloatCarry(zeros(1, m.num_prev_frames, m.dim_w, device=model.device),
                          zeros(1, m.num_prev_frames, m.dim_a, device=model.device), we,
                          WindowNoise((1, m.num_frames, m.dim_w), sampling.seed, sampling.fix_noise_seed,
                                      model.device), sampling)

    def window(self, model, reference, carry: FloatCarry, features):
        """``features`` (n <= num_frames, dim_a): the window is replicate-padded as offline.
        Returns the (n, dim_w) latents and the carry."""
        import torch

        from .sampler import Conditions, Guidance, pad_frames, sample_window, time_grid
        m = model.cfg.model
        features = features.reshape(1, -1, features.shape[-1])
        wa = pad_frames(features, m.num_frames)
        with torch.no_grad():
            x = sample_window(model.model.fmt, carry.noise.next(),
                              Conditions(wa, reference.r_s, carry.we, carry.prev_x, carry.prev_wa),
                              Guidance.from_config(carry.sampling), time_grid(carry.sampling.nfe, wa.device))
        p = m.num_prev_frames
        return x[0, :features.shape[1]], replace(carry, prev_x=x[:, -p:], prev_wa=wa[:, -p:])

    def render(self, model, reference, motion) -> np.ndarray:
        import torch

        from .media import frames_to_uint8
        with torch.no_grad():
            return frames_to_uint8(model.model.motion.decode(reference.s_r, motion, reference.feats))

    # ---- controls (float_rt/controls.py), per window of motion
    def control_motion(self, model, reference, motion, controls, start: int = 0):
        """The window's latents (n, dim_w) of frames [start, start + n) under ``controls``
        (motion_scale; calmer while listening); default controls return ``motion`` itself."""
        from .float_controls import control_motion
        return control_motion(motion, reference.r_s, controls)

    def state_inputs(self, model, reference, carry: FloatCarry, controls, options: argparse.Namespace):
        """(reference, carry) for the windows sampled in ``controls.state``: the emotion condition
        (in FLOAT's carry) is a mild one while listening or thinking, else the session's (--emo)."""
        from .float_controls import listening_emotion
        from .sampler import emotion_condition
        m = model.cfg.model
        if controls.attentive:
            we = listening_emotion(model.model.labels, m.dim_e)
        else:
            we = emotion_condition(carry.sampling.emotion, None, m.dim_e, model.model.labels)
        return reference, replace(carry, we=we.to(carry.we))

    def paster(self, model, reference, photo: np.ndarray, controls, limit=(1920, 1080)):
        """The FramePaster putting frames back into ``photo`` (None without paste_back); the crop
        is the official one ``encode_reference`` made (not with --no-crop)."""
        from .media import FramePaster, official_crop_box
        if not controls.paste_back:
            return None
        size = model.cfg.model.input_size
        return FramePaster(photo, official_crop_box(photo, size), size, controls.video_size, limit=limit)

    # ---- commands
    def generate(self, cfg, checkpoints: Path, args: argparse.Namespace) -> int:
        from .cli import with_backends
        cfg = with_backends(cfg, args)

        from .controls import check_supported, controls_from_args
        controls = check_supported(controls_from_args(args), self.supported_controls, self.name)
        if controls.paste_back and args.no_crop:
            raise FloatRTError("--paste-back needs the face crop (leave out --no-crop)")
        from .media import load_audio, load_image, prepare_reference
        img = load_image(args.ref)
        samples = load_audio(args.audio, cfg.model.sampling_rate)
        image = prepare_reference(img, cfg.model.input_size, crop=not args.no_crop)
        pipe = self.load(cfg, checkpoints, args.device, decode_batch=args.decode_batch or 8)
        paste = self.paster(pipe, None, img, controls, limit=None)
        return pipe.generate(image, samples, args.out, self._sampling(pipe, args), paste=paste,
                             motion_scale=controls.motion_scale)

    def write_demo_weights(self, cfg, out: Path) -> Path:
        from tqdm.auto import tqdm

        from .recipe import write_recipe_checkpoints
        return write_recipe_checkpoints(cfg, out, progress=lambda it: tqdm(it, desc="writing", unit="file"))

    def download(self, repo: str, revision: str | None, dest: Path, cfg, cfg_name: str) -> Path:
        from .download import download
        return download(repo, revision, dest, cfg.model, cfg_name)

    def bench(self, cfg, args: argparse.Namespace, official: dict | None) -> dict:
        from .bench import run_bench
        from .cli import checkpoints_arg
        from .pipeline import FloatPipeline
        precision = getattr(args, "precision", None) or cfg.backends.get("precision", "fp32")
        cfg = replace(cfg, backends={**cfg.backends, "precision": precision})
        # Loaded in fp32: the bench times fp32 and (where bf16 runs in hardware) fast side by side.
        pipe = FloatPipeline.from_checkpoints(checkpoints_arg(args.checkpoints),
                                              replace(cfg, backends={**cfg.backends, "precision": "fp32"}), args.device)
        return run_bench(pipe, cfg, repeat=args.repeat, decode_frames=args.decode_frames, e2e_seconds=args.seconds,
                         official=official)

    def recognises_case(self, raw: dict) -> bool:
        return "float" in raw

    def run_case(self, case_dir: Path) -> dict[str, np.ndarray]:
        from .reference import run_case
        return run_case(case_dir)


FAMILY = FloatFamily()
