"""Rollouts: a candidate version beside a deployment's active one on live traffic, paired per request.

A rollout is part of what a deployment serves, so it lives in the deployments room and
travels with the active version: every change (start, advance, verdict that ends it,
abort, completion) locks the deployment row, bumps its generation and publishes the new
state on the deployment's channel in the same transaction as its audit entry and its
history row (`rollout_events`). Replicas read the running rollout from
``GET /v1/deployments/{name}/active`` (``rollout``) and from the pushed message, so a
replica restarted mid-rollout rejoins at the current step through its reconcile.

- **shadow** (a version that passed the gate, approved or not): a sampled share of requests
  is decoded a second time with the candidate in the same batch; only the active answer is
  returned. A verdict that passes or fails ends the rollout (``passed`` / ``failed``).
- **canary** (an approved version): the callers whose stable key hashes below the step's
  weight get the candidate's answer (the active one is decoded beside it, unreturned). A
  passing verdict with enough pairs advances a step; a failing one aborts at once; the last
  step (100%) is an ordinary promotion (`service.promote_locked`), which completes it.

At most one rollout per deployment runs (a partial unique index). Advancing names the
step it leaves (``from_step``), so two callers advancing at once produce one step; abort
is idempotent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from governance import metrics
from governance.audit import service as audit
from governance.db import utcnow
from governance.deployments import service
from governance.deployments.models import Deployment, Rollout, RolloutEvent, RolloutVerdict
from governance.errors import Conflict, InvalidInput, NotFound, Refusal
from governance.principal import Principal, require_allowed
from governance.registry import lifecycle
from governance.registry import service as registry
from governance.registry.models import VersionState

if TYPE_CHECKING:
    from governance.registry.models import TokenVersion

# states a shadow candidate may be in: it passed the gate (no user sees its answers)
SHADOW_STATES = (VersionState.gate_passed.value, VersionState.approved.value, VersionState.superseded.value)
DECISIONS = ("pass", "fail", "pending")


@dataclass(frozen=True)
class RolloutChange:
    """What a change did: the rollout after it, and whether anything changed (idempotent calls)."""

    rollout: Rollout
    changed: bool
    message: str
    promotion_generation: int | None = None


def _refusal(principal: Principal, attempted: str, deployment: str) -> Refusal:
    return Refusal.of(principal, attempted, "deployment", deployment)


def _policy(session: Session, dep: Deployment) -> Any:
    return service.deployment_policy(session, deployment=dep).rollout


def _audit(session: Session, principal: Principal, action: str, ro: Rollout, dep: Deployment,
           **extra: Any) -> None:
    audit.record(session, principal, action=action, subject_type="deployment", subject_id=dep.name,
                 payload={"rollout_id": ro.id, "version_id": ro.version_id,
                          "baseline_version_id": ro.baseline_version_id, "mode": ro.mode, "state": ro.state,
                          "step": ro.step_index, "weight": service.rollout_weight(ro) if ro.state == "running"
                          else 0.0, "steps": list(ro.steps), "sample": float(ro.sample),
                          "generation": int(dep.generation), **extra})


def start_rollout(
    session: Session,
    *,
    deployment: str,
    version_id: int,
    mode: str,
    principal: Principal,
    sample: float | None = None,
    steps: list[int] | None = None,
    min_samples: int | None = None,
) -> Rollout:
    """Start a shadow or canary rollout of ``version_id`` on ``deployment`` (409 naming the reason
    when the version is in the wrong state, of another deployment, or one is running)."""
    attempted = "rollout.start"
    require_allowed(principal, attempted, "deployment", deployment)
    if mode not in ("shadow", "canary"):
        raise InvalidInput(f"mode must be shadow or canary, not {mode!r}")
    dep = service.get_deployment_or_raise(session, name=deployment, lock=True)
    refusal = _refusal(principal, attempted, deployment)
    pol = _policy(session, dep)
    sample = float(pol.sample if sample is None else sample)
    if not 0.0 < sample <= 1.0:
        raise InvalidInput(f"sample must be in (0, 1], got {sample:g}")
    steps = list(pol.steps if steps is None else steps)
    if not steps or any(not 1 <= s <= 100 for s in steps) or any(b <= a for a, b in itertools.pairwise(steps)):
        raise InvalidInput(f"steps must be increasing percentages between 1 and 100, got {steps}")
    if steps[-1] != 100:
        raise InvalidInput(f"the last step must be 100 (full traffic is the promotion), got {steps}")
    min_samples = int(pol.min_samples if min_samples is None else min_samples)
    if min_samples < 1:
        raise InvalidInput(f"min_samples must be at least 1, got {min_samples}")
    running = service.running_rollout(session, deployment=dep, lock=True)
    if running is not None:
        raise Conflict(
            f"deployment {deployment!r} already runs rollout {running.id} ({running.mode} of version "
            f"{running.version_id}); abort it first (`govern rollout abort --deployment {deployment}`)",
            details={"rollout_id": running.id, "reason": "rollout_running"}, refusal=refusal)
    version = lifecycle.lock_version(session, version_id)
    _check_candidate(session, version=version, dep=dep, mode=mode, principal=principal, refusal=refusal)
    # a version submitted without a deployment belongs to this one from now on (as on promotion):
    # the replicas' pair rows name it, and ingest accepts only the deployment's own versions
    version.deployment_id = dep.id
    active = service.active_version(session, deployment=dep)
    ro = Rollout(
        deployment_id=dep.id, version_id=version.id, baseline_version_id=active.id if active else None,
        mode=mode, state="running", sample=sample, steps=steps if mode == "canary" else [100], step_index=0,
        min_samples=min_samples, started_by=principal.user_id, started_by_actor=principal.actor,
        generation=int(dep.generation) + 1,
    )
    session.add(ro)
    try:
        session.flush()
    except IntegrityError:  # a concurrent start won the partial unique index
        session.rollback()
        raise Conflict(f"deployment {deployment!r} already runs a rollout", details={"reason": "rollout_running"},
                       refusal=refusal) from None
    service.publish_generation(session, dep=dep, kind="rollout_start")
    service.add_rollout_event(session, rollout=ro, kind="start", actor=principal.actor,
                              reason=f"{mode} of version {version.id}", generation=int(dep.generation))
    _audit(session, principal, "rollout.start", ro, dep, min_samples=min_samples)
    metrics.rollout_changed(deployment=dep.name, mode=mode, kind="start", running=True,
                            weight=service.rollout_weight(ro), generation=int(dep.generation), min_samples=min_samples)
    return ro


def _check_candidate(session: Session, *, version: TokenVersion, dep: Deployment, mode: str, principal: Principal,
                     refusal: Refusal) -> None:
    details = {"version_id": version.id, "current_state": version.state}
    if version.base_model_id != dep.base_model_id:
        raise Conflict(f"version {version.id} was trained for another base model than {dep.name!r} serves",
                       details={**details, "reason": "other_base_model"}, refusal=refusal)
    if version.deployment_id is not None and version.deployment_id != dep.id:
        raise Conflict(f"version {version.id} belongs to another deployment, not {dep.name!r}",
                       details={**details, "reason": "other_deployment"}, refusal=refusal)
    if version.state == VersionState.active.value:
        raise Conflict(f"version {version.id} is already the active version of {dep.name!r}",
                       details={**details, "reason": "already_active"}, refusal=refusal)
    if mode == "shadow":
        if version.state not in SHADOW_STATES:
            raise Conflict(
                f"version {version.id} is {version.state}; a shadow rollout needs a version that passed the gate "
                f"({', '.join(SHADOW_STATES)})", details={**details, "reason": "wrong_state"}, refusal=refusal)
        return
    if version.state != VersionState.approved.value:
        raise Conflict(
            f"version {version.id} is {version.state}; a canary serves users, so it needs an approved version "
            f"(four eyes: `govern review approve {version.id}`)", details={**details, "reason": "not_approved"},
            refusal=refusal)
    service.check_approval_binding(session, version=version, deployment=dep, principal=principal,
                                   attempted="rollout.start")


def current(session: Session, *, deployment: str) -> Rollout | None:
    dep = service.get_deployment_or_raise(session, name=deployment)
    return service.running_rollout(session, deployment=dep)


def latest(session: Session, *, deployment: str) -> Rollout | None:
    """The running rollout, else the most recent one (None when the deployment never had one)."""
    dep = service.get_deployment_or_raise(session, name=deployment)
    return session.scalars(select(Rollout).where(Rollout.deployment_id == dep.id)
                           .order_by(Rollout.id.desc()).limit(1)).first()


def history(session: Session, *, deployment: str, limit: int = 50, offset: int = 0) -> list[Rollout]:
    dep = service.get_deployment_or_raise(session, name=deployment)
    return list(session.scalars(select(Rollout).where(Rollout.deployment_id == dep.id)
                                .order_by(Rollout.id.desc()).limit(limit).offset(offset)))


def get_rollout(session: Session, *, rollout_id: int) -> Rollout | None:
    return session.get(Rollout, rollout_id)


def events(session: Session, *, rollout_id: int) -> list[RolloutEvent]:
    return list(session.scalars(select(RolloutEvent).where(RolloutEvent.rollout_id == rollout_id)
                                .order_by(RolloutEvent.seq)))


def verdicts(session: Session, *, rollout_id: int, limit: int = 20) -> list[RolloutVerdict]:
    """The rollout's verdicts, newest first."""
    return list(session.scalars(select(RolloutVerdict).where(RolloutVerdict.rollout_id == rollout_id)
                                .order_by(RolloutVerdict.id.desc()).limit(limit)))


