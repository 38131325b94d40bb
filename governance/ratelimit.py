"""Rate limiting backed by Redis, so a limit holds across every API process.

A sliding-window log per (scope, subject): one sorted set of request times, trimmed
to the window and counted atomically in a Lua script. ``hit`` answers whether the
request may proceed and, if not, how many seconds until it may (for ``Retry-After``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis

_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local member = ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
  return {1, count + 1, 0}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local retry = window - (now - tonumber(oldest[2]))
return {0, count, tostring(retry)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    count: int
    retry_after: float  # seconds; 0 when allowed
    limit: int


class RateLimiter:
    def __init__(self, client: redis.Redis, *, prefix: str = "govern:rl") -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_SCRIPT)

    def hit(self, scope: str, subject: str, *, limit: int, window_seconds: float) -> Decision:
        """Count one request of ``subject`` in ``scope``; refuse past ``limit`` per window."""
        key = f"{self.prefix}:{scope}:{subject}"
        now = time.time()
        allowed, count, retry = self._script(
            keys=[key], args=[now, window_seconds, limit, f"{now}:{uuid.uuid4().hex[:8]}"]
        )
        return Decision(bool(int(allowed)), int(count), max(0.0, float(retry)), limit)
