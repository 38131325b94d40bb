"""Deployments: creation, promotion, rollback, freeze; the active version and its generation.

A promotion or rollback locks the deployment row first (SELECT ... FOR UPDATE), so
concurrent changes of one deployment serialize: exactly one wins each generation, and
the generation only increases. In one transaction: the version transitions, the
deployment's generation, a `Promotion` history row, one audit entry and an outbox
``publish`` row on ``govern:deployment:<name>`` (sent after commit). Every rollback, a
person's or the monitor's, passes the same guards (`check_rollback_guards`) and is applied
by the same primitive (`apply_rollback`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from governance import metrics
from governance import policy as policy_schema
from governance.audit import service as audit
from governance.db import utcnow
from governance.deployments import policies
from governance.deployments.models import Deployment, Promotion, Rollout, RolloutEvent
from governance.errors import BindingMismatch, Conflict, InvalidInput, NoRollbackTarget, NotFound, Refusal
from governance.gates import service as gates
from governance.outbox import service as outbox
from governance.policy_store import store_policy
from governance.principal import Principal, require_role
from governance.registry import lifecycle
from governance.registry import service as registry
from governance.registry.models import VersionState
from governance.roles import allowed

if TYPE_CHECKING:
    from governance.registry.models import BaseModel_, Policy, Review, TokenVersion

ADMINS = allowed("deployment.create")
PROMOTERS = allowed("deployment.promote")
ROLLBACKERS = allowed("deployment.rollback", "deployment.auto_rollback")  # both paths admit both
FREEZERS = allowed("deployment.freeze", "deployment.unfreeze")


@dataclass(frozen=True)
class ActiveInfo:
    deployment: str
    version_id: int | None
    sha256: str | None
    generation: int
    rollout: dict[str, Any] | None = None  # the running rollout's plan (`rollout_plan`)


GuardStatus = Literal["already_done", "frozen", "stale", "no_active"]


@dataclass(frozen=True)
class RollbackOutcome:
    """What a rollback did. The monitor's path reads ``status`` instead of catching errors."""

    status: Literal["rolled_back", "no_target", "already_done", "frozen", "stale", "no_active"]
    deployment: str
    from_version_id: int | None = None
    to_version_id: int | None = None
    generation: int | None = None
    message: str = ""
    # no_target: earlier-active versions passed over because they are approved under another gate policy
    stale_version_ids: list[int] = field(default_factory=list)


def create_deployment(
    session: Session, *, name: str, base_model: str, policy_text: str, principal: Principal
) -> Deployment:
    require_role(principal, ADMINS, "deployment.create", "deployment", name)
    registry.check_name(name, "deployment name")
    if len(name) > 100:
        raise InvalidInput("a deployment name has at most 100 characters")
    base = registry.get_base_model_or_raise(session, name=base_model)
    if session.scalar(select(Deployment.id).where(Deployment.name == name)) is not None:
        raise Conflict(f"a deployment named {name!r} already exists")
    policy = store_policy(session, content=policy_text)
    dep = Deployment(name=name, base_model_id=base.id, policy_id=policy.id, created_by=principal.user_id)
    session.add(dep)
    session.flush()
    initial = policies.record_initial(session, deployment=dep, policy=policy, principal=principal)
    audit.record(
        session,
        principal,
        action="deployment.create",
        subject_type="deployment",
        subject_id=name,
        payload={"base_model": base.name, "policy_sha256": policy.sha256, "policy_seq": 1,
                 "gate_digest": initial.gate_digest},
    )
    return dep


def get_deployment(session: Session, *, name: str, lock: bool = False) -> Deployment | None:
    stmt = select(Deployment).where(Deployment.name == name)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalars(stmt).first()


def get_deployment_or_raise(session: Session, *, name: str, lock: bool = False) -> Deployment:
    dep = get_deployment(session, name=name, lock=lock)
    if dep is None:
        raise NotFound(f"no deployment named {name!r}")
    return dep


def list_deployments(session: Session) -> list[Deployment]:
    return list(session.scalars(select(Deployment).order_by(Deployment.id)))


