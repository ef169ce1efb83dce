"""The seam between the product and a model family, and the lookup by a config's ``family:`` field.

A family is a package beside the others (FLOAT: the modules at the top of ``float_rt``, adapted in
``float_family.py``; Ditto: ``float_rt/ditto``).  Everything outside the family packages talks to a
family only through ``Family``: no other code branches on the family's name.

Module-level imports stay light (no torch): the commands look a family up before their heavy
imports, to check the user's input first.
"""
from __future__ import annotations

import argparse
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import FloatRTError

DEFAULT_FAMILY = "float"
# name -> "module:attribute" of the family object, imported when first asked for.
FAMILIES = {"float": "float_rt.float_family:FAMILY", "ditto": "float_rt.ditto.family:FAMILY"}


class Family(Protocol):
    """What a model family provides.  ``model`` and ``reference`` are the family's own objects."""

    name: str
    emotions: tuple[str, ...]        # the labels ``--emo`` may name (compared case-insensitively)
    generate_options: frozenset[str]  # the family's own options of ``generate`` (argparse dests)
    commands: frozenset[str]         # commands it supports ("engine": the live engine behind stream and serve; "export": ONNX graphs)
    default_repo: str                # Hugging Face repo of the published files
    licence: str                     # printed by ``download``
    licence_needs_acceptance: bool   # download refuses without --accept-license
    no_checkpoints: str              # the message when no folder is given or downloaded ({default}: where)
    bench_reads_weights: bool        # ``bench`` times the given (or downloaded) weights, not recipe ones
    demo_config: str                 # the small config ``serve --demo`` runs on recipe weights
    stream_options: tuple[str, ...]  # stream-config overrides its live sessions read (``stream`` flags)
    stream_bench_sections: tuple[str, ...]   # ``bench-stream`` sections of its own (beside the family-free ones)

    # ---- configs and files (no torch)
    def parse_config(self, raw: dict, name: str) -> Any:
        """The family's config dataclass from a parsed ``configs/*.yaml``; ValueError names what is wrong."""

    def default_checkpoints(self) -> Path:
        """Where ``download`` puts the published files (used when --checkpoints is left out)."""

    def check_layout(self, folder: Path) -> Path:
        """Every file the loader opens is there, by names only; CheckpointError says what is missing."""

    # ---- the model
    def load(self, cfg: Any, checkpoints: Path, device: str | None) -> Any:
        """The model, exact to the published files (key and shape check)."""

    def encode_reference(self, model: Any, image: np.ndarray, options: argparse.Namespace) -> Any:
        """Everything about one photo (RGB uint8) a clip or session needs."""

    def audio_features(self, model: Any, samples: np.ndarray) -> Any:
        """Features of 16 kHz mono speech, (T, D) at the video rate."""

    def window_span(self, model: Any) -> tuple[int, int]:
        """(rows of features one window reads, rows it advances by)."""

    def new_carry(self, model: Any, reference: Any, options: argparse.Namespace) -> Any:
        """The state one stream of windows starts from (a dataclass of tensors)."""

    def window(self, model: Any, reference: Any, carry: Any, features: Any) -> tuple[Any, Any]:
        """One window of motion for ``features`` (n <= window length, D): (committed motion, next carry)."""

    def render(self, model: Any, reference: Any, motion: Any) -> np.ndarray:
        """Frames (n, H, W, 3) uint8 for motion rows."""

    def live_model(self, cfg: Any, checkpoints: Path, stream_cfg: Any, device: str | None) -> Any:
        """The model behind the live seam (``float_rt.live.LiveModel``) that the streaming engine runs."""

    # ---- commands
    def generate(self, cfg: Any, checkpoints: Path, args: argparse.Namespace) -> int:
        """The official offline computation into ``args.out`` (mp4 with the speech); returns frames written."""

    def write_demo_weights(self, cfg: Any, out: Path) -> Path:
        """Recipe weights in the published layout."""

    def download(self, repo: str, revision: str | None, dest: Path, cfg: Any, cfg_name: str) -> Path:
        """Fetch the published files the family needs and check them with the loader."""

    def bench(self, cfg: Any, args: argparse.Namespace, official: dict | None) -> dict:
        """``float-rt bench``: what the product's stages cost on this machine (seconds, the official
        bench's key names), with same-run ratios when ``official`` is given."""

    def recognises_case(self, raw: dict) -> bool:
        """Whether a reference case's ``config.json`` belongs to this family."""

    def run_case(self, case_dir: Path) -> dict[str, np.ndarray]:
        """Every key of the case's ``expected.npz``, computed through the real loaders."""


def family_named(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    module, _, attr = FAMILIES[name].partition(":")
    return getattr(import_module(module), attr)


def family_of(cfg: Any) -> Family:
    """The family of a loaded model config (configs without a ``family`` field are FLOAT's)."""
    return family_named(getattr(cfg, "family", DEFAULT_FAMILY))


def require(fam: Family, command: str) -> Family:
    if command not in fam.commands:
        raise FloatRTError(f"the {fam.name} family does not support `{command}` yet "
                           f"(it supports: {', '.join(sorted(fam.commands))})")
    return fam


def family_of_case(raw: dict, where: str) -> Family:
    """The family a reference case's ``config.json`` belongs to."""
    for name in FAMILIES:
        fam = family_named(name)
        if fam.recognises_case(raw):
            return fam
    raise FloatRTError(f"{where}: not a reference case of any known family ({', '.join(FAMILIES)})")


def check_generate_options(fam: Family, args: argparse.Namespace) -> None:
    """Options that belong to another family are an error; so is an emotion the family does not have."""
    foreign = set().union(*(family_named(n).generate_options for n in FAMILIES)) - fam.generate_options
    for dest in sorted(foreign):
        if getattr(args, dest, None) not in (None, False):
            raise FloatRTError(f"--{dest.replace('_', '-')} is not an option of the {fam.name} family")
    emo = getattr(args, "emo", None)
    if emo is not None and emo.lower() not in (e.lower() for e in fam.emotions):
        raise FloatRTError(f"unknown emotion {emo!r} for the {fam.name} family; choose from {', '.join(fam.emotions)}")
