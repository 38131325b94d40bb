"""The Redis-backed limiter: a limit holds across clients (processes) sharing Redis."""

from __future__ import annotations

import time

import redis

from governance.ratelimit import RateLimiter


def test_limit_then_retry_after(redis_url: str) -> None:
    limiter = RateLimiter(redis.Redis.from_url(redis_url), prefix="test:rl1")
    results = [limiter.hit("approve", "key:abc", limit=3, window_seconds=2.0) for _ in range(5)]
    assert [r.allowed for r in results] == [True, True, True, False, False]
    assert 0 < results[-1].retry_after <= 2.0
    assert results[-1].limit == 3


def test_limit_is_shared_across_clients(redis_url: str) -> None:
    a = RateLimiter(redis.Redis.from_url(redis_url), prefix="test:rl2")
    b = RateLimiter(redis.Redis.from_url(redis_url), prefix="test:rl2")
    assert a.hit("signin", "1.2.3.4", limit=2, window_seconds=5).allowed
    assert b.hit("signin", "1.2.3.4", limit=2, window_seconds=5).allowed
    assert not a.hit("signin", "1.2.3.4", limit=2, window_seconds=5).allowed
    # another subject has its own budget
    assert b.hit("signin", "5.6.7.8", limit=2, window_seconds=5).allowed


def test_window_slides(redis_url: str) -> None:
    limiter = RateLimiter(redis.Redis.from_url(redis_url), prefix="test:rl3")
    assert limiter.hit("s", "k", limit=1, window_seconds=0.3).allowed
    assert not limiter.hit("s", "k", limit=1, window_seconds=0.3).allowed
    time.sleep(0.35)
    assert limiter.hit("s", "k", limit=1, window_seconds=0.3).allowed
