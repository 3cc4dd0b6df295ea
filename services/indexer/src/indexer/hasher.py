"""SHA-256 of shared files, read within an I/O budget (no event loop, no database).

    hasher = Hasher("/srv/shared", rate_bytes_s=100 * 2**20)
    done = hasher.hash_entry(entry)      # entry with .sha256 set, or None (see below)

A file is read through `peerfind.sharedfile.open_shared`, the reader the transfer
service serves from, so a file that could not be served is never hashed either.
The digest counts only when the opened file still has the entry's size, mtime and
inode, and did not change while it was read; otherwise `hash_entry` returns None
and the scanner's next view of the file (a new row state) is hashed later.
`IndexWriter.set_hashes` stores a digest only if the row is still that state.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

from peerfind.index import FileEntry
from peerfind.sharedfile import SharedFileError, open_shared

__all__ = ["READ_SIZE", "Budget", "HashCancelled", "Hasher"]

READ_SIZE = 1024 * 1024
"""Bytes per read: large enough that hashlib (which releases the GIL) dominates."""


class HashCancelled(Exception):
    """`cancelled` answered True between two reads."""


class Budget:
    """A token bucket of bytes per second (0: unlimited), with injected clock and sleep."""

    def __init__(
        self,
        rate_bytes_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate_bytes_s
        self._clock = clock
        self._sleep = sleep
        self._allowance = 0.0
        self._last = clock()

    def take(self, n: int) -> None:
        """Account for `n` bytes read; sleep when they run ahead of the rate."""
        if self.rate <= 0:
            return
        now = self._clock()
        # At most one second of unused budget carries over (a burst after idling).
        self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate)
        self._last = now
        self._allowance -= n
        if self._allowance < 0:
            self._sleep(-self._allowance / self.rate)


class Hasher:
    """Hashes files of one shared root, sharing one budget across calls."""

    def __init__(
        self,
        root: str,
        rate_bytes_s: float = 0.0,
        *,
        budget: Budget | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.root = root
        self.budget = budget if budget is not None else Budget(rate_bytes_s)
        self._cancelled = cancelled
        self._buffer = bytearray(READ_SIZE)

    def hash_entry(self, entry: FileEntry) -> FileEntry | None:
        """`entry` with its sha256, or None if the file is not what the entry says
        (changed, gone, refused or unreadable). Raises HashCancelled."""
        try:
            with open_shared(self.root, entry.path) as f:
                if (f.size, f.mtime, f.ino) != (entry.size, entry.mtime, entry.ino):
                    return None
                digest = hashlib.sha256()
                view = memoryview(self._buffer)
                fd = f.fd
                offset = 0
                while True:
                    if self._cancelled is not None and self._cancelled():
                        raise HashCancelled
                    n = os.preadv(fd, [view], offset)  # into the buffer: no bytes per read
                    if n == 0:
                        break
                    digest.update(view[:n])
                    offset += n
                    self.budget.take(n)
                if offset != entry.size:
                    return None
                f.check_unchanged()
        except (SharedFileError, OSError):
            return None
        return entry._replace(sha256=digest.hexdigest())
