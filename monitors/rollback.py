"""What happens on drift: alerts, and the guarded automatic rollback to the last approved token.

``on_drift`` (inside the check's transaction) raises one alert per incident (deployment,
version, detector; repeats count on the open alert) and, for a detector the policy lets
roll back, once it has drifted in ``consecutive_windows`` judged windows in a row, writes
the rollback task to the outbox (sent after commit; a crash in between is covered by the
outbox sweep).

``auto_rollback`` (the rollback task's body) applies the guard rails, in this order:
the core's guards (`governance.deployments.service.check_rollback_guards`, shared with
the manual rollback): already done for this incident (redelivery) -> nothing; the active
version is not the one the decision was based on -> nothing; frozen -> an alert only;
then the monitor's own: the daily cap or the cooldown reached -> an alert for a human
only; otherwise the core's rollback service,
with the expected active version as its precondition, under the deployment row lock.
No approved target -> a critical alert and no change, unless the policy sets
``fallback_to_base``: then the token is taken out and the replicas serve the bare base
model. The core writes the one audit entry (actor ``system:monitor/<detector>``): its payload
carries the evidence as structured fields (`rollback_evidence`: the detector, its numbers,
the drifting windows, every guard checked with what it saw), the alert the same, and the
reason says it in words for people.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.deployments import service as deployments
from governance.monitoring.models import DriftCheck
from governance.outbox.names import ROLLBACK_TASK
from governance.outbox.service import enqueue_task
from governance.policy import Policy
from governance.principal import Principal
from monitors import metrics
from monitors.alerting import Notification, raise_monitor_alert
from monitors.detectors import DetectorResult

if TYPE_CHECKING:  # annotations only: rooms talk through service functions
    from governance.deployments.models import Deployment, Promotion

log = logging.getLogger(__name__)

# Test hook: make a task pause at a named point so a test can SIGKILL the worker there.
PAUSE_ENV = "GOVERN_MONITOR_PAUSE_AT"
PAUSE_SECONDS_ENV = "GOVERN_MONITOR_PAUSE_SECONDS"
PAUSE_MARKER_ENV = "GOVERN_MONITOR_PAUSE_MARKER"

RollbackStatus = Literal["rolled_back", "already_done", "stale", "frozen", "cooldown", "capped", "no_target",
                         "no_active", "missing"]


def pause_point(name: str) -> None:
    """Sleep here when the test hook names this point (never set in production)."""
    if os.environ.get(PAUSE_ENV) != name:
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        Path(marker).write_text(f"{os.getpid()}\n")
    time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV, "60")))


def incident_key(deployment_id: int, version_id: int | None, detector: str) -> str:
    return f"drift:d{deployment_id}:v{version_id}:{detector}"


def actor_for(detector: str) -> str:
    return f"system:monitor/{detector}"


def consecutive_drifts(session: Session, *, deployment_id: int, version_id: int | None, detector: str,
                       upto_check_id: int, limit: int = 50) -> list[int]:
    """Ids of the latest run of drifting windows of ``detector`` (newest first), skipping
    windows where it could not judge (inconclusive or absent)."""
    rows = session.execute(
        select(DriftCheck.id, DriftCheck.detectors).where(
            DriftCheck.deployment_id == deployment_id, DriftCheck.version_id == version_id,
            DriftCheck.id <= upto_check_id, DriftCheck.verdict != "pending",
        ).order_by(DriftCheck.id.desc()).limit(limit)
    ).all()
    run: list[int] = []
    for check_id, detectors in rows:
        verdict = ((detectors or {}).get(detector) or {}).get("verdict")
        if verdict == "drift":
            run.append(int(check_id))
        elif verdict == "ok":
            break
    return run


def on_drift(session: Session, *, deployment: Deployment, policy: Policy, check: DriftCheck,
             results: list[DetectorResult], result: Any, now: datetime) -> dict[str, Any] | None:
    """Alert on every drifting detector; queue one guarded rollback when the policy allows it.

    Returns the queued rollback task's kwargs (None when none was queued). The task goes
    only to the outbox: the edge sends it after the commit, the sweep if that send is lost.
    """
    rb = policy.monitoring.rollback
    queued: dict[str, Any] | None = None
    for res in results:
        if res.verdict != "drift":
            continue
        run = consecutive_drifts(session, deployment_id=deployment.id, version_id=check.version_id,
                                 detector=res.name, upto_check_id=check.id)
        details = {"check_id": check.id, "window_key": check.window_key, "detector": res.name, "kind": res.kind,
                   "statistic": res.statistic, "threshold": res.threshold, "p_values": res.p_values,
                   "sample_size": res.sample_size, "consecutive_windows": len(run), "evidence": res.evidence,
                   "version_id": check.version_id}
        note = raise_monitor_alert(
            session, deployment_id=deployment.id, deployment=deployment.name, kind="drift",
            severity="critical" if res.rollback_allowed else "warning",
            incident_key=incident_key(deployment.id, check.version_id, res.name),
            message=(f"{res.name} ({res.kind}) drifted on version {check.version_id}: statistic "
                     f"{_num(res.statistic)} vs threshold {_num(res.threshold)}, {len(run)} window(s) in a row"),
            details=details, actor=actor_for(res.name), policy=policy,
        )
        if note is not None:
            result.notifications.append(note)
        if res.rollback_allowed and queued is None and len(run) >= rb.consecutive_windows:
            queued = {"deployment_id": deployment.id, "expected_version_id": check.version_id,
                      "check_id": check.id, "detector": res.name}
            enqueue_task(session, name=ROLLBACK_TASK, kwargs=queued)
    return queued


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


@dataclass
class RollbackDecision:
    status: RollbackStatus
    message: str
    to_version_id: int | None = None
    notifications: list[Notification] = field(default_factory=list)


def rollback_evidence(session: Session, check: DriftCheck | None, detector: str, run: list[int],
                      guards: dict[str, Any]) -> dict[str, Any]:
    """The structured evidence of an automatic rollback, for its audit entry and its alert.

    The detector and its numbers in the deciding window, every window of the drifting run
    (check id, window, n, statistic), and the guards that were checked with what they saw.
    """
    det = ((check.detectors or {}).get(detector) or {}) if check is not None else {}
    windows = []
    if run:
        rows = session.execute(select(DriftCheck.id, DriftCheck.window_key, DriftCheck.sample_size,
                                      DriftCheck.detectors).where(DriftCheck.id.in_(run))
                               .order_by(DriftCheck.id)).all()
        windows = [{"check_id": int(cid), "window_key": key, "n": size,
                    "statistic": ((dets or {}).get(detector) or {}).get("statistic")}
                   for cid, key, size, dets in rows]
    return {
        "detector": detector, "kind": det.get("kind"), "statistic": det.get("statistic"),
        "threshold": det.get("threshold"), "p_values": det.get("p_values"), "n": det.get("sample_size"),
        "check_id": check.id if check is not None else None,
        "window_key": check.window_key if check is not None else None,
        "window_ids": sorted(run), "windows": windows, "guards": guards,
        "evidence": det.get("evidence") or {},
    }


def rollback_reason(evidence: dict[str, Any]) -> str:
    """The audit entry's reason, for people: what drifted, by how much, for how long."""
    return (f"automatic rollback on drift: {evidence['detector']} statistic {_num(evidence['statistic'])} vs "
            f"threshold {_num(evidence['threshold'])} (n={evidence['n']}), "
            f"{len(evidence['window_ids'])} drifting window(s) in a row")


