"""Per-client token buckets: a flood from one address gets 429, others are served.

Framework-free; `deps.RateLimited` applies it to /search, /register and /bootstrap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from directory.lru import BoundedLru

__all__ = ["RateLimiter"]


class RateLimiter:
    """`rate` tokens per second per key, up to `burst`; bounded to `max_keys` keys (LRU)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: BoundedLru[str, tuple[float, float]] = BoundedLru(max_keys)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0.0 if allowed, else seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets.put(key, (tokens, now))
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        """The Retry-After header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))
