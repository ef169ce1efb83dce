"""Small C kernels compiled on this machine, for the memory-bound passes PyTorch runs as many ops.

Some steps of the fast paths are a handful of multiply-adds per value over tensors of tens of
megabytes (the Winograd transforms of ``float_rt.winograd``): as PyTorch ops each term is a pass over
memory, while one loop that keeps a tile in cache reads and writes each value once.  The C source
is generated in Python (``float_rt.winograd_c``), compiled here once with the system C compiler
(``$CC``, else ``cc``/``gcc``; ``-O3 -march=native -fopenmp``) into the user cache folder, keyed by
the source, the flags, the compiler and the CPU, and loaded with ctypes.  Its OpenMP is the one
PyTorch already loaded (same ``libgomp.so.1``), so it uses the same threads and wait policy.

Without a compiler, or when the build fails, ``load`` returns None once and for all (one log line)
and callers keep their PyTorch path; ``without_native()`` turns the kernels off in a thread (tests
compare both), ``FLOAT_RT_NATIVE=0`` in the whole process.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .packed import switched_off

log = logging.getLogger(__name__)
T = TypeVar("T")

FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=c99", "-shared", "-fPIC")
LIBS = ("-lm",)
_state = threading.local()
_loaded: dict[str, ctypes.CDLL | None] = {}
_wrapped: dict[str, object] = {}
_lock = threading.Lock()


def without_native():
    """Within it (in this thread) ``enabled()`` is False: callers run their PyTorch path."""
    return switched_off(_state)


def enabled() -> bool:
    return not getattr(_state, "off", False) and os.environ.get("FLOAT_RT_NATIVE", "1") != "0"


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_key() -> str:
    """The CPU's model and flags (-march=native: a library built for one CPU may not run on another)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    picked = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    return "|".join(picked) or platform.machine()


def load(name: str, source: str) -> ctypes.CDLL | None:
    """The library compiled from ``source`` (cached), or None where it cannot be built."""
    with _lock:
        if name in _loaded:
            return _loaded[name]
        lib = None
        try:
            lib = _build(name, source)
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            log.warning("native kernels %s unavailable (%s); the PyTorch path runs instead", name,
                        str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__)
        _loaded[name] = lib
        return lib


def kernel(name: str, source: Callable[[], str], wrap: Callable[[ctypes.CDLL], T]) -> T | None:
    """``wrap(library)`` for the library ``name`` built from ``source()`` (generated only when first
    needed), kept for the process; None where native kernels are off or it cannot be built."""
    if not enabled():
        return None
    if name not in _wrapped:
        lib = load(name, source())
        _wrapped[name] = None if lib is None else wrap(lib)
    return _wrapped[name]


def _build(name: str, source: str) -> ctypes.CDLL:
    from .resources import cache_dir
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (install gcc, or set CC)")
    digest = hashlib.sha256("\n".join([source, " ".join(FLAGS + LIBS), _compiler_version(cc), _cpu_key()]).encode())
    folder = cache_dir() / "native"
    path = folder / f"{name}-{digest.hexdigest()[:16]}.so"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            src, out = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
            src.write_text(source)
            done = subprocess.run([cc, *FLAGS, "-o", str(out), str(src), *LIBS], capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"{cc} failed: {done.stderr.strip() or done.stdout.strip()}")
            os.replace(out, path)   # atomic: concurrent builders leave one complete file
        log.info("native kernels %s built: %s", name, path)
    return ctypes.CDLL(str(path))
