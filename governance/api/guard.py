"""Abuse guard of the API: write and ingest budgets, and the throttle on failed authentications.

Every API process shares the counters through Redis (`governance.ratelimit.RateLimiter`,
a sliding window per scope and subject), so a budget holds however many processes
serve. Budgets, all per minute and all from `Settings` (docs/limits.md lists them):

- writes (every POST, PUT, PATCH, DELETE except ingest; the dashboard's sign-in too):
  ``rate_limit_writes_per_minute`` per API key, ``rate_limit_writes_per_address_per_minute``
  per client address;
- ingest (``POST /v1/deployments/{name}/outputs``): ``rate_limit_ingest_per_minute`` per
  key, ``rate_limit_ingest_per_address_per_minute`` per address;
- failed authentications (unknown, revoked, expired key; a failed dashboard sign-in):
  ``auth_failures_per_minute`` per client address and per presented key prefix. Past it,
  requests from that address are refused with 429 before the database is asked, and
  further failures with that key prefix get 429 instead of 401 (a valid key is never
  locked out by someone else's failures with its public prefix).

A failed authentication is counted in Prometheus on every occurrence but written to the
audit log at most once per window per (address, key prefix): an attacker cannot flood
the log. If Redis is unreachable the guard lets requests through (logged and counted):
the API stays up, unthrottled, rather than down.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from governance import metrics
from governance.audit import service as audit
from governance.db import unit_of_work
from governance.errors import TooManyRequests as Throttled
from governance.ratelimit import Decision, RateLimiter

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from governance.settings import Settings

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
_PREFIX_RE = re.compile(r"^gov_([a-z0-9]{8})_")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Budget:
    scope: str
    per_key: int
    per_address: int
    setting_key: str
    setting_address: str


def presented_prefix(raw_key: str | None) -> str | None:
    """The public 8-character prefix of a well-formed key (``gov_<prefix>_...``), else None."""
    if not raw_key:
        return None
    m = _PREFIX_RE.match(raw_key)
    return m.group(1) if m else None


def is_ingest(method: str, path: str) -> bool:
    return method == "POST" and path.startswith("/v1/deployments/") and path.endswith("/outputs")


class Guard:
    """The per-app guard: one Redis connection pool, the limiter, the budgets from settings."""

    def __init__(self, settings: Settings, redis_url: str, *, prefix: str = "govern:rl") -> None:
        self.settings = settings
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.limiter = RateLimiter(self.client, prefix=prefix)
        self.prefix = prefix
        self._warned_at = 0.0

    # ---------------------------------------------------------------- budgets

    def budget(self, method: str, path: str) -> Budget | None:
        s = self.settings
        if is_ingest(method, path):
            return Budget(
                "ingest",
                s.rate_limit_ingest_per_minute,
                s.rate_limit_ingest_per_address_per_minute,
                "GOVERN_RATE_LIMIT_INGEST_PER_MINUTE",
                "GOVERN_RATE_LIMIT_INGEST_PER_ADDRESS_PER_MINUTE",
            )
        if method in WRITE_METHODS:
            return Budget(
                "writes",
                s.rate_limit_writes_per_minute,
                s.rate_limit_writes_per_address_per_minute,
                "GOVERN_RATE_LIMIT_WRITES_PER_MINUTE",
                "GOVERN_RATE_LIMIT_WRITES_PER_ADDRESS_PER_MINUTE",
            )
        return None

    def _hit(self, scope: str, subject: str, limit: int) -> Decision | None:
        try:
            return self.limiter.hit(scope, subject, limit=limit, window_seconds=WINDOW_SECONDS)
        except redis.RedisError as exc:
            self._redis_down(exc)
            return None

    def _redis_down(self, exc: Exception) -> None:
        metrics.GUARD_UNAVAILABLE.inc()
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning("rate limiting is off: Redis is unreachable (%s)", type(exc).__name__)

    def limit_address(self, method: str, path: str, address: str) -> None:
        """Count a write or ingest request of ``address``; raise `Throttled` past its budget."""
        budget = self.budget(method, path)
        if budget is None:
            return
        d = self._hit(f"{budget.scope}:addr", address, budget.per_address)
        if d is not None and not d.allowed:
            self._throttled(budget.scope, "address")
            raise Throttled(
                f"too many {budget.scope} requests from this address: the limit is {budget.per_address} "
                f"per minute ({budget.setting_address})",
                retry_after=d.retry_after,
            )

    def limit_key(self, method: str, path: str, key_prefix: str) -> None:
        """Count a write or ingest request of an authenticated key; raise `Throttled` past its budget."""
        budget = self.budget(method, path)
        if budget is None:
            return
        d = self._hit(f"{budget.scope}:key", key_prefix, budget.per_key)
        if d is not None and not d.allowed:
            self._throttled(budget.scope, "key")
            raise Throttled(
                f"too many {budget.scope} requests with this API key: the limit is {budget.per_key} "
                f"per minute ({budget.setting_key})",
                retry_after=d.retry_after,
            )

    @staticmethod
    def _throttled(scope: str, by: str) -> None:
        metrics.THROTTLED.labels(scope=scope, by=by).inc()

    # ---------------------------------------------------------------- failed authentication

    def _failures(self, subject: str) -> tuple[int, float]:
        """(failures of ``subject`` in the window, seconds until the oldest leaves it)."""
        key = f"{self.prefix}:authfail:{subject}"
        now = time.time()
        try:
            pipe = self.client.pipeline()
            pipe.zremrangebyscore(key, "-inf", now - WINDOW_SECONDS)
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.zcard(key)
            _, oldest, count = pipe.execute()
        except redis.RedisError as exc:
            self._redis_down(exc)
            return 0, 0.0
        retry = WINDOW_SECONDS - (now - float(oldest[0][1])) if oldest else 0.0
        return int(count), max(0.0, retry)

    def check_address_failures(self, address: str) -> None:
        """Refuse (429) an address that has failed authentication too often in the window."""
        limit = self.settings.auth_failures_per_minute
        count, retry = self._failures(f"addr:{address}")
        if count >= limit:
            self._throttled("auth", "address")
            raise Throttled(
                f"too many failed authentications from this address: the limit is {limit} per minute "
                "(GOVERN_AUTH_FAILURES_PER_MINUTE)",
                retry_after=retry,
            )

    def record_failure(self, engine: Engine, *, address: str, raw_key: str | None, via: str) -> None:
        """Count one failed authentication; audit it once per window; raise `Throttled` past the limit.

        ``via`` says where (``api`` or ``dashboard``). The key itself is never stored or
        logged, only its public prefix when it has the shape of one of ours.
        """
        metrics.AUTH_FAILURES.labels(via=via).inc()
        prefix = presented_prefix(raw_key)
        limit = self.settings.auth_failures_per_minute
        subjects = [f"addr:{address}"] + ([f"key:{prefix}"] if prefix else [])
        worst = 0
        retry = 0.0
        for s in subjects:
            key = f"{self.prefix}:authfail:{s}"
            now = time.time()
            try:
                self.client.zadd(key, {f"{now}:{time.perf_counter_ns()}": now})
                self.client.pexpire(key, int(WINDOW_SECONDS * 1000))
            except redis.RedisError as exc:
                self._redis_down(exc)
                return
            count, r = self._failures(s)
            if count > worst:
                worst, retry = count, r
        if self._first_in_window(address, prefix):
            self._audit(engine, address=address, prefix=prefix, via=via, failures=worst)
        if worst > limit:
            self._throttled("auth", "key" if prefix else "address")
            raise Throttled(
                f"too many failed authentications: the limit is {limit} per minute (GOVERN_AUTH_FAILURES_PER_MINUTE)",
                retry_after=retry,
            )

    def _first_in_window(self, address: str, prefix: str | None) -> bool:
        try:
            return bool(
                self.client.set(
                    f"{self.prefix}:authfail-audited:{address}:{prefix or '-'}", "1", nx=True, ex=int(WINDOW_SECONDS)
                )
            )
        except redis.RedisError:
            return False  # without Redis, nothing bounds the entries: write none

    @staticmethod
    def _audit(engine: Engine, *, address: str, prefix: str | None, via: str, failures: int) -> None:
        try:
            with unit_of_work(engine) as session:
                audit.append(
                    session,
                    actor=f"anonymous:{address}",
                    actor_key_id=None,
                    action="auth.failed",
                    subject_type="api_key",
                    subject_id=prefix or "-",
                    payload={
                        "address": address,
                        "key_prefix": prefix,
                        "via": via,
                        "failures_in_window": failures,
                        "reason": "missing, unknown, revoked or expired key",
                    },
                )
        except Exception:
            log.exception("could not audit a failed authentication from %s", address)
