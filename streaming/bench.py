"""``float-rt bench-stream``: what streaming costs, how late frames are, and how far it lands from offline.

Sections that run on any family's engine:
  steps     one session: ms per stage per engine step, frames a step commits, the algorithmic latency
  sessions  N sessions batched in one engine: served in real time while a step's median fits in the
            audio the step committed per session
  latency   a real-time paced run: latency of every frame over time (plotted to PNG)
  tts       an idle live session on the wall clock gets a whole TTS reply at once: time from the push to
            the first frame whose speech is voiced, as shown (paced) and as decoded; median of a few replies
Sections that need FLOAT's model (its offline path and streamed wav2vec2):
  features  streamed vs offline audio features per (left context, lookahead)
  nfe       motion error vs the official 10-point grid, and sampler time, per NFE
  offline   the default settings against the offline result: motion error, frame PSNR
  configs   per (chunk, lookahead): algorithmic latency, ms per stage per step, real-time factors
Each section prints its table and returns a dict (``--json``).
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import torch

from float_rt.errors import FloatRTError

from .engine import Engine, StepTimes

STAGES = ("audio", "emotion", "sample", "decode")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def run_session(engine: Engine, image, samples: np.ndarray, chunk_ms: int = 20,
                **options) -> tuple[list, list[StepTimes]]:
    """Push audio in ``chunk_ms`` pieces, stepping whenever the engine can (as live, minus the clock)."""
    s = engine.open_session(image, engine.default_options(**options))
    rate = engine.sampling_rate
    n = rate * chunk_ms // 1000
    frames, times = [], []

    def drain():
        while engine.step():
            times.append(engine.last_times)
            frames.extend(s.take_frames())

    for i in range(0, len(samples), n):
        s.push_audio(samples[i:i + n], rate)
        drain()
    s.end_input()
    drain()
    s.close()
    return frames, times


def frame_rms(audio: np.ndarray, n: int) -> np.ndarray:
    """RMS of each ``n``-sample frame of ``audio`` (the last one padded with silence)."""
    k = -(-len(audio) // n)
    pad = np.zeros(k * n, np.float32)
    pad[:len(audio)] = audio
    return np.sqrt(np.mean(pad.reshape(k, n).astype(np.float64) ** 2, axis=1))


def voiced_threshold(reply: np.ndarray, n: int) -> float:
    """A frame's speech is voiced above a tenth of the reply's loudest frame (RMS)."""
    return max(1e-3, 0.1 * float(frame_rms(reply, n).max(initial=0.0)))


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


class StreamBench:
    def __init__(self, engine: Engine, image, samples: np.ndarray, emotion: str | None = None, log=print):
        self.engine, self.image, self.samples, self.log = engine, image, samples, log
        self.emotion = emotion
        self._offline = None
        if getattr(engine.device, "type", "cpu") == "cpu" and getattr(engine.live, "flush_denormal", True):
            from float_rt.cpu import flush_denormal
            flush_denormal()    # the sections that step on this thread run as the engine's thread does

    def options(self, **overrides):
        return self.engine.default_options(**{"emotion": self.emotion, **overrides})

    @property
    def algorithmic_ms(self) -> float:
        return float(self.engine.live.algorithmic_latency_ms(self.options()))

    # -------------------------------------------------------------- family-free sections
    def steps(self) -> dict:
        """One session fed in 20 ms pieces: per-stage ms of each engine step that committed frames (mean:
        a stage that runs every few steps, like FLOAT's emotion, is spread over them), total (mean and median)."""
        eng = self.engine
        frames, times = run_session(eng, self.image, self.samples, emotion=self.emotion)
        work = [t for t in times if t.frames > 0]
        measured = work[1:] if len(work) > 1 else work     # the first step includes warm-up
        per = max(1, int(np.median([t.frames for t in measured]))) if measured else 0
        stage = {k: float(np.mean([getattr(t, k) for t in measured]) * 1e3) if measured else 0.0 for k in STAGES}
        total = sum(stage.values())
        total_median = float(np.median([t.total for t in measured]) * 1e3) if measured else 0.0
        step_audio = per * 1000.0 / eng.fps
        out = dict(frames=len(frames), steps=len(times), steps_with_frames=len(work), measured_steps=len(measured),
                   frames_per_step=per, step_audio_ms=step_audio, algorithmic_latency_ms=self.algorithmic_ms,
                   **{f"{k}_ms": v for k, v in stage.items()}, total_ms=total, total_median_ms=total_median,
                   ms_per_frame=total / per if per else None,
                   rtf=total / step_audio if step_audio else None)
        self.log(f"\n[steps] one session, per engine step that committed frames (mean of {len(measured)}; "
                 "RTF = compute / audio the step committed)")
        self.log("  frames/step  audio ms/step  alg.lat ms  audio ms  emo ms  sample ms  decode ms  total ms  "
                 "(median)    RTF")
        rtf = "-" if out["rtf"] is None else f"{out['rtf']:.3f}"
        self.log(f"  {per:11d}  {step_audio:13.0f}  {out['algorithmic_latency_ms']:10.0f}  {stage['audio']:8.1f}"
                 f"  {stage['emotion']:6.1f}  {stage['sample']:9.1f}  {stage['decode']:9.1f}  {total:8.1f}  {total_median:8.1f}  {rtf:>5}")
        return out

    def sessions(self, counts=(1, 2, 3, 4, 6, 8, 16), steps: int = 6) -> dict:
        """Steps of N sessions batched together; real time when the median step takes no longer than the
        audio each session's step committed (frames delivered / fps)."""
        eng, rate = self.engine, self.engine.sampling_rate
        spf = eng.live.samples_per_frame
        rows, best = [], 0
        self.log("\n[sessions] N sessions in one engine (batched steps); real time: step ms <= audio ms per step")
        self.log("      N  step ms  frames/step  audio ms  real time")
        for n in counts:
            sess = [eng.open_session(self.image, self.options()) for _ in range(n)]
            pushed = [0] * n
            piece = rate // 50

            def top_up(sess=sess, pushed=pushed, piece=piece):
                # Each session gets the audio its next step needs (cycling through the clip), no more:
                # no session queues far ahead, and every one is ready each step.
                for i, s in enumerate(sess):
                    need = (s.needed_frames() + 1) * spf
                    while pushed[i] < need:
                        a = pushed[i] % len(self.samples)
                        chunk = self.samples[a:a + piece]
                        s.push_audio(chunk, rate)
                        pushed[i] += len(chunk)

            try:
                for _ in range(2):              # warm-up (the first window of a session may commit nothing)
                    top_up()
                    eng.step()
                    for s in sess:
                        s.take_frames()
                totals, delivered = [], 0
                for _ in range(steps):
                    top_up()
                    t = time.perf_counter()
                    eng.step()
                    totals.append(time.perf_counter() - t)
                    delivered += sum(len(s.take_frames()) for s in sess)
            finally:
                for s in sess:
                    s.close()
            step_ms = float(np.median(totals) * 1e3)
            per = delivered / (n * steps)
            audio_ms = per * 1000.0 / eng.fps
            ok = per > 0 and step_ms <= audio_ms
            best = n if ok else best
            rows.append(dict(sessions=n, step_ms=step_ms, frames_per_step=per, step_audio_ms=audio_ms, realtime=ok))
            self.log(f"  {n:5d}  {step_ms:7.1f}  {per:11.1f}  {audio_ms:8.0f}  {'yes' if ok else 'no'}")
            if not ok:
                break
        self.log(f"  sessions served in real time: {best}")
        return dict(rows=rows, max_realtime_sessions=best)

    def latency(self, png: str | Path | None = None) -> dict:
        import tempfile

        from .run import stream_file
        with tempfile.TemporaryDirectory() as tmp:
            res = asyncio.run(stream_file(self.engine, self.image, self.samples, Path(tmp) / "rt.mp4",
                                          realtime=True, trace=Path(tmp) / "trace.npz", emotion=self.emotion))
            tr = dict(np.load(Path(tmp) / "trace.npz"))
        lat = res.latency_ms
        out = dict(frames=res.frames, duplicated=res.duplicated, dropped=res.dropped,
                   latency_p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
                   latency_p95_ms=float(np.percentile(lat, 95)) if lat.size else None,
                   algorithmic_ms=res.algorithmic_ms, fps=res.frames / res.wall_s if res.wall_s else 0.0)
        self.log(f"\n[latency] real-time paced run of {res.audio_s:.1f} s: {res.frames} frames "
                 f"({out['fps']:.1f} fps), {res.duplicated} duplicated, {res.dropped} dropped; latency "
                 f"(audio arrived -> frame ready) p50 {_ms(out['latency_p50_ms'])} ms, "
                 f"p95 {_ms(out['latency_p95_ms'])} ms (algorithmic {res.algorithmic_ms:.0f} ms)")
        if png and res.frames:
            plot_latency(tr, png, title=f"{self.engine.name}: algorithmic latency {res.algorithmic_ms:.0f} ms")
            self.log(f"  plot: {png}")
        return out

    def tts(self, replies: int = 3, idle_s: float = 1.0) -> dict:
        """A live session idles on the wall clock; a whole TTS reply's PCM is pushed at once, ``replies``
        times, each after the previous one has played out."""
        eng = self.engine
        reply = self.samples
        spf = eng.live.samples_per_frame
        thr = voiced_threshold(reply, spf)
        loud = np.nonzero(frame_rms(reply, spf) > thr)[0]
        onset_ms = float(loud[0]) * 1000.0 / eng.fps if loud.size else None
        rows = asyncio.run(self._tts(reply, thr, replies, idle_s))
        shown = _median(r["shown_ms"] for r in rows)
        ready = _median(r["ready_ms"] for r in rows)
        out = dict(replies=len(rows), reply_s=len(reply) / eng.sampling_rate, voice_onset_ms=onset_ms,
                   first_voiced_shown_ms=shown, first_voiced_ready_ms=ready,
                   shown_after_onset_ms=None if shown is None or onset_ms is None else shown - onset_ms,
                   algorithmic_ms=self.algorithmic_ms, rows=rows)
        self.log(f"\n[tts] whole reply ({out['reply_s']:.1f} s, voiced from {_ms(onset_ms)} ms) pushed to an idle "
                 f"live session, median of {len(rows)}: push -> first voiced frame shown {_ms(shown)} ms, "
                 f"decoded {_ms(ready)} ms (algorithmic {out['algorithmic_ms']:.0f} ms)")
        return out

    async def _tts(self, reply: np.ndarray, thr: float, replies: int, idle_s: float) -> list[dict]:
        eng = self.engine
        cfg, clock = eng.stream_cfg, eng.clock
        s = eng.open_session(self.image, self.options(), live=True)
        shown: list[tuple[float, object]] = []

        async def consume():
            async for f in s.frames(realtime=True):
                shown.append((clock(), f))

        task = asyncio.create_task(consume())
        eng.start()
        rows = []
        # A reply plays out in its length plus the output delay; the wait for it is bounded far beyond that.
        delay = (self.algorithmic_ms + cfg.jitter_ms + cfg.output_delay_ms) / 1e3
        settle = len(reply) / eng.sampling_rate + delay + 0.5
        try:
            await asyncio.sleep(idle_s)
            for _ in range(replies):
                t0 = clock()
                mark = len(shown)
                at, end = s.push_audio(reply, eng.sampling_rate)
                lo, hi = at // s.spo, max(at, end - 1) // s.spo     # the frames that show the reply
                first = None
                # Until the reply's last frame is shown (or a later one, where the backlog bound skipped it
                # on a machine slower than real time; voiced frames skipped so leave no figure).
                while clock() < t0 + 10 * settle + 120 and not s.closed:
                    await asyncio.sleep(0.02)
                    new = [(t, f) for t, f in shown[mark:] if not f.duplicate]
                    if first is None:
                        first = next(((t, f) for t, f in new if lo <= f.index <= hi and len(f.audio)
                                      and float(np.sqrt(np.mean(np.square(f.audio, dtype=np.float64)))) > thr),
                                     None)
                    if any(f.index >= hi for _, f in new):
                        break
                rows.append(dict(shown_ms=None if first is None else (first[0] - t0) * 1e3,
                                 ready_ms=None if first is None else (first[1].ready - t0) * 1e3,
                                 reply_frame=None if first is None else int(first[1].index) - lo))
                await asyncio.sleep(idle_s / 2)
            if s.error:
                raise FloatRTError(f"tts: the session failed: {s.error}")
        finally:
            s.close()
            await task
            eng.stop()
        return rows

    # -------------------------------------------------------------- FLOAT's sections
    def _float(self):
        """FLOAT's offline features and reference for the deviation sections (computed once)."""
        if self._offline is None:
            from float_rt.pipeline import Reference
            eng = self.engine
            iv = eng.feature_extractor(self.samples, sampling_rate=eng.sampling_rate,
                                       return_tensors="np").input_values.astype(np.float32)
            iv = torch.from_numpy(iv).to(eng.device)
            self._offline = (eng.model.encode_audio(iv)[0].cpu().numpy(), Reference.encode(eng.model, self.image))
        return self._offline

    @property
    def _emo(self) -> str:
        return self.emotion or "neutral"

    def offline_motion(self, nfe: int = 10) -> np.ndarray:
        from float_rt.pipeline import sampling_with
        from float_rt.sampler import emotion_condition, sample_motion
        cfg, eng = self.engine.cfg, self.engine
        wa, ref = self._float()
        we = emotion_condition(self._emo, None, cfg.model.dim_e, eng.model.labels).to(eng.device)
        wa = torch.from_numpy(wa)[None].to(eng.device)
        sampling = sampling_with(cfg.sampling, nfe=nfe, emotion=self._emo)
        return sample_motion(eng.model.fmt, wa, ref.r_s, we, cfg.model, sampling)[0].cpu().numpy()

    def features(self, lefts=(500, 1000, 2000, 4000), lookaheads=(0, 80, 160, 320)) -> list[dict]:
        from float_rt.reference import relative_error as rel_err
        fps = self.engine.fps
        offline_wa, _ = self._float()
        rows = []
        self.log("\n[features] streamed vs offline audio features (relative error)")
        self.log("  left ms  " + "".join(f"  look {la:>4d} ms" for la in lookaheads))
        for left in lefts:
            errs = []
            for la in lookaheads:
                frames, _ = run_session(self.engine, self.image, self.samples, render=False, emotion=self._emo,
                                        left_frames=round(left * fps / 1000), lookahead_frames=round(la * fps / 1000))
                got = np.stack([f.features for f in frames])
                errs.append(rel_err(got, offline_wa[:len(got)]))
                rows.append(dict(left_ms=left, lookahead_ms=la, feature_rel_err=errs[-1]))
            self.log(f"  {left:7d}  " + "".join(f"  {e:12.4f}" for e in errs))
        return rows

    def nfe(self, values=(2, 3, 4, 6, 10)) -> list[dict]:
        from float_rt.reference import relative_error as rel_err
        rows = []
        ref10, _ = run_session(self.engine, self.image, self.samples, render=False, emotion=self._emo, nfe=10)
        m10 = np.stack([f.motion for f in ref10])
        self.log("\n[nfe] default chunk/lookahead; motion error vs the same stream at the official nfe=10")
        self.log("  nfe  evals  motion rel.err  sampler ms/step")
        for n in values:
            frames, times = run_session(self.engine, self.image, self.samples, render=False, emotion=self._emo, nfe=n)
            err = rel_err(np.stack([f.motion for f in frames]), m10)
            ms = float(np.mean([t.sample for t in times]) * 1e3)
            rows.append(dict(nfe=n, evaluations=n - 1, motion_rel_err=err, sample_ms=ms))
            self.log(f"  {n:3d}  {n - 1:5d}  {err:14.4f}  {ms:15.1f}")
        return rows

    def offline(self) -> dict:
        """Default streaming settings against the offline official result on the same audio."""
        from float_rt.media import frames_to_uint8
        from float_rt.reference import relative_error as rel_err
        off = self.offline_motion(10)
        _, ref = self._float()
        frames, _ = run_session(self.engine, self.image, self.samples, emotion=self._emo)
        mot = np.stack([f.motion for f in frames])
        # Offline frames for the same indices, rendered in batches.
        dec = self.engine.model.motion
        ps = []
        for a in range(0, len(frames), 8):
            x = torch.from_numpy(off[a:a + 8]).to(self.engine.device)
            imgs = frames_to_uint8(dec.decode(ref.s_r, x, ref.feats))
            ps += [psnr(f.image, im) for f, im in zip(frames[a:a + 8], imgs)]
        res = dict(motion_rel_err=rel_err(mot, off), frame_psnr_db=float(np.mean(ps)),
                   frame_psnr_min_db=float(np.min(ps)))
        self.log(f"\n[offline] defaults vs offline (nfe 10, whole clip): motion rel.err {res['motion_rel_err']:.4f}, "
                 f"frame PSNR mean {res['frame_psnr_db']:.1f} dB (min {res['frame_psnr_min_db']:.1f})")
        return res

    def configs(self, chunks=(5, 10, 25), lookahead_ms=160) -> list[dict]:
        fps = self.engine.fps
        la = round(lookahead_ms * fps / 1000)
        rows = []
        self.log("\n[configs] per engine step (one session); RTF = compute / audio duration")
        self.log("  chunk  look  alg.lat ms  audio ms  emo ms  sample ms  decode ms  total ms   RTF")
        for c in chunks:
            opts = dict(chunk_frames=c, lookahead_frames=la, emotion=None)
            _, times = run_session(self.engine, self.image, self.samples, **opts)
            times = times[1:] or times  # first step includes warm-up
            chunk_s = c / fps
            r = {k: float(np.mean([getattr(t, k) for t in times]) * 1e3) for k in STAGES}
            total = sum(r.values())
            alg = self.engine.live.algorithmic_latency_ms(self.engine.default_options(**opts))
            row = dict(chunk_frames=c, lookahead_frames=la, algorithmic_latency_ms=alg,
                       **{f"{k}_ms": v for k, v in r.items()}, total_ms=total,
                       **{f"rtf_{k}": v / 1e3 / chunk_s for k, v in r.items()}, rtf=total / 1e3 / chunk_s)
            rows.append(row)
            self.log(f"  {c:5d}  {la:4d}  {alg:10.0f}  {r['audio']:8.1f}  {r['emotion']:6.1f}"
                     f"  {r['sample']:9.1f}  {r['decode']:9.1f}  {total:8.1f}  {row['rtf']:.3f}")
        return rows


def plot_latency(trace: dict, png: str | Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keep = ~trace["duplicate"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(trace["ready"][keep], (trace["ready"][keep] - trace["arrived"][keep]) * 1e3, ".", ms=4)
    ax.set_xlabel("session time (s)")
    ax.set_ylabel("audio arrived -> frame ready (ms)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def run(bench: StreamBench, sections, png, replies: int = 3, session_counts=(1, 2, 3, 4, 6, 8, 16),
        session_steps: int = 6) -> dict:
    out = {}
    for name in sections:
        if name == "latency":
            out[name] = bench.latency(png)
        elif name == "tts":
            out[name] = bench.tts(replies)
        elif name == "sessions":
            out[name] = bench.sessions(session_counts, session_steps)
        else:
            out[name] = getattr(bench, name)()
    return out
