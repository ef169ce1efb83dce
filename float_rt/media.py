"""Image, audio and video I/O (OpenCV for images and the face detector, PyAV for audio/video)."""
from __future__ import annotations

import logging
from fractions import Fraction
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

    def __init__(self, path: str | Path, fps: float, size: int, audio: np.ndarray | None = None,
                 sampling_rate: int = 16000, crf: int = 18, with_audio: bool | None = None):
        """``audio``: the whole track up front; or ``with_audio=True`` and pass each
        frame's audio to ``write`` (streaming)."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(path), mode="w")
        except (OSError, av.error.FFmpegError, ValueError) as exc:
            raise FloatRTError(f"cannot write video {path}: {exc}") from exc
        self.fps = Fraction(fps).limit_denominator(1001)
        self.video = self.container.add_stream("libx264", rate=self.fps)
        self.video.width = self.video.height = size
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