def auto_rollback(session: Session, *, deployment_id: int, expected_version_id: int | None, check_id: int,
                  detector: str, now: datetime) -> RollbackDecision:
    """The guarded automatic rollback; idempotent (redelivery finds it done and does nothing).

    The guards (already done, stale, frozen) are the core's `check_rollback_guards`, asked
    first because a frozen deployment gets an alert; then the monitor's own daily cap and
    cooldown; then the core's `rollback`, under the same row lock.
    """
    dep = deployments.lock_deployment_by_id(session, deployment_id=deployment_id)
    if dep is None:
        return RollbackDecision("missing", f"no deployment {deployment_id}")
    policy = deployments.deployment_policy(session, deployment=dep)
    current = deployments.active_version(session, deployment=dep, lock=True)
    refused = deployments.check_rollback_guards(session, dep=dep, current=current, now=now, automatic=True,
                                                expected_active_version_id=expected_version_id)
    if refused is not None and refused.status != "frozen":
        return _count(dep, RollbackDecision(refused.status, refused.message))
    check = session.get(DriftCheck, check_id)
    run = consecutive_drifts(session, deployment_id=dep.id, version_id=expected_version_id, detector=detector,
                             upto_check_id=check_id) if check is not None else []
    alert = _Alerter(session, dep, policy, detector, {"check_id": check_id, "detector": detector,
                                                      "version_id": expected_version_id,
                                                      "consecutive_drift_checks": run})
    about = f"{detector} drift on version {expected_version_id}"
    if refused is not None:
        return alert.held("frozen", "warning",
                          f"{about}: deployment is frozen, automatic rollback is off; a person must decide")
    history = deployments.promotions(session, name=dep.name, limit=200)
    held = _policy_hold(history, policy, now)
    if held is not None:
        return alert.held(held[0], "critical", f"{about}: {held[1]}")
    evidence = rollback_evidence(session, check, detector, run, _guards_checked(
        expected_version_id, current.id if current is not None else None, len(run), history, policy, now))
    alert.details["evidence"] = evidence
    outcome = deployments.rollback(
        session, deployment=dep.name, principal=Principal.for_system(f"monitor/{detector}"),
        reason=rollback_reason(evidence), expected_active_version_id=expected_version_id,
        automatic=True, fallback_to_base=policy.monitoring.rollback.fallback_to_base, evidence=evidence,
    )
    if outcome.status == "no_target":
        stale = outcome.stale_version_ids
        if stale:
            ids = ", ".join(str(v) for v in stale)
            alert.details["versions_to_regate"] = stale
            return alert.held("no_target", "critical", (
                f"{about}: no version approved under the deployment's current gate policy to roll back to; "
                f"version(s) {ids} are approved under an earlier gate policy only (re-gate: `govern gate run "
                f"VERSION --deployment {dep.name}`, then `govern review approve VERSION`; or set "
                "monitoring.rollback.on_stale_approval: use_previous_approval); nothing changed, "
                "a person must decide"))
        return alert.held("no_target", "critical",
                          f"{about}: no approved version to roll back to; nothing changed, a person must decide")
    if outcome.status != "rolled_back":
        return _count(dep, RollbackDecision(outcome.status, outcome.message))
    note = alert.raise_(
        "auto_rollback", "critical", "rolled_back",
        f"rolled back {dep.name!r} from version {expected_version_id} to "
        f"{_target_name(outcome.to_version_id)} after {detector} drift ({len(run)} windows in a row)",
        {"to_version_id": outcome.to_version_id, "generation": outcome.generation})
    return _count(dep, RollbackDecision("rolled_back", outcome.message, outcome.to_version_id,
                                        [note] if note else []))


