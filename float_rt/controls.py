"""Per-session controls of the avatar: one dataclass, the same names in every door.

The CLI (``generate``), the server's protocol and page, ``SessionOptions``, LiveKit and Pipecat all
carry a ``Controls``; each family says which of them it can express (``supported_controls`` on the
family object) and ``check_supported`` refuses, with one line, a session that asks a family for one
it cannot.  Leaving an option at its default never counts as asking for it.

No torch here: the doors check user input before any heavy import.

=================  ===================================  =================================================
name               default                              range / meaning
=================  ===================================  =================================================
paste_back         False                                frames put back into the whole photo (feathered)
video_size         None (photo's size, fitted into      (width, height), even, 64..1920 x 64..1080 live
                   1920x1080 live)                      (portrait 1080x1920 too); up to 4096 offline;
                                                        needs paste_back
motion_scale       1.0                                  0..2: head motion relative to the reference
                                                        (0: still head; FLOAT: the whole motion)
expression_scale   1.0                                  0..2: expression (lips, eyes) relative to the
                                                        reference (Ditto)
pose               None                                 (yaw, pitch, roll) degrees; yaw -45..45, pitch
                                                        and roll -30..30 (Ditto)
pose_mode          "offset"                             "offset": added to the generated pose; "fixed":
                                                        the head held at ``pose`` (Ditto)
blink              True                                 False: eyes held open as in the photo (Ditto)
blink_rate         None (the model's own blinks)        1..60 blinks per minute, synthesised (Ditto)
gaze_camera        False                                eyes turned towards the camera (Ditto)
state              "speaking"                           speaking | listening | thinking | idle;
                                                        listening and thinking: attentive motion
=================  ===================================  =================================================
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from .errors import FloatRTError

STATES = ("speaking", "listening", "thinking", "idle")
ATTENTIVE_STATES = ("listening", "thinking")   # the states whose motion is attentive, not silence-driven
POSE_MODES = ("offset", "fixed")
SCALE_RANGE = (0.0, 2.0)
POSE_LIMITS = (45.0, 30.0, 30.0)               # |yaw|, |pitch|, |roll| in degrees
BLINK_RATE_RANGE = (1.0, 60.0)                 # per minute
LIVE_MAX = (1920, 1080)                        # the long and short side of a live frame
OFFLINE_MAX = 4096                             # either side, offline
MIN_SIDE = 64


class ControlsError(FloatRTError, ValueError):
    """A control with a bad value or name (one line); also a ValueError for the protocol's checks."""


