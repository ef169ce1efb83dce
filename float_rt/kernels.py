"""Which of several equivalent kernels runs: timed once per machine, the faster one kept.

Some stages can be computed two or more ways with the same result (to float rounding): linear
layers on oneDNN-packed weights or on ``F.linear``; the decoder as its modules, fused, or fused
on channels-last tensors.  Which is faster depends on the CPU (MKL is fast on Intel, slow on
some AMD parts), on torch's version and on the shapes, so the first time a shape is run here
each candidate is timed and the fastest is remembered in a small JSON file
(``kernels.json`` in the user cache folder, ``$FLOAT_RT_CACHE`` or ``$XDG_CACHE_HOME/float-rt``;
``$FLOAT_RT_KERNEL_CACHE`` names another file, or ``off`` for none), keyed by the CPU model,
torch's version and thread count, and the operation and shape.  Later loads read the choice
back without timing.  A config switch forces a path instead (tests run each one).

Everything here is plain logic over an injectable timer and cache path; the file is the only
I/O.  A cache file that cannot be read or parsed is ignored with a warning (timed again and
rewritten); one that cannot be written leaves the choice in memory for this process.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .resources import cache_dir

log = logging.getLogger(__name__)

CACHE_ENV = "FLOAT_RT_KERNEL_CACHE"
CACHE_VERSION = 4      # raised when a path's code changes: choices timed on the old code are timed again
AUTO = "auto"

Runners = Mapping[str, Callable[[], object]]
Timer = Callable[[Runners], Mapping[str, float]]


def default_cache_path() -> Path | None:
    """``$FLOAT_RT_KERNEL_CACHE`` (``off`` or empty: no file), else ``kernels.json`` in the cache folder."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "none") else Path(env).expanduser()
    return cache_dir() / "kernels.json"


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    from .cpu import cpu_info
    return cpu_info()["cpu"]


def machine_key() -> str:
    """What a measured choice holds for: the CPU model, torch's version and its thread count."""
    return f"{_cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def measure(runners: Runners, rounds: int | None = None, min_sample_s: float = 5e-3,
            max_calls: int = 200) -> dict[str, float]:
    """Seconds per call of each runner: one warm-up call each, then interleaved rounds (A B A B
    ...: a neighbour's load falls on every candidate alike), each sample long enough to time
    (calls repeated up to ``min_sample_s``); the least of the rounds, the time an undisturbed
    round takes.  Rounds: 5 for short calls (a busy machine's time slices are milliseconds), 3
    for calls over 50 ms."""
    calls, slowest = {}, 0.0
    for name, fn in runners.items():
        t = time.perf_counter()
        fn()
        once = time.perf_counter() - t
        slowest = max(slowest, once)
        calls[name] = max(1, min(max_calls, math.ceil(min_sample_s / max(once, 1e-7))))
    rounds = rounds or (3 if slowest > 0.05 else 5)
    best = {name: math.inf for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            t = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t) / calls[name])
    return best


@dataclass
class Decision:
    choice: str
    source: str                              # measured | cache | forced | only
    seconds: dict[str, float] | None = None  # per candidate, when measured (now or when cached)

    def describe(self) -> str:
        if not self.seconds:
            return f"{self.choice} ({self.source})"
        times = ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in self.seconds.items())
        return f"{self.choice} ({self.source}: {times})"


