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

# Rollouts (`governance.deployments.rollouts`). Each process sets the state gauges when it
# changes a rollout or reads it from the database; the API and the rollout worker both do,
# so `govern_rollout_generation` says which process saw the newest state (the dashboard
# reads the state of the process with the highest one).
ROLLOUT_MODES = ("shadow", "canary")
ROLLOUT_RUNNING = Gauge("govern_rollout_running", "1 while a rollout of this mode runs on the deployment, else 0",
                        ["deployment", "mode"])
ROLLOUT_WEIGHT = Gauge("govern_rollout_canary_weight",
                       "share of callers served by the running canary's candidate (0..1; 0 when none runs)",
                       ["deployment"])
ROLLOUT_GENERATION = Gauge("govern_rollout_generation",
                           "deployment generation at which this process last saw the rollout state", ["deployment"])
ROLLOUT_PAIRS = Gauge("govern_rollout_pairs", "pairs the rollout's latest verdict analysed (those of its step)",
                      ["deployment", "mode"])
ROLLOUT_MIN_SAMPLES = Gauge("govern_rollout_min_samples", "pairs a step of the rollout needs before it can pass",
                            ["deployment"])
ROLLOUT_VERDICTS = Counter("govern_rollout_verdicts_total", "rollout verdicts recorded, by decision",
                           ["deployment", "mode", "decision"])
ROLLOUT_CHANGES = Counter("govern_rollout_changes_total",
                          "rollout changes by kind: start, advance, abort, passed, failed, complete",
                          ["deployment", "mode", "kind"])


def observe_rollout(*, deployment: str, mode: str | None, weight: float, generation: int) -> None:
    """Set one deployment's rollout state gauges: ``mode`` of the running rollout, None when none runs."""
    for m in ROLLOUT_MODES:
        ROLLOUT_RUNNING.labels(deployment=deployment, mode=m).set(1.0 if m == mode else 0.0)
    ROLLOUT_WEIGHT.labels(deployment=deployment).set(weight if mode == "canary" else 0.0)
    ROLLOUT_GENERATION.labels(deployment=deployment).set(generation)


def rollout_changed(*, deployment: str, mode: str, kind: str, running: bool, weight: float, generation: int,
                    min_samples: int | None = None) -> None:
    """Count a rollout change and set the state it left (the one call at each point of change)."""
    ROLLOUT_CHANGES.labels(deployment=deployment, mode=mode, kind=kind).inc()
    if kind in ("start", "advance"):  # a new step: its pairs are counted afresh
        ROLLOUT_PAIRS.labels(deployment=deployment, mode=mode).set(0)
    if min_samples is not None:
        ROLLOUT_MIN_SAMPLES.labels(deployment=deployment).set(min_samples)
    observe_rollout(deployment=deployment, mode=mode if running else None, weight=weight, generation=generation)