def submission_target(session: Session, *, name: str | None) -> registry.SubmissionTarget | None:
    """What `registry.submit_version` checks of the deployment a submission names (None: it names none)."""
    if name is None:
        return None
    dep = get_deployment(session, name=name)
    if dep is None:
        return registry.SubmissionTarget(name)
    return registry.SubmissionTarget(name, dep.id, dep.base_model_id)


def monitored_deployments(session: Session) -> list[tuple[int, str, str]]:
    """(id, name, policy text) of every deployment with an active version, in three queries.

    For the worker's drift dispatcher, which runs every few seconds whatever the number of
    deployments: it parses each text itself (`parse_policy` is memoised on the bytes).
    """
    active = registry.deployments_with_active_version(session)
    deps = list(session.scalars(select(Deployment).where(Deployment.id.in_(active)).order_by(Deployment.id)))
    texts = registry.policy_texts(session, policy_ids={int(d.policy_id) for d in deps})
    return [(int(d.id), d.name, texts[int(d.policy_id)]) for d in deps]


def policy_of(session: Session, *, deployment: Deployment) -> Policy:
    policy = registry.get_policy(session, policy_id=deployment.policy_id)
    assert policy is not None  # foreign key
    return policy


def deployment_policy(session: Session, *, deployment: Deployment) -> policy_schema.Policy:
    """The deployment's policy, parsed (ValueError when this release cannot read it)."""
    return policy_schema.parse_policy(policy_of(session, deployment=deployment).content)[0]


def base_model_of(session: Session, *, deployment: Deployment) -> BaseModel_:
    base = registry.get_base_model_by_id(session, base_model_id=deployment.base_model_id)
    assert base is not None  # foreign key
    return base


def active_version(session: Session, *, deployment: Deployment, lock: bool = False) -> TokenVersion | None:
    return registry.active_version(session, deployment_id=deployment.id, lock=lock)


def active_info(session: Session, *, name: str) -> ActiveInfo:
    dep = get_deployment_or_raise(session, name=name)
    row = registry.active_version_sha(session, deployment_id=dep.id)
    return ActiveInfo(name, row[0] if row else None, row[1] if row else None, int(dep.generation),
                      rollout_plan(session, deployment=dep))


def running_rollout(session: Session, *, deployment: Deployment, lock: bool = False) -> Rollout | None:
    """The deployment's running rollout, if any (the database allows one)."""
    stmt = select(Rollout).where(Rollout.deployment_id == deployment.id, Rollout.state == "running")
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalars(stmt).first()


def rollout_weight(rollout: Rollout) -> float:
    """The share of callers served by the candidate (0 for a shadow rollout)."""
    if rollout.mode != "canary" or rollout.state != "running":
        return 0.0
    return float(rollout.steps[rollout.step_index]) / 100.0


def rollout_plan(session: Session, *, deployment: Deployment) -> dict[str, Any] | None:
    """What replicas apply for the running rollout (`governance.client.RolloutPlan`), or None."""
    ro = running_rollout(session, deployment=deployment)
    if ro is None:
        return None
    sha = registry.version_shas(session, version_ids=[ro.version_id]).get(ro.version_id)
    return {"rollout_id": ro.id, "mode": ro.mode, "version_id": ro.version_id, "sha256": sha,
            "sample": float(ro.sample) if ro.mode == "shadow" else 0.0, "weight": rollout_weight(ro),
            "step": ro.step_index}


def publish_generation(session: Session, *, dep: Deployment, kind: str,
                       active: tuple[int | None, str | None] | None = None) -> dict[str, Any]:
    """A new generation of what the deployment's replicas serve (the active version, or
    ``active`` when the caller has just changed it, and the running rollout), published
    after commit; returns the message (without ``kind``)."""
    dep.generation = int(dep.generation) + 1
    session.flush()
    if active is None:
        row = registry.active_version_sha(session, deployment_id=dep.id)
        active = (row[0], row[1]) if row else (None, None)
    message = {
        "deployment": dep.name,
        "version_id": active[0],
        "sha256": active[1],
        "generation": dep.generation,
        "rollout": rollout_plan(session, deployment=dep),
    }
    outbox.enqueue_publish(session, channel=outbox.deployment_channel(dep.name), payload={**message, "kind": kind})
    metrics.ACTIVE_GENERATION.labels(deployment=dep.name).set(dep.generation)
    return message


