"""Image, audio and video I/O (OpenCV for images and the face detector, PyAV for audio/video)."""
from __future__ import annotations

import logging
from fractions import Fraction
from collections.abc import Iterable
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from .errors import FloatRTError

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 10 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")     # preset portraits
DETECT_HEIGHT = 360          # the official crop detects faces on a 360-px-high copy
CROP_SCALE = 1.6             # half-size of the square crop, relative to the face box
SILENCE_LEVEL = 1e-4


# ---------------------------------------------------------------- images
def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded image bytes -> RGB uint8 (H, W, 3)."""
    if len(data) > MAX_IMAGE_BYTES:
        raise FloatRTError(f"{name}: image is {len(data) / 1e6:.1f} MB, the limit is {MAX_IMAGE_BYTES / 1e6:.0f} MB")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise FloatRTError(f"{name}: not a readable image (PNG, JPEG, WebP, BMP, ... expected)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FloatRTError(f"image not found: {path}")
    return decode_image(path.read_bytes(), str(path))


def preset_images(folders: list[Path]) -> dict[str, Path]:
    """Name -> file of the portraits in ``folders`` (later folders override earlier ones)."""
    out: dict[str, Path] = {}
    for folder in folders:
        for p in sorted(Path(folder).glob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                out[p.stem] = p
    return out


_detector: cv2.CascadeClassifier | None = None


def _crop_interpolation(img: np.ndarray) -> int:
    """The official rule: area averaging for images taller than the detection copy, else cubic."""
    return cv2.INTER_AREA if DETECT_HEIGHT / img.shape[0] < 1.0 else cv2.INTER_CUBIC


def detect_face(img: np.ndarray) -> tuple[int, int, int, int] | None:
    """Largest frontal face as (x1, y1, x2, y2) in image pixels, or None.

    OpenCV's Haar cascade ships inside the opencv package, so nothing is downloaded.
    """
    global _detector
    if _detector is None:
        _detector = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    mult = DETECT_HEIGHT / img.shape[0]
    small = cv2.resize(img, (0, 0), fx=mult, fy=mult, interpolation=_crop_interpolation(img))
    gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    faces = _detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return int(x / mult), int(y / mult), int((x + w) / mult), int((y + h) / mult)


def _official_half(img: np.ndarray) -> tuple[int, int, int]:
    """FLOAT's crop: (centre x, centre y, half side) in photo pixels."""
    box = detect_face(img)
    if box is None:
        raise FloatRTError("no face found in the reference image; use a frontal portrait or pass --no-crop")
    x1, y1, x2, y2 = box
    return (x1 + x2) // 2, (y1 + y2) // 2, int(max((y2 - y1) // 2, (x2 - x1) // 2) * CROP_SCALE)


def official_crop_box(img: np.ndarray, size: int) -> SquareCrop:
    """Where ``crop_face`` cuts the photo, as a SquareCrop (for paste-back)."""
    cx, cy, half = _official_half(img)
    return SquareCrop(cx - half, cy - half, 2 * half, size)


def crop_face(img: np.ndarray, size: int) -> np.ndarray:
    """The official square crop: 1.6x the face box half-size around its centre, black padding."""
    cx, cy, half = _official_half(img)
    cy, cx = cy + half, cx + half
    padded = cv2.copyMakeBorder(img, half, half, half, half, cv2.BORDER_CONSTANT, value=0)
    crop = padded[cy - half:cy + half, cx - half:cx + half]
    return cv2.resize(crop, (size, size), interpolation=_crop_interpolation(img))


class SquareCrop:
    """A square of a photo, scaled to ``size`` pixels: where a face crop came from, for paste-back."""

    def __init__(self, x0: int, y0: int, side: int, size: int):
        self.x0, self.y0, self.side, self.size = x0, y0, side, size

    @classmethod
    def around_face(cls, img: np.ndarray, scale: float, shift_x: float, shift_y: float, size: int) -> "SquareCrop":
        """``scale`` times the face box's longer side, centred on the box moved by ``shift_*`` times that
        square's side (negative y: up)."""
        box = detect_face(img)
        if box is None:
            raise FloatRTError("no face found in the reference image; use a frontal portrait")
        x1, y1, x2, y2 = box
        side = max(x2 - x1, y2 - y1) * scale
        cx, cy = (x1 + x2) / 2 + shift_x * side, (y1 + y2) / 2 + shift_y * side
        return cls(int(round(cx - side / 2)), int(round(cy - side / 2)), max(1, int(round(side))), size)

    def cut(self, img: np.ndarray) -> np.ndarray:
        """The square (black where it leaves the photo, as the official crops), resized to ``size``."""
        h, w = img.shape[:2]
        pad = max(0, -self.x0, -self.y0, self.x0 + self.side - w, self.y0 + self.side - h)
        padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0) if pad else img
        region = padded[self.y0 + pad:self.y0 + pad + self.side, self.x0 + pad:self.x0 + pad + self.side]
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_CUBIC
        return cv2.resize(region, (self.size, self.size), interpolation=interp)

    def to_photo(self, frame_size: int) -> np.ndarray:
        """The 2x3 affine map from a (frame_size)^2 frame of the crop to photo pixels."""
        k = self.side / frame_size
        # pixel centres: photo x = x0 + (u + 0.5) * k - 0.5
        return np.array([[k, 0, self.x0 + 0.5 * k - 0.5], [0, k, self.y0 + 0.5 * k - 0.5]], np.float64)


