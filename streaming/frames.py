"""The picture sent for each rendered frame, set up once per session.

Either the face crop scaled to a square of the transport's size, or (``paste_back``) the crop put
back into the whole photo at ``video_size`` (``float_rt.media.FramePaster``: the photo is scaled
once, each frame touches only the feathered box around the face, into one reused buffer).  The
server's tracks, the LiveKit generator, the Pipecat service and ``float-rt stream`` all send what
this gives.
"""
from __future__ import annotations

import cv2
import numpy as np

from float_rt.controls import Controls
from float_rt.errors import FloatRTError


class FrameShaper:
    def __init__(self, engine=None, size: int | None = None, photo: np.ndarray | None = None,
                 controls: Controls | None = None):
        """``engine`` (for its frame size and the family's crop) may be None for a plain square of ``size``."""
        c = controls or Controls()
        self.paster = None
        if c.paste_back:
            if photo is None:
                raise FloatRTError("paste_back needs the photo itself (not only the prepared face crop)")
            self.paster = engine.paster(photo, c.video_size)
            self.width, self.height = self.paster.w, self.paster.h
            self._frame = self.paster.new_frame()
        else:
            self.width = self.height = size or engine.frame_size

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """A rendered RGB frame -> the (height, width, 3) RGB picture to send (valid until the next call
        when pasting: the buffer is reused)."""
        if self.paster is not None:
            side = self.paster.frame_size
            if img.shape[0] != side:
                img = cv2.resize(img, (side, side), interpolation=cv2.INTER_LINEAR)
            return self.paster.paste_into(img, self._frame)
        if img.shape[:2] != (self.height, self.width):
            img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return img
