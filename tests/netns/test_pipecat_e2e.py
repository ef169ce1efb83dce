"""A Pipecat bot over SmallWebRTC with the avatar, and an aiortc client (scripts/bench_pipecat.py).

SmallWebRTC input -> a stand-in TTS (espeak-ng) -> FloatAvatarService -> SmallWebRTC output, in
this network namespace with every aiortc peer pinned to 127.0.0.1.
"""
import asyncio
import importlib.util

from helpers import ROOT, only_loopback


def test_pipecat_bot_over_small_webrtc(small_cfg, small_ckpt):
    from float_rt.media import load_image, prepare_reference
    from float_rt.resources import config_path
    from server.config import packaged_page
    from server.pipecat import SMALL_WEBRTC
    from streaming.config import load_stream_config
    from streaming.engine import Engine
    assert only_loopback()
    spec = importlib.util.spec_from_file_location("bench_pipecat", ROOT / "scripts" / "bench_pipecat.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    engine = Engine.from_checkpoints(small_ckpt, small_cfg, load_stream_config(config_path("stream")), "cpu")
    image = prepare_reference(load_image(packaged_page() / "avatars" / "astronaut.jpg"), 128)
    try:
        r = asyncio.run(bench.measure(engine, image, 12.0, emotion="neutral", **SMALL_WEBRTC))
    finally:
        engine.stop()
    print(f"\nPipecat/SmallWebRTC: {r['fps']:.1f} fps ({r['distinct_fps']:.1f} distinct) over {r['span_s']:.1f} s; "
          f"A/V offset median {r['av_offset_ms_median']:+.1f} ms (p5 {r['av_offset_ms_p5']:+.1f}, "
          f"p95 {r['av_offset_ms_p95']:+.1f}); RTP drift over the reply {r['pts_drift_ms']:+.0f} ms; "
          f"first TTS audio -> its image {r['first_audio_to_image_ms']:.0f} ms; barge-in {r['barge_in_ms']:.0f} ms")
    assert r["span_s"] >= 8 and r["distinct_fps"] >= 0.9 * 25            # >= 90 % of 25 fps content
    assert r["speech_heard"] and r["reply_images_shown"] == r["reply_frames"]
    assert abs(r["pts_drift_ms"]) < 80                 # images stamped on the transport's 30 fps clock
    assert abs(r["av_offset_ms_median"]) < 80          # picture and sound arrive together (target: 40)
    assert r["barge_in_ms"] < 200                      # no speech after the interruption
    assert r["second_reply_frames_sent"] > 10          # the second reply was playing when cut
