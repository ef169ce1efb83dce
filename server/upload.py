"""What an avatar upload may be, decided from its header before a single pixel is decoded.

A 1 MB PNG can declare 20000 x 20000 pixels (1.2 GB decoded); TIFF and PPM carry no
compression worth the risk.  Pillow reads only the header here; OpenCV decodes afterwards,
and only what passed.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from float_rt.media import decode_image

from .protocol import ProtocolError

FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}


def check_header(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an upload, or ProtocolError (``bad_image``, ``image_too_large``)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # Pillow's own bomb warning: we decide below
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ProtocolError("bad_image", "avatar is not a readable PNG, JPEG or WebP image") from None
    if fmt not in FORMATS:
        raise ProtocolError("bad_image", f"avatar is {fmt}; send PNG, JPEG or WebP")
    if w * h > max_pixels:
        raise ProtocolError("image_too_large", f"avatar is {w}x{h} ({w * h / 1e6:.1f} MP); the limit is "
                                               f"{max_pixels / 1e6:g} MP (max_image_pixels): scale it down")
    return FORMATS[fmt], w, h


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """The checked upload as RGB uint8 (H, W, 3)."""
    check_header(data, max_pixels)
    return decode_image(data, "avatar")
