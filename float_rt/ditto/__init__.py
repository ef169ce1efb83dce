"""Ditto's audio-to-motion stage: HuBERT features -> LMDM (guided DDIM) -> LivePortrait motion.

hubert.py      chunking (offline/online), the onnxruntime runner, the stand-in ONNX writer
condition.py   the 1103-value per-frame condition
motion.py      the 265-value motion layout
lmdm.py        the MotionDecoder network
ddim.py        the DDIM scheduler
sampler.py     one guided window
windows.py     fuse / smoothing / conditioning frame between windows (WindowCarry)
pipeline.py    the offline clip loop
live.py        the same window step driven by a live feature stream (official online semantics)
keys.py        our names -> published keys; loader.py loads lmdm_v0.4_hubert.pth
recipe.py      deterministic recipe weights
config.py      sizes, options and the family's model config (configs/ditto*.yaml)
layout.py      the published folder, checked by names (no torch)
source.py      the photo: face crop, source state, paste-back
generate.py    the offline product pipeline (HuBERT -> LMDM -> renderer -> frames)
family.py      the family seam's implementation (float_rt/family.py)
reference.py   a reference case through the real loaders
weights.py     demo (recipe) folder and the download's file choice and check
"""
from ..lazy import lazy_exports

# Names resolve lazily (PEP 562) so that the config and the layout check load without torch.
_EXPORTS = {
    "DDIMScheduler": "ddim", "LMDMSizes": "config", "LiveMotion": "live", "MotionDecoder": "lmdm",
    "MotionNoise": "pipeline", "SamplerOptions": "config", "SourceCondition": "condition",
    "WindowCarry": "windows", "WindowOptions": "config", "advance": "windows",
    "build_condition": "condition", "emotion_vector": "condition", "load_lmdm": "loader",
    "offline_audio2motion": "pipeline", "pack_motion": "motion", "unpack_motion": "motion",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
