#!/usr/bin/env python
"""Talk to a FLOAT-RT server from Python: microphone (or a WAV file) in, avatar out.

    python client_demo/mic_client.py --wav speech.wav --record avatar.mp4
    python client_demo/mic_client.py                  # microphone (sounddevice), window if OpenCV has GUI

Options such as --emotion/--nfe go into the offer (server/PROTOCOL.md).  ``--pcm``
sends the audio as binary websocket messages instead of a WebRTC track (the
voice-assistant mode).  Nothing but the server URL is contacted: no STUN servers.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import fractions
import json
import sys
import time
from pathlib import Path

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # float_rt and server, from a checkout
from server.ice import rtc_configuration, use_host_addresses  # noqa: E402
from server.stamp import read_stamp  # noqa: E402

RATE = 16000
PTIME = 0.02


class FileAudioTrack(AudioStreamTrack):
    """A 16 kHz mono signal sent in real time (20 ms frames), then silence; remembers send times."""

    def __init__(self, samples: np.ndarray, tail_silence: float = 2.0):
        super().__init__()
        pad = np.zeros(int(tail_silence * RATE), np.float32)
        self.pcm = (np.clip(np.concatenate([samples, pad]), -1, 1) * 32767).astype(np.int16)
        self.speech_samples = len(samples)
        self.pos = 0
        self.start: float | None = None
        self.sent: list[tuple[int, float]] = []      # (samples sent so far, wall time)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        n = int(RATE * PTIME)
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.pos / RATE
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self.pcm[self.pos:self.pos + n]
        if chunk.size < n:
            chunk = np.concatenate([chunk, np.zeros(n - chunk.size, np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.pos, fractions.Fraction(1, RATE)
        self.pos += n
        self.sent.append((self.pos, time.monotonic()))
        return frame

    def sent_time(self, sample: int) -> float | None:
        for pos, t in self.sent:
            if pos >= sample:
                return t
        return None


class MicTrack(AudioStreamTrack):
    """The default microphone through sounddevice (PortAudio)."""

    def __init__(self):
        super().__init__()
        try:
            import sounddevice as sd
        except (ImportError, OSError) as exc:
            raise SystemExit(f"microphone needs the sounddevice package and PortAudio ({exc}); "
                             "or use --wav FILE") from None
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=50)
        loop = asyncio.get_event_loop()
        self.pts = 0

        def callback(indata, frames, t, status):
            loop.call_soon_threadsafe(self._put, indata[:, 0].copy())

        self.stream = sd.InputStream(samplerate=RATE, channels=1, dtype="int16",
                                     blocksize=int(RATE * PTIME), callback=callback)
        self.stream.start()

    def _put(self, x):
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(x)

    async def recv(self):
        x = await self.queue.get()
        frame = av.AudioFrame.from_ndarray(x[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.pts, fractions.Fraction(1, RATE)
        self.pts += x.size
        return frame

    def stop(self):
        super().stop()
        self.stream.close()


class AvatarClient:
    """Signalling + one peer connection; received media goes to the callbacks with arrival times."""

    def __init__(self, url: str, audio: AudioStreamTrack | None = None, token: str | None = None,
                 on_video=None, on_audio=None, ws_options: dict | None = None, **options):
        """``ws_options``: for ``websockets.connect`` (``ssl`` for wss with a private CA, ``local_addr``)."""
        self.url = url + (("&" if "?" in url else "?") + f"token={token}" if token else "")
        self.audio, self.options = audio, options
        self.ws_options = ws_options or {}
        self.on_video, self.on_audio = on_video, on_audio
        self.messages: list[dict] = []
        self.errors: list[dict] = []
        self.hello: dict | None = None
        self.pc: RTCPeerConnection | None = None
        self.ws = None
        self._answer: asyncio.Future | None = None
        self._tasks: list[asyncio.Task] = []

    async def connect(self, timeout: float = 30.0) -> dict:
        import websockets
        self.ws = await websockets.connect(self.url, max_size=None, compression=None, **self.ws_options)
        self.hello = json.loads(await self.ws.recv())
        self._answer = asyncio.get_running_loop().create_future()
        self._tasks.append(asyncio.ensure_future(self._read()))
        pc = self.pc = RTCPeerConnection(rtc_configuration([]))
        pc.addTransceiver("video", direction="recvonly")
        if self.audio is not None:
            pc.addTrack(self.audio)
        else:
            pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def on_track(track):
            self._tasks.append(asyncio.ensure_future(self._receive(track)))

        await pc.setLocalDescription(await pc.createOffer())
        await self.send({"type": "offer", "sdp": pc.localDescription.sdp, **self.options})
        answer = await asyncio.wait_for(self._answer, timeout)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return answer

    async def send(self, msg: dict) -> None:
        await self.ws.send(json.dumps(msg))

    async def send_pcm(self, pcm: np.ndarray) -> None:
        await self.ws.send(pcm.astype("<i2").tobytes())

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                msg = json.loads(text)
                self.messages.append(msg)
                if msg["type"] == "answer" and not self._answer.done():
                    self._answer.set_result(msg)
                elif msg["type"] == "error":
                    self.errors.append(msg)
                    if not self._answer.done():
                        self._answer.set_exception(RuntimeError(f"{msg['code']}: {msg['message']}"))
        except Exception:  # noqa: BLE001 - the server closed the websocket
            pass
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError("server closed the connection"))

    async def _receive(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            cb = self.on_video if track.kind == "video" else self.on_audio
            if cb is not None:
                cb(frame, time.monotonic())

    async def close(self, bye: bool = True) -> None:
        if bye and self.ws is not None:
            try:
                await self.send({"type": "bye"})
            except Exception:  # noqa: BLE001
                pass
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def measure(url: str, speech: np.ndarray, tail: float = 2.0, token: str | None = None,
                  max_wait: float = 120.0, **options) -> dict:
    """Send ``speech`` (16 kHz mono float) in real time and measure what comes back.

    The server stamps each frame with its source frame index (``stamp``), so the client knows
    which audio a frame answers: latency = frame received - that audio sent.  Lip sync compares
    when frame j's picture and frame j's sound (found in the returned audio by correlation)
    arrive.
    """
    spf = RATE // 25
    track = FileAudioTrack(speech, tail_silence=tail)
    video, audio = [], []
    res = av.AudioResampler(format="flt", layout="mono", rate=RATE)

    def on_video(frame, t):
        img = frame.to_ndarray(format="rgb24")
        video.append((t, frame.pts, read_stamp(img), img.shape, float(img.std())))

    def on_audio(frame, t):
        for f in res.resample(frame):
            audio.append((t, f.to_ndarray()[0]))

    client = AvatarClient(url, track, token=token, on_video=on_video, on_audio=on_audio, stamp=True, **options)
    await client.connect()
    await asyncio.sleep(len(speech) / RATE + tail + 0.5)
    # A busy machine shows the reply later, not never: wait (bounded) for its last frame.
    last, deadline = -(-len(speech) // spf) - 1, time.monotonic() + max_wait
    while not any(v[2] >= last for v in video[-5:]) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await client.close()
    out = {"errors": client.errors, "stats": [m for m in client.messages if m["type"] == "stats"],
           "frames": len(video), "shapes": sorted({v[3] for v in video}),
           "median_std": float(np.median([v[4] for v in video])) if video else 0.0}
    if len(video) < 2 or not audio:
        return out
    span = video[-1][0] - video[0][0]
    first: dict[int, float] = {}
    for t, _, idx, _, _ in video:
        first.setdefault(idx, t)
    speech_frames = -(-len(speech) // spf)
    shown = [j for j in range(speech_frames) if j in first]
    latency = np.array([first[j] - track.sent_time((j + 1) * spf) for j in shown])
    rx = np.concatenate([a for _, a in audio])
    ends, times = np.cumsum([a.size for _, a in audio]), np.array([t for t, _ in audio])
    probe = speech[:min(len(speech), 2 * RATE)]
    k0 = int(np.argmax(np.correlate(rx, probe, mode="valid"))) if rx.size > probe.size else 0
    sync = []
    for j in shown:
        i = int(np.searchsorted(ends, k0 + j * spf, side="right"))
        if i < len(times):
            sync.append(first[j] - times[i])
    out.update(span_s=span, fps=(len(video) - 1) / span, pts_steps=np.diff([v[1] for v in video]).tolist(),
               shown_fraction=len(shown) / speech_frames, latency_ms=(latency * 1e3).tolist(),
               lipsync_ms=(np.array(sync) * 1e3).tolist())
    return out


async def main(a) -> int:
    use_host_addresses(a.ice_host)
    options = {k: v for k, v in dict(emotion=a.emotion, nfe=a.nfe, preset=a.preset, no_crop=a.no_crop or None,
                                     model=a.model).items()
               if v is not None}
    if a.avatar:
        options["avatar"] = base64.b64encode(Path(a.avatar).read_bytes()).decode()
    samples = None
    if a.wav:
        from float_rt.media import load_audio
        samples = load_audio(a.wav, RATE)
    track = None
    if a.pcm:
        options.update(audio_input="pcm", pcm_rate=RATE)
    else:
        track = FileAudioTrack(samples) if samples is not None else MicTrack()

    writer, show = None, not a.record
    audio_out: list[np.ndarray] = []
    if a.record:
        from float_rt.media import VideoWriter
        writer = VideoWriter(a.record, 25, a.size, sampling_rate=RATE, with_audio=True)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)

    def on_audio(frame, t):
        for f in resampler.resample(frame):
            audio_out.append(f.to_ndarray()[0])

    def on_video(frame, t):
        img = frame.to_ndarray(format="rgb24")
        if writer is not None:
            pending = np.concatenate(audio_out) if audio_out else np.zeros(0, np.float32)
            audio_out.clear()
            writer.write(img[None], pending)
        if show:
            try:
                import cv2
                cv2.imshow("FLOAT-RT", img[:, :, ::-1])
                cv2.waitKey(1)
            except Exception:  # noqa: BLE001 - headless OpenCV has no windows
                print("no window support in this OpenCV build: use --record out.mp4", file=sys.stderr)
                raise SystemExit(2)

    ws_options = {}
    if a.cafile:
        import ssl
        ws_options["ssl"] = ssl.create_default_context(cafile=a.cafile)
    client = AvatarClient(a.server, track, token=a.token, on_video=on_video, on_audio=on_audio,
                          ws_options=ws_options, **options)
    try:
        await client.connect()
    except Exception as exc:  # noqa: BLE001
        print(f"error: {exc}", file=sys.stderr)
        await client.close(bye=False)
        return 2
    print(f"connected: model {client.hello['model']}" + (" (demo weights: noise, not a face)"
                                                         if client.hello.get("demo_weights") else ""))
    try:
        if a.pcm and samples is not None:
            pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
            for i in range(0, len(pcm), 3200):        # 200 ms messages at real-time pace
                await client.send_pcm(pcm[i:i + 3200])
                await asyncio.sleep(0.2)
        duration = a.seconds or ((len(samples) / RATE + 2.0) if samples is not None else 3600)
        await asyncio.sleep(duration)
        for m in client.messages:
            if m["type"] == "stats":
                last = m
        if any(m["type"] == "stats" for m in client.messages):
            print(f"server stats: {last}")
    finally:
        await client.close()
        if writer is not None:
            writer.close()
            print(f"wrote {a.record}")
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", default="ws://127.0.0.1:8080/ws")
    p.add_argument("--wav", help="send this audio file (any format) instead of the microphone")
    p.add_argument("--pcm", action="store_true", help="send audio as binary PCM messages, not a WebRTC track")
    p.add_argument("--avatar", help="portrait image to upload")
    p.add_argument("--preset", help="server preset avatar name")
    p.add_argument("--no-crop", action="store_true")
    p.add_argument("--emotion", default=None)
    p.add_argument("--nfe", type=int, default=None)
    p.add_argument("--model", default=None, help="which of the server's models (its hello lists them)")
    p.add_argument("--record", help="write the received avatar (video + audio) to this mp4")
    p.add_argument("--size", type=int, default=512, help="video size the server sends")
    p.add_argument("--seconds", type=float, default=None, help="how long to stay connected")
    p.add_argument("--token", default=None)
    p.add_argument("--cafile", default=None, help="trust this certificate (PEM) for a wss:// server")
    p.add_argument("--ice-host", action="append", default=None, help="ICE host address (e.g. 127.0.0.1)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
