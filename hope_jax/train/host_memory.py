"""Host memory around compilation: compile the step first, then hand the compiler's freed heap
back to the operating system before the step allocates its buffers.

Compiling a large step (small Hope at B 16 × T 512: about 1.9 GB of process memory) leaves glibc's
heap holding memory the compiler has already freed; the step's own buffers (XLA's temporaries,
one large allocation) then come on top of it, so the process peaks at their sum. Compiling ahead
of time (`jit(...).lower(...).compile()`) and calling `malloc_trim(0)` between compilation and
the first execution lowers the peak by that retained heap: 5.81 → 5.19 GB for that step
(docs/training.md, "Host memory").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from typing import Any


def release_freed_host_memory() -> bool:
    """Returns freed heap pages to the OS (glibc `malloc_trim(0)`); False where there is no glibc
    (macOS, musl), where this is a no-op."""
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def compile_ahead(jitted: Callable, *args: Any) -> Callable:
    """The compiled executable of `jitted` for `args` (same donation and shardings), with the
    compiler's freed memory released before it first runs. Call it with arguments of the same
    shapes, dtypes and shardings."""
    compiled = jitted.lower(*args).compile()
    release_freed_host_memory()
    return compiled


__all__ = ["compile_ahead", "release_freed_host_memory"]
