"""Whole frames side by side: k threads, each running one frame at a time on one intra-op thread.

Rendering a frame on two intra-op threads makes every operation split its work and meet at a
barrier; frames are independent, so two threads can instead each render their own frame start
to finish with no barrier at all.  Measured on a 2-core AMD EPYC, FLOAT's decoder at 512 px:
127 ms a frame on two threads, 116 ms a frame with two frames side by side.  Large working
sets can lose (LivePortrait's renderer: 1.47 s against 1.70 s, the two frames fighting over
the cache), so the caller times both (``float_rt.kernels``) before it takes this path.

The intra-op thread count is per thread (OpenMP's, which torch reads back) except for torch's
default for threads not yet started, which ``torch.set_num_threads`` also sets: the workers
set theirs once when they start and the starting thread puts the default back right after.
Grad mode and autocast are per thread too: the workers run without gradients or autocast,
so callers only send work the fast CPU path would run (``float_rt.packed.fast_cpu``).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

import torch


class SideBySide:
    """``map(fn, items)`` over ``workers`` threads of one intra-op thread each, results in order."""

    def __init__(self, workers: int):
        if workers < 2:
            raise ValueError("side by side needs at least two workers")
        self.workers = workers
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()         # one map at a time: each uses every worker
        before = torch.get_num_threads()
        ready = [threading.Event() for _ in range(workers)]
        self._threads = [threading.Thread(target=self._work, args=(ev,), daemon=True,
                                          name=f"float-rt-side-by-side-{i}") for i, ev in enumerate(ready)]
        for t in self._threads:
            t.start()
        for ev in ready:
            ev.wait()
        torch.set_num_threads(before)         # the default for threads started later, and ours again

    def _work(self, ready: threading.Event) -> None:
        torch.get_num_threads()               # torch's per-thread set-up first: it would reset the count
        torch.set_num_threads(1)
        ready.set()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, item, slot, results, done = job
            try:
                with torch.no_grad():
                    results[slot] = (True, fn(item))
            except BaseException as exc:      # handed to the caller, which raises it
                results[slot] = (False, exc)
            done.release()

    def map(self, fn: Callable, items: Sequence) -> list:
        results: list = [None] * len(items)
        done = threading.Semaphore(0)
        with self._lock:
            for slot, item in enumerate(items):
                self._jobs.put((fn, item, slot, results, done))
            for _ in items:
                done.acquire()
        for ok, value in results:
            if not ok:
                raise value
        return [value for _, value in results]

    def _stop(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def close(self) -> None:
        self._stop()
        for t in self._threads:
            t.join()

    def __del__(self):
        try:
            self._stop()
        except Exception:                     # interpreter shutting down
            pass
