import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SMALL = ROOT / "configs" / "small.yaml"
# shared/reference/ditto (cases/tiny and the key manifests of the published files), copied as FLOAT's is.
DITTO_REF = DATA / "reference" / "ditto"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Kernel choices (float_rt/kernels.py) are timed in memory, not cached in the user's folder.
os.environ.setdefault("FLOAT_RT_KERNEL_CACHE", "off")


@pytest.fixture(scope="session")
def small_cfg():
    from float_rt.config import load_config
    return load_config(SMALL)


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory, small_cfg):
    from float_rt.recipe import write_recipe_checkpoints
    return write_recipe_checkpoints(small_cfg, tmp_path_factory.mktemp("ckpt_small"))


@pytest.fixture(scope="session")
def small_model(small_cfg, small_ckpt):
    from float_rt.checkpoint import load_model
    model, _ = load_model(small_cfg.model, small_ckpt)
    return model


@pytest.fixture(scope="session")
def small_engine(small_cfg, small_ckpt):
    """A streaming engine on the small config, shared by the transport tests (each closes its sessions)."""
    yield from _shared_engine(small_ckpt, small_cfg)


def _shared_engine(ckpt, cfg):
    from streaming.engine import Engine
    from unhurried import unhurried_stream_config
    engine = Engine.from_checkpoints(ckpt, cfg, unhurried_stream_config(), "cpu")
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def ditto_cfg():
    from float_rt.config import load_config
    from float_rt.resources import config_path
    return load_config(config_path("ditto-tiny"))


@pytest.fixture(scope="session")
def ditto_ckpt(tmp_path_factory, ditto_cfg):
    """Recipe weights of ditto-tiny in the published layout (a recipe HuBERT ONNX included)."""
    from float_rt.family import family_of
    out = tmp_path_factory.mktemp("ditto_tiny_ckpt")
    family_of(ditto_cfg).write_demo_weights(ditto_cfg, out)
    return out


@pytest.fixture(scope="session")
def ditto_engine(ditto_cfg, ditto_ckpt):
    """A streaming engine of the Ditto family (ditto-tiny), shared like ``small_engine``."""
    yield from _shared_engine(ditto_ckpt, ditto_cfg)


FAMILIES = ("float", "ditto")


@pytest.fixture(scope="session", params=FAMILIES)
def family_engine(request, portrait_png):
    """(engine, prepared portrait) of each family: transport tests run once per family."""
    from float_rt.media import load_image
    engine = request.getfixturevalue("small_engine" if request.param == "float" else "ditto_engine")
    return engine, engine.prepare(load_image(portrait_png))


@pytest.fixture(scope="session")
def small_portrait(portrait_png, small_cfg):
    """The portrait prepared for the small config (cropped around the face)."""
    from float_rt.media import load_image, prepare_reference
    return prepare_reference(load_image(portrait_png), small_cfg.model.input_size)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory):
    """Real synthetic speech from espeak-ng (installed by .ci/run)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required for the tests (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "Hello there. I am a talking avatar, and this is real speech."],
                   check=True)
    return path


@pytest.fixture(scope="session")
def portrait_png(tmp_path_factory):
    """A real face photo shipped inside scikit-image."""
    import cv2
    import skimage.data
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def write_audio(path, samples: np.ndarray, rate: int, codec: str | None = None, fmt: str = "flt"):
    """Write (channels, n) float samples with PyAV (codec chosen from the suffix by default)."""
    import av
    samples = np.atleast_2d(samples).astype(np.float32)
    if samples.shape[1] == 0:  # a valid WAV file holding no samples
        import wave
        with wave.open(str(path), "wb") as w:
            w.setnchannels(samples.shape[0])
            w.setsampwidth(2)
            w.setframerate(rate)
        return path
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec or {".wav": "pcm_f32le", ".mp3": "libmp3lame", ".ogg": "libopus",
                                   ".m4a": "aac"}[Path(path).suffix], rate=rate)
        s.layout = layout
        if codec or Path(path).suffix != ".wav":
            names = [f.name for f in s.codec_context.codec.audio_formats]
            fmt = "fltp" if "fltp" in names else ("flt" if "flt" in names else names[0])
        planar = fmt.endswith("p")
        step = 1152
        for i in range(0, samples.shape[1], step):
            chunk = samples[:, i:i + step]
            data = chunk if planar else chunk.T.reshape(1, -1)
            if fmt.startswith("s16"):
                data = (np.clip(data, -1, 1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
            frame.sample_rate, frame.pts = rate, i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


# The WebRTC tests run inside their own network namespace (tests/test_webrtc.py starts them).
collect_ignore = [] if os.environ.get("FLOAT_RT_NETNS") == "1" else ["netns"]