class KernelChooser:
    """Chooses among named candidates by timing them once; the choices persist in ``path``."""

    def __init__(self, path: Path | None = None, machine: str | Callable[[], str] = machine_key,
                 timer: Timer = measure):
        self.path, self.machine, self.timer = path, machine, timer
        self.decisions: dict[str, Decision] = {}     # made or read in this process, by "op shape"
        self._known: dict[tuple[str, str], Decision] = {}   # (machine, "op shape") -> measured or cached
        self._lock = threading.RLock()

    def _machine(self) -> str:
        return self.machine() if callable(self.machine) else self.machine

    def choose(self, op: str, shape: str, candidates: Sequence[str], runners: Callable[[], Runners],
               force: str = AUTO) -> str:
        """The candidate to run for ``op`` at ``shape``: ``force`` if it names one; else the cached
        choice for this machine; else each is timed (``runners()`` builds the calls, only then)
        and the fastest is kept.  A single candidate is taken as it is."""
        key = f"{op} {shape}"
        if force != AUTO:
            if force not in candidates:
                raise ValueError(f"{op}: no path {force!r}; one of {', '.join((AUTO, *candidates))}")
            return self._record(key, Decision(force, "forced"))
        if len(candidates) == 1:
            return self._record(key, Decision(candidates[0], "only"))
        with self._lock:
            machine = self._machine()
            mem = self._known.get((machine, key))
            if mem is not None and mem.choice in candidates and set(mem.seconds or candidates) >= set(candidates):
                return self._record(key, mem)
            entry = self._read().get(machine, {}).get(key)
            if isinstance(entry, dict) and entry.get("choice") in candidates \
                    and set(candidates) <= set(entry.get("seconds") or candidates):
                seconds = entry.get("seconds") if isinstance(entry.get("seconds"), dict) else None
                return self._record(key, Decision(entry["choice"], "cache", seconds), machine)
            fns = runners()
            seconds = {name: float(s) for name, s in self.timer({n: fns[n] for n in candidates}).items()}
            choice = min(seconds, key=seconds.get)
            log.info("kernel %s: %s", key, Decision(choice, "measured", seconds).describe())
            self._write(machine, key, {"choice": choice, "seconds": seconds})
            return self._record(key, Decision(choice, "measured", seconds), machine)

    def _record(self, key: str, decision: Decision, machine: str | None = None) -> str:
        self.decisions[key] = decision
        if machine is not None:
            self._known[(machine, key)] = decision
        return decision.choice

    def _read(self, quiet: bool = False) -> dict:
        """The cache's machines -> {key: entry}; an unreadable or malformed file counts as empty."""
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("version") != CACHE_VERSION \
                    or not isinstance(data.get("machines"), dict):
                raise ValueError("not a kernel cache of this version")
            return data["machines"]
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            if not quiet:
                log.warning("ignoring the kernel cache %s (%s): kernels are timed again", self.path, exc)
            return {}

    def _write(self, machine: str, key: str, entry: dict) -> None:
        if self.path is None:
            return
        machines = self._read(quiet=True)      # merged with what other processes wrote meanwhile
        machines.setdefault(machine, {})[key] = entry
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "machines": machines}, indent=1))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot write the kernel cache %s (%s): the choice holds for this process only",
                        self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


_choosers: dict[Path | None, KernelChooser] = {}
_choosers_lock = threading.Lock()


def chooser(path: Path | None | bool = False) -> KernelChooser:
    """The process's chooser for ``path`` (default: ``default_cache_path()``), shared by every
    model loaded here so that a shape is timed once."""
    path = default_cache_path() if path is False else path
    with _choosers_lock:
        if path not in _choosers:
            _choosers[path] = KernelChooser(path)
        return _choosers[path]


def chosen_paths() -> dict[str, dict]:
    """Every choice made or read in this process: "op shape" -> {choice, source, seconds}."""
    out = {}
    for c in list(_choosers.values()):
        out.update({k: asdict(d) for k, d in c.decisions.items()})
    return dict(sorted(out.items()))


def check_mode(name: str, value, paths: Sequence[str] = ()) -> str | bool:
    """A config switch: ``auto``, true/false, or (where given) one of ``paths``."""
    if isinstance(value, bool) or value == AUTO or value in paths:
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "auto"):
        return {"true": True, "false": False, "auto": AUTO}[value.lower()]
    raise ValueError(f"{name} must be auto, true or false{''.join(', ' + p for p in paths)}; got {value!r}")
