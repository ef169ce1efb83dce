"""FLOAT's controls (float_rt/controls.py) as pure functions over motion latents.

A frame is decoded from ``s_r + w`` (identity latent plus motion latent); the photo itself is
``w = r_s``, its own motion.  The motion latent is a learned mix of orthogonal directions with no
named axis: head pose, eyelids, gaze and expression are not separate coordinates of it.  So FLOAT can
express how far the motion goes from the photo (``motion_scale``: head and expression together) but
not ``expression_scale`` on its own, a pose, blinks or a gaze direction; those are refused
(``check_supported``) instead of guessed.

Listening: the motion sampled from silence is calmed (its displacement from the photo scaled by
``ATTENTIVE_DAMPING``) and the emotion condition becomes a mild one (``listening_emotion``, a
distribution like the speech-emotion recogniser's output the model was trained with).  No nod: no
latent direction is known to be a nod.
"""
from __future__ import annotations

import torch

from .controls import Controls

ATTENTIVE_DAMPING = 0.6                               # share of the silence motion kept while listening
LISTENING_EMOTION = {"neutral": 0.75, "happy": 0.25}


def scale_motion(motion: torch.Tensor, r_s: torch.Tensor, scale: float) -> torch.Tensor:
    """Latents (n, dim_w) moved ``scale`` times as far from the photo's motion ``r_s`` (1, dim_w);
    scale 1: ``motion`` itself; 0: the photo's motion on every frame."""
    if scale == 1:
        return motion
    r_s = r_s.reshape(1, -1).to(motion)
    return r_s + (motion - r_s) * scale


def listening_emotion(labels: tuple[str, ...], dim_e: int) -> torch.Tensor:
    """(1, 1, dim_e) the emotion condition while listening: mostly neutral, a little happy."""
    we = torch.zeros(1, 1, dim_e)
    for label, p in LISTENING_EMOTION.items():
        we[0, 0, labels.index(label)] = p
    return we


def attentive_motion(motion: torch.Tensor, r_s: torch.Tensor) -> torch.Tensor:
    """Latents sampled from silence, calmed for listening (deterministic)."""
    return scale_motion(motion, r_s, ATTENTIVE_DAMPING)


def control_motion(motion: torch.Tensor, r_s: torch.Tensor, controls: Controls) -> torch.Tensor:
    """Every motion control FLOAT supports, on one window of latents (n, dim_w); default controls
    return ``motion`` itself."""
    out = scale_motion(motion, r_s, controls.motion_scale)
    return attentive_motion(out, r_s) if controls.attentive else out