def latest_verdict(session: Session, *, rollout_id: int, step_index: int | None = None) -> RolloutVerdict | None:
    stmt = select(RolloutVerdict).where(RolloutVerdict.rollout_id == rollout_id)
    if step_index is not None:
        stmt = stmt.where(RolloutVerdict.step_index == step_index)
    return session.scalars(stmt.order_by(RolloutVerdict.id.desc()).limit(1)).first()


def running_rollouts(session: Session) -> list[tuple[Rollout, str]]:
    """Every running rollout with its deployment's name (for the worker's dispatcher)."""
    rows = session.execute(select(Rollout, Deployment.name).join(Deployment, Deployment.id == Rollout.deployment_id)
                           .where(Rollout.state == "running").order_by(Rollout.id)).tuples()
    return [(ro, name) for ro, name in rows]


def advance(
    session: Session,
    *,
    deployment: str,
    principal: Principal,
    from_step: int | None = None,
    reason: str | None = None,
    verdict_id: int | None = None,
) -> RolloutChange:
    """Move a canary to its next step (the last one promotes the candidate).

    ``from_step`` is the step the caller saw: when the rollout is no longer there (another
    caller advanced it), nothing changes, so two callers advancing at once make one step."""
    attempted = "rollout.advance"
    require_allowed(principal, attempted, "deployment", deployment)
    dep = service.get_deployment_or_raise(session, name=deployment, lock=True)
    refusal = _refusal(principal, attempted, deployment)
    ro = service.running_rollout(session, deployment=dep, lock=True)
    if ro is None:
        raise Conflict(f"deployment {deployment!r} runs no rollout", details={"reason": "no_rollout"},
                       refusal=refusal)
    if ro.mode != "canary":
        raise Conflict(f"rollout {ro.id} is a shadow rollout: it has no steps (start a canary once the version is "
                       "approved)", details={"rollout_id": ro.id, "reason": "shadow_has_no_steps"}, refusal=refusal)
    if from_step is not None and from_step != ro.step_index:
        return RolloutChange(ro, False, f"rollout {ro.id} is already at step {ro.step_index}, not {from_step}")
    if verdict_id is None:
        last = latest_verdict(session, rollout_id=ro.id, step_index=ro.step_index)
        if last is not None and last.decision == "fail":
            raise Conflict(f"the latest verdict of rollout {ro.id} at this step failed ({last.summary}); "
                           "abort it instead", details={"rollout_id": ro.id, "reason": "verdict_failed"},
                           refusal=refusal)
    if ro.step_index + 1 >= len(ro.steps) or ro.steps[ro.step_index + 1] >= 100:
        return _complete(session, dep=dep, ro=ro, principal=principal, reason=reason, verdict_id=verdict_id)
    ro.step_index += 1
    ro.step_started_at = utcnow()
    service.publish_generation(session, dep=dep, kind="rollout_advance")
    ro.generation = int(dep.generation)
    service.add_rollout_event(session, rollout=ro, kind="advance", actor=principal.actor, reason=reason,
                              generation=int(dep.generation), verdict_id=verdict_id)
    _audit(session, principal, "rollout.advance", ro, dep, reason=reason, verdict_id=verdict_id)
    metrics.rollout_changed(deployment=dep.name, mode=ro.mode, kind="advance", running=True,
                            weight=service.rollout_weight(ro), generation=int(dep.generation))
    return RolloutChange(ro, True, f"rollout {ro.id} advanced to {ro.steps[ro.step_index]}%")


