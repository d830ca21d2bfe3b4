"""Keeping freed memory for reuse: glibc's allocator returns every block of 128 KiB or more
to the kernel when it is freed, so each new tensor of that size is mapped afresh and
page-faulted in, page by page. Training loops allocate several ``batch × vocabulary``
tensors per step (megabytes each), and where page faults are expensive, as in virtual
machines, that costs more than the arithmetic: on this project's 2-core VM a serialized-IMM
step of the small LSTM spent two thirds of its time in fresh allocations.

:func:`reuse_freed_memory` raises glibc's thresholds (``mallopt``) so that blocks up to
32 MiB come from the heap and up to 1 GiB of freed heap is kept. The thresholds are the
whole process's, so only the programs that own their process call it (``imm-ray train lm``
and Tune's LM trials), never a library class; and only on Linux with glibc, whose manual
documents ``mallopt`` (:func:`imm_ray._compat.glibc_mallopt`). It is a no-op elsewhere
(macOS, musl, Windows), where the allocator keeps its defaults: the same results, slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from imm_ray import _compat

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``).
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024


@functools.cache
def reuse_freed_memory() -> bool:
    """Sets glibc's mmap and trim thresholds once per process; says if it could."""
    if not _compat.glibc_mallopt():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