def _end_rollout_for_change(session: Session, *, dep: Deployment, kind: str, version: TokenVersion | None,
                            principal: Principal) -> dict[str, Any] | None:
    """A promotion or rollback changes what the candidate is compared with: a running rollout
    ends with it (completed when its own candidate was promoted, else aborted), recorded in
    the rollout's history. Returns what the audit entry says about it."""
    ro = running_rollout(session, deployment=dep, lock=True)
    if ro is None:
        return None
    completed = kind == "promote" and version is not None and version.id == ro.version_id
    ro.state = "completed" if completed else "aborted"
    ro.ended_at = utcnow()
    ro.end_reason = ("the candidate was promoted" if completed
                     else f"the active version changed ({kind}) while the rollout ran")
    add_rollout_event(session, rollout=ro, kind="complete" if completed else "abort", actor=principal.actor,
                      reason=ro.end_reason, generation=int(dep.generation) + 1)
    metrics.rollout_changed(deployment=dep.name, mode=ro.mode, kind="complete" if completed else "abort",
                            running=False, weight=0.0, generation=int(dep.generation) + 1)
    return {"rollout_id": ro.id, "state": ro.state, "reason": ro.end_reason}


def add_rollout_event(session: Session, *, rollout: Rollout, kind: str, actor: str, reason: str | None,
                      generation: int | None, verdict_id: int | None = None) -> None:
    seq = int(session.scalar(select(func.coalesce(func.max(RolloutEvent.seq), 0))
                             .where(RolloutEvent.rollout_id == rollout.id)) or 0) + 1
    weight = float(rollout.steps[rollout.step_index]) / 100.0 if rollout.mode == "canary" else 0.0
    if rollout.state != "running" and kind != "complete":
        weight = 0.0
    session.add(RolloutEvent(rollout_id=rollout.id, seq=seq, kind=kind, step_index=rollout.step_index,
                             weight=weight, generation=generation, actor=actor, reason=reason,
                             verdict_id=verdict_id))
    session.flush()


def is_frozen(deployment: Deployment, now: datetime | None = None) -> bool:
    if not deployment.frozen:
        return False
    return deployment.frozen_until is None or deployment.frozen_until > (now or utcnow())


def promotions(session: Session, *, name: str, limit: int = 50, offset: int = 0) -> list[Promotion]:
    dep = get_deployment_or_raise(session, name=name)
    return list(
        session.scalars(
            select(Promotion)
            .where(Promotion.deployment_id == dep.id)
            .order_by(Promotion.generation.desc())
            .limit(limit)
            .offset(offset)
        )
    )


def regate_target(session: Session, *, name: str) -> registry.RegateTarget:
    """What `registry.request_regate` needs of the deployment: its id, base model and current gate policy."""
    dep = get_deployment_or_raise(session, name=name)
    policy = policy_of(session, deployment=dep)
    return registry.RegateTarget(name, dep.id, dep.base_model_id, policy.sha256,
                                 policies.gate_digest_of_text(policy.content))


def _fix_commands(version_id: int, deployment: str) -> str:
    return (f"re-gate it under this policy: `govern gate run {version_id} --deployment {deployment}`, then a "
            f"compliance officer approves it: `govern review approve {version_id} --comment TEXT`")


def _unbound(session: Session, version: TokenVersion, dep: Deployment, digest: str) -> str:
    """Why a version has no approval the deployment's current gate policy accepts, and the commands that fix it."""
    passed = [r for r in gates.gate_runs(session, version_id=version.id)
              if r.status == "passed" and registry.gate_digest_of_run(session, run=r) == digest]
    if passed:
        return (f"version {version.id} passed the gate under {dep.name!r}'s gate policy (gate run {passed[0].id}) "
                f"but has no approval under it; a compliance officer approves it: "
                f"`govern review approve {version.id} --comment TEXT`")
    held = registry.approved_gate_digests(session, version_ids=[version.id])[version.id]
    if held:
        seq = policies.active_seq(session, deployment_id=dep.id)
        return (f"version {version.id} was gated and approved under gate policy {sorted(held)[0][:12]}..., but "
                f"deployment {dep.name!r} gates with {digest[:12]}... (its policy version {seq}); "
                + _fix_commands(version.id, dep.name))
    return f"version {version.id} has no standing approval; " + _fix_commands(version.id, dep.name)