@dataclass(frozen=True)
class Controls:
    """Per-session avatar options (see the module's table for ranges and defaults)."""
    paste_back: bool = False
    video_size: tuple[int, int] | None = None
    motion_scale: float = 1.0
    expression_scale: float = 1.0
    pose: tuple[float, float, float] | None = None
    pose_mode: str = "offset"
    blink: bool = True
    blink_rate: float | None = None
    gaze_camera: bool = False
    state: str = "speaking"

    # ---- checks
    def validate(self, live: bool = True) -> Controls:
        """Raise ControlsError (one line) on the first bad value; returns self.  ``live``: the
        frame-size limit of the live transports (1920x1080) instead of the offline one."""
        for name in ("paste_back", "blink", "gaze_camera"):
            if not isinstance(getattr(self, name), bool):
                raise ControlsError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("motion_scale", "expression_scale"):
            v = getattr(self, name)
            if not _is_number(v) or not SCALE_RANGE[0] <= v <= SCALE_RANGE[1]:
                raise ControlsError(f"{name} must be a number in {SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g}, got {v!r}")
        if self.pose is not None:
            if not isinstance(self.pose, tuple) or len(self.pose) != 3 or not all(map(_is_number, self.pose)):
                raise ControlsError(f"pose must be three numbers (yaw, pitch, roll degrees), got {self.pose!r}")
            for label, v, lim in zip(("yaw", "pitch", "roll"), self.pose, POSE_LIMITS):
                if not -lim <= v <= lim:
                    raise ControlsError(f"pose {label} must lie in -{lim:g}..{lim:g} degrees, got {v:g}")
        if self.pose_mode not in POSE_MODES:
            raise ControlsError(f"pose_mode must be one of {', '.join(POSE_MODES)}, got {self.pose_mode!r}")
        if self.blink_rate is not None:
            lo, hi = BLINK_RATE_RANGE
            if not _is_number(self.blink_rate) or not lo <= self.blink_rate <= hi:
                raise ControlsError(f"blink_rate must be {lo:g}..{hi:g} blinks per minute, got {self.blink_rate!r}")
            if not self.blink:
                raise ControlsError("blink_rate needs blink on (blink is false)")
        if self.state not in STATES:
            raise ControlsError(f"state must be one of {', '.join(STATES)}, got {self.state!r}")
        if self.video_size is not None:
            _check_size(self.video_size, live)
            if not self.paste_back:
                raise ControlsError("video_size needs paste_back (the face crop alone is square)")
        return self

    def changed(self) -> set[str]:
        """The names whose value differs from the default (what a session asks for)."""
        return {f.name for f in fields(self) if getattr(self, f.name) != f.default}

    @property
    def attentive(self) -> bool:
        return self.state in ATTENTIVE_STATES

    # ---- construction
    @classmethod
    def from_mapping(cls, values: Mapping, live: bool = True, base: Controls | None = None) -> Controls:
        """From a dict (protocol message, YAML, keyword arguments): unknown names are refused,
        lists become tuples, ``video_size`` may be "WxH"; the result is validated.  ``base``: the
        controls the mapping changes (a mid-session update); default: the defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ControlsError(f"unknown control(s): {', '.join(map(str, unknown))} "
                                f"(known: {', '.join(sorted(known))})")
        out = {}
        for name, v in values.items():
            if name == "video_size" and isinstance(v, str):
                v = parse_size(v)
            elif name in ("video_size", "pose") and isinstance(v, list):
                v = tuple(v)
            elif name in ("motion_scale", "expression_scale", "blink_rate") and _is_number(v):
                v = float(v)
            elif name == "pose" and isinstance(v, tuple) and all(map(_is_number, v)):
                v = tuple(float(x) for x in v)
            out[name] = v
        return replace(base or cls(), **out).validate(live)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_size(size, live: bool) -> None:
    if (not isinstance(size, tuple) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)):
        raise ControlsError(f"video_size must be (width, height) in pixels, got {size!r}")
    w, h = size
    if w % 2 or h % 2:
        raise ControlsError(f"video_size must have even sides (H.264 4:2:0), got {w}x{h}")
    if min(w, h) < MIN_SIDE:
        raise ControlsError(f"video_size sides must be at least {MIN_SIDE}, got {w}x{h}")
    if live and (max(w, h) > LIVE_MAX[0] or min(w, h) > LIVE_MAX[1]):
        raise ControlsError(f"video_size {w}x{h} is larger than a live frame may be ({LIVE_MAX[0]}x{LIVE_MAX[1]})")
    if max(w, h) > OFFLINE_MAX:
        raise ControlsError(f"video_size sides must be at most {OFFLINE_MAX}, got {w}x{h}")


def parse_size(text: str) -> tuple[int, int]:
    """ "1280x720" -> (1280, 720)."""
    w, sep, h = str(text).lower().partition("x")
    try:
        if not sep:
            raise ValueError
        return int(w), int(h)
    except ValueError:
        raise ControlsError(f"video_size must be WIDTHxHEIGHT (e.g. 1280x720), got {text!r}") from None


def parse_pose(text: str) -> tuple[float, float, float]:
    """ "YAW,PITCH,ROLL" degrees -> a tuple of three floats."""
    parts = str(text).split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        return tuple(float(p) for p in parts)   # type: ignore[return-value]
    except ValueError:
        raise ControlsError(f"pose must be YAW,PITCH,ROLL in degrees (e.g. 10,-5,0), got {text!r}") from None


def check_supported(controls: Controls, supported: frozenset[str], family: str) -> Controls:
    """Refuse, in one line, a control the family cannot express (its default is always fine)."""
    missing = sorted(controls.changed() - set(supported))
    if missing:
        raise ControlsError(f"the {family} family cannot express {', '.join(missing)} "
                            f"(it supports: {', '.join(sorted(supported))})")
    return controls


def controls_from_args(args) -> Controls:
    """The controls of ``float-rt generate``'s options (argparse dests; absent ones keep defaults)."""
    values = {}
    for dest, name in (("paste_back", "paste_back"), ("video_size", "video_size"), ("motion_scale", "motion_scale"),
                       ("expression_scale", "expression_scale"), ("pose", "pose"), ("pose_mode", "pose_mode"),
                       ("blink_rate", "blink_rate"), ("gaze_camera", "gaze_camera"), ("state", "state")):
        v = getattr(args, dest, None)
        if v is not None and v is not False:
            values[name] = v
    if getattr(args, "no_blink", False):
        values["blink"] = False
    if isinstance(values.get("pose"), str):
        values["pose"] = parse_pose(values["pose"])
    return Controls.from_mapping(values, live=False)
