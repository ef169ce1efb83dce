"""Audio/image input handling and the face crop."""
import logging

import numpy as np
import pytest

from conftest import write_audio
from float_rt.errors import FloatRTError
from float_rt.media import crop_face, decode_image, detect_face, load_audio, load_image, prepare_reference


def _tone(rate, seconds, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([x] * channels)


@pytest.mark.parametrize("rate,channels", [(8000, 1), (22050, 2), (44100, 2), (48000, 1)])
def test_any_rate_and_channels_resampled_to_16k_mono(tmp_path, rate, channels):
    path = write_audio(tmp_path / "a.wav", _tone(rate, 1.5, channels), rate)
    x = load_audio(path, 16000)
    assert x.ndim == 1 and x.dtype == np.float32
    assert abs(len(x) - 24000) <= 64
    # a 440 Hz tone stays a 440 Hz tone
    spec = np.abs(np.fft.rfft(x[2000:18000]))
    assert abs(np.argmax(spec) * 16000 / 16000 - 440) <= 2


@pytest.mark.parametrize("suffix", [".mp3", ".ogg", ".m4a"])
def test_compressed_formats(tmp_path, suffix):
    rate = 48000 if suffix == ".ogg" else 44100  # Opus in Ogg runs at 48 kHz
    path = write_audio(tmp_path / f"a{suffix}", _tone(rate, 1.0, 2), rate)
    x = load_audio(path, 16000)
    assert abs(len(x) - 16000) < 2000 and np.max(np.abs(x)) > 0.1


def test_nan_audio_is_rejected(tmp_path):
    x = _tone(16000, 0.5)
    x[0, 100] = np.nan
    with pytest.raises(FloatRTError, match="NaN"):
        load_audio(write_audio(tmp_path / "nan.wav", x, 16000), 16000)


def test_empty_and_unreadable_audio(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(FloatRTError, match="cannot read audio"):
        load_audio(tmp_path / "junk.wav")
    with pytest.raises(FloatRTError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(FloatRTError, match="no audio samples"):
        load_audio(write_audio(tmp_path / "empty.wav", np.zeros((1, 0)), 16000))


def test_silence_is_allowed_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        x = load_audio(write_audio(tmp_path / "s.wav", np.zeros((1, 8000)), 16000))
    assert len(x) == 8000 and "silent" in caplog.text


def test_bad_images(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(FloatRTError, match="not a readable image"):
        load_image(tmp_path / "x.png")
    with pytest.raises(FloatRTError, match="limit"):
        decode_image(b"\0" * (11 * 1024 * 1024))


def test_face_crop_centres_the_face(portrait_png):
    img = load_image(portrait_png)
    x1, y1, x2, y2 = detect_face(img)
    assert 150 < (x1 + x2) / 2 < 300 and 60 < (y1 + y2) / 2 < 200  # the astronaut's face
    crop = crop_face(img, 128)
    assert crop.shape == (128, 128, 3)
    t = prepare_reference(img, 128)
    assert t.shape == (1, 3, 128, 128) and -1 <= float(t.min()) and float(t.max()) <= 1


def test_no_face_is_a_clear_error():
    img = np.full((300, 300, 3), 127, np.uint8)
    with pytest.raises(FloatRTError, match="no face found.*--no-crop"):
        crop_face(img, 128)
    assert prepare_reference(img, 64, crop=False).shape == (1, 3, 64, 64)