def _brakes(history: list[Promotion], policy: Policy, now: datetime) -> dict[str, Any]:
    """What the daily cap and the cooldown see: recent automatic rollbacks against the policy's limits."""
    rb = policy.monitoring.rollback
    autos = [p for p in history if p.kind == "auto_rollback"]
    last = max((p.created_at for p in autos), default=None)
    return {"rollbacks_last_24h": sum(p.created_at >= now - timedelta(days=1) for p in autos),
            "max_per_day": rb.max_per_day, "cooldown_seconds": rb.cooldown_seconds,
            "last_auto_rollback_at": last.isoformat() if last is not None else None,
            "in_cooldown": last is not None and last > now - timedelta(seconds=rb.cooldown_seconds)}


def _policy_hold(history: list[Promotion], policy: Policy, now: datetime) -> tuple[RollbackStatus, str] | None:
    """The monitor's own brakes: the daily cap, then the cooldown since the last automatic rollback."""
    b = _brakes(history, policy, now)
    if b["rollbacks_last_24h"] >= b["max_per_day"]:
        return "capped", (f"{b['rollbacks_last_24h']} automatic rollbacks in the last 24 h (cap {b['max_per_day']}); "
                          "only alerting now, a person must decide")
    if b["in_cooldown"]:
        return "cooldown", (f"the last automatic rollback was less than {b['cooldown_seconds']}s ago (cooldown); "
                            "a person must decide")
    return None


def _guards_checked(expected_version_id: int | None, active_version_id: int | None, windows: int,
                    history: list[Promotion], policy: Policy, now: datetime) -> dict[str, Any]:
    """Every guard an automatic rollback passed, with what it saw (all passed, or it would not run)."""
    b = _brakes(history, policy, now)
    return {
        "already_done": {"passed": True},
        "stale": {"passed": True, "expected_version_id": expected_version_id, "active_version_id": active_version_id},
        "frozen": {"passed": True, "frozen": False},
        "consecutive_windows": {"passed": True, "required": policy.monitoring.rollback.consecutive_windows,
                                "seen": windows},
        "daily_cap": {"passed": True, "rollbacks_last_24h": b["rollbacks_last_24h"], "max_per_day": b["max_per_day"]},
        "cooldown": {"passed": True, "cooldown_seconds": b["cooldown_seconds"],
                     "last_auto_rollback_at": b["last_auto_rollback_at"]},
    }


@dataclass
class _Alerter:
    """The alerts of one rollback decision: one incident per deployment, version and outcome."""

    session: Session
    dep: Deployment
    policy: Policy
    detector: str
    details: dict[str, Any]

    def raise_(self, kind: str, severity: str, status: str, message: str,
               extra: dict[str, Any] | None = None) -> Notification | None:
        key = f"rollback:d{self.dep.id}:v{self.details['version_id']}:{status}"
        return raise_monitor_alert(
            self.session, deployment_id=self.dep.id, deployment=self.dep.name, kind=kind, severity=severity,
            incident_key=key, message=message, details={**self.details, **(extra or {})},
            actor=actor_for(self.detector), policy=self.policy)

    def held(self, status: RollbackStatus, severity: str, message: str) -> RollbackDecision:
        note = self.raise_(f"rollback_{status}", severity, status, message, {"status": status})
        return _count(self.dep, RollbackDecision(status, message, notifications=[note] if note else []))


def _target_name(version_id: int | None) -> str:
    return f"version {version_id}" if version_id is not None else "the bare base model (fallback_to_base)"


def _count(dep: Deployment, decision: RollbackDecision) -> RollbackDecision:
    metrics.AUTO_ROLLBACKS.labels(deployment=dep.name, status=decision.status).inc()
    log.info("auto rollback on %s: %s (%s)", dep.name, decision.status, decision.message)
    return decision
