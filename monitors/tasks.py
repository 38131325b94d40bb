"""Celery tasks: thin wrappers that take ids, open one unit of work, and call idempotent functions.

Only transient errors (the database or Redis unreachable, a serialisation conflict) are
retried, with exponential backoff; anything else is a bug and fails loudly. Side effects
outside the database (alert webhooks, follow-up tasks, Redis publishes) happen after the
commit; the outbox row written in the same transaction covers a crash in between.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis as redis_lib
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from governance.db import DatabaseUnavailable, get_engine, unit_of_work
from monitors.alerting import deliver
from monitors.celery_app import (
    GATE_FINISH_TASK,
    GATE_SHARD_TASK,
    GATE_TASK,
    GATES_QUEUE,
    MONITORING_QUEUE,
    ROLLBACK_QUEUE,
    app,
)

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError, DatabaseUnavailable, redis_lib.ConnectionError, redis_lib.TimeoutError, ConnectionError,
)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_backoff_max": 60, "retry_jitter": True,
         "max_retries": 8}



def _now() -> datetime:
    return datetime.now(UTC)


def _redis_url() -> str:
    from governance.embedded import resolve_redis_url

    return resolve_redis_url()


def _send_followups(followups: list[dict[str, Any]]) -> None:
    for f in followups:
        try:
            app.send_task(f["name"], kwargs=f["kwargs"], queue=f.get("queue"))
        except Exception as exc:  # the outbox sweep sends it later
            log.warning("follow-up %s not sent now (%s); the outbox sweep will", f["name"], exc)


@app.task(name="monitors.run_check", queue=MONITORING_QUEUE, **RETRY)
def run_check_task(deployment_id: int, window_key: str) -> dict[str, Any]:
    from monitors.check import run_check

    with unit_of_work(get_engine()) as session:
        result = run_check(session, deployment_id=deployment_id, window_key=window_key, now=_now())
    deliver(result.notifications)
    _send_followups(result.followups)
    return {"status": result.status, "check_id": result.check_id, "verdict": result.verdict,
            "sample_size": result.sample_size, "rollback_queued": bool(result.followups)}


@app.task(name="monitors.auto_rollback", queue=ROLLBACK_QUEUE, **RETRY)
def auto_rollback_task(deployment_id: int, expected_version_id: int | None, check_id: int,
                       detector: str) -> dict[str, Any]:
    from governance.outbox.service import take_outgoing
    from monitors.rollback import auto_rollback, pause_point

    engine = get_engine()
    with unit_of_work(engine) as session:
        decision = auto_rollback(session, deployment_id=deployment_id, expected_version_id=expected_version_id,
                                 check_id=check_id, detector=detector, now=_now())
        pause_point("rollback.before_commit")
    outgoing = take_outgoing(session)  # the commit has returned: what it enqueued, still in memory
    if decision.status == "rolled_back":
        _publish_outbox(engine, outgoing)  # replicas swap now, before the alert webhooks, not at the next sweep
    deliver(decision.notifications)
    return {"status": decision.status, "message": decision.message, "to_version_id": decision.to_version_id}


def _publish_outbox(engine: Any, outgoing: Any) -> int:
    from governance.outbox.service import publish_committed

    try:
        return publish_committed(engine, _redis_url(), outgoing)
    except Exception as exc:
        log.warning("outbox not published now (%s); the sweep will", exc)
        return 0


def due_checks(session: Session, now: datetime) -> list[tuple[int, str, int]]:
    """(deployment id, window key, interval) of every active deployment whose last window is unchecked."""
    from governance.deployments.service import active_version, list_deployments
    from governance.monitoring.models import DriftCheck
    from monitors.check import deployment_policy, window_key

    due = []
    for dep in list_deployments(session):
        if active_version(session, deployment=dep) is None:
            continue
        try:
            interval = deployment_policy(session, dep).monitoring.interval_seconds
        except ValueError as exc:  # a policy this release cannot read: say so, check the others
            log.error("deployment %s: policy unreadable, not monitored: %s", dep.name, exc)
            continue
        key, _, _ = window_key(dep.id, interval, now)
        done = session.scalar(select(DriftCheck.id).where(DriftCheck.deployment_id == dep.id,
                                                          DriftCheck.window_key == key))
        if done is None:
            due.append((dep.id, key, interval))
    return due


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
    client = redis_lib.Redis.from_url(redis_url or _redis_url())
    sent = []
    try:
        for dep_id, key, interval in due:
            if client.set(f"govern:monitor:enqueued:{key}", "1", nx=True, ex=2 * interval + 60):
                run_check_task.apply_async(kwargs={"deployment_id": dep_id, "window_key": key},
                                           queue=MONITORING_QUEUE)
                sent.append(key)
    finally:
        client.close()
    return sent


@app.task(name="monitors.dispatch_checks", queue=MONITORING_QUEUE, **RETRY)
def dispatch_checks_task() -> list[str]:
    return dispatch()


@app.task(name="monitors.sweep_outbox", queue=MONITORING_QUEUE, **RETRY)
def sweep_outbox_task() -> int:
    from governance.outbox.service import publish_pending

    return publish_pending(get_engine(), _redis_url())


@app.task(name="monitors.audit_checkpoint", queue=MONITORING_QUEUE, **RETRY)
def audit_checkpoint_task() -> dict[str, Any]:
    try:
        from governance.audit.service import write_checkpoint
        from governance.audit.signing import load_signing_key
    except ImportError as exc:
        return {"status": "unavailable", "reason": str(exc)}
    try:
        key = load_signing_key()
    except Exception as exc:  # no key generated yet (`govern audit keygen`)
        return {"status": "skipped", "reason": str(exc)}
    with unit_of_work(get_engine()) as session:
        row = write_checkpoint(session, key=key, reason="schedule")
        return {"status": "written", "size": row.size, "head_hash": row.head_hash}


@app.task(name=GATE_TASK, queue=GATES_QUEUE, **RETRY)
def run_gate_task(version_id: int, shards: int | None = None) -> dict[str, Any]:
    """The evaluation gate of one version (the body lives in the evaluators, imported here
    by name so the monitors do not depend on them at import time).

    ``shards`` (default: the ``GOVERN_GATE_SHARDS`` setting) > 1 spreads the gate's batches
    over that many gate workers with a Celery chord of ``evaluators.gate_shard`` tasks and
    the ``evaluators.gate_finish`` callback, which judges and records; this task then only
    opens the run and returns its plan. The verdict and evidence digest are the same as
    the single-worker gate's. All gate workers must share the state folder (base-output cache).
    """
    from governance.settings import get_settings

    count = int(shards or get_settings().gate_shards)
    if count <= 1:
        from evaluators.tasks import run_gate_for_version

        return run_gate_for_version(version_id)

    from celery import chord

    from evaluators.tasks import plan_sharded_gate

    plan = plan_sharded_gate(version_id)
    if "skipped" in plan:
        return plan
    count = max(1, min(count, int(plan["batches"])))
    header = [gate_shard_task.s(version_id, k, count, plan["cached_suites"]) for k in range(count)]
    chord(header)(gate_finish_task.s(version_id, plan["gate_run_id"], plan["cached_suites"]))
    return {**plan, "shards": count}


@app.task(name=GATE_SHARD_TASK, queue=GATES_QUEUE, **RETRY)
def gate_shard_task(version_id: int, index: int, count: int, cached_suites: list[str]) -> list[list[Any]]:
    """One shard of a sharded gate: every ``count``-th batch from ``index``; returns its outputs."""
    from evaluators.tasks import run_gate_shard

    return run_gate_shard(version_id, index, count, cached_suites)


@app.task(name=GATE_FINISH_TASK, queue=GATES_QUEUE, **RETRY)
def gate_finish_task(shard_outputs: list[list[list[Any]]], version_id: int, gate_run_id: int,
                     cached_suites: list[str]) -> dict[str, Any]:
    """The chord's callback: merge the shards' outputs, judge, record the verdict."""
    from evaluators.tasks import finish_sharded_gate

    return finish_sharded_gate(shard_outputs, version_id, gate_run_id, cached_suites)
