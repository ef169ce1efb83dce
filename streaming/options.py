"""Per-session options: one dataclass and one table of what a client may give, used by every door
(the protocol and page, ``SessionOptions`` in Python, LiveKit's avatar and jobs, Pipecat).

Each option means the same in every door.  A family takes only some of them (its live model's
``option_names``; the engine refuses the others with the family named), and some can change
mid-session (``changeable``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from float_rt.controls import Controls, check_supported
from float_rt.errors import FloatRTError

# The avatar controls (float_rt/controls.py: paste-back, motion intensity, pose, blinks, gaze, the
# listening state) travel flat in every door, beside the options below, and gather in
# ``SessionOptions.controls``.  paste_back and video_size shape the transport's frames: chosen at
# the start; the others change mid-session.
CONTROL_NAMES = frozenset(f.name for f in fields(Controls))
FIXED_CONTROLS = frozenset({"paste_back", "video_size"})


@dataclass(frozen=True)
class Spec:
    kind: str                    # "number", "integer", "label"
    lo: float | None = None
    hi: float | None = None
    changeable: bool = False     # may change mid-session (protocol ``set``, LiveKit/Pipecat updates)
    doc: str = ""


# What a client may send.  Ranges here are what the model can run; a server may bound the costly
# ones further (server config ``nfe_range``, ``chunk_frames_range``).
SPECS: dict[str, Spec] = {
    "emotion": Spec("label", changeable=True, doc="one of the family's labels; 'auto' or null: predicted "
                                                  "from speech (FLOAT) or the config's (Ditto)"),
    "a_cfg_scale": Spec("number", -20, 20, True, "FLOAT: audio guidance scale"),
    "e_cfg_scale": Spec("number", -20, 20, True, "FLOAT: emotion guidance scale"),
    "nfe": Spec("integer", 2, 50, doc="FLOAT: Euler grid points per window"),
    "chunk_frames": Spec("integer", 1, 50, doc="FLOAT: frames committed per step"),
    "seed": Spec("integer", 0, 2**31 - 1, doc="noise seed"),
    "steps": Spec("integer", 1, 100, doc="Ditto: DDIM steps per window"),
}


def parse_value(name: str, value: Any) -> Any:
    """One option from JSON or Python: its type and range checked (FloatRTError says what is wrong)."""
    spec = SPECS.get(name)
    if spec is None:
        raise FloatRTError(f"unknown option {name!r}; options: {', '.join(SPECS)}")
    if spec.kind == "label":
        if value is None or value == "auto":
            return None
        if not isinstance(value, str) or not value or len(value) > 40:
            raise FloatRTError(f"{name} must be a label string, 'auto' or null, got {value!r}")
        return value
    integer = spec.kind == "integer"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not spec.lo <= value <= spec.hi or (integer and int(value) != value):
        kind = "an integer" if integer else "a number"
        raise FloatRTError(f"{name} must be {kind} in {spec.lo:g}..{spec.hi:g}, got {value!r}")
    return int(value) if integer else float(value)


def fold_controls(values: dict, base: Controls | None = None) -> dict:
    """``values`` with its control names gathered into one checked ``controls`` entry, on ``base``
    (default: the ``controls`` entry ``values`` holds, else the defaults)."""
    values = dict(values)
    named = {k: values.pop(k) for k in list(values) if k in CONTROL_NAMES}
    if named:
        values["controls"] = Controls.from_mapping(named, live=True, base=base or values.get("controls"))
    return values


def parse_options(values: dict, flat_controls: bool = False) -> dict:
    """The options among ``values`` (a message or keyword arguments), each checked; other keys are
    left to the caller.  Control names become one ``controls`` entry (``flat_controls``: kept as
    they are, checked, for a mid-session change that keeps the session's other controls)."""
    out = {k: parse_value(k, v) for k, v in values.items() if k in SPECS}
    if isinstance(values.get("controls"), Controls):
        out["controls"] = values["controls"]
    given = {k: v for k, v in values.items() if k in CONTROL_NAMES}
    if not given:
        return out
    folded = fold_controls({**out, **given})
    if not flat_controls:
        return folded
    return {**out, **{k: getattr(folded["controls"], k) for k in given}}


def check_changes(changes: dict, family_options: frozenset[str], family: str) -> None:
    """Options changed mid-session must be the family's and changeable."""
    for name in changes:
        if name in CONTROL_NAMES:
            if name in FIXED_CONTROLS:
                raise FloatRTError(f"{name} is chosen when the session starts (it shapes the video), "
                                   "not mid-session")
            continue
        if name not in family_options:
            raise FloatRTError(f"{name} is not an option of the {family} family")
        if not SPECS[name].changeable:
            raise FloatRTError(f"{name} cannot change mid-session (changeable: "
                               f"{', '.join(sorted(k for k in family_options if SPECS[k].changeable))})")


@dataclass
class SessionOptions:
    """Per-session choices (defaults come from the engine's family and StreamConfig).

    ``COMMON`` fields mean the same for every family and are not client options; each family reads
    its own others (``LiveModel.option_names``) and the engine refuses the rest.
    """
    COMMON: ClassVar[frozenset[str]] = frozenset({"render", "audio_out_rate", "controls"})

    emotion: str | None = None          # fixed label, or None: predicted from recent speech (FLOAT)
    a_cfg_scale: float = 2.0            # FLOAT: guidance scales
    e_cfg_scale: float = 1.0
    nfe: int = 4                        # FLOAT: Euler grid points per window
    chunk_frames: int = 5               # FLOAT: frames committed per step
    lookahead_frames: int = 4
    left_frames: int = 50
    noise: str = "fixed"
    seed: int = 15
    steps: int = 10                     # Ditto: DDIM sampling steps per window
    render: bool = True                 # False: motion only (benchmarks of the sampler)
    audio_out_rate: int | None = None   # rate of each frame's speech (None: the model's 16 kHz)
    controls: Controls = field(default_factory=Controls)   # float_rt/controls.py

    def validate(self, emotions: tuple[str, ...] | None = None, family: str | None = None,
                 supported_controls: frozenset[str] | None = None) -> SessionOptions:
        """``emotions``, ``family``, ``supported_controls``: the family's, checked when given."""
        if not isinstance(self.controls, Controls):
            raise FloatRTError(f"controls must be a float_rt.controls.Controls, got {self.controls!r}")
        self.controls.validate(live=True)
        if supported_controls is not None:
            check_supported(self.controls, supported_controls, family or "model")
        if emotions is not None and self.emotion is not None:
            spelled = {e.lower(): e for e in emotions}
            if self.emotion.lower() not in spelled:
                raise FloatRTError(f"unknown emotion {self.emotion!r}; choose from {', '.join(emotions)}")
            self.emotion = spelled[self.emotion.lower()]   # the family's spelling (labels match in any case)
        for name in ("a_cfg_scale", "e_cfg_scale", "nfe", "chunk_frames", "seed", "steps"):
            parse_value(name, getattr(self, name))
        if self.noise not in ("fixed", "fresh"):
            raise FloatRTError(f"noise must be 'fixed' or 'fresh', got {self.noise!r}")
        r = self.audio_out_rate
        if r is not None and not (isinstance(r, int) and 8000 <= r <= 192000 and r % 25 == 0):
            raise FloatRTError(f"audio_out_rate must be a whole number of samples per 40 ms frame "
                               f"(8000, 16000, 22050, 24000, 44100, 48000, ...), got {r!r}")
        return self

    def with_changes(self, changes: dict) -> SessionOptions:
        """These options with ``changes`` (options and controls by name; the controls not named are kept)."""
        return replace(self, **fold_controls(changes, self.controls))

    def updated(self, changes: dict, model) -> SessionOptions:
        """Mid-session ``changes`` for a family's live model: the family's and changeable, merged, checked."""
        check_changes(changes, model.option_names, model.name)
        return self.with_changes(changes).validate(model.emotions, model.name, model.supported_controls)

    @property
    def guided(self) -> bool:
        return self.a_cfg_scale != 1.0 or self.e_cfg_scale != 1.0
