"""Loading the published renderer files (``ditto_pytorch/models/*.pth``) into ``Renderer``.

Every key and shape of our table must be in the file; a missing or mis-shaped tensor is a
CheckpointError naming the file, the key and the shapes.  Extra keys are reported and ignored.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError
from .keys import FILES, STITCH_ENTRY, PublishedKey, published_keys
from .renderer import Renderer
from .sizes import RendererSizes

log = logging.getLogger(__name__)

STITCH_FILE = Path(next(f for f, attr in FILES.items() if attr == "stitch"))
LAYOUT = "expected layout: DIR/" + ", DIR/".join(FILES)


@dataclass
class RendererLoadReport:
    ignored: dict[str, list[str]] = field(default_factory=dict)   # file -> extra keys

    def summary(self) -> str:
        return "; ".join(f"{f}: {len(k)} unused key(s) ignored ({', '.join(k[:3])}{', ...' if len(k) > 3 else ''})"
                         for f, k in self.ignored.items() if k)


def read_state(path: Path, stitch: bool | None = None) -> dict[str, torch.Tensor]:
    """A published file's state dict.  For the stitch file (``stitch``; by default: named like it)
    that is its ``retarget_shoulder`` entry with every ``module.`` removed from the keys, as the
    official loader does for DDP-saved files; its other entries (mouth, eye) are never used."""
    if stitch is None:
        stitch = path.name == STITCH_FILE.name
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}\n{LAYOUT}")
    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is reported the same way
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if stitch:
        if not isinstance(state, dict) or not isinstance(state.get(STITCH_ENTRY), dict):
            raise CheckpointError(f"{path} has no '{STITCH_ENTRY}' entry (the stitching network)")
        state = {k.replace("module.", ""): v for k, v in state[STITCH_ENTRY].items()}
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def _check(entries: list[PublishedKey], state: dict, path: Path) -> list[str]:
    problems = []
    for e in entries:
        t = state.get(e.official)
        if not isinstance(t, torch.Tensor):
            problems.append(f"missing key {e.official} (expected shape {list(e.shape)})")
        elif tuple(t.shape) != e.shape:
            problems.append(f"key {e.official}: expected shape {list(e.shape)}, file has {list(t.shape)}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"{path}: " + "; ".join(problems[:5]) + more +
                              " - do the sizes match these weights?")
    known = {e.official for e in entries}
    return sorted(k for k in state if k not in known)


def _translate(entries: list[PublishedKey], state: dict) -> dict[str, torch.Tensor]:
    """Published tensors -> our state-dict entries (spectral norm folded into one weight)."""
    out, spectral = {}, {}
    for e in entries:
        if e.role == "copy":
            out[e.ours] = state[e.official]
        else:
            spectral.setdefault(e.ours, {})[e.role] = state[e.official]
    for ours, p in spectral.items():
        w, u, v = p["sn_orig"], p["sn_u"], p["sn_v"]
        # torch.nn.utils.spectral_norm in eval: no power iteration, sigma from the stored u, v.
        sigma = torch.dot(u, torch.mv(w.reshape(w.shape[0], -1), v))
        out[ours] = w / sigma
    return out


def _fill(renderer: Renderer, folder: Path, load: bool) -> RendererLoadReport:
    report = RendererLoadReport()
    target = {}
    for file in FILES:
        path = folder / file
        entries = published_keys(renderer, file)
        state = read_state(path, stitch=FILES[file] == "stitch")
        report.ignored[file] = _check(entries, state, path)
        if load:
            target.update(_translate(entries, state))
    if load:
        renderer.load_state_dict(target, strict=True)
    return report


def load_renderer(folder: str | Path, sizes: RendererSizes | None = None,
                  device: str | torch.device = "cpu") -> tuple[Renderer, RendererLoadReport]:
    """Build ``Renderer`` for ``sizes`` and fill it exactly from a folder in the published layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"folder not found: {folder}\n{LAYOUT}")
    renderer = Renderer(sizes)
    report = _fill(renderer, folder, load=True)
    if report.summary():
        log.info(report.summary())
    return renderer.to(device).eval(), report


def check_renderer_folder(folder: str | Path, sizes: RendererSizes | None = None) -> RendererLoadReport:
    """The loader's key and shape check without allocating the model (files memory-mapped)."""
    with torch.device("meta"):
        renderer = Renderer(sizes)
    return _fill(renderer, Path(folder), load=False)