def check_approval_binding(
    session: Session, *, version: TokenVersion, deployment: Deployment, principal: Principal, attempted: str
) -> None:
    """Refuse (409) unless the version holds an approval under the deployment's current gate
    digest, its artifact is the one approved, and the gate run it rests on still shows the
    evidence approved. Each refusal names the command that resolves it."""
    refusal = Refusal.of(principal, attempted, "version", version.id)
    digest = policies.current_gate_digest(session, deployment=deployment)
    review = registry.standing_approval(session, version_id=version.id, gate_digest=digest)
    if review is None:
        review = _legacy_approval(session, version, policy_of(session, deployment=deployment).sha256)
    if review is None:
        raise BindingMismatch(_unbound(session, version, deployment, digest),
                              details={"version_id": version.id, "deployment_gate_digest": digest,
                                       "deployment": deployment.name}, refusal=refusal)
    actual_sha = hashlib.sha256(version.artifact).hexdigest()
    if not (actual_sha == version.sha256 == review.artifact_sha256):
        raise BindingMismatch(
            f"version {version.id}'s artifact digest differs from the one approved; it cannot be served. "
            "The stored bytes were altered (see the audit log's version.submit entry for the approved digest); "
            "submit the artifact again as a new version: `govern submit DIR --adapter NAME`",
            details={"approved": review.artifact_sha256, "stored": actual_sha},
            refusal=refusal,
        )
    run = (gates.get_gate_run(session, gate_run_id=review.gate_run_id) if review.gate_run_id is not None
           else gates.latest_passed_gate_run(session, version_id=version.id))
    current_evidence = run.evidence_digest if run is not None and run.status == "passed" else None
    if current_evidence != review.evidence_digest:
        raise BindingMismatch(
            f"version {version.id}'s gate evidence changed since it was approved; " + _fix_commands(
                version.id, deployment.name),
            details={"approved": review.evidence_digest, "current": current_evidence},
            refusal=refusal,
        )


def _check_fits(version: TokenVersion, dep: Deployment, principal: Principal, attempted: str) -> None:
    refusal = Refusal.of(principal, attempted, "version", version.id)
    if version.base_model_id != dep.base_model_id:
        raise Conflict(
            f"version {version.id} was trained for another base model than {dep.name!r} serves", refusal=refusal
        )
    if version.deployment_id is not None and version.deployment_id != dep.id:
        raise Conflict(f"version {version.id} belongs to another deployment, not {dep.name!r}", refusal=refusal)


def _record_change(
    session: Session,
    *,
    dep: Deployment,
    kind: str,
    version: TokenVersion | None,
    previous: TokenVersion | None,
    principal: Principal,
    reason: str | None,
    evidence: dict[str, Any] | None = None,
    approval: dict[str, Any] | None = None,
) -> Promotion:
    """A new generation of the deployment: ``version`` None means the bare base model.

    ``evidence`` (an automatic rollback's: the detector, its numbers, the windows, the
    guards checked) goes into the audit entry as structured fields beside the reason."""
    ended = _end_rollout_for_change(session, dep=dep, kind=kind, version=version, principal=principal)
    message = publish_generation(session, dep=dep, kind=kind, active=(
        version.id if version is not None else None, version.sha256 if version is not None else None))
    promo = Promotion(
        deployment_id=dep.id,
        generation=dep.generation,
        kind=kind,
        version_id=version.id if version is not None else None,
        previous_version_id=previous.id if previous else None,
        actor=principal.actor,
        reason=reason,
    )
    session.add(promo)
    session.flush()
    audit.record(
        session,
        principal,
        action=f"deployment.{kind}",
        subject_type="deployment",
        subject_id=dep.name,
        payload={**{k: v for k, v in message.items() if k != "rollout"},
                 "previous_version_id": previous.id if previous else None, "reason": reason,
                 **({"evidence": evidence} if evidence is not None else {}),
                 **({"approval": approval} if approval is not None else {}),
                 **({"rollout": ended} if ended is not None else {})},
    )
    metrics.PROMOTIONS.labels(deployment=dep.name, kind=kind).inc()
    metrics.ACTIVE_GENERATION.labels(deployment=dep.name).set(dep.generation)
    return promo


