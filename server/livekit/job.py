"""What the agent side tells an avatar worker, in the dispatch metadata (plain JSON, validated).

The portrait travels either as a preset name the worker knows or as the cropped reference,
JPEG-encoded, so the metadata stays small.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from float_rt.errors import FloatRTError
from float_rt.media import decode_image, load_image
from streaming.options import CONTROL_NAMES, SPECS, parse_options

VERSION = 1
MAX_METADATA_BYTES = 256 * 1024
# Session options an agent may choose per avatar (streaming/options.py; the rest are the worker's).
SESSION_KEYS = (*SPECS, *sorted(CONTROL_NAMES))
AUDIO_RATES = (16000, 22050, 24000, 44100, 48000)
# LiveKit's agent states (the ``lk.agent.state`` attribute) -> the avatar's ``state`` control.
AGENT_STATES = {"listening": "listening", "thinking": "thinking", "speaking": "speaking", "idle": "idle",
                "initializing": "idle"}


def agent_state(state: str) -> str:
    return AGENT_STATES.get(str(state), "idle")


@dataclass
class AvatarJob:
    agent_identity: str                  # the avatar publishes on behalf of this participant
    avatar_identity: str = "float-rt-avatar"
    avatar_name: str = "FLOAT-RT avatar"
    preset: str | None = None            # a portrait the worker has
    image: str | None = None             # or the reference itself: base64 JPEG/PNG, already cropped
    options: dict = field(default_factory=dict)
    video_size: int = 512
    audio_sample_rate: int = 24000
    v: int = VERSION

    def to_json(self) -> str:
        text = json.dumps(asdict(self))
        if len(text) > MAX_METADATA_BYTES:
            raise FloatRTError(f"avatar job metadata is {len(text)} bytes; the limit is {MAX_METADATA_BYTES}")
        return text

    @classmethod
    def from_json(cls, text: str) -> AvatarJob:
        if len(text) > MAX_METADATA_BYTES:
            raise FloatRTError(f"avatar job metadata is {len(text)} bytes; the limit is {MAX_METADATA_BYTES}")
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise FloatRTError(f"avatar job metadata is not JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("v") != VERSION:
            raise FloatRTError(f"avatar job metadata must be an object with v={VERSION}")
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise FloatRTError(f"unknown avatar job field(s): {', '.join(unknown)}")
        missing = [k for k in ("agent_identity",) if k not in raw]
        if missing:
            raise FloatRTError(f"avatar job metadata lacks {', '.join(missing)}")
        return cls(**raw).validate()

    def validate(self) -> AvatarJob:
        for name in ("agent_identity", "avatar_identity", "avatar_name"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v or len(v) > 256:
                raise FloatRTError(f"{name} must be a non-empty string")
        if (self.preset is None) == (self.image is None):
            raise FloatRTError("give exactly one of preset and image")
        if self.preset is not None and not isinstance(self.preset, str):
            raise FloatRTError("preset must be a string")
        if not isinstance(self.options, dict) or set(self.options) - set(SESSION_KEYS):
            raise FloatRTError(f"options may only hold {', '.join(SESSION_KEYS)}")
        controls = parse_options(self.options).get("controls")    # checked; kept as sent (JSON)
        if controls is not None and controls.paste_back and self.image is not None:
            raise FloatRTError("paste_back needs the whole photo on the worker: use a preset the worker has "
                               "(a job carries only the cropped face)")
        if not isinstance(self.video_size, int) or not 64 <= self.video_size <= 2048:
            raise FloatRTError("video_size must be an integer in 64..2048")
        if self.audio_sample_rate not in AUDIO_RATES:
            raise FloatRTError(f"audio_sample_rate must be one of {AUDIO_RATES}")
        return self

    def image_array(self) -> np.ndarray:
        try:
            data = base64.b64decode(self.image or "", validate=True)
        except (binascii.Error, ValueError):
            raise FloatRTError("avatar image is not valid base64") from None
        return decode_image(data, "avatar")


def encode_reference(rgb: np.ndarray, quality: int = 90) -> str:
    """A cropped RGB portrait as base64 JPEG, for the job metadata."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FloatRTError("cannot encode the avatar image")
    return base64.b64encode(buf.tobytes()).decode()


def read_portrait(image: str | Path | bytes | np.ndarray) -> np.ndarray:
    """A portrait from a path, encoded bytes or an RGB array."""
    if isinstance(image, np.ndarray):
        return image
    if isinstance(image, (bytes, bytearray)):
        return decode_image(bytes(image), "avatar")
    return load_image(image)
