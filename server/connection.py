"""One client: its signalling websocket, peer connection, session and tasks.

Everything a connection owns is released in `close()`, whichever way it ends:
``bye``, websocket closed, ICE failure, connect timeout, idle timeout or an engine error.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Protocol

import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from float_rt.errors import FloatRTError
from streaming.frames import FrameShaper

from . import protocol
from .budget import MessageBudget
from .ice import rtc_configuration
from .policy import option_limit
from .protocol import ProtocolError
from .tracks import AvatarAudioTrack, AvatarVideoTrack, consume, pump

if TYPE_CHECKING:
    from streaming.engine import Engine

    from .config import ServerConfig
    from .metrics import Metrics
    from .policy import AddressLimits

log = logging.getLogger(__name__)
# One line per session start and end, shown by default (`float-rt serve` sets it to INFO).
sessions_log = logging.getLogger("float_rt.sessions")


class Host(Protocol):
    """What a connection needs from the server that accepted it (`app.AvatarServer`)."""
    cfg: ServerConfig
    metrics: Metrics
    limits: AddressLimits

    def hello(self) -> dict: ...
    def engine_named(self, name: str | None) -> Engine: ...   # the model an offer names
    def preset(self, name: str | None) -> np.ndarray: ...
    async def decode_upload(self, data: bytes) -> np.ndarray: ...   # header checked, a few at a time
    def acquire(self) -> bool: ...          # one of the server's session slots
    def release(self) -> None: ...
    def forget(self, conn: Connection) -> None: ...


class Connection:
    def __init__(self, server: Host, ws, ip: str):
        self.server, self.ws, self.ip = server, ws, ip
        self.pc: RTCPeerConnection | None = None
        self.session = None
        self.engine: Engine | None = None            # the model this connection's offer chose
        self.shaper: FrameShaper | None = None       # the picture its video track sends
        self.options: protocol.OfferOptions | None = None
        self.tasks: list[asyncio.Task] = []
        self.video: AvatarVideoTrack | None = None
        self.audio: AvatarAudioTrack | None = None
        self.closed = False
        self.slot = False
        self.ip_slot = False
        self.last_activity = time.monotonic()
        self.idle_since = time.monotonic()          # holding no session since
        self._frames_counted = 0                    # of this session's frames, added to the metrics
        self.started_at = time.monotonic()
        cfg = server.cfg
        self.budget = MessageBudget(cfg.max_messages_per_s, cfg.max_bytes_per_s, protocol.MAX_OFFER_BYTES)

    # ------------------------------------------------------------------ messaging
    async def send(self, msg: dict) -> None:
        try:
            await self.ws.send(json.dumps(msg))
        except Exception:  # noqa: BLE001 - the client may be gone; closing handles it
            pass

    async def error(self, code: str, message: str) -> None:
        self.server.metrics.errors[code] += 1
        await self.send({"type": "error", "code": code, "message": message})

    async def run(self) -> None:
        await self.send(self.server.hello())
        waiter = asyncio.ensure_future(self._close_if_no_session())
        try:
            async for message in self.ws:
                now = self.last_activity = time.monotonic()
                broke = self.budget.admit(len(message), now)
                if broke is not None:
                    if self.budget.warn(now):
                        await self.error("rate_limited", f"over this server's budget of {broke}: "
                                                         "messages are dropped; slow down or be disconnected")
                    elif self.budget.exhausted(now):
                        self.server.metrics.rate_limited_closed += 1
                        log.info("closing %s: still over the message budget (%s)", self.ip, broke)
                        await self.close(1008, "over the message budget")
                        break
                    continue
                try:
                    if isinstance(message, bytes):
                        self.on_pcm(message)
                    else:
                        if await self.on_text(message):
                            break
                except ProtocolError as exc:
                    await self.error(exc.code, exc.message)
                except FloatRTError as exc:
                    await self.error("bad_input", str(exc).splitlines()[0])
        except Exception as exc:  # noqa: BLE001 - connection errors end this client only
            log.info("connection ended: %s", exc)
        finally:
            waiter.cancel()
            await self.close()

    async def on_text(self, text: str) -> bool:
        """Handle one message; True when the client said bye."""
        msg = protocol.parse(text)
        kind = msg["type"]
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "offer":
            await self.on_offer(protocol.parse_offer(msg))
        elif kind == "bye":
            await self.close()
            return True
        elif self.session is None:
            raise ProtocolError("no_session", f"'{kind}' needs a session: send an offer first")
        elif kind == "set":
            try:
                self.session.update(**protocol.parse_set(msg))
            except FloatRTError as exc:
                raise ProtocolError("bad_option", str(exc)) from None
            await self.send({"type": "ok", "for": "set"})
        elif kind == "interrupt":
            self.session.interrupt()
            await self.send({"type": "ok", "for": "interrupt"})
        return False

    def on_pcm(self, data: bytes) -> None:
        if self.session is None:
            raise ProtocolError("no_session", "binary PCM needs a session: send an offer first")
        if self.options.audio_input != "pcm":
            raise ProtocolError("pcm_not_enabled", "binary PCM needs an offer with audio_input 'pcm'")
        if len(data) > protocol.MAX_PCM_BYTES:
            raise ProtocolError("too_large", f"PCM message is {len(data)} bytes; the limit is {protocol.MAX_PCM_BYTES}")
        if len(data) % 2:
            raise ProtocolError("bad_pcm", "PCM must be 16-bit little-endian mono (an even number of bytes)")
        limit = self.server.cfg.max_queued_audio_s
        if self.session.queued_seconds() > limit:
            raise ProtocolError("rate_limited", f"more than {limit:g} s of speech queued ahead of the avatar "
                                                "(max_queued_audio_s): this message was dropped")
        self.session.push_audio(np.frombuffer(data, "<i2"), self.options.pcm_rate)

    # ------------------------------------------------------------------ offer -> answer
    async def on_offer(self, opts: protocol.OfferOptions) -> None:
        if self.pc is not None:
            raise ProtocolError("already_started", "this connection already has a session")
        srv = self.server
        # What the session may cost is the server's to bound: refused before any work.
        for name in ("nfe", "chunk_frames"):
            why = option_limit(name, opts.session.get(name), getattr(srv.cfg, f"{name}_range"))
            if why:
                raise ProtocolError("over_limit", why)
        engine = self.engine = srv.engine_named(opts.model)
        try:   # options the family does not take are refused before any work
            options = engine.default_options(**opts.session)
        except FloatRTError as exc:
            raise ProtocolError("bad_option", str(exc)) from None
        if options.controls.paste_back and opts.no_crop:
            raise ProtocolError("bad_option", "paste_back needs the face crop (no_crop is set)")
        # The upload is checked and decoded before a session slot is taken (a few at a time).
        upload = await srv.decode_upload(opts.image) if opts.image is not None else None
        if not srv.acquire():
            srv.metrics.sessions_rejected_busy += 1
            raise ProtocolError("busy", f"the server is at its limit of {srv.cfg.max_sessions} sessions; try later")
        self.slot = True
        why = srv.limits.refuse_session(self.ip)
        if why:
            self._release()
            srv.metrics.sessions_rejected_busy += 1
            raise ProtocolError("busy", why)
        self.ip_slot = True
        self.options = opts
        try:
            image = await asyncio.to_thread(self._reference, opts, upload)
            self.session = await asyncio.to_thread(engine.open_session, image, options, True)
        except (FloatRTError, ProtocolError):
            self._release()
            raise
        self.video = AvatarVideoTrack(self.shaper, engine.fps, stamp=opts.stamp)
        self.audio = AvatarAudioTrack(self.session.audio.out_rate)
        pc = self.pc = RTCPeerConnection(rtc_configuration(srv.cfg.ice_servers))

        @pc.on("track")
        def on_track(track):
            if track.kind == "audio" and opts.audio_input == "track":
                self.tasks.append(asyncio.ensure_future(consume(track, self.session)))
            else:
                self.tasks.append(asyncio.ensure_future(_discard(track)))

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed") and not self.closed and self.pc is pc:
                if pc.connectionState == "failed":
                    await self.error("ice_failed", "the WebRTC connection failed")
                await self.close()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=opts.sdp, type="offer"))
        except Exception as exc:  # noqa: BLE001 - any parse failure of client SDP
            await self.end_session()
            raise ProtocolError("bad_sdp", f"cannot use this SDP offer: {exc}") from None
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" not in kinds or "audio" not in kinds:
            await self.end_session()
            raise ProtocolError("bad_sdp", "the offer must have a video and an audio section (recvonly is fine)")
        for t in pc.getTransceivers():
            if t.kind == "video":
                want = f"video/{srv.cfg.video_codec.upper()}"
                caps = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in (want, "video/rtx")]
                t.setCodecPreferences(caps)
        pc.addTrack(self.video)
        pc.addTrack(self.audio)
        await pc.setLocalDescription(await pc.createAnswer())
        await self.send({"type": "answer", "sdp": pc.localDescription.sdp, "session": self.session.id})
        srv.metrics.sessions_started += 1
        self.started_at = time.monotonic()
        sessions_log.info("session %s started: %s, %s", self.session.id, self.ip,
                          f"upload {upload.shape[1]}x{upload.shape[0]}" if upload is not None
                          else f"preset {opts.preset or 'default'}")
        self.tasks += [asyncio.ensure_future(pump(self.session, self.video, self.audio, srv.cfg.video_delay_ms)),
                       asyncio.ensure_future(self._stats()),
                       asyncio.ensure_future(self._watchdog())]

    def _reference(self, opts: protocol.OfferOptions, upload: np.ndarray | None):
        img = upload if upload is not None else self.server.preset(opts.preset)
        controls = opts.session.get("controls")
        # What the video track sends: the crop at the server's video size, or pasted into the photo.
        self.shaper = FrameShaper(self.engine, self.server.cfg.video_size, img, controls)
        return self.engine.prepare(img, crop=not opts.no_crop)

    # ------------------------------------------------------------------ background
    async def _stats(self) -> None:
        last = 0
        while not self.closed:
            await asyncio.sleep(1.0)
            s = self.session
            if s is None or s.closed:
                if s is not None and s.error:
                    await self.error("internal", s.error)
                    await self.close()
                return
            st = s.stats.summary()
            self._count_frames(s)
            fps, last = st["frames_out"] - last, st["frames_out"]
            emotion = self.engine.live.emotion_of(s.carry)
            await self.send({"type": "stats", "fps": fps, "frames": st["frames_out"],
                             "latency_p50_ms": st.get("latency_p50_ms"), "latency_p95_ms": st.get("latency_p95_ms"),
                             "duplicated": st["duplicated"],
                             "dropped": st["dropped_late"] + st["dropped_backlog"] + (self.video.dropped if self.video else 0),
                             "emotion": emotion})

    async def _watchdog(self) -> None:
        cfg = self.server.cfg
        start = time.monotonic()
        while not self.closed and self.pc is not None:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if self.pc is None:
                return
            if self.pc.connectionState != "connected" and now - start > cfg.connect_timeout_s:
                await self.error("timeout", f"no WebRTC connection within {cfg.connect_timeout_s:g} s")
                await self.close()
            elif cfg.idle_timeout_s and self.session is not None \
                    and now - max(self.last_activity, self.session.last_input) > cfg.idle_timeout_s:
                self.server.metrics.idle_closed += 1
                await self.error("timeout", f"no message and no audio from this client for {cfg.idle_timeout_s:g} s "
                                            "(idle_timeout_s): session closed")
                await self.close()
            if self.pc.connectionState == "connected":
                start = now

    def _count_frames(self, s) -> None:
        n = s.stats.frames_out
        self.server.metrics.frames_sent += n - self._frames_counted
        self._frames_counted = n

    # ------------------------------------------------------------------ teardown
    def _release(self) -> None:
        if self.slot:
            self.slot = False
            self.server.release()
        if self.ip_slot:
            self.ip_slot = False
            self.server.limits.session_ended(self.ip)
        self.idle_since = time.monotonic()

    async def _close_if_no_session(self) -> None:
        """A websocket that holds no session for session_wait_s is closed (it would hold a slot for nothing)."""
        wait = self.server.cfg.session_wait_s
        while not self.closed:
            left = self.idle_since + wait - time.monotonic()
            if self.session is None and not self.slot and left <= 0:
                self.server.metrics.idle_closed += 1
                await self.error("timeout", f"no session for {wait:g} s; connect again to start one")
                await self.close()
                return
            await asyncio.sleep(max(0.2, left if self.session is None else wait))

    async def end_session(self) -> None:
        """Free the session, tracks, peer connection and tasks; the websocket stays open."""
        s, self.session = self.session, None
        if s is not None:
            self._count_frames(s)           # the last partial second too
            st = s.stats
            sessions_log.info("session %s ended after %.1f s: %s, %d frames sent, %d repeated, %d skipped",
                              s.id, time.monotonic() - self.started_at, self.ip, st.frames_out, st.duplicated,
                              st.dropped_late + st.dropped_backlog)
            m = self.server.metrics
            m.frames_duplicated += st.duplicated
            m.frames_dropped += st.dropped_late + st.dropped_backlog
            s.close()
        current = asyncio.current_task()
        tasks, self.tasks = [t for t in self.tasks if t is not current], []
        for t in tasks:
            t.cancel()
        for t in (self.video, self.audio):
            if t is not None:
                t.stop()
        self.video = self.audio = None
        pc, self.pc = self.pc, None
        if pc is not None:
            await pc.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._release()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        await self.end_session()
        self.server.forget(self)
        try:
            if code == 1000:
                await self.ws.close()
            else:
                # A client that misbehaves gets no 10 s close handshake: told why, then cut off.
                await asyncio.wait_for(self.ws.close(code, reason), 1.0)
        except Exception:  # noqa: BLE001 - includes the timeout
            if code != 1000 and getattr(self.ws, "transport", None) is not None:
                self.ws.transport.abort()


async def _discard(track) -> None:
    from aiortc.mediastreams import MediaStreamError
    while True:
        try:
            await track.recv()
        except MediaStreamError:
            return