def promote(session: Session, *, deployment: str, version_id: int, principal: Principal) -> Promotion:
    """Make an approved version active; the previous active one becomes superseded."""
    require_role(principal, PROMOTERS, "deployment.promote", "deployment", deployment)
    dep = get_deployment_or_raise(session, name=deployment, lock=True)
    return promote_locked(session, dep=dep, version_id=version_id, principal=principal, reason=None)


def promote_locked(session: Session, *, dep: Deployment, version_id: int, principal: Principal,
                   reason: str | None) -> Promotion:
    """The promotion itself, on a deployment row the caller has locked: the lifecycle move,
    the approval binding, the swap, the generation, the history row, the audit entry and the
    publish. The caller checked who may ask (a person's promote, a canary reaching 100%)."""
    version = lifecycle.lock_version(session, version_id)
    lifecycle.check_move(version, to=VersionState.active.value, action="promote", principal=principal)
    _check_fits(version, dep, principal, "version.promote")
    check_approval_binding(session, version=version, deployment=dep, principal=principal, attempted="version.promote")
    previous = active_version(session, deployment=dep, lock=True)
    _swap_active(session, dep=dep, leaving=previous, leaving_to=VersionState.superseded, leaving_action="supersede",
                 entering=version, entering_action="promote", principal=principal)
    return _record_change(
        session, dep=dep, kind="promote", version=version, previous=previous, principal=principal, reason=reason
    )


@dataclass(frozen=True)
class TargetSearch:
    """The rollback target found under the deployment's current gate digest, and the
    earlier-active versions passed over because their approval is under another one."""

    target: TokenVersion | None
    stale: list[int]


def find_rollback_target(
    session: Session, *, deployment: Deployment, exclude_version_id: int | None, allow_stale: bool = False
) -> TargetSearch:
    """The most recently active superseded version approved under the deployment's current
    gate digest; ``allow_stale`` (the policy's ``on_stale_approval: use_previous_approval``)
    takes the most recent superseded one when none is."""
    stmt = (
        select(Promotion.version_id)
        .where(Promotion.deployment_id == deployment.id)
        .group_by(Promotion.version_id)
        .order_by(func.max(Promotion.generation).desc())
    )
    if exclude_version_id is not None:
        stmt = stmt.where(Promotion.version_id != exclude_version_id)
    newest_first = [vid for vid in session.scalars(stmt) if vid is not None]  # None: a fallback to the base
    candidates = registry.in_state(session, version_ids=newest_first, deployment_id=deployment.id,
                                   state=VersionState.superseded)
    digest = policies.current_gate_digest(session, deployment=deployment)
    policy_sha = policy_of(session, deployment=deployment).sha256
    held = registry.approved_gate_digests(session, version_ids=[v.id for v in candidates])
    stale: list[int] = []
    for version in candidates:
        if digest in held[version.id] or _legacy_approval(session, version, policy_sha) is not None:
            return TargetSearch(version, stale)
        stale.append(version.id)
    if allow_stale and candidates:
        return TargetSearch(candidates[0], stale)
    return TargetSearch(None, stale)


def _legacy_approval(session: Session, version: TokenVersion, policy_sha: str) -> Review | None:
    """An approval recorded before gate digests existed: it binds the deployment's whole policy file."""
    review = registry.latest_review(session, version_id=version.id)
    if (review is not None and review.decision == "approve" and review.gate_digest is None
            and review.policy_sha256 in (None, policy_sha)):
        return review
    return None


def last_approved_target(
    session: Session, *, deployment: Deployment, exclude_version_id: int | None
) -> TokenVersion | None:
    """The most recently active version of this deployment that is still a valid target
    (superseded, approved under the deployment's current gate digest)."""
    return find_rollback_target(session, deployment=deployment, exclude_version_id=exclude_version_id).target