def _complete(session: Session, *, dep: Deployment, ro: Rollout, principal: Principal, reason: str | None,
              verdict_id: int | None) -> RolloutChange:
    """The last step: an ordinary promotion (history, generation, outbox), which ends the rollout."""
    ro.step_index = len(ro.steps) - 1
    promo = service.promote_locked(session, dep=dep, version_id=ro.version_id, principal=principal,
                                   reason=f"canary rollout {ro.id} reached 100%" + (f" ({reason})" if reason else ""))
    ro.generation = int(dep.generation)
    _audit(session, principal, "rollout.complete", ro, dep, reason=reason, verdict_id=verdict_id,
           promotion_generation=promo.generation)
    metrics.rollout_changed(deployment=dep.name, mode=ro.mode, kind="complete", running=False, weight=0.0,
                            generation=int(dep.generation))
    return RolloutChange(ro, True, f"rollout {ro.id} reached 100%: version {ro.version_id} is active",
                         promotion_generation=promo.generation)


def abort(
    session: Session,
    *,
    deployment: str,
    principal: Principal,
    reason: str,
    evidence: dict[str, Any] | None = None,
    verdict_id: int | None = None,
) -> RolloutChange | None:
    """Stop the running rollout: all traffic back on the active token. Idempotent: with none
    running it changes nothing and returns the latest rollout (None if there never was one)."""
    attempted = "rollout.abort"
    require_allowed(principal, attempted, "deployment", deployment)
    if not reason or not reason.strip():
        raise InvalidInput("an abort needs a reason")
    dep = service.get_deployment_or_raise(session, name=deployment, lock=True)
    ro = service.running_rollout(session, deployment=dep, lock=True)
    if ro is None:
        last = latest(session, deployment=deployment)
        return None if last is None else RolloutChange(last, False, f"rollout {last.id} already ended ({last.state})")
    _end(session, dep=dep, ro=ro, state="aborted", kind="abort", principal=principal, reason=reason,
         verdict_id=verdict_id)
    _audit(session, principal, "rollout.abort", ro, dep, reason=reason, verdict_id=verdict_id,
           **({"evidence": evidence} if evidence is not None else {}))
    return RolloutChange(ro, True, f"rollout {ro.id} aborted: all traffic on the active version")


