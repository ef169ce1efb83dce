"""A Pipecat bot over SmallWebRTC with the avatar, and an aiortc client (scripts/bench_pipecat.py).

SmallWebRTC input -> a stand-in TTS (espeak-ng) -> FloatAvatarService -> SmallWebRTC output, in
this network namespace with every aiortc peer pinned to 127.0.0.1.
"""
import asyncio
import importlib.util

from unhurried import unhurried_stream_config
from helpers import ROOT, only_loopback


def test_pipecat_bot_over_small_webrtc(small_cfg, small_ckpt):
    from float_rt.media import load_image, prepare_reference
    from server.config import packaged_page
    from server.pipecat import SMALL_WEBRTC
    from streaming.engine import Engine
    assert only_loopback()
    spec = importlib.util.spec_from_file_location("bench_pipecat", ROOT / "scripts" / "bench_pipecat.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    engine = Engine.from_checkpoints(small_ckpt, small_cfg, unhurried_stream_config(), "cpu")
    image = prepare_reference(load_image(packaged_page() / "avatars" / "astronaut.jpg"), 128)
    try:
        r = asyncio.run(bench.measure(engine, image, 12.0, emotion="neutral", **SMALL_WEBRTC))
    finally:
        engine.stop()

    def fig(key, fmt):     # a figure the run may not have produced is printed as such, not crashed on
        return "n/a" if r.get(key) is None else format(r[key], fmt)
    print(f"\nPipecat/SmallWebRTC: {fig('fps', '.1f')} fps ({fig('distinct_fps', '.1f')} distinct) over "
          f"{fig('span_s', '.1f')} s; A/V offset at arrival median {fig('av_offset_ms_median', '+.1f')} ms "
          f"(p5 {fig('av_offset_ms_p5', '+.1f')}, p95 {fig('av_offset_ms_p95', '+.1f')}); RTP drift over the reply "
          f"{fig('pts_drift_ms', '+.0f')} ms; first TTS audio -> its image {fig('first_audio_to_image_ms', '.0f')} ms; "
          f"barge-in {fig('barge_in_ms', '.0f')} ms")
    assert r["video_frames"] >= 2 and "span_s" in r, r                  # video came (its rate is a figure)
    assert r["speech_heard"] and r["reply_images_shown"] == r["reply_frames"]
    # Timestamps, which a player times by: the reply's images stay with its sound (the 30 fps
    # clock of SmallWebRTC).  Arrival offsets depend on the machine's load: figures, above.
    assert abs(r["pts_drift_ms"]) < 80
    assert r["speech_frames_after_interrupt"] <= 1     # barge-in: at most the frame being sent, then silence
    assert r["second_reply_frames_sent"] >= 15         # the second reply was playing when cut
