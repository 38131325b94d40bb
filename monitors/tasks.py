"""Celery tasks: thin wrappers that take ids, open one unit of work, and call idempotent functions.

Only transient errors (the database or Redis unreachable, a serialisation conflict) are
retried, with exponential backoff; anything else is a bug and fails loudly. Follow-up
tasks and Redis publishes are outbox rows committed with the change and sent once, right
after the commit (`governance.outbox.service.unit_of_work_then_publish`, the same path as
the API's); the outbox sweep sends what a crash in between left. Alert webhooks go last.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis as redis_lib
from celery import chord
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from evaluators.tasks import (
    finish_sharded_gate,
    plan_sharded_gate,
    run_gate_for_version,
    run_gate_shard,
    run_regate,
)
from governance.audit.service import write_checkpoint
from governance.audit.signing import load_signing_key
from governance.db import DatabaseUnavailable, get_engine, unit_of_work
from governance.deployments.service import monitored_deployments
from governance.embedded import resolve_redis_url
from governance.monitoring.models import DriftCheck
from governance.outbox.names import (
    AUDIT_CHECKPOINT_TASK,
    DISPATCH_CHECKS_TASK,
    DISPATCH_ROLLOUTS_TASK,
    EVALUATE_ROLLOUT_TASK,
    GATE_FINISH_TASK,
    GATE_SHARD_TASK,
    GATE_TASK,
    QUEUE_OF,
    REGATE_TASK,
    ROLLBACK_TASK,
    RUN_CHECK_TASK,
    SWEEP_OUTBOX_TASK,
)
from governance.outbox.service import publish_pending, unit_of_work_then_publish
from governance.policy import parse_policy
from governance.settings import get_settings
from monitors.alerting import deliver
from monitors.celery_app import app
from monitors.check import run_check, state_dirs, window_key
from monitors.rollback import auto_rollback, pause_point
from monitors.rollouts import due_rollouts, evaluate_rollout

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError, DatabaseUnavailable, redis_lib.ConnectionError, redis_lib.TimeoutError, ConnectionError,
)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_backoff_max": 60, "retry_jitter": True,
         "max_retries": 8}


def _task(name: str) -> Any:
    """Register a task under its name, on its queue (`governance.outbox.names`), retrying transient errors."""
    return app.task(name=name, queue=QUEUE_OF[name], **RETRY)


def _now() -> datetime:
    return datetime.now(UTC)


@_task(RUN_CHECK_TASK)
def run_check_task(deployment_id: int, window_key: str) -> dict[str, Any]:
    with unit_of_work_then_publish(get_engine(), resolve_redis_url) as session:
        result = run_check(session, deployment_id=deployment_id, window_key=window_key, now=_now())
    deliver(result.notifications)
    return {"status": result.status, "check_id": result.check_id, "verdict": result.verdict,
            "sample_size": result.sample_size, "rollback_queued": result.rollback is not None}


@_task(ROLLBACK_TASK)
def auto_rollback_task(deployment_id: int, expected_version_id: int | None, check_id: int,
                       detector: str) -> dict[str, Any]:
    # the deployment's publish goes out right after the commit, before the alert webhooks:
    # replicas swap now, not at the next sweep
    with unit_of_work_then_publish(get_engine(), resolve_redis_url) as session:
        decision = auto_rollback(session, deployment_id=deployment_id, expected_version_id=expected_version_id,
                                 check_id=check_id, detector=detector, now=_now())
        pause_point("rollback.before_commit")
    deliver(decision.notifications)
    return {"status": decision.status, "message": decision.message, "to_version_id": decision.to_version_id}


def due_checks(session: Session, now: datetime) -> list[tuple[int, str, int]]:
    """(deployment id, window key, interval) of every active deployment whose last window is unchecked.

    A fixed number of queries whatever the number of deployments (the dispatcher runs every
    few seconds on the worker that also runs the checks and the rollout looks): the
    deployments that have an active version, with their policy's text, then the drift
    checks already claimed for their windows. Parsed policies are memoised on their bytes.
    """
    wanted: list[tuple[int, str, int]] = []
    for dep_id, name, content in monitored_deployments(session):
        try:
            interval = parse_policy(content)[0].monitoring.interval_seconds
        except ValueError as exc:  # a policy this release cannot read: say so, check the others
            log.error("deployment %s: policy unreadable, not monitored: %s", name, exc)
            continue
        wanted.append((dep_id, window_key(dep_id, interval, now)[0], interval))
    if not wanted:
        return []
    done = set(session.scalars(select(DriftCheck.window_key).where(  # keys name their deployment
        DriftCheck.deployment_id.in_([d for d, _, _ in wanted]),
        DriftCheck.window_key.in_([key for _, key, _ in wanted]))))
    return [w for w in wanted if w[1] not in done]


def dispatch(now: datetime | None = None, *, redis_url: str | None = None) -> list[str]:
    """Enqueue the checks that are due; returns their window keys.

    A Redis ``SET NX`` per window key keeps concurrent dispatchers from flooding the queue;
    the unique row the check claims is what guarantees one check per window.
    """
    now = now or _now()
    with unit_of_work(get_engine()) as session:
        due = due_checks(session, now)
    if not due:
        return []
    client = redis_lib.Redis.from_url(redis_url or resolve_redis_url())
    sent = []
    try:
        for dep_id, key, interval in due:
            if client.set(f"govern:monitor:enqueued:{key}", "1", nx=True, ex=2 * interval + 60):
                run_check_task.apply_async(kwargs={"deployment_id": dep_id, "window_key": key})
                sent.append(key)
    finally:
        client.close()
    return sent


@_task(DISPATCH_CHECKS_TASK)
def dispatch_checks_task() -> list[str]:
    return dispatch()


def _rollout_enqueued(key: str) -> str:
    """The Redis key that marks a rollout look as queued or running (`dispatch_rollouts`)."""
    return f"govern:rollout:enqueued:{key}"


@_task(EVALUATE_ROLLOUT_TASK)
def evaluate_rollout_task(rollout_id: int, dispatch_key: str | None = None) -> dict[str, Any]:
    """One look at a running rollout's pairs: the verdict, and what it changes (end, advance, abort).

    The verdict, the rollout's change, its audit entry and the deployment's publish commit
    together; the publish goes out right after the commit (replicas stop serving a failed
    canary now, not at the next sweep), the alert webhooks last. A look that recorded
    nothing (no new pair) releases the dispatcher's key, so the next dispatch looks again
    instead of waiting for the key to expire: pairs that arrive just after a quiet look
    are judged within one interval."""
    with unit_of_work_then_publish(get_engine(), resolve_redis_url) as session:
        result = evaluate_rollout(session, rollout_id=rollout_id, cache_dir=state_dirs()[1])
    deliver(result.notifications)
    if dispatch_key is not None and result.status != "recorded":
        client = redis_lib.Redis.from_url(resolve_redis_url())
        try:
            client.delete(_rollout_enqueued(dispatch_key))
        finally:
            client.close()
    return result.to_json()


def dispatch_rollouts(now: datetime | None = None, *, redis_url: str | None = None) -> list[int]:
    """Enqueue the analyses that are due; returns their rollout ids.

    As for the drift checks, a Redis ``SET NX`` per (rollout, step, last verdict) keeps
    concurrent dispatchers, and a look still queued or running, from queueing it twice; the
    key expires after two intervals and a minute, so a task lost with its worker is queued again;
    a look that found no new pair records nothing and deletes its key when it ends.
    `record_verdict` dropping a verdict for a step that moved on is what keeps a late one harmless.
    """
    now = now or _now()
    with unit_of_work(get_engine()) as session:
        due = due_rollouts(session, now)
    if not due:
        return []
    client = redis_lib.Redis.from_url(redis_url or resolve_redis_url())
    sent = []
    try:
        for d in due:
            if client.set(_rollout_enqueued(d.key), "1", nx=True, ex=2 * d.interval_seconds + 60):
                evaluate_rollout_task.apply_async(kwargs={"rollout_id": d.rollout_id, "dispatch_key": d.key})
                sent.append(d.rollout_id)
    finally:
        client.close()
    return sent


@_task(DISPATCH_ROLLOUTS_TASK)
def dispatch_rollouts_task() -> list[int]:
    return dispatch_rollouts()


@_task(SWEEP_OUTBOX_TASK)
def sweep_outbox_task() -> int:
    return publish_pending(get_engine(), resolve_redis_url())


@_task(AUDIT_CHECKPOINT_TASK)
def audit_checkpoint_task() -> dict[str, Any]:
    try:
        key = load_signing_key()
    except Exception as exc:  # no key generated yet (`govern audit keygen`)
        return {"status": "skipped", "reason": str(exc)}
    with unit_of_work(get_engine()) as session:
        row = write_checkpoint(session, key=key, reason="schedule")
        return {"status": "written", "size": row.size, "head_hash": row.head_hash}


@_task(GATE_TASK)
def run_gate_task(version_id: int, shards: int | None = None) -> dict[str, Any]:
    """The evaluation gate of one version (the body lives in the evaluators).

    ``shards`` (default: the ``GOVERN_GATE_SHARDS`` setting) > 1 spreads the gate's batches
    over that many gate workers with a Celery chord of ``evaluators.gate_shard`` tasks and
    the ``evaluators.gate_finish`` callback, which judges and records; this task then only
    opens the run and returns its plan. The verdict and evidence digest are the same as
    the single-worker gate's. All gate workers must share the state folder (base-output cache).
    """
    count = int(shards or get_settings().gate_shards)
    if count <= 1:
        return run_gate_for_version(version_id)
    plan = plan_sharded_gate(version_id)
    if "skipped" in plan:
        return plan
    count = max(1, min(count, int(plan["batches"])))
    header = [gate_shard_task.s(version_id, k, count, plan["cached_suites"]) for k in range(count)]
    chord(header)(gate_finish_task.s(version_id, plan["gate_run_id"], plan["cached_suites"]))
    return {**plan, "shards": count}


@_task(REGATE_TASK)
def run_regate_task(gate_run_id: int) -> dict[str, Any]:
    """A re-gate: an existing version under a deployment's current gate policy (one worker, not sharded)."""
    return run_regate(gate_run_id)


@_task(GATE_SHARD_TASK)
def gate_shard_task(version_id: int, index: int, count: int, cached_suites: list[str]) -> list[list[Any]]:
    """One shard of a sharded gate: every ``count``-th batch from ``index``; returns its outputs."""
    return run_gate_shard(version_id, index, count, cached_suites)


@_task(GATE_FINISH_TASK)
def gate_finish_task(shard_outputs: list[list[list[Any]]], version_id: int, gate_run_id: int,
                     cached_suites: list[str]) -> dict[str, Any]:
    """The chord's callback: merge the shards' outputs, judge, record the verdict."""
    return finish_sharded_gate(shard_outputs, version_id, gate_run_id, cached_suites)
