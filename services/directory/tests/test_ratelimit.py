"""Token buckets per client."""

from __future__ import annotations

from directory.ratelimit import RateLimiter


def test_burst_then_rate_then_refill() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("a")
    assert 0.4 < wait <= 0.5
    assert limiter.retry_after(wait) == "1"
    assert limiter.acquire("b") == 0.0  # other clients are not affected
    now[0] = 1.0  # 2 tokens/s: two more requests, refused ones cost nothing
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a") > 0


def test_disabled_and_bounded() -> None:
    off = RateLimiter(rate=0, burst=1)
    assert all(off.acquire("x") == 0.0 for _ in range(1000))
    small = RateLimiter(rate=1, burst=1, max_keys=2)
    for key in ("a", "b", "c"):
        small.acquire(key)
    assert len(small._buckets) == 2
