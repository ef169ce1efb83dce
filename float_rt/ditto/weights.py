"""Ditto's files as a folder: recipe (demo) weights in the published layout, and the download's
choice of files and its check with the loaders."""
from __future__ import annotations

from pathlib import Path

from ..errors import FloatRTError
from .config import DittoConfig
from .eyes import FILES as EYE_FILES
from .eyes import EyeMeasurer
from .layout import FILES, HUBERT_PATH, LMDM_PATH, RENDERER_FILES, SUBDIR, check_ditto_layout, repo_root

REPO = "digital-avatar/ditto-talkinghead"
LICENCE = """Ditto (antgroup/ditto-talkinghead): code and weights (ditto_pytorch/models/lmdm_v0.4_hubert.pth,
  aux_models/hubert_streaming_fix_kv.onnx) are Apache-2.0 - https://www.apache.org/licenses/LICENSE-2.0
The renderer files (appearance_extractor, motion_extractor, warp_network, decoder, stitch_network)
  are LivePortrait's (KwaiVGI/LivePortrait), MIT - https://opensource.org/license/mit
The eye measures' models (ditto_onnx/blaze_face.onnx, face_mesh.onnx) are Google's MediaPipe face
  detector and face mesh, Apache-2.0 - https://www.apache.org/licenses/LICENSE-2.0
All allow commercial use; keep the licence notices. Ditto's face-crop models (InsightFace, the
  203-point landmarks) are not downloaded and not used."""


def write_demo_folder(cfg: DittoConfig, out: str | Path) -> Path:
    """Recipe weights for ``cfg``'s sizes in the published layout: DIR/ditto_pytorch/models/*.pth,
    a stand-in HuBERT ONNX with the published interface (input ``input_values`` (1, 6480) float32,
    output (20, 1024)), stand-ins for the two eye-measure models (``eye_stubs.py``) in DIR/ditto_onnx/,
    plus the recipe marker."""
    from ..liveportrait.recipe import write_recipe_renderer
    from ..recipe import write_recipe_marker
    from .eye_stubs import write_eye_stubs
    from .hubert import write_stub_onnx
    from .recipe import hubert_stub_weights, write_lmdm_recipe
    out = Path(out)
    root = out / SUBDIR
    write_recipe_renderer(root, cfg.renderer)
    write_lmdm_recipe(root / LMDM_PATH, cfg.lmdm)
    (root / HUBERT_PATH).parent.mkdir(parents=True, exist_ok=True)
    write_stub_onnx(root / HUBERT_PATH, *hubert_stub_weights())
    write_eye_stubs(out)
    write_recipe_marker(out)
    return out


def choose_files(listing: list[str], where: str) -> list[str]:
    """The seven files the family loads, as published (``ditto_pytorch/...``), and the two eye-measure
    models (``ditto_onnx/...``) where the repo has them; nothing else."""
    wanted = [f"{SUBDIR}/{f}" for f in FILES]
    missing = [f for f in wanted if f not in set(listing)]
    if missing:
        raise FloatRTError(f"{where} is not a Ditto repo: it has no {', no '.join(missing)}")
    return wanted + [f for f in EYE_FILES if f in set(listing)]


def check_folder(cfg: DittoConfig, folder: Path, cfg_name: str) -> list[str]:
    """The loaders' key and shape checks (meta device) and the ONNX session; lines for the user."""
    from ..liveportrait.loader import check_renderer_folder
    from .hubert import HubertRunner
    from .loader import check_lmdm
    root = check_ditto_layout(folder)
    report = check_renderer_folder(root, cfg.renderer)
    lines = []
    for rel in RENDERER_FILES:
        extra = report.ignored.get(rel) or []
        note = f", {len(extra)} unused ignored ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})" \
            if extra else ""
        lines.append(f"  {rel}: {(root / rel).stat().st_size / 2**20:,.0f} MiB, keys match {cfg_name}{note}")
    lmdm = check_lmdm(root / LMDM_PATH, cfg.lmdm)
    lines.append(f"  {LMDM_PATH}: {(root / LMDM_PATH).stat().st_size / 2**20:,.0f} MiB, keys match {cfg_name}"
                 + (f"; {lmdm.summary()}" if lmdm.summary() else ""))
    runner = HubertRunner(root / HUBERT_PATH)
    outputs = ", ".join(o.name for o in runner.session.get_outputs())
    lines.append(f"  {HUBERT_PATH}: {(root / HUBERT_PATH).stat().st_size / 2**20:,.0f} MiB, onnxruntime loads it "
                 f"(input input_values, outputs {outputs})")
    eyes = EyeMeasurer.from_folder(repo_root(root))
    if eyes is None:
        lines.append(f"  {' and '.join(EYE_FILES)}: not there, the photo's eye measures will be neutral values")
    else:
        for rel, session in zip(EYE_FILES, (eyes.detector, eyes.mesh)):
            shape = session.get_inputs()[0].shape
            lines.append(f"  {rel}: onnxruntime loads it (input {session.get_inputs()[0].name} {shape})")
    return lines
