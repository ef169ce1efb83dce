"""``float-rt bench-stream``: what streaming costs and how far it lands from offline.

Sections (all on one engine, one audio file):
  features  streamed vs offline audio features per (left context, lookahead)
  nfe       motion error vs the official 10-point grid, and sampler time, per NFE
  offline   the default settings against the offline result: motion error, frame PSNR
  configs   per (chunk, lookahead): algorithmic latency, ms per stage per step, real-time factors
  sessions  concurrent sessions served in real time (batched steps)
  latency   a real-time paced run: latency of every frame over time (plotted to PNG)
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import torch

from float_rt.media import frames_to_uint8
from float_rt.pipeline import Reference, sampling_with
from float_rt.reference import relative_error as rel_err
from float_rt.sampler import emotion_condition, sample_motion

from .engine import Engine, StepTimes



def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def run_session(engine: Engine, image: torch.Tensor, samples: np.ndarray, chunk_ms: int = 20,
                **options) -> tuple[list, list[StepTimes]]:
    """Push audio in ``chunk_ms`` pieces, stepping whenever the engine can (as live, minus the clock)."""
    s = engine.open_session(image, engine.default_options(**options))
    n = engine.cfg.model.sampling_rate * chunk_ms // 1000
    frames, times = [], []

    def drain():
        while engine.step():
            times.append(engine.last_times)
            frames.extend(s.take_frames())

    for i in range(0, len(samples), n):
        s.push_audio(samples[i:i + n], engine.cfg.model.sampling_rate)
        drain()
    s.end_input()
    drain()
    s.close()
    return frames, times


class StreamBench:
    def __init__(self, engine: Engine, image: torch.Tensor, samples: np.ndarray, preprocessor, emotion: str,
                 log=print):
        self.engine, self.image, self.samples, self.log = engine, image, samples, log
        self.emotion = emotion
        m = engine.model
        iv = preprocessor(samples, sampling_rate=engine.cfg.model.sampling_rate,
                          return_tensors="np").input_values.astype(np.float32)
        self.iv = torch.from_numpy(iv).to(engine.device)
        self.offline_wa = m.encode_audio(self.iv)[0].cpu().numpy()
        self.ref = Reference.encode(m, image)
        self.chunk_s = engine.stream_cfg.chunk_frames / engine.cfg.model.fps

    def offline_motion(self, nfe: int = 10) -> np.ndarray:
        cfg = self.engine.cfg
        we = emotion_condition(self.emotion, None, cfg.model.dim_e, self.engine.model.labels).to(self.engine.device)
        wa = torch.from_numpy(self.offline_wa)[None].to(self.engine.device)
        sampling = sampling_with(cfg.sampling, nfe=nfe, emotion=self.emotion)
        return sample_motion(self.engine.model.fmt, wa, self.ref.r_s, we, cfg.model, sampling)[0].cpu().numpy()

    # -------------------------------------------------------------- sections
    def features(self, lefts=(500, 1000, 2000, 4000), lookaheads=(0, 80, 160, 320)) -> list[dict]:
        fps = self.engine.cfg.model.fps
        rows = []
        self.log("\n[features] streamed vs offline audio features (relative error)")
        self.log("  left ms  " + "".join(f"  look {la:>4d} ms" for la in lookaheads))
        for left in lefts:
            errs = []
            for la in lookaheads:
                frames, _ = run_session(self.engine, self.image, self.samples, render=False, emotion=self.emotion,
                                        left_frames=round(left * fps / 1000), lookahead_frames=round(la * fps / 1000))
                got = np.stack([f.features for f in frames])
                errs.append(rel_err(got, self.offline_wa[:len(got)]))
                rows.append(dict(left_ms=left, lookahead_ms=la, feature_rel_err=errs[-1]))
            self.log(f"  {left:7d}  " + "".join(f"  {e:12.4f}" for e in errs))
        return rows

    def nfe(self, values=(2, 3, 4, 6, 10)) -> list[dict]:
        rows = []
        ref10, _ = run_session(self.engine, self.image, self.samples, render=False, emotion=self.emotion, nfe=10)
        m10 = np.stack([f.motion for f in ref10])
        self.log("\n[nfe] default chunk/lookahead; motion error vs the same stream at the official nfe=10")
        self.log("  nfe  evals  motion rel.err  sampler ms/step")
        for n in values:
            frames, times = run_session(self.engine, self.image, self.samples, render=False, emotion=self.emotion, nfe=n)
            err = rel_err(np.stack([f.motion for f in frames]), m10)
            ms = float(np.mean([t.sample for t in times]) * 1e3)
            rows.append(dict(nfe=n, evaluations=n - 1, motion_rel_err=err, sample_ms=ms))
            self.log(f"  {n:3d}  {n - 1:5d}  {err:14.4f}  {ms:15.1f}")
        return rows

    def offline(self) -> dict:
        """Default streaming settings against the offline official result on the same audio."""
        off = self.offline_motion(10)
        frames, _ = run_session(self.engine, self.image, self.samples, emotion=self.emotion)
        mot = np.stack([f.motion for f in frames])
        # Offline frames for the same indices, rendered in batches.
        dec = self.engine.model.motion
        ps = []
        for a in range(0, len(frames), 8):
            x = torch.from_numpy(off[a:a + 8]).to(self.engine.device)
            imgs = frames_to_uint8(dec.decode(self.ref.s_r, x, self.ref.feats))
            ps += [psnr(f.image, im) for f, im in zip(frames[a:a + 8], imgs)]
        res = dict(motion_rel_err=rel_err(mot, off), frame_psnr_db=float(np.mean(ps)),
                   frame_psnr_min_db=float(np.min(ps)))
        self.log(f"\n[offline] defaults vs offline (nfe 10, whole clip): motion rel.err {res['motion_rel_err']:.4f}, "
                 f"frame PSNR mean {res['frame_psnr_db']:.1f} dB (min {res['frame_psnr_min_db']:.1f})")
        return res

    def configs(self, chunks=(5, 10, 25), lookahead_ms=160) -> list[dict]:
        fps = self.engine.cfg.model.fps
        la = round(lookahead_ms * fps / 1000)
        rows = []
        self.log("\n[configs] per engine step (one session); RTF = compute / audio duration")
        self.log("  chunk  look  alg.lat ms  audio ms  emo ms  sample ms  decode ms  total ms   RTF")
        for c in chunks:
            _, times = run_session(self.engine, self.image, self.samples, chunk_frames=c, lookahead_frames=la,
                                   emotion=None)
            times = times[1:] or times  # first step includes warm-up
            chunk_s = c / fps
            r = {k: float(np.mean([getattr(t, k) for t in times]) * 1e3) for k in ("audio", "emotion", "sample", "decode")}
            total = sum(r.values())
            row = dict(chunk_frames=c, lookahead_frames=la, algorithmic_latency_ms=(c + la) * 1000 / fps,
                       **{f"{k}_ms": v for k, v in r.items()}, total_ms=total,
                       **{f"rtf_{k}": v / 1e3 / chunk_s for k, v in r.items()}, rtf=total / 1e3 / chunk_s)
            rows.append(row)
            self.log(f"  {c:5d}  {la:4d}  {row['algorithmic_latency_ms']:10.0f}  {r['audio']:8.1f}  {r['emotion']:6.1f}"
                     f"  {r['sample']:9.1f}  {r['decode']:9.1f}  {total:8.1f}  {row['rtf']:.3f}")
        return rows

    def sessions(self, counts=(1, 2, 3, 4, 6, 8, 16), steps: int = 6) -> dict:
        """Steps of N sessions batched together; real time when a step fits in one chunk."""
        eng, sr = self.engine, self.engine.cfg.model.sampling_rate
        rows, best = [], 0
        self.log("\n[sessions] N sessions in one engine (batched FMT and decoder)")
        self.log("      N  step ms  chunk ms  real time")
        for n in counts:
            sess = [eng.open_session(self.image, eng.default_options(emotion=None)) for _ in range(n)]
            need = (steps + 2) * eng.stream_cfg.chunk_frames * eng.cfg.model.samples_per_frame * 2
            audio = np.resize(self.samples, need)
            for s in sess:
                s.push_audio(audio, sr)
            eng.step()
            for s in sess:
                s.take_frames()
            totals = []
            for _ in range(steps):
                t = time.perf_counter()
                eng.step()
                totals.append(time.perf_counter() - t)
                for s in sess:
                    s.take_frames()
            for s in sess:
                s.close()
            step_ms = float(np.median(totals) * 1e3)
            ok = step_ms / 1e3 <= self.chunk_s
            best = n if ok else best
            rows.append(dict(sessions=n, step_ms=step_ms, realtime=ok))
            self.log(f"  {n:5d}  {step_ms:7.1f}  {self.chunk_s * 1e3:8.0f}  {'yes' if ok else 'no'}")
            if not ok:
                break
        self.log(f"  sessions served in real time: {best}")
        return dict(rows=rows, max_realtime_sessions=best)

    def latency(self, png: str | Path | None) -> dict:
        import tempfile

        from .run import stream_file
        with tempfile.TemporaryDirectory() as tmp:
            res = asyncio.run(stream_file(self.engine, self.image, self.samples, Path(tmp) / "rt.mp4",
                                          realtime=True, trace=Path(tmp) / "trace.npz", emotion=None))
            tr = dict(np.load(Path(tmp) / "trace.npz"))
        lat = res.latency_ms
        out = dict(frames=res.frames, duplicated=res.duplicated, dropped=res.dropped,
                   latency_p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
                   latency_p95_ms=float(np.percentile(lat, 95)) if lat.size else None,
                   algorithmic_ms=res.algorithmic_ms, fps=res.frames / res.wall_s)
        self.log(f"\n[latency] real-time paced run of {res.audio_s:.1f} s: {res.frames} frames "
                 f"({out['fps']:.1f} fps), {res.duplicated} duplicated, {res.dropped} dropped; latency "
                 f"(audio arrived -> frame ready) p50 {out['latency_p50_ms']:.0f} ms, p95 {out['latency_p95_ms']:.0f} ms "
                 f"(algorithmic {res.algorithmic_ms:.0f} ms)")
        if png:
            plot_latency(tr, png, title=f"{self.engine.cfg.name}: chunk {self.engine.stream_cfg.chunk_frames}, "
                                        f"lookahead {self.engine.stream_cfg.lookahead_ms} ms")
            self.log(f"  plot: {png}")
        return out


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


def run(bench: StreamBench, sections, png) -> dict:
    out = {}
    for name in sections:
        out[name] = bench.latency(png) if name == "latency" else getattr(bench, name)()
    return out
