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
"""
from .condition import SourceCondition, build_condition, emotion_vector
from .config import LMDMSizes, SamplerOptions, WindowOptions
from .ddim import DDIMScheduler
from .live import LiveMotion
from .lmdm import MotionDecoder
from .loader import load_lmdm
from .motion import pack_motion, unpack_motion
from .pipeline import MotionNoise, offline_audio2motion
from .windows import WindowCarry, advance

__all__ = [
           "DDIMScheduler",
           "LMDMSizes",
           "LiveMotion",
           "MotionDecoder",
           "MotionNoise",
           "SamplerOptions",
           "SourceCondition",
           "WindowCarry",
           "WindowOptions",
           "advance",
           "build_condition",
           "emotion_vector",
           "load_lmdm",
           "offline_audio2motion",
           "pack_motion",
           "unpack_motion",
]
