"""A Python aiortc client talks to the server: speech in, 25 fps avatar video and synced speech out."""
import asyncio
import time

import av
import numpy as np

from float_rt.media import load_audio
from server.tracks import read_stamp

SPF = 640


def test_speech_in_avatar_out(server, client_mod, speech_wav):
    speech = load_audio(speech_wav)
    track = client_mod.FileAudioTrack(speech, tail_silence=2.0)
    video, audio = [], []
    res = av.AudioResampler(format="flt", layout="mono", rate=16000)

    def on_video(frame, t):
        img = frame.to_ndarray(format="rgb24")
        video.append((t, frame.pts, read_stamp(img), img.shape, float(img.std())))

    def on_audio(frame, t):
        for f in res.resample(frame):
            audio.append((t, f.to_ndarray()[0]))

    async def main():
        c = client_mod.AvatarClient(server.url, track, on_video=on_video, on_audio=on_audio,
                                    emotion="happy", stamp=True)
        await c.connect()
        await asyncio.sleep(len(speech) / 16000 + 2.5)
        await c.close()
        return c

    c = asyncio.run(main())
    assert not c.errors
    assert any(m["type"] == "stats" for m in c.messages)
    assert video and audio
    assert {v[3] for v in video} == {(512, 512, 3)}
    assert np.median([v[4] for v in video]) > 5          # not blank
    # Frames arrive at 25 fps (>= 90 % of the frames the elapsed time calls for), pts 3600 apart (90 kHz).
    span = video[-1][0] - video[0][0]
    assert len(video) >= 0.9 * (span * 25 + 1)
    steps = np.diff([v[1] for v in video])
    assert np.median(steps) == 3600 and (steps == 3600).mean() > 0.9
    # Every speech frame is shown (stamped content index), in order.
    first = {}
    for t, _, idx, _, _ in video:
        first.setdefault(idx, t)
    speech_frames = -(-len(speech) // SPF)
    shown = [j for j in range(speech_frames) if j in first]
    assert len(shown) >= 0.9 * speech_frames
    # Latency: frame j ready at the client after its audio was sent.
    lat = np.array([first[j] - track.sent_time((j + 1) * SPF) for j in shown])
    assert (lat > 0).all()
    # Lip sync: when frame j's picture arrives vs when its sound arrives in the returned audio track.
    rx = np.concatenate([a for _, a in audio])
    ends = np.cumsum([a.size for _, a in audio])
    times = np.array([t for t, _ in audio])
    corr = np.correlate(rx[:len(rx)], speech[:16000 * 2], mode="valid") if len(rx) > 32000 else None
    k0 = int(np.argmax(corr))
    offsets = []
    for j in shown:
        k = k0 + j * SPF
        i = int(np.searchsorted(ends, k, side="right"))
        if i < len(times):
            offsets.append(first[j] - times[i])
    offsets = np.array(offsets) * 1e3
    print(f"\nE2E: {len(video)} frames in {span:.2f} s ({(len(video) - 1) / span:.1f} fps); "
          f"latency audio sent -> frame received: median {np.median(lat) * 1e3:.0f} ms, p95 "
          f"{np.percentile(lat, 95) * 1e3:.0f} ms; lip-sync (video - audio arrival): median "
          f"{np.median(offsets):+.0f} ms, p95 |offset| {np.percentile(np.abs(offsets), 95):.0f} ms")
    assert abs(np.median(offsets)) <= 40
