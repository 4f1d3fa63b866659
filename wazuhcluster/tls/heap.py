"""Keeping the memory of freed MiB-size buffers in the heap (glibc only).

A cluster link moves messages of 1-5 MiB; each one passes through a few buffers of its size
(TLS records read back from OpenSSL, the socket's write buffer, the reassembled payload). With
glibc's default settings a buffer that size is mapped fresh from the kernel and unmapped when
freed (or the top of the heap is trimmed back to the kernel), so every message pays a page
fault and the kernel's zeroing for each 4 KiB it touches: on the TLS link, without Fernet, that
was about a third of the CPU time per MiB (bench/link.py, docs/performance.md).

:func:`keep_freed_buffers` raises glibc's two thresholds so that such buffers come from the heap
and their memory is reused by the next message: ``M_MMAP_THRESHOLD`` (allocations above it are
mapped separately) and ``M_TRIM_THRESHOLD`` (free memory at the top of the heap above it is
given back). The cost is bounded: at most ``trim_threshold`` bytes of freed memory stay
resident. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import platform

#: mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Allocations up to this size come from the heap (a divided frame is 5 MiB).
MMAP_THRESHOLD = 8 * 1024 * 1024
#: Free memory kept at the top of the heap.
TRIM_THRESHOLD = 32 * 1024 * 1024

_applied: tuple[int, int] | None = None


def keep_freed_buffers(mmap_threshold: int = MMAP_THRESHOLD,
                       trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's thresholds for this process; True if they were set (or already were)."""
    global _applied
    if _applied == (mmap_threshold, trim_threshold):
        return True
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1:
        return False
    if mallopt(M_TRIM_THRESHOLD, trim_threshold) != 1:
        return False
    _applied = (mmap_threshold, trim_threshold)
    return True


def applied() -> tuple[int, int] | None:
    """The thresholds set by :func:`keep_freed_buffers` in this process, if any."""
    return _applied