def already_rolled_back(session: Session, *, deployment: Deployment, version_id: int) -> bool:
    """Whether ``version_id`` was rolled back automatically since it last became active."""
    made_active = (
        select(func.coalesce(func.max(Promotion.generation), 0))
        .where(Promotion.deployment_id == deployment.id, Promotion.version_id == version_id)
        .scalar_subquery()
    )
    done = select(Promotion.id).where(
        Promotion.deployment_id == deployment.id,
        Promotion.kind == "auto_rollback",
        Promotion.previous_version_id == version_id,
        Promotion.generation > made_active,
    )
    return session.scalar(done.limit(1)) is not None


def check_rollback_guards(
    session: Session,
    *,
    dep: Deployment,
    current: TokenVersion | None,
    expected_active_version_id: int | None,
    automatic: bool,
    now: datetime | None = None,
) -> RollbackOutcome | None:
    """The guards of every rollback, manual or automatic, in this order (under the row lock).

    Already done (automatic: the expected version was rolled back since it became active,
    so a redelivered task does nothing); a stale precondition (the active version is not
    the expected one; an automatic call always carries one, the version it judged);
    frozen (automatic rollback is off); no active version. Returns the first that holds,
    as the outcome to report (or, for a manual call, to raise), else None.
    """
    name, current_id = dep.name, current.id if current else None
    expected = expected_active_version_id

    def refused(status: GuardStatus, message: str) -> RollbackOutcome:
        return RollbackOutcome(status, name, current_id, message=message)

    if automatic and expected is not None and already_rolled_back(session, deployment=dep, version_id=expected):
        return refused("already_done", f"version {expected} was already rolled back")
    if (automatic or expected is not None) and current_id != expected:
        return refused("stale", f"deployment {name!r} now serves version {current_id}, not {expected}; "
                                "nothing rolled back")
    if automatic and is_frozen(dep, now):
        until = f" until {dep.frozen_until.isoformat()}" if dep.frozen_until else ""
        return refused("frozen", f"deployment {name!r} is frozen{until}: automatic rollback is off")
    if current is None:
        return refused("no_active", f"deployment {name!r} has no active version to roll back")
    return None


def rollback(
    session: Session,
    *,
    deployment: str,
    principal: Principal,
    reason: str,
    to_version_id: int | None = None,
    expected_active_version_id: int | None = None,
    automatic: bool = False,
    fallback_to_base: bool = False,
    evidence: dict[str, Any] | None = None,
) -> RollbackOutcome:
    """Roll the active version back to the last approved token (or a named one).

    With no earlier approved version, ``fallback_to_base`` (the policy's
    ``monitoring.rollback.fallback_to_base``, for the monitor's call) takes the token out:
    the replicas serve the bare base model, the promotion row has no version.

    Manual calls (``automatic=False``) raise on every refusal. The monitor's call
    (``automatic=True``, actor ``system:monitor``) gets a `RollbackOutcome` whose status
    says "no_target" (raise a critical alert), "already_done", "frozen" or "stale" (the
    active version is no longer the one it judged) instead of an exception, so
    redelivery is harmless. The guards are `check_rollback_guards`; the change is
    `apply_rollback`.
    """
    attempted = "deployment.auto_rollback" if automatic else "deployment.rollback"
    require_role(principal, ROLLBACKERS, attempted, "deployment", deployment)
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("a rollback needs a reason")
    dep = get_deployment_or_raise(session, name=deployment, lock=True)
    current = active_version(session, deployment=dep, lock=True)
    outcome = check_rollback_guards(
        session, dep=dep, current=current, expected_active_version_id=expected_active_version_id, automatic=automatic
    )
    if outcome is None:
        assert current is not None  # the guards refuse a deployment without an active version
        target = rollback_target(
            session, dep=dep, current=current, to_version_id=to_version_id, fallback_to_base=fallback_to_base,
            principal=principal, attempted=attempted,
        )
        if not isinstance(target, RollbackOutcome):
            return apply_rollback(session, dep=dep, current=current, target=target, principal=principal,
                                  reason=reason, automatic=automatic, evidence=evidence,
                                  approval=_approval_note(session, dep, target))
        outcome = target
    if not automatic:
        cls = NoRollbackTarget if outcome.status == "no_target" else Conflict
        raise cls(outcome.message, details={"deployment": deployment, "status": outcome.status},
                  refusal=Refusal.of(principal, attempted, "deployment", deployment))
    return outcome


