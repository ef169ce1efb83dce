"""Signalling messages (JSON text over the /ws websocket): parsing and validation only.

See server/PROTOCOL.md.  Every problem is a `ProtocolError` with a stable code that
the connection sends back as ``{"type": "error", "code": ..., "message": ...}``.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

from float_rt.config import EMOTIONS
from float_rt.media import MAX_IMAGE_BYTES

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


def _emotion(msg: dict) -> tuple[bool, str | None]:
    """(given, label); ``"auto"`` or null means predicted from speech."""
    if "emotion" not in msg:
        return False, None
    v = msg["emotion"]
    if v in (None, "auto"):
        return True, None
    if not isinstance(v, str) or v.lower() not in EMOTIONS:
        raise ProtocolError("bad_option", f"emotion must be 'auto' or one of {', '.join(EMOTIONS)}, got {v!r}")
    return True, v.lower()


@dataclass
class OfferOptions:
    sdp: str
    image: bytes | None = None         # decoded avatar upload
    preset: str | None = None
    no_crop: bool = False
    emotion: str | None = None
    a_cfg_scale: float | None = None
    e_cfg_scale: float | None = None
    nfe: int | None = None
    chunk_frames: int | None = None
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
    _, emotion = _emotion(msg)
    audio_input = msg.get("audio_input", "track")
    if audio_input not in ("track", "pcm"):
        raise ProtocolError("bad_option", f"audio_input must be 'track' or 'pcm', got {audio_input!r}")
    pcm_rate = _number(msg, "pcm_rate", 8000, 48000, 16000, integer=True)
    if pcm_rate not in PCM_RATES:
        raise ProtocolError("bad_option", f"pcm_rate must be one of {PCM_RATES}")
    return OfferOptions(
        sdp=sdp, image=image, preset=preset, no_crop=bool(msg.get("no_crop", False)), emotion=emotion,
        a_cfg_scale=_number(msg, "a_cfg_scale", -20, 20), e_cfg_scale=_number(msg, "e_cfg_scale", -20, 20),
        nfe=_number(msg, "nfe", 2, 50, integer=True), chunk_frames=_number(msg, "chunk_frames", 1, 50, integer=True),
        audio_input=audio_input, pcm_rate=pcm_rate, stamp=bool(msg.get("stamp", False)))


@dataclass
class SetOptions:
    emotion_given: bool
    emotion: str | None
    a_cfg_scale: float | None
    e_cfg_scale: float | None


def parse_set(msg: dict) -> SetOptions:
    given, emotion = _emotion(msg)
    opts = SetOptions(given, emotion, _number(msg, "a_cfg_scale", -20, 20), _number(msg, "e_cfg_scale", -20, 20))
    if not given and opts.a_cfg_scale is None and opts.e_cfg_scale is None:
        raise ProtocolError("bad_option", "set needs at least one of emotion, a_cfg_scale, e_cfg_scale")
    return opts
