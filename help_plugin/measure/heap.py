"""A steady allocator for timing: glibc's malloc thresholds fixed once per process.

Allocator state is part of what a timing measures. With glibc's default ``malloc``, large tensors
are mmap-ed and their pages handed back to the kernel when freed, and the threshold for that moves
with the process's history, so the same network timed at different moments of one process runs
with or without a page fault per activation: on a 2-vCPU VM, FBNet's reference networks timed
0.88-0.92x as long in a process's later timing sessions as in its first, NAS-Bench-201 at batch 16
0.84-0.88x (``benchmarks/timing_drift_checks.py``). :func:`set_steady_heap` fixes glibc's thresholds
once per process, so every session times the steady state (the minor page faults per session drop
from ~10^5-10^6 to ~0).
"""
from __future__ import annotations

import logging
import platform

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h) and the values set_steady_heap sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD_BYTES, _MMAP_THRESHOLD_BYTES = 1 << 30, 32 << 20  # 32 MiB: glibc's maximum mmap threshold
_steady_heap_state: bool | None = None


def glibc() -> bool:
    """Whether this process runs on glibc (where :func:`set_steady_heap` has an effect)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def set_steady_heap() -> bool:
    """Make glibc keep freed memory for reuse (trim threshold 1 GiB, mmap threshold 32 MiB), once per process.

    Afterwards tensors up to 32 MiB come from the heap and freed memory is not returned to the
    kernel, so forwards stop page-faulting and timings no longer depend on what the process did
    before. Process-wide and irreversible (the memory the process holds may stay higher); returns
    False, changing nothing, where the C library is not glibc (macOS, Windows, musl).
    """
    global _steady_heap_state
    if _steady_heap_state is None:
        _steady_heap_state = False
        if glibc():
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            _steady_heap_state = bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
                                      and libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
            log.info("glibc malloc: trim threshold %d B, mmap threshold %d B (%s)", _TRIM_THRESHOLD_BYTES,
                     _MMAP_THRESHOLD_BYTES, "set" if _steady_heap_state else "mallopt refused")
    return _steady_heap_state
