"""Where files live: the configs shipped inside the package, and the per-user cache.

Configs are package data: the repository's ``configs/`` folder installs as ``float_rt.configs``
(see pyproject.toml), found through ``importlib.resources`` so that a wheel or an index install
works from any directory, not only a checkout.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .errors import FloatRTError

PACKAGED_CONFIGS = ("float-512", "small", "stream", "server", "ditto", "ditto-tiny")
DEFAULT_MODEL_CONFIG = "float-512"


def packaged_config(name: str) -> Path:
    """Path of a config shipped with the package (see ``PACKAGED_CONFIGS``)."""
    if name not in PACKAGED_CONFIGS:
        raise FileNotFoundError(f"no packaged config {name!r}; packaged: {', '.join(PACKAGED_CONFIGS)}")
    return Path(str(resources.files("float_rt.configs").joinpath(f"{name}.yaml")))


def config_path(name_or_path: str | os.PathLike) -> Path:
    """A config file given by path, or by the name of a packaged config (with or without ``.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml")
    if path.parent == Path(".") and name in PACKAGED_CONFIGS:
        return packaged_config(name)
    raise FileNotFoundError(f"config not found: {name_or_path} (a path, or one of the packaged configs: "
                            f"{', '.join(PACKAGED_CONFIGS)})")


def cache_dir() -> Path:
    """``$FLOAT_RT_CACHE``, else ``$XDG_CACHE_HOME/float-rt``, else ``~/.cache/float-rt``."""
    if os.environ.get("FLOAT_RT_CACHE"):
        return Path(os.environ["FLOAT_RT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "float-rt"


def default_checkpoints() -> Path:
    """Where ``float-rt download`` puts the published checkpoints."""
    return cache_dir() / "checkpoints"


NO_CHECKPOINTS = """no checkpoint folder: pass --checkpoints DIR, or download the published weights once with
  float-rt download --accept-license      (FLOAT's weights are CC BY-NC-ND 4.0: non-commercial use only)
which puts them in {default}, used from then on when --checkpoints is left out.
For stand-in weights that need no download (output is noise): float-rt demo-weights --config small --out DIR"""


def resolve_checkpoints(given: str | os.PathLike | None, folder: Path | None = None,
                        missing: str | None = None) -> Path:
    """The ``--checkpoints`` folder, or the downloaded one in the cache (``folder``, FLOAT's by
    default) when none is given; ``missing`` is the message when there is none ({default}: the folder)."""
    if given is not None:
        return Path(given)
    folder = folder or default_checkpoints()
    if folder.is_dir():
        return folder
    raise FloatRTError((missing or NO_CHECKPOINTS).format(default=folder))
