"""Memory that a CPU evaluation frees stays with the process, so the next pass reuses it instead of faulting it in.

glibc's ``malloc`` serves every block over 32 MB with a fresh ``mmap`` and gives it back with
``munmap`` when it is freed, and trims the top of its heap as soon as it is free. A model pass on a
CPU allocates such blocks for every activation of a large batch (a DeiT-Tiny pass of 160 images at
224 px: 97 MB per MLP activation), so every pass of an attack page-faults its memory in again and the
kernel zeroes it: measured with SPSA's passes on 2 cores, 12 of 34 seconds were system time (11.9
million page faults), and the passes ran 20 % slower than with the memory kept
(``benchmarks/bench_imagenet_scale.py`` prints SPSA against its ideal).

:func:`keep_freed_memory` tells glibc to serve large blocks from its heap and never trim it
(``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, 2³¹ − 1)``): freed blocks are reused by the
next pass, as a caching allocator does, and the process keeps its peak memory until it exits, which
is what a run that sizes its passes to the free memory expects anyway. The CLI calls it for its own
process (and its forked workers inherit it); a library user may call it, or leave glibc's policy as
it is. ``ELLROBUST_MALLOC=system`` keeps glibc's defaults in the CLI. Other C libraries (musl, macOS)
are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: Set to ``system`` to keep the C library's own allocation policy in the CLI's process.
ENV = "ELLROBUST_MALLOC"

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Keep freed heap memory for reuse (glibc only); True if the policy was applied."""
    if os.environ.get(ENV, "").strip().lower() == "system":
        return False
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    libc = ctypes.CDLL(path)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