def rollback_target(
    session: Session,
    *,
    dep: Deployment,
    current: TokenVersion,
    to_version_id: int | None,
    fallback_to_base: bool,
    principal: Principal,
    attempted: str,
) -> TokenVersion | RollbackOutcome | None:
    """The checked, locked target of a rollback: the named version (refused with 409 when it
    cannot be one), else the last approved one; None for the bare base model
    (``fallback_to_base``); a "no_target" outcome when there is none."""
    if to_version_id is None:
        on_stale = deployment_policy(session, deployment=dep).monitoring.rollback.on_stale_approval
        found = find_rollback_target(session, deployment=dep, exclude_version_id=current.id,
                                     allow_stale=on_stale == "use_previous_approval")
        if found.target is not None:
            return lifecycle.lock_version(session, found.target.id)
        if fallback_to_base:
            return None
        stale = ""
        if found.stale:
            ids = ", ".join(str(v) for v in found.stale)
            stale = (f"; version(s) {ids} were approved under an earlier gate policy and need re-gating "
                     f"(`govern gate run VERSION --deployment {dep.name}`, then `govern review approve VERSION`), "
                     "or set monitoring.rollback.on_stale_approval: use_previous_approval")
        return RollbackOutcome(
            "no_target", dep.name, current.id,
            message=f"deployment {dep.name!r} has no earlier approved version to roll back to "
                    f"(none was active before and is still valid){stale}",
            stale_version_ids=list(found.stale),
        )
    refusal = Refusal.of(principal, attempted, "deployment", dep.name)
    target = lifecycle.lock_version(session, to_version_id)
    if target.id == current.id:
        raise Conflict(f"version {target.id} is already the active version", refusal=refusal)
    if target.state not in (VersionState.superseded.value, VersionState.approved.value):
        raise Conflict(
            f"version {target.id} is {target.state}; a rollback target must be superseded or approved",
            details={"version_id": target.id, "current_state": target.state},
            refusal=refusal,
        )
    _check_fits(target, dep, principal, attempted)
    on_stale = deployment_policy(session, deployment=dep).monitoring.rollback.on_stale_approval
    if target.state == VersionState.approved.value or on_stale == "alert":
        check_approval_binding(session, version=target, deployment=dep, principal=principal, attempted=attempted)
    return target


def _approval_note(session: Session, dep: Deployment, target: TokenVersion | None) -> dict[str, Any] | None:
    """Under which gate policy the rollback target is approved, against the one the deployment gates with."""
    if target is None:
        return None
    digest = policies.current_gate_digest(session, deployment=dep)
    held = sorted(registry.approved_gate_digests(session, version_ids=[target.id])[target.id])
    return {"deployment_gate_digest": digest, "target_approved_under": held,
            "stale_approval": bool(held) and digest not in held}


def apply_rollback(
    session: Session,
    *,
    dep: Deployment,
    current: TokenVersion,
    target: TokenVersion | None,
    principal: Principal,
    reason: str,
    automatic: bool,
    evidence: dict[str, Any] | None = None,
    approval: dict[str, Any] | None = None,
) -> RollbackOutcome:
    """Apply a checked rollback (`check_rollback_guards`, `rollback_target`): ``current``
    leaves as rolled back, ``target`` (None: the bare base model) becomes active, in a new
    generation with its promotion row, audit entry and outbox publish."""
    kind = "auto_rollback" if automatic else "rollback"
    if target is None:
        lifecycle.transition(
            session, version_id=current.id, to=VersionState.rolled_back.value, principal=principal,
            action="rollback", audited=False,
        )
        message = "no earlier approved version: rolled back to the bare base model (fallback_to_base)"
    else:
        _swap_active(session, dep=dep, leaving=current, leaving_to=VersionState.rolled_back,
                     leaving_action="rollback", entering=target, entering_action="restore", principal=principal)
        message = "rolled back"
    promo = _record_change(
        session, dep=dep, kind=kind, version=target, previous=current, principal=principal, reason=reason,
        evidence=evidence, approval=approval,
    )
    return RollbackOutcome(
        "rolled_back", dep.name, current.id, target.id if target is not None else None, promo.generation, message
    )



