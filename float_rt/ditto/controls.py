"""Ditto's controls (float_rt/controls.py) as pure functions over motion rows, applied to a window of
rows after sampling and before rendering; the rows the LMDM is conditioned on are never changed.

Everything works through the same relative driving the renderer applies (``kinematics.drive_info``):
the rendered head state is ``source + (row - d0)`` for the pose bin logits, t and the driven
expression coordinates (lips, eyes), followed by the official gaze correction.  So:

- intensity (``motion_scale``, ``expression_scale``) scales ``row - d0``: pose logits and t by the
  first, the expression by the second (the official ``use_d_keys`` multipliers).  0 gives the photo's
  own head state on every frame; 1 returns the rows untouched.
- pose works in degrees: the angle the renderer will read (the softmax expectation of
  ``source + row - d0``) plus the offset, or the fixed angle, is turned back into bin logits with that
  exact expectation (the official ``delta_yaw``... controls add degrees after mixing, as here).
- blinks: with ``blink`` off the eye coordinates are held at the photo's; with a ``blink_rate`` they
  are held at the photo's and a closure curve at that rate moves the eyelid keypoints along the
  direction LivePortrait's eye edits close an eye (the official code takes a user-given
  ``delta_eye_arr`` for the same purpose; none ships, so the closure is synthesised).
- gaze towards the camera: the official gaze correction moves the eye keypoints with the head turn
  *relative to the photo's pose* (the gaze keeps the photo's direction); looking at the camera is
  the same correction relative to a frontal pose, so the difference of the two is added.  This
  assumes the photo's eyes look straight out of the face.
- listening / thinking: small slow nods and a slow sway (deterministic functions of the frame
  index, so windows join seamlessly), calmer lips, eye contact; plus a mild emotion, which is a
  condition of the sampler (``listening_emotion``), not a row edit.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..controls import Controls
from ..liveportrait.kinematics import EYE_KP, LIP_KP, MotionInfo, _fix_gaze, bins_to_degrees
from .condition import EMOTIONS
from .motion import SLICES

NUM_BINS = 66
BIN_DEGREES, FIRST_BIN = 3.0, -97.5          # bin i is centred at FIRST_BIN + 3 i (+1.5: bins_to_degrees)
ANGLES = ("pitch", "yaw", "roll")             # the rows' order; Controls.pose is (yaw, pitch, roll)
FAR = -1e4                                    # a logit whose softmax weight is exactly 0 in float32
EXP0 = SLICES["exp"].start
POSE = slice(SLICES["pitch"].start, SLICES["roll"].stop)
POSE_T = slice(SLICES["pitch"].start, SLICES["t"].stop)

# Blinks: eyelid keypoint y offsets of a full closure (keypoint, axis, amount).  The direction is the
# one LivePortrait's eye edits close an eye with (upper and lower lid points move towards each other);
# the amount is about three quarters of its wink control's range.
BLINK_CLOSE = ((11, 1, 0.03), (13, 1, -0.009), (15, 1, 0.03), (16, 1, -0.009))
BLINK_CLOSING_S, BLINK_OPENING_S = 0.10, 0.20   # a blink: eyes close in 0.1 s and reopen in 0.2 s
BLINK_JITTER = 0.25                             # blink times move by up to this share of the period

# Attentive motion (listening, thinking): degrees and seconds.
NOD_DEGREES, NOD_PERIOD_S, NOD_SHARE = 3.0, 3.2, 0.4    # a 1.3 s nod every 3.2 s
SWAY_DEGREES, SWAY_PERIOD_S = 1.5, 7.3                  # slow side-to-side yaw
ATTENTIVE_LIPS = 0.4                                    # lip movement kept while listening
LISTENING_EMOTION = {"Neutral": 8.0, "Happy": 6.5}      # logits: about 4/5 neutral, 1/5 happy


def _coords(kps) -> list[int]:
    return [3 * k + a for k in kps for a in range(3)]


EYE_COORDS = _coords(EYE_KP)     # indices into the 63 expression values
LIP_COORDS = _coords(LIP_KP)


# ---------------------------------------------------------------- angles
def degrees_to_bins(deg: torch.Tensor) -> torch.Tensor:
    """(n,) degrees -> (n, 66) bin logits whose softmax expectation (``bins_to_degrees``) is ``deg``
    (clamped to the bins' range): all weight on the two bins around the angle."""
    deg = deg.to(torch.float32)
    pos = ((deg - FIRST_BIN) / BIN_DEGREES).clamp(0, NUM_BINS - 1)
    lo = pos.floor().clamp(max=NUM_BINS - 2)
    w = pos - lo
    out = torch.full((deg.shape[0], NUM_BINS), FAR, dtype=torch.float32, device=deg.device)
    idx = lo.long()[:, None]
    out.scatter_(1, idx, torch.log(1 - w).clamp(min=FAR)[:, None])
    out.scatter_(1, idx + 1, torch.log(w).clamp(min=FAR)[:, None])
    return out


def _flat(d0: torch.Tensor) -> torch.Tensor:
    return d0.reshape(-1)


def driven_degrees(rows: torch.Tensor, d0: torch.Tensor, source: MotionInfo) -> torch.Tensor:
    """(n, 3) pitch, yaw, roll in degrees as the renderer will read them from ``rows``."""
    d0 = _flat(d0).to(rows.device)
    out = []
    for name in ANGLES:
        s = SLICES[name]
        out.append(bins_to_degrees(getattr(source, name).to(rows.device) + (rows[:, s] - d0[s])))
    return torch.stack(out, dim=1)


def set_pose(rows: torch.Tensor, d0: torch.Tensor, source: MotionInfo, pose, mode: str = "offset") -> torch.Tensor:
    """Rows whose rendered head angles are the generated ones plus ``pose`` ("offset") or ``pose``
    itself ("fixed").  ``pose``: (yaw, pitch, roll) degrees, or an (n, 3) tensor of them per row."""
    d0 = _flat(d0).to(rows.device)
    pose = torch.as_tensor(pose, dtype=torch.float32, device=rows.device).reshape(-1, 3)
    want = dict(zip(("yaw", "pitch", "roll"), pose.unbind(1)))
    now = driven_degrees(rows, d0, source) if mode == "offset" else None
    out = rows.clone()
    for i, name in enumerate(ANGLES):
        s = SLICES[name]
        target = want[name].expand(rows.shape[0]) if mode == "fixed" else now[:, i] + want[name]
        logits = degrees_to_bins(target.clamp(FIRST_BIN, -FIRST_BIN))
        out[:, s] = logits - getattr(source, name).to(rows.device) + d0[s]
    return out


# ---------------------------------------------------------------- intensity
def scale_motion(rows: torch.Tensor, d0: torch.Tensor, motion_scale: float = 1.0,
                 expression_scale: float = 1.0) -> torch.Tensor:
    """Pose logits and t move ``motion_scale`` times as far from d0, the expression
    ``expression_scale`` times; both 1: ``rows`` itself, untouched."""
    if motion_scale == 1 and expression_scale == 1:
        return rows
    d0 = _flat(d0).to(rows.device)
    out = rows.clone()
    for part, k in ((POSE_T, motion_scale), (slice(EXP0, None), expression_scale)):
        if k != 1:
            out[:, part] = d0[part] + (rows[:, part] - d0[part]) * k
    return out


# ---------------------------------------------------------------- eyes
def blink_closure(start: int, n: int, rate: float, fps: float = 25.0, seed: int = 0) -> torch.Tensor:
    """(n,) eyelid closure in [0, 1] for frames [start, start + n): ``rate`` blinks a minute, blink k
    centred near (k + 1/2) periods (moved by a deterministic jitter of up to a quarter period), each
    closing in 0.1 s and reopening in 0.2 s.  A function of the frame index only, so consecutive
    windows join."""
    period = 60.0 * fps / rate
    frames = torch.arange(start, start + n, dtype=torch.float64)
    out = torch.zeros(n, dtype=torch.float64)
    close, reopen = BLINK_CLOSING_S * fps, BLINK_OPENING_S * fps
    first = max(0, math.floor((start - reopen) / period) - 1)
    last = math.ceil((start + n + close) / period) + 1
    for k in range(first, last + 1):
        centre = (k + 0.5 + BLINK_JITTER * _jitter(k, seed)) * period
        d = frames - centre
        shape = torch.where(d < 0, 0.5 * (1 + torch.cos(math.pi * d / close)),
                            0.5 * (1 + torch.cos(math.pi * d / reopen)))
        inside = (d > -close) & (d < reopen)
        out = torch.maximum(out, torch.where(inside, shape, torch.zeros_like(shape)))
    return out.to(torch.float32)


def _jitter(k: int, seed: int) -> float:
    """A deterministic number in [-1, 1) for blink k."""
    x = math.sin(k * 12.9898 + seed * 78.233 + 1.0) * 43758.5453
    return 2 * (x - math.floor(x)) - 1


def blink_direction(device=None) -> torch.Tensor:
    """(63,) expression offsets of a full closure of both eyes."""
    v = torch.zeros(63, dtype=torch.float32, device=device)
    for kp, axis, amount in BLINK_CLOSE:
        v[3 * kp + axis] = amount
    return v


def hold_eyes(rows: torch.Tensor, d0: torch.Tensor, closure: torch.Tensor | None = None) -> torch.Tensor:
    """Eye coordinates held at the photo's (no generated blinks), plus ``closure`` (n,) times a full
    blink when given."""
    d0 = _flat(d0).to(rows.device)
    out = rows.clone()
    eyes = [EXP0 + i for i in EYE_COORDS]
    out[:, eyes] = d0[eyes]
    if closure is not None:
        out[:, EXP0:] += closure.to(rows.device)[:, None] * blink_direction(rows.device)
    return out


def gaze_to_camera(rows: torch.Tensor, d0: torch.Tensor, source: MotionInfo) -> torch.Tensor:
    """Eye keypoints turned towards the camera: the gaze correction of a frontal photo replaces the
    one relative to the photo's own pose (see the module's docstring)."""
    deg = driven_degrees(rows, d0, source)                 # pitch, yaw, roll
    pitch_d, yaw_d = deg[:, 0], deg[:, 1]
    yaw_s = bins_to_degrees(source.yaw.to(rows.device)).expand_as(yaw_d)
    pitch_s = bins_to_degrees(source.pitch.to(rows.device)).expand_as(pitch_d)
    zero = torch.zeros(rows.shape[0], 63, dtype=rows.dtype, device=rows.device)
    frontal = _fix_gaze(zero, yaw_d, pitch_d, torch.zeros_like(yaw_d), torch.zeros_like(pitch_d))
    applied = _fix_gaze(zero, yaw_d, pitch_d, yaw_s, pitch_s)
    out = rows.clone()
    out[:, EXP0:] += frontal - applied
    return out


# ---------------------------------------------------------------- listening
def attentive_pose(start: int, n: int, fps: float = 25.0) -> torch.Tensor:
    """(n, 3) yaw, pitch, roll degree offsets for frames [start, start + n): a small nod (pitch down
    and back, a raised cosine over 40% of each 3.2 s) and a slow 1.5-degree yaw sway."""
    t = torch.arange(start, start + n, dtype=torch.float64) / fps
    phase = torch.remainder(t / NOD_PERIOD_S, 1.0)
    nod = torch.where(phase < NOD_SHARE, 0.5 * (1 - torch.cos(2 * math.pi * phase / NOD_SHARE)),
                      torch.zeros_like(phase))
    yaw = SWAY_DEGREES * torch.sin(2 * math.pi * t / SWAY_PERIOD_S)
    return torch.stack([yaw, NOD_DEGREES * nod, torch.zeros_like(t)], dim=1).to(torch.float32)


def listening_emotion() -> torch.Tensor:
    """(8,) the emotion condition while listening: mostly neutral, a little happy (the official
    condition takes any distribution over the 8 labels)."""
    logits = torch.zeros(len(EMOTIONS))
    for label, v in LISTENING_EMOTION.items():
        logits[EMOTIONS.index(label)] = v
    return torch.softmax(logits, dim=0)


def attentive_rows(rows: torch.Tensor, d0: torch.Tensor, source: MotionInfo, start: int,
                   fps: float = 25.0) -> torch.Tensor:
    """Rows sampled from silence made attentive: nods and sway (added to the pose), calmer lips,
    eye contact.  Deterministic in (rows, start)."""
    return _controlled(rows, d0, source, Controls(state="listening"), start, fps, 0)


# ---------------------------------------------------------------- everything
def control_rows(rows: torch.Tensor, d0: torch.Tensor, source: MotionInfo, controls: Controls, start: int,
                 fps: float = 25.0, seed: int = 0) -> torch.Tensor:
    """Every motion control of ``controls`` on the (n, 265) rows of frames [start, start + n), in
    the order intensity, pose (with the attentive nods), eyes (blinks), gaze.  Default controls
    return ``rows`` itself."""
    return _controlled(rows, d0, source, controls, start, fps, seed)


def _controlled(rows, d0, source, c: Controls, start, fps, seed):
    n = rows.shape[0]
    out = scale_motion(rows, d0, c.motion_scale, c.expression_scale)
    if c.attentive and ATTENTIVE_LIPS != 1:
        d = _flat(d0).to(rows.device)
        lips = [EXP0 + i for i in LIP_COORDS]
        out = out.clone() if out is rows else out
        out[:, lips] = d[lips] + (out[:, lips] - d[lips]) * ATTENTIVE_LIPS
    pose = None if c.pose is None else torch.tensor(c.pose, dtype=torch.float32).expand(n, 3)
    if c.attentive:
        nods = attentive_pose(start, n, fps)
        pose = nods if pose is None else pose + nods
    if pose is not None:
        out = set_pose(out, d0, source, pose.to(rows.device), c.pose_mode if c.pose is not None else "offset")
    if not c.blink:
        out = hold_eyes(out, d0)
    elif c.blink_rate is not None:
        out = hold_eyes(out, d0, blink_closure(start, n, c.blink_rate, fps, seed))
    if c.gaze_camera or c.attentive:
        out = gaze_to_camera(out, d0, source)
    return out


def with_emotion(condition, emotion: torch.Tensor):
    """A SourceCondition with another (8,) emotion distribution (the listening one, or back)."""
    return replace(condition, emotion=emotion.to(condition.emotion))
