"""Process memory on CPU: the allocator, handing free memory back, and each window's own peak.

Why tunebench starts itself under jemalloc: a training step allocates and frees activations of a
few sizes, layer after layer, and glibc's malloc leaves the freed ones as holes its heap cannot
hand back; on the demo's settings the process grew to twice what it held live (18 steps of the
demo's batches from one trimmed start: 5.5 GB peak under glibc, 3.9 GB under jemalloc, and
jemalloc 7% faster; README: Memory). Decay is off (`dirty_decay_ms:-1`): freed pages stay
mapped for the next step, as glibc's do, instead of being faulted in again, and tunebench hands
them back itself where one piece of work ends (`release_free_memory`).

The CLI re-executes itself once at start with jemalloc preloaded when the system has it (Debian
and Ubuntu: `libjemalloc2`, which `make install` installs where it can); `TUNEBENCH_ALLOCATOR=system`
keeps the system's malloc. run.json's environment records which one ran.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
import resource
import sys
import weakref
from pathlib import Path

ENV = "TUNEBENCH_ALLOCATOR"
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/local/lib", "/usr/lib")


def find_jemalloc() -> str | None:
    for d in _LIB_DIRS:
        p = Path(d) / "libjemalloc.so.2"
        if p.is_file():
            return str(p)
    return None


def start_under_jemalloc() -> None:
    """Replace this process by the same command with jemalloc preloaded (Linux, once; a no-op when
    jemalloc is missing, already loaded, or TUNEBENCH_ALLOCATOR says otherwise)."""
    if not sys.platform.startswith("linux") or os.environ.get(ENV) or _mallctl() is not None:
        return
    lib = find_jemalloc()
    if lib is None:
        return
    env = dict(os.environ)
    env[ENV] = "jemalloc"
    env["LD_PRELOAD"] = " ".join(filter(None, [lib, env.get("LD_PRELOAD", "")]))
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:  # cannot re-execute (unusual launcher): carry on with the system's malloc
        return


def allocator() -> str:
    return "jemalloc" if _mallctl() is not None else "system"


@functools.cache
def _mallctl():
    try:
        return ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return None


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda pad: 0


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the OS: jemalloc's purge of every arena, glibc's
    malloc_trim. The next allocations fault their pages in again, so this belongs where one piece
    of work ends or before the step that sets a new peak, not in every step. No garbage
    collection here: training calls this between steps, where tensors are already freed by
    reference counting."""
    mallctl = _mallctl()
    if mallctl is not None:
        mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0))  # 4096: MALLCTL_ARENAS_ALL
    else:
        _malloc_trim()(0)


def rss_mb() -> float | None:
    """This process's resident memory now (Linux), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _vm_hwm_kb() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


class PeakMemory:
    """A window of work (a stage, one benchmark task) whose own peak memory is wanted.

    Opening it hands free memory back and resets the peak counters: on Linux the kernel's peak
    RSS (VmHWM, through /proc/self/clear_refs, Linux >= 4.0), on CUDA PyTorch's allocator peak.
    Elsewhere the figure falls back to the process's peak so far and is named so
    (`process_peak_rss_mb`). Windows nest (a bench stage and its tasks): a window opened inside
    another carries the outer one's peak so far before it resets the counter.
    """

    _open: "weakref.WeakSet[PeakMemory]" = weakref.WeakSet()

    def __init__(self, scope: str = "task"):
        import torch

        self.scope = scope
        self.rss_reset = False
        self.carried = 0
        import gc

        gc.collect()  # what the last piece of work left in reference cycles, before its pages go back
        release_free_memory()
        hwm = _vm_hwm_kb()
        if hwm is not None:
            for w in PeakMemory._open:
                w.carried = max(w.carried, hwm)
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                    f.write("5")
                self.rss_reset = True
            except OSError:
                pass
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        PeakMemory._open.add(self)

    def close(self) -> None:
        PeakMemory._open.discard(self)

    def figures(self) -> dict:
        import torch

        out: dict = {}
        hwm = _vm_hwm_kb() if self.rss_reset else None
        if hwm is not None:
            out["peak_rss_mb"] = round(max(hwm, self.carried) / 1024, 1)
            note = f"this {self.scope}'s own peak RSS (Linux VmHWM, reset through /proc/self/clear_refs when it started)"
        else:
            out["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            note = ("the process's peak RSS so far (getrusage), not this " + self.scope + "'s own: this system cannot "
                    "reset the kernel's peak RSS counter")
        # CUDA initialised before the window was reset when it opened; initialised inside it, it has
        # held nothing from before: either way the allocator's peak is the window's own
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            note += f"; peak_gpu_memory_mb: this {self.scope}'s own (PyTorch's allocator, reset when it started)"
        out["peak_memory_scope"] = note
        out["allocator"] = allocator()
        return out
