"""Give the heap back to the system once the last transfer ends.

    trim = heap_trimmer()        # glibc's malloc_trim(0), or None off glibc
    if trim is not None:
        trim()                   # True when memory was released

A transfer in 4 MiB chunks leaves tens of MiB of freed buffers inside glibc's heaps
(its mmap threshold rises to the chunk size, so later chunks come from the heap, and
the small objects allocated between them keep the heap's top from shrinking).
`MALLOC_TRIM_THRESHOLD_` does not return it; `malloc_trim(0)`, which also releases free
pages in the middle of the heap, does, in the main heap. gRPC's threads allocate in
arenas of their own unless `MALLOC_ARENA_MAX=1` (PERF_ENV, the image's environment),
and those kept 18-26 MiB after a trim (docs/benchmarks.md, "Memory per peer"). The
servicer calls it when its stream count drops to zero: a busy server, with streams
always in flight, never pays for it.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

__all__ = ["heap_trimmer"]

logger = logging.getLogger(__name__)


def heap_trimmer(libc_name: str | None = "libc.so.6") -> Callable[[], bool] | None:
    """glibc's `malloc_trim(0)` as a function, or None where there is none (musl,
    macOS, Windows): there, freed memory stays with the process as before."""
    if libc_name is None:
        return None
    try:
        libc = ctypes.CDLL(libc_name)
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):
        logger.debug("no malloc_trim in %s: the heap is not trimmed", libc_name)
        return None
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int

    def trim() -> bool:
        return bool(malloc_trim(0))

    return trim
