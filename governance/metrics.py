"""Prometheus metrics of the control plane, registered once per process (default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("govern_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"])
LATENCY = Histogram("govern_http_request_seconds", "HTTP request latency by route", ["method", "route"])
DENIED = Counter("govern_denied_actions_total", "refused governed actions (403/409)", ["action", "status"])
TRANSITIONS = Counter("govern_transitions_total", "lifecycle transitions", ["from_state", "to_state", "action"])
PROMOTIONS = Counter("govern_promotions_total", "changes of the active version", ["deployment", "kind"])
ACTIVE_GENERATION = Gauge("govern_active_generation", "generation of the active version", ["deployment"])
OUTBOX_PUBLISHED = Counter("govern_outbox_published_total", "outbox messages sent", ["kind"])
OUTPUTS_INGESTED = Counter("govern_outputs_ingested_total", "production outputs stored", ["deployment"])
AUTH_FAILURES = Counter("govern_auth_failures_total", "failed authentications (bad API key, failed sign-in)", ["via"])
THROTTLED = Counter("govern_throttled_total", "requests refused with 429", ["scope", "by"])
GUARD_UNAVAILABLE = Counter("govern_ratelimit_unavailable_total", "requests let through because Redis was unreachable")
