"""Host memory of a predictor process: what it frees is kept for reuse.

A decoding job builds its key/value cache afresh: hundreds of MB on the
CPU, in arrays of tens of MB each. glibc serves blocks that large with mmap
and hands each one back to the kernel when it is freed, so every job paid
the page faults again on memory the job before had just released; on a
virtual machine that backs guest memory lazily a first touch costs about
14 us per 4 kB page (docs/benchmarks.md, "Generation on the CPU: freed
memory kept"). Large blocks come from the heap instead, and the heap is not
trimmed: the process's peak stays about the same, only the return of memory
to the kernel before the process ends is given up.
"""
from __future__ import annotations

import ctypes
import platform

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes (an int)


def keep_freed_memory() -> bool:
    """Whether the policy is now in force (glibc only; elsewhere nothing changes)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