def rollback_evidence(session: Session, *, deployment: str, limit: int = 200) -> dict[int, dict[str, Any]]:
    """generation -> the structured evidence of the automatic rollback that made it (from its audit entry)."""
    found: dict[int, dict[str, Any]] = {}
    for entry in audit.list_entries(session, action="deployment.auto_rollback", subject_type="deployment",
                                    subject_id=deployment, limit=limit):
        payload = json.loads(entry.payload)
        if isinstance(payload.get("evidence"), dict) and isinstance(payload.get("generation"), int):
            found[payload["generation"]] = payload["evidence"]
    return found


def freeze(
    session: Session, *, deployment: str, principal: Principal, until: datetime | None = None, reason: str | None = None
) -> Deployment:
    """Switch automatic rollback off for a deployment (optionally until a time)."""
    require_role(principal, FREEZERS, "deployment.freeze", "deployment", deployment)
    if until is not None and until.tzinfo is None:
        raise InvalidInput("the freeze expiry needs a timezone (e.g. 2026-12-01T12:00:00Z)")
    if until is not None and until <= utcnow():
        raise InvalidInput("the freeze expiry is in the past")
    dep = get_deployment_or_raise(session, name=deployment, lock=True)
    dep.frozen, dep.frozen_until = True, until
    audit.record(
        session,
        principal,
        action="deployment.freeze",
        subject_type="deployment",
        subject_id=deployment,
        payload={"until": until, "reason": reason},
    )
    return dep


def unfreeze(session: Session, *, deployment: str, principal: Principal, reason: str | None = None) -> Deployment:
    require_role(principal, FREEZERS, "deployment.unfreeze", "deployment", deployment)
    dep = get_deployment_or_raise(session, name=deployment, lock=True)
    if not dep.frozen:
        raise Conflict(
            f"deployment {deployment!r} is not frozen",
            refusal=Refusal.of(principal, "deployment.unfreeze", "deployment", deployment),
        )
    dep.frozen, dep.frozen_until = False, None
    audit.record(
        session,
        principal,
        action="deployment.unfreeze",
        subject_type="deployment",
        subject_id=deployment,
        payload={"reason": reason},
    )
    return dep


def _swap_active(
    session: Session,
    *,
    dep: Deployment,
    leaving: TokenVersion | None,
    leaving_to: VersionState,
    leaving_action: str,
    entering: TokenVersion,
    entering_action: str,
    principal: Principal,
) -> None:
    """Move the active row of a deployment: the leaving version first (the partial unique
    index allows one active row), then the entering one. The caller writes the audit entry."""
    if leaving is not None:
        lifecycle.transition(
            session, version_id=leaving.id, to=leaving_to.value, principal=principal, action=leaving_action,
            audited=False,
        )
    entering.deployment_id = dep.id
    lifecycle.transition(
        session, version_id=entering.id, to=VersionState.active.value, principal=principal, action=entering_action,
        audited=False,
    )


def get_deployment_by_id(session: Session, *, deployment_id: int) -> Deployment | None:
    return session.get(Deployment, deployment_id)


def deployment_names(session: Session, ids: set[int | None]) -> dict[int, str]:
    """The names of the deployments with these ids (None and unknown ids are left out), in one query."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    stmt = select(Deployment.id, Deployment.name).where(Deployment.id.in_(wanted))
    return {dep_id: name for dep_id, name in session.execute(stmt).tuples()}


# ---------------------------------------------------------------- reads for the workers


def lock_deployment_by_id(session: Session, *, deployment_id: int) -> Deployment | None:
    """The deployment with this id, row-locked (FOR UPDATE) and re-read from the database."""
    stmt = (select(Deployment).where(Deployment.id == deployment_id).with_for_update()
            .execution_options(populate_existing=True))
    return session.scalars(stmt).first()
