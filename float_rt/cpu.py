"""Process and thread settings that make CPU inference fast, and what the CPU offers.

- ``keep_heap``: glibc hands allocations above its mmap threshold (at most 32 MB by default)
  straight back to the kernel when they are freed, so every 512-px activation of the decoder
  (33 MB and more) costs fresh zeroed pages: about 100k page faults and a quarter of a second
  of system time per frame.  Raising the mmap and trim thresholds keeps that memory in the heap
  for the next frame (the process holds its peak working set instead of returning it).
- ``flush_denormal``: denormal floats (below 1e-38) are orders of magnitude slower on x86;
  treating them as zero changes nothing a picture can show.  It is a per-thread setting (new
  threads inherit it), so it is applied by each thread that runs the model.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import platform
import subprocess
import sys
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


def tune(keep: bool = True, flush: bool = True) -> dict:
    """Apply the settings; returns what is in effect (for benchmarks and logs)."""
    return {"keep_heap": keep and keep_heap(), "flush_denormal": flush and flush_denormal()}


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
