"""Give the heap back to the system once the last transfer ends.

    trim = heap_trimmer()        # glibc's malloc_trim(0), or None off glibc
    if trim is not None:
        trim()                   # True when memory was released

A transfer in 4 MiB chunks leaves tens of MiB of freed buffers inside glibc's heaps
(its mmap threshold rises to the chunk size, so later chunks come from the heap, and
the small objects allocated between them keep the heap's top from shrinking).
`MALLOC_TRIM_THRESHOLD_` does not return it; `malloc_trim(0)`, which also releases free
pages in the middle of the heap, does, in the main heap. The servicer calls it when its
stream count drops to zero: a busy server, with streams always in flight, never pays
for it. gRPC's threads would allocate in arenas of their own, which kept 18-26 MiB after
a trim (docs/benchmarks.md, "Memory per peer"): `few_arenas()`, called by
`transfer.main` before any thread starts, caps them at TRANSFER_ARENAS. It is the
transfer's alone: in the directory one arena cost search latency, and there is no
transfer buffer to return there.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable, Mapping

__all__ = ["TRANSFER_ARENAS", "few_arenas", "heap_trimmer"]

_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
TRANSFER_ARENAS = 2
"""The main heap and one arena for gRPC's threads: with 1, the idle trim returned every
page but transfers ran 0.945-0.952x as fast as with glibc's default; with 2, 1.01x, and
1.09x idle a minute after 1 GiB (docs/benchmarks.md, "Memory per peer")."""

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


def few_arenas(
    libc_name: str | None = "libc.so.6", environ: Mapping[str, str] = os.environ
) -> bool:
    """glibc's `mallopt(M_ARENA_MAX, TRANSFER_ARENAS)`: gRPC's threads share one arena
    besides the main heap instead of taking up to eight per core, each keeping its own
    freed buffers (`malloc_trim(0)` returns the main heap's whole, a secondary arena's top
    not at all). Must run before the process starts a thread (a thread's first allocation
    picks its arena). Not done when `MALLOC_ARENA_MAX` is set: the operator's choice
    stands. True if applied."""
    if libc_name is None or "MALLOC_ARENA_MAX" in environ:
        return False
    try:
        mallopt = ctypes.CDLL(libc_name).mallopt
    except (OSError, AttributeError):
        logger.debug("no mallopt in %s: threads keep their own arenas", libc_name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, TRANSFER_ARENAS))
