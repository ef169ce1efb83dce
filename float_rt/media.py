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


def crop_face(img: np.ndarray, size: int) -> np.ndarray:
    """The official square crop: 1.6x the face box half-size around its centre, black padding."""
    box = detect_face(img)
    if box is None:
        raise FloatRTError("no face found in the reference image; use a frontal portrait or pass --no-crop")
    x1, y1, x2, y2 = box
    half = int(max((y2 - y1) // 2, (x2 - x1) // 2) * CROP_SCALE)
    cy, cx = (y1 + y2) // 2 + half, (x1 + x2) // 2 + half
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


class PasteBack:
    """Frames of a face crop put back into the photo they came from, at the photo's size (even)."""

    def __init__(self, photo: np.ndarray, crop: SquareCrop, frame_size: int):
        h, w = photo.shape[:2]
        self.h, self.w = h - h % 2, w - w % 2                      # H.264 with yuv420p wants even sizes
        self.photo = photo[:self.h, :self.w].astype(np.float32)
        self.affine, self.frame_size = crop.to_photo(frame_size), frame_size
        mask = cv2.warpAffine(feather_mask(frame_size), self.affine, (self.w, self.h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self.mask = mask[..., None]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """RGB uint8 (S, S, 3) -> RGB uint8 (H, W, 3); outside the mask exactly the photo."""
        warped = cv2.warpAffine(frame, self.affine, (self.w, self.h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32)
        out = self.mask * warped + (1 - self.mask) * self.photo
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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
