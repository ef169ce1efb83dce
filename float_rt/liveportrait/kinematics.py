"""Head pose and keypoint arithmetic of the renderer (Ditto's motion -> driving keypoints).

Angles travel as 66 bin logits; they become degrees only through ``bins_to_degrees``.
Motion vectors (265) are laid out as [scale-1 | pitch 66 | yaw 66 | roll 66 | t 3 | exp 63].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

NUM_KP = 21
NUM_BINS = 66
MOTION_DIM = 1 + 3 * NUM_BINS + 3 + 3 * NUM_KP  # 265
LIP_KP = (6, 12, 14, 17, 19, 20)
EYE_KP = (11, 13, 15, 16, 18)
# Gaze correction: degrees of head turn -> offsets on eye-keypoint expression coordinates.
GAZE_X_RATIO, GAZE_Y_RATIO = 0.26, 0.28


@dataclass
class MotionInfo:
    """Per-frame head state, batch first: scale (B,1), pitch/yaw/roll (B,66) logits, t (B,3),
    exp (B,63); kp (B,63) canonical keypoints (source only, None for a motion vector)."""
    scale: torch.Tensor
    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor
    kp: torch.Tensor | None = None

    def to_vector(self) -> torch.Tensor:
        """The 265-wide motion vector (the LMDM's representation); kp is left out."""
        return torch.cat([self.scale - 1, self.pitch, self.yaw, self.roll, self.t, self.exp], dim=-1)


def motion_from_vector(vec: torch.Tensor) -> MotionInfo:
    """(B, 265) -> MotionInfo (scale gets its 1 back)."""
    if vec.shape[-1] != MOTION_DIM:
        raise ValueError(f"motion vectors have {MOTION_DIM} values, got {vec.shape[-1]}")
    vec = vec.reshape(-1, MOTION_DIM)
    b = NUM_BINS
    cuts = (1, b, b, b, 3, 3 * NUM_KP)
    scale, pitch, yaw, roll, t, exp = torch.split(vec, cuts, dim=-1)
    return MotionInfo(scale=scale + 1, pitch=pitch, yaw=yaw, roll=roll, t=t, exp=exp)


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) bin logits -> (B,) degrees: the softmax expectation of 3-degree bins from -97.5."""
    p = torch.softmax(logits, dim=-1)
    idx = torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return (p * idx).sum(-1) * 3 - 97.5


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (B,) -> (B, 3, 3) = (Rz(roll) Ry(yaw) Rx(pitch))^T, applied as row-vector @ R."""
    x, y, z = (a.reshape(-1) / 180 * math.pi for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(x), torch.zeros_like(x)

    def mat(*rows):
        return torch.stack(rows, dim=-1).reshape(-1, 3, 3)

    rx = mat(one, zero, zero, zero, torch.cos(x), -torch.sin(x), zero, torch.sin(x), torch.cos(x))
    ry = mat(torch.cos(y), zero, torch.sin(y), zero, one, zero, -torch.sin(y), zero, torch.cos(y))
    rz = mat(torch.cos(z), -torch.sin(z), zero, torch.sin(z), torch.cos(z), zero, zero, zero, one)
    return (rz @ ry @ rx).transpose(1, 2)


def transform_keypoints(info: MotionInfo) -> torch.Tensor:
    """Implicit keypoints in the warp volume: scale * (kp @ R + exp) + (t_x, t_y, 0). -> (B, K, 3)"""
    rot = rotation_matrix(bins_to_degrees(info.pitch), bins_to_degrees(info.yaw), bins_to_degrees(info.roll))
    b = rot.shape[0]
    kp = info.kp.reshape(info.kp.shape[0], -1, 3).expand(b, -1, -1)
    out = kp @ rot + info.exp.reshape(b, -1, 3)
    out = out * info.scale.reshape(-1, 1, 1)
    shift = torch.cat([info.t[:, None, 0:2], torch.zeros_like(info.t[:, None, 2:3])], dim=-1)
    return out + shift  # t_z is not used


def driven_expression_mask(drive_eye: bool = True, num_kp: int = NUM_KP) -> torch.Tensor:
    """(1, 3K) bool: expression coordinates taken from the driving motion (lips, and eyes when driven)."""
    m = torch.zeros(num_kp, 3, dtype=torch.bool)
    m[list(LIP_KP)] = True
    if drive_eye:
        m[list(EYE_KP)] = True
    return m.reshape(1, -1)


def _fix_gaze(exp: torch.Tensor, yaw_d: torch.Tensor, pitch_d: torch.Tensor,
              yaw_s: torch.Tensor, pitch_s: torch.Tensor) -> torch.Tensor:
    """Move the eye keypoints with the head turn so the gaze keeps its direction."""
    # The degree differences are taken in float64 (the official code goes through Python floats).
    dx = (yaw_d.double() - yaw_s.double()) * GAZE_X_RATIO
    dy = (pitch_d.double() - pitch_s.double()) * GAZE_Y_RATIO
    pos = dx > 0
    exp = exp.clone()
    dt = exp.dtype
    exp[:, 33] += torch.where(pos, dx * 0.0007, dx * 0.001).to(dt)
    exp[:, 45] += torch.where(pos, dx * 0.001, dx * 0.0007).to(dt)
    exp[:, 34] += (dy * -0.001).to(dt)
    exp[:, 46] += (dy * -0.001).to(dt)
    return exp


def drive_info(source: MotionInfo, motion: torch.Tensor, d0: torch.Tensor | None,
               drive_eye: bool = True) -> MotionInfo:
    """Ditto's image-source mixing of motion vectors (B, 265) into the source's head state.

    Relative mode (``d0`` given): pose bin logits, t and exp become ``source + (motion - d0)``;
    scale and canonical keypoints stay the source's; expression keeps the source's values except
    on lips (and eyes with ``drive_eye``); with ``drive_eye`` the gaze follows the head turn.
    """
    d = motion_from_vector(motion)
    if d0 is not None:
        r = motion_from_vector(d0)
        d = MotionInfo(scale=d.scale, pitch=source.pitch + (d.pitch - r.pitch), yaw=source.yaw + (d.yaw - r.yaw),
                       roll=source.roll + (d.roll - r.roll), t=source.t + (d.t - r.t),
                       exp=source.exp + (d.exp - r.exp))
    b = d.pitch.shape[0]
    mask = driven_expression_mask(drive_eye).to(d.exp.device)
    exp = torch.where(mask, d.exp, source.exp.expand(b, -1))
    out = replace(d, scale=source.scale.expand(b, -1), kp=source.kp.expand(b, -1), exp=exp)
    if drive_eye:
        out.exp = _fix_gaze(out.exp, bins_to_degrees(out.yaw), bins_to_degrees(out.pitch),
                            bins_to_degrees(source.yaw), bins_to_degrees(source.pitch))
    return out