def _end(session: Session, *, dep: Deployment, ro: Rollout, state: str, kind: str, principal: Principal,
         reason: str | None, verdict_id: int | None) -> None:
    ro.state, ro.ended_at, ro.end_reason = state, utcnow(), reason
    session.flush()
    service.publish_generation(session, dep=dep, kind=f"rollout_{kind}")
    ro.generation = int(dep.generation)
    service.add_rollout_event(session, rollout=ro, kind=kind, actor=principal.actor, reason=reason,
                              generation=int(dep.generation), verdict_id=verdict_id)
    metrics.rollout_changed(deployment=dep.name, mode=ro.mode, kind=kind, running=False, weight=0.0,
                            generation=int(dep.generation))


def evidence_digest(*, rollout_id: int, step_index: int, n_pairs: int, decision: str, tests: list[dict[str, Any]],
                    upto_output_id: int) -> str:
    """sha256 of the canonical JSON of a verdict's evidence (what an approval binds)."""
    body = {"rollout_id": rollout_id, "step": step_index, "n_pairs": n_pairs, "decision": decision,
            "tests": tests, "upto_output_id": upto_output_id}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
                          .encode()).hexdigest()


def record_verdict(
    session: Session,
    *,
    rollout_id: int,
    principal: Principal,
    step_index: int,
    n_pairs: int,
    decision: str,
    summary: str,
    tests: list[dict[str, Any]],
    differing: list[dict[str, Any]],
    upto_output_id: int,
    evidence: dict[str, Any] | None = None,
) -> tuple[RolloutVerdict | None, RolloutChange | None]:
    """Store the worker's paired analysis and apply it, in one transaction.

    shadow: ``pass``/``fail`` end the rollout (``passed``/``failed``); canary: ``fail`` aborts it,
    ``pass`` advances it (the last step promotes); ``pending`` only stores the numbers. A
    verdict for a rollout that is no longer running, or for a step it has left, is dropped
    (returns (None, None)): a redelivered or late analysis changes nothing."""
    require_allowed(principal, "rollout.verdict", "rollout", rollout_id)
    if decision not in DECISIONS:
        raise InvalidInput(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    ro = session.get(Rollout, rollout_id)
    if ro is None:
        raise NotFound(f"no rollout {rollout_id}")
    dep = service.get_deployment_by_id(session, deployment_id=ro.deployment_id)
    assert dep is not None
    dep = service.get_deployment_or_raise(session, name=dep.name, lock=True)
    ro = service.running_rollout(session, deployment=dep, lock=True)
    if ro is None or ro.id != rollout_id or ro.step_index != step_index:
        return None, None
    digest = evidence_digest(rollout_id=ro.id, step_index=step_index, n_pairs=n_pairs, decision=decision,
                             tests=tests, upto_output_id=upto_output_id)
    verdict = RolloutVerdict(rollout_id=ro.id, step_index=step_index, n_pairs=n_pairs, decision=decision,
                             summary=summary, tests=tests, differing=differing, evidence_digest=digest,
                             upto_output_id=upto_output_id)
    session.add(verdict)
    session.flush()
    metrics.ROLLOUT_VERDICTS.labels(deployment=dep.name, mode=ro.mode, decision=decision).inc()
    metrics.ROLLOUT_PAIRS.labels(deployment=dep.name, mode=ro.mode).set(n_pairs)
    if decision == "pending":
        return verdict, None
    payload = {"verdict_id": verdict.id, "decision": decision, "n_pairs": n_pairs, "evidence_digest": digest,
               "summary": summary, "tests": tests, **({"evidence": evidence} if evidence else {})}
    if ro.mode == "shadow":
        state = "passed" if decision == "pass" else "failed"
        _end(session, dep=dep, ro=ro, state=state, kind=state, principal=principal, reason=summary,
             verdict_id=verdict.id)
        _audit(session, principal, f"rollout.shadow_{state}", ro, dep, **payload)
        return verdict, RolloutChange(ro, True, f"shadow rollout {ro.id} {state}: {summary}")
    if decision == "fail":
        _end(session, dep=dep, ro=ro, state="aborted", kind="abort", principal=principal, reason=summary,
             verdict_id=verdict.id)
        _audit(session, principal, "rollout.abort", ro, dep, reason=summary, automatic=True, **payload)
        return verdict, RolloutChange(ro, True, f"canary rollout {ro.id} aborted: {summary}")
    service.add_rollout_event(session, rollout=ro, kind="verdict", actor=principal.actor, reason=summary,
                              generation=None, verdict_id=verdict.id)
    audit.record(session, principal, action="rollout.verdict", subject_type="deployment", subject_id=dep.name,
                 payload={"rollout_id": ro.id, "step": ro.step_index, **payload})
    change = advance(session, deployment=dep.name, principal=principal, from_step=step_index,
                     reason=f"verdict {verdict.id}: {summary}", verdict_id=verdict.id)
    return verdict, change


def shadow_evidence(session: Session, *, version_id: int) -> RolloutVerdict | None:
    """The concluding verdict of the version's most recent shadow rollout that ended on one
    (passed or failed), or None: what an officer sees and an approval records."""
    stmt = (select(RolloutVerdict).join(Rollout, Rollout.id == RolloutVerdict.rollout_id)
            .where(Rollout.version_id == version_id, Rollout.mode == "shadow",
                   Rollout.state.in_(("passed", "failed")), RolloutVerdict.decision.in_(("pass", "fail")))
            .order_by(RolloutVerdict.id.desc()).limit(1))
    return session.scalars(stmt).first()


def shadow_rollouts_of(session: Session, *, version_id: int) -> list[Rollout]:
    return list(session.scalars(select(Rollout).where(Rollout.version_id == version_id, Rollout.mode == "shadow")
                                .order_by(Rollout.id.desc())))


def approval_shadow(session: Session, *, version_id: int) -> registry.ShadowEvidence:
    """What an approval of ``version_id`` must know about shadow rollouts: whether its deployment's
    policy requires a passed one, and the concluding verdict of its latest (digest recorded)."""
    version = registry.get_version_or_raise(session, version_id=version_id)
    dep = (service.get_deployment_by_id(session, deployment_id=version.deployment_id)
           if version.deployment_id is not None else None)
    required = bool(dep is not None and _policy(session, dep).require_shadow)
    verdict = shadow_evidence(session, version_id=version_id)
    return registry.ShadowEvidence(
        required=required, deployment=dep.name if dep is not None else None,
        verdict_digest=verdict.evidence_digest if verdict is not None else None,
        decision=verdict.decision if verdict is not None else None,
        rollout_id=verdict.rollout_id if verdict is not None else None)
