"""Signalling messages (JSON text over the /ws websocket): parsing and validation only.

See server/PROTOCOL.md.  Every problem is a `ProtocolError` with a stable code that
the connection sends back as ``{"type": "error", "code": ..., "message": ...}``.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any

from float_rt.errors import FloatRTError
from float_rt.media import MAX_IMAGE_BYTES
from streaming.options import CONTROL_NAMES, SPECS, parse_options

CLIENT_TYPES = ("offer", "set", "interrupt", "bye", "ping")
MAX_TEXT_BYTES = 64 * 1024                       # any message but an offer
MAX_OFFER_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 256 * 1024   # base64 image + SDP + options
MAX_PCM_BYTES = 1024 * 1024                      # one binary PCM message (~32 s of 16 kHz s16)
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


class ProtocolError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def to_message(self) -> dict:
        return {"type": "error", "code": self.code, "message": self.message}


def parse(text: str | bytes) -> dict[str, Any]:
    """One client text message -> dict with a known ``type``.

    Only an offer (it carries the avatar image) may be over 64 KB, so a larger message that does
    not parse is answered ``too_large``; nesting too deep for the parser is ``bad_json`` whatever
    the size, and never more than an error for that one message.
    """
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_OFFER_BYTES:
        raise ProtocolError("too_large", f"message is {size} bytes; the limit is {MAX_OFFER_BYTES} (offers)")
    try:
        msg = json.loads(text)
    except RecursionError:
        raise ProtocolError("bad_json", "message is nested too deeply to be a protocol message") from None
    except (ValueError, UnicodeDecodeError) as exc:
        if size > MAX_TEXT_BYTES:
            raise ProtocolError("too_large", f"message is {size} bytes and not a valid offer; "
                                             f"the limit is {MAX_TEXT_BYTES}") from None
        raise ProtocolError("bad_json", f"message is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_message", "message must be a JSON object")
    kind = msg.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected one of {', '.join(CLIENT_TYPES)}")
    limit = MAX_OFFER_BYTES if kind == "offer" else MAX_TEXT_BYTES
    if size > limit:
        raise ProtocolError("too_large", f"{kind} message is {size} bytes; the limit is {limit}")
    return msg


def _number(msg: dict, key: str, lo: float, hi: float, default=None, integer: bool = False):
    v = msg.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi \
            or (integer and int(v) != v):
        kind = "an integer" if integer else "a number"
        raise ProtocolError("bad_option", f"{key} must be {kind} in {lo:g}..{hi:g}, got {v!r}")
    return int(v) if integer else float(v)


def _options(msg: dict, flat_controls: bool = False) -> dict:
    """The session options and avatar controls a message gives (streaming/options.py), each
    checked; the engine then refuses those its family does not take."""
    try:
        return parse_options(msg, flat_controls)
    except FloatRTError as exc:
        raise ProtocolError("bad_option", str(exc)) from None


@dataclass
class OfferOptions:
    sdp: str
    image: bytes | None = None         # decoded avatar upload
    preset: str | None = None
    no_crop: bool = False
    session: dict = field(default_factory=dict)   # session options given (streaming/options.py)
    model: str | None = None           # which of the server's models (None: its first)
    audio_input: str = "track"         # "track": the offer's audio track; "pcm": binary websocket messages
    pcm_rate: int = 16000
    stamp: bool = False                # draw the frame index into the video (latency/lip-sync tests)


def parse_offer(msg: dict) -> OfferOptions:
    sdp = msg.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise ProtocolError("bad_sdp", "offer needs an 'sdp' string (an SDP offer starting with 'v=0')")
    image = None
    avatar = msg.get("avatar")
    preset = msg.get("preset")
    if avatar is not None:
        if not isinstance(avatar, str):
            raise ProtocolError("bad_image", "avatar must be a base64 string (PNG/JPEG), optionally a data: URL")
        data = avatar.split(",", 1)[1] if avatar.startswith("data:") else avatar
        if len(data) > MAX_IMAGE_BYTES * 4 // 3 + 4:
            raise ProtocolError("image_too_large", f"avatar image is over {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
        try:
            image = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("bad_image", "avatar is not valid base64") from None
    elif preset is not None and not isinstance(preset, str):
        raise ProtocolError("bad_option", "preset must be a string")
    session = _options(msg)
    model = msg.get("model")
    if model is not None and (not isinstance(model, str) or len(model) > 100):
        raise ProtocolError("bad_option", "model must be the name of one of the server's models")
    audio_input = msg.get("audio_input", "track")
    if audio_input not in ("track", "pcm"):
        raise ProtocolError("bad_option", f"audio_input must be 'track' or 'pcm', got {audio_input!r}")
    pcm_rate = _number(msg, "pcm_rate", 8000, 48000, 16000, integer=True)
    if pcm_rate not in PCM_RATES:
        raise ProtocolError("bad_option", f"pcm_rate must be one of {PCM_RATES}")
    return OfferOptions(
        sdp=sdp, image=image, preset=preset, no_crop=bool(msg.get("no_crop", False)), session=session, model=model,
        audio_input=audio_input, pcm_rate=pcm_rate, stamp=bool(msg.get("stamp", False)))


SET_KEYS = frozenset({"type", *SPECS, *CONTROL_NAMES})


def parse_set(msg: dict) -> dict:
    """The options a ``set`` message changes (the session checks they are its family's and changeable)."""
    unknown = sorted(set(msg) - SET_KEYS)
    if unknown:
        raise ProtocolError("bad_option", f"set takes session options and controls only "
                                          f"({', '.join(sorted(SET_KEYS - {'type'}))}); unknown: {', '.join(unknown)}")
    changes = _options(msg, flat_controls=True)
    if not changes:
        raise ProtocolError("bad_option", f"set needs at least one option ({', '.join(sorted(SET_KEYS - {'type'}))})")
    return changes