def feather_mask(size: int, border: float = 0.04, ramp: float = 0.12) -> np.ndarray:
    """(size, size) float32: 0 in the outer ``border`` of the square, rising linearly to 1 over ``ramp``
    (fractions of the side), so that a pasted crop fades into the photo instead of showing its edge."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    edge = np.minimum(c, 1 - c)
    d = np.minimum(edge[:, None], edge[None, :])
    return np.clip((d - border) / ramp, 0, 1).astype(np.float32)


LIVE_FRAME = (1920, 1080)     # the largest live frame: long side, short side


def fit_size(w: int, h: int, limit: tuple[int, int] | None = LIVE_FRAME) -> tuple[int, int]:
    """(width, height) of a ``w`` x ``h`` photo scaled down (never up) to fit ``limit`` (long side,
    short side; None: no limit), made even for H.264's 4:2:0."""
    f = 1.0 if limit is None else min(1.0, limit[0] / max(w, h), limit[1] / min(w, h))
    return max(2, int(w * f) // 2 * 2), max(2, int(h * f) // 2 * 2)


class FramePaster:
    """Rendered face crops put back into the photo, at a chosen video size, computed once.

    The photo is scaled once to cover ``video_size`` (default: its own size, fitted into ``limit``)
    and cut to it around the face; the crop's place and its feathered mask are kept at that size,
    and only the mask's bounding box is warped and blended per frame (preallocated buffers).
    Wherever the mask is 0 the output is exactly the scaled photo.

    Colour at the seam: the mask fades the crop into the photo over 12% of the crop's side; with
    ``colour_match`` the first pasted frame also fixes a per-channel offset, the mean difference
    between photo and frame over that fade ring, added to every later frame (fixed per session, so
    it cannot flicker), so that a renderer's small colour shift does not show as a halo."""

    def __init__(self, photo: np.ndarray, crop: SquareCrop, frame_size: int,
                 video_size: tuple[int, int] | None = None, limit: tuple[int, int] | None = LIVE_FRAME,
                 colour_match: bool = True):
        h, w = photo.shape[:2]
        self.w, self.h = video_size if video_size is not None else fit_size(w, h, limit)
        if self.w % 2 or self.h % 2:
            raise FloatRTError(f"the video size must be even, got {self.w}x{self.h}")
        if (self.w, self.h) == (w - w % 2, h - h % 2):
            f, sw, sh = 1.0, w, h                                  # the photo itself (an odd line cut)
        else:
            f = max(self.w / w, self.h / h)                        # cover the output, keep the aspect
            sw, sh = max(self.w, round(w * f)), max(self.h, round(h * f))
        fx, fy = sw / w, sh / h
        # the output window inside the scaled photo: centred on the crop, inside the photo
        cx, cy = (crop.x0 + crop.side / 2) * fx, (crop.y0 + crop.side / 2) * fy
        ox = 0 if sw - self.w < 2 else int(np.clip(round(cx - self.w / 2), 0, sw - self.w))
        oy = 0 if sh - self.h < 2 else int(np.clip(round(cy - self.h / 2), 0, sh - self.h))
        scaled = photo if (sw, sh) == (w, h) else cv2.resize(
            photo, (sw, sh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
        self.photo = np.ascontiguousarray(scaled[oy:oy + self.h, ox:ox + self.w])
        # frame pixel -> photo pixel -> scaled photo pixel (pixel centres) -> output pixel
        a = crop.to_photo(frame_size)
        self.affine = np.array([[a[0, 0] * fx, 0, (a[0, 2] + 0.5) * fx - 0.5 - ox],
                                [0, a[1, 1] * fy, (a[1, 2] + 0.5) * fy - 0.5 - oy]], np.float64)
        self.frame_size = frame_size
        full = cv2.warpAffine(feather_mask(frame_size), self.affine, (self.w, self.h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        ys, xs = np.nonzero(full > 0)
        if len(xs):
            self.box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        else:
            self.box = (0, 0, 0, 0)                                 # the crop lies outside the video
        x0, y0, x1, y1 = self.box
        self._weight = np.ascontiguousarray(full[y0:y1, x0:x1])
        self._base = np.ascontiguousarray(self.photo[y0:y1, x0:x1])
        self._region = self.affine - np.array([[0, 0, x0], [0, 0, y0]], np.float64)
        self._warped = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        # inside the rectangle where the mask is 1 the frame is copied; only the four strips around
        # it are blended (about half of the box at the default feathering)
        ys, xs = np.nonzero(self._weight >= 1)
        core = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, 0, 0)
        if not (self._weight[core[1]:core[3], core[0]:core[2]] >= 1).all():
            core = (0, 0, 0, 0)
        self._core = (slice(core[1], core[3]), slice(core[0], core[2]))
        bh, bw = y1 - y0, x1 - x0
        cx0, cy0, cx1, cy1 = core
        rects = [(0, 0, bw, cy0), (0, cy1, bw, bh), (0, cy0, cx0, cy1), (cx1, cy0, bw, cy1)] if cx1 > cx0 \
            else [(0, 0, bw, bh)]
        self._strips = []
        for rx0, ry0, rx1, ry1 in rects:
            if rx1 > rx0 and ry1 > ry0:
                part = (slice(ry0, ry1), slice(rx0, rx1))
                w_ = np.ascontiguousarray(self._weight[part])
                self._strips.append((part, w_, 1 - w_, np.ascontiguousarray(self._base[part]),
                                     np.empty((ry1 - ry0, rx1 - rx0, 3), np.uint8)))
        self._out = np.empty_like(self._warped)
        ring = np.nonzero((self._weight > 0) & (self._weight < 1))
        step = max(1, len(ring[0]) // 20000)                        # a subsample is plenty for a mean
        self._ring = (ring[0][::step], ring[1][::step])
        self.colour_match = colour_match
        self.offset: tuple[float, float, float, float] | None = None if colour_match else (0.0, 0.0, 0.0, 0.0)

    @property
    def mask(self) -> np.ndarray:
        """(H, W, 1) float32: the feathered mask at the output size."""
        out = np.zeros((self.h, self.w, 1), np.float32)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1, 0] = self._weight
        return out

    def new_frame(self) -> np.ndarray:
        """A (H, W, 3) uint8 buffer holding the scaled photo, for ``paste_into``."""
        return self.photo.copy()

    def _blended(self, frame: np.ndarray) -> np.ndarray:
        frame = np.ascontiguousarray(frame)
        if frame.shape != (self.frame_size, self.frame_size, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a ({self.frame_size}, {self.frame_size}, 3) uint8 frame, got "
                             f"{frame.shape} {frame.dtype}")
        x0, y0, x1, y1 = self.box
        cv2.warpAffine(frame, self._region, (x1 - x0, y1 - y0), dst=self._warped, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
        if self.offset is None:
            if len(self._ring[0]):
                diff = self._base[self._ring].astype(np.float32) - self._warped[self._ring].astype(np.float32)
                self.offset = (*(float(v) for v in diff.mean(axis=0)), 0.0)
            else:
                self.offset = (0.0, 0.0, 0.0, 0.0)
        warped = self._warped
        if any(self.offset):
            warped = cv2.add(warped, self.offset, dst=self._warped, dtype=cv2.CV_8U)
        out = self._out
        out[self._core] = warped[self._core]
        for part, weight, keep, base, buf in self._strips:
            out[part] = cv2.blendLinear(np.ascontiguousarray(warped[part]), base, weight, keep, dst=buf)
        return out

    def paste_into(self, frame: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write the pasted ``frame`` into ``out`` (a ``new_frame()`` buffer, or any earlier output):
        only the mask's box is written.  Returns ``out``."""
        x0, y0, x1, y1 = self.box
        if x1 > x0:
            out[y0:y1, x0:x1] = self._blended(frame)
        return out

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """RGB uint8 (S, S, 3) -> a new RGB uint8 (H, W, 3); outside the mask exactly the photo."""
        return self.paste_into(frame, self.new_frame())


class PasteBack(FramePaster):
    """Offline paste-back: the photo at its own size (made even), no live size limit."""

    def __init__(self, photo: np.ndarray, crop: SquareCrop, frame_size: int,
                 video_size: tuple[int, int] | None = None, colour_match: bool = True):
        super().__init__(photo, crop, frame_size, video_size, limit=None, colour_match=colour_match)


def image_to_tensor(img: np.ndarray, size: int) -> torch.Tensor:
    """RGB uint8 -> (1, 3, size, size) float in [-1, 1]."""
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    x = (img.astype(np.float32) / 255.0 - 0.5) / 0.5
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def prepare_reference(img: np.ndarray, size: int, crop: bool = True) -> torch.Tensor:
    return image_to_tensor(crop_face(img, size) if crop else img, size)


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    x = ((frames.detach().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------- audio
def check_audio(samples: np.ndarray, name: str = "audio", warn_silence: bool = True) -> np.ndarray:
    if samples.size == 0:
        raise FloatRTError(f"{name}: no audio samples")
    if not np.all(np.isfinite(samples)):
        raise FloatRTError(f"{name}: audio contains NaN or infinite samples")
    if warn_silence and float(np.max(np.abs(samples))) < SILENCE_LEVEL:
        log.warning("%s is silent: the avatar will only make idle motion", name)
    return samples


def load_audio(path: str | Path, sampling_rate: int = 16000) -> np.ndarray:
    """Any file PyAV reads -> mono float32 at ``sampling_rate`` (channels averaged)."""
    path = Path(path)
    if not path.is_file():
        raise FloatRTError(f"audio file not found: {path}")
    chunks = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise FloatRTError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout=stream.layout.name if stream.layout else None,
                                          rate=sampling_rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except FloatRTError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise FloatRTError(f"cannot read audio {path}: {exc}") from exc
    samples = np.concatenate(chunks, axis=1).mean(axis=0) if chunks else np.zeros(0, np.float32)
    return check_audio(samples.astype(np.float32), str(path))


# ---------------------------------------------------------------- video
class VideoWriter:
    """H.264 mp4 with AAC audio, frames written as they come (memory stays flat)."""

    def __init__(self, path: str | Path, fps: float, size: int | tuple[int, int], audio: np.ndarray | None = None,
                 sampling_rate: int = 16000, crf: int = 18, with_audio: bool | None = None):
        """``size``: side of square frames, or (width, height).  ``audio``: the whole track up
        front; or ``with_audio=True`` and pass each frame's audio to ``write`` (streaming)."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(path), mode="w")
        except (OSError, av.error.FFmpegError, ValueError) as exc:
            raise FloatRTError(f"cannot write video {path}: {exc}") from exc
        self.fps = Fraction(fps).limit_denominator(1001)
        self.video = self.container.add_stream("libx264", rate=self.fps)
        self.video.width, self.video.height = (size, size) if isinstance(size, int) else size
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(crf), "preset": "veryfast"}
        self.audio_data, self.sr, self.audio_pos = audio, sampling_rate, 0
        self.frames = 0
        if with_audio and audio is None:
            self.audio_data = np.zeros(0, np.float32)
        if self.audio_data is not None:
            self.audio = self.container.add_stream("aac", rate=sampling_rate)
            self.audio.layout = "mono"

    def _write_audio_until(self, seconds: float | None) -> None:
        if self.audio_data is None:
            return
        end = len(self.audio_data) if seconds is None else min(len(self.audio_data), int(seconds * self.sr))
        step = 1024
        while self.audio_pos < end:
            chunk = self.audio_data[self.audio_pos:self.audio_pos + step].astype(np.float32)
            frame = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = self.sr, self.audio_pos
            self.container.mux(self.audio.encode(frame))
            self.audio_pos += len(chunk)

    def write(self, frames: np.ndarray, audio: np.ndarray | None = None) -> None:
        if audio is not None:
            self.audio_data = np.concatenate([self.audio_data, audio.astype(np.float32)])
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self.frames
            frame.time_base = 1 / self.fps
            self.container.mux(self.video.encode(frame))
            self.frames += 1
            self._write_audio_until(self.frames / float(self.fps))

    def close(self) -> None:
        self._write_audio_until(None)
        self.container.mux(self.video.encode(None))
        if self.audio_data is not None:
            self.container.mux(self.audio.encode(None))
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_video(path: str | Path, fps: float, size: int | tuple[int, int], audio: np.ndarray, sampling_rate: int,
                batches: Iterable[np.ndarray]) -> int:
    """Frames written as ``batches`` (a lazy iterable of (n, H, W, 3) uint8) produces them, with the
    whole ``audio`` track.  The output is opened first, so an unwritable path fails before any compute;
    on any failure the partial file is removed.  Returns the number of frames."""
    writer = VideoWriter(path, fps, size, audio, sampling_rate)
    try:
        for frames in batches:
            writer.write(frames)
    except BaseException:
        writer.close()
        Path(path).unlink(missing_ok=True)  # no half-written video left behind
        raise
    writer.close()
    return writer.frames
