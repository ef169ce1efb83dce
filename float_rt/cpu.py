"""Process and thread settings that make CPU inference fast, and what the CPU offers.

- ``keep_heap``: glibc hands allocations above its mmap threshold (at most 32 MB by default)
  straight back to the kernel when they are freed, so every 512-px activation of the decoder
  (33 MB and more) costs fresh zeroed pages: about 100k page faults and a quarter of a second
  of system time per frame.  Raising the mmap and trim thresholds keeps that memory in the heap
  for the next frame (the process holds its peak working set instead of returning it).
- ``flush_denormal``: denormal floats (below 1e-38) are orders of magnitude slower on x86;
  treating them as zero changes nothing a picture can show.  It is a per-thread setting (new
  threads inherit it), so it is applied by each thread that runs the model.
- ``intra_op_threads``: torch's own default is one thread per core of the machine, blind to the
  CPU affinity and to a container's CPU quota; here the count is the cores this process may
  really use (``os.sched_getaffinity``, the cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``)
  minus a reserve the caller keeps for its other threads (the server's media), rounded up: a
  core only partly reserved still gets a thread.  Measured on a 2-core AMD EPYC at 512 px, with
  OMP_WAIT_POLICY=PASSIVE: with one core kept busy by another process, a second thread on it
  costs 1-7 % (decode 0.28-0.29 s against 0.27-0.28 s, the FMT the same), while dropping it when
  the core is free costs 1.55x (decode) and 1.9x (FMT).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 1 << 30


@functools.lru_cache(maxsize=1)
def keep_heap() -> bool:
    """Keep freed large allocations in the heap (glibc ``mallopt``); False where there is no glibc."""
    if platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(KEEP_BYTES)) == 1
        ok &= libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(KEEP_BYTES)) == 1
    except (OSError, AttributeError):
        return False
    if ok:
        log.info("glibc malloc: large allocations stay in the heap (mmap/trim threshold %d MB)", KEEP_BYTES >> 20)
    return ok


def flush_denormal() -> bool:
    """Denormals as zero in the calling thread (and the threads it starts)."""
    return torch.set_flush_denormal(True)


def _cgroup_dirs(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and each folder above it up to ``base`` (those that exist): a limit set on
    any of them applies.  In a container the process's own cgroup is often the mount itself."""
    dirs, d = [], base / rel.strip("/")
    while True:
        if d.is_dir():
            dirs.append(d)
        if d == base or base not in d.parents:
            break
        d = d.parent
    return dirs or ([base] if base.is_dir() else [])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup", self_cgroup: str | Path = "/proc/self/cgroup") -> float | None:
    """CPUs this process's cgroup may use (quota / period, the tightest on its path up), or None
    where no quota is set.  Reads cgroup v2 ``cpu.max`` and v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``; anything unreadable or malformed counts as no limit."""
    root = Path(root)
    lines = (_read(Path(self_cgroup)) or "").splitlines()
    limits: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, rel = parts
        if hierarchy == "0" and controllers == "":            # v2 (unified), or the hybrid layout's v2 part
            for base in (root, root / "unified"):
                for d in _cgroup_dirs(base, rel):
                    fields = (_read(d / "cpu.max") or "").split()
                    try:
                        if len(fields) == 2 and fields[0] != "max" and float(fields[1]) > 0:
                            limits.append(float(fields[0]) / float(fields[1]))
                    except ValueError:
                        continue
        elif "cpu" in controllers.split(","):                 # v1: mounted as cpu, or cpu,cpuacct
            for name in dict.fromkeys((controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu")):
                for d in _cgroup_dirs(root / name, rel):
                    try:
                        quota = int(_read(d / "cpu.cfs_quota_us") or "-1")
                        period = int(_read(d / "cpu.cfs_period_us") or "0")
                    except ValueError:
                        continue
                    if quota > 0 and period > 0:
                        limits.append(quota / period)
    return min(limits) if limits else None


def available_cpus(affinity: Iterable[int] | None = None, quota: float | None | bool = False) -> float:
    """The cores this process may use: its CPU affinity (``os.sched_getaffinity``), capped by its
    cgroup CPU quota (fractional with a fractional quota).  Pass either to use given values
    (tests; ``quota=None``: no quota)."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):               # not Linux
            affinity = range(os.cpu_count() or 1)
    cores = float(max(1, len(set(affinity))))
    if quota is False:
        quota = cgroup_cpu_limit()
    return min(cores, quota) if quota else cores


def intra_op_threads(reserve: float = 0.0, override: int | None = None, share: int = 1,
                     cpus: float | None = None) -> int:
    """Intra-op threads for one engine: ``override`` when given (> 0); else the available cores
    (``cpus``, default ``available_cpus()``) minus ``reserve`` (cores left to the caller's other
    threads), split between ``share`` engine processes, rounded up, at least 1."""
    if override:
        if override < 0:
            raise ValueError(f"threads must be >= 1, got {override}")
        return int(override)
    if reserve < 0 or share < 1:
        raise ValueError(f"reserve must be >= 0 and share >= 1, got {reserve}, {share}")
    cpus = available_cpus() if cpus is None else cpus
    return max(1, math.ceil((cpus - reserve) / share - 1e-9))


_threads_set: int | None = None     # what use_threads() chose in this process
_TORCH_DEFAULT = torch.get_num_threads()   # torch's own choice, before anyone set it


def use_threads(reserve: float = 0.0, override: int | None = None, share: int = 1) -> int:
    """Set torch's intra-op threads by ``intra_op_threads``; returns the count.  Entry points (the
    commands, the server) call it; ``tune()`` only fixes an oversubscribed default after that."""
    global _threads_set
    n = intra_op_threads(reserve, override, share)
    torch.set_num_threads(n)
    _threads_set = n
    log.info("torch intra-op threads: %d (%s)", n, "given" if override else
             f"{available_cpus():g} cores available, {reserve:g} reserved, {share} engine(s)")
    return n


def default_threads() -> int:
    """Where nobody chose (no ``use_threads``, no ``OMP_NUM_THREADS``, torch's count untouched),
    torch's default is lowered to the cores this process may use (a CPU quota or an affinity
    torch does not see); a count someone set stays."""
    if (_threads_set is None and "OMP_NUM_THREADS" not in os.environ
            and torch.get_num_threads() == _TORCH_DEFAULT > intra_op_threads()):
        torch.set_num_threads(intra_op_threads())
    return torch.get_num_threads()


def tune(keep: bool = True, flush: bool = True) -> dict:
    """Apply the settings; returns what is in effect (for benchmarks and logs)."""
    return {"keep_heap": keep and keep_heap(), "flush_denormal": flush and flush_denormal(),
            "threads": default_threads()}


@contextlib.contextmanager
def busy_core():
    """Another process keeps one core busy meanwhile (a server's media threads, a neighbour): what
    a benchmark measures under it is what a loaded machine gets."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def cpu_info() -> dict:
    """CPU model, threads and the instruction sets that decide fp32/bf16 speed."""
    flags, model = set(), platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model or platform.machine(), "threads": torch.get_num_threads(),
            "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags, "amx_tile": "amx_tile" in flags,
            "onednn": torch.backends.mkldnn.is_available(), "torch": torch.__version__}
