"""Routes of deployments: create, read, the active version, promote, roll back, freeze."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from sqlalchemy.orm import Session

from governance.api.deps import PageDep, SessionDep, may, may_on_deployment
from governance.deployments import policies, rollouts, service
from governance.deployments.models import Deployment, Promotion, Rollout, RolloutVerdict
from governance.deployments.schemas import (
    ActiveRead,
    DeploymentCreate,
    DeploymentRead,
    FreezeIn,
    PolicyDecisionIn,
    PolicyDecisionRead,
    PolicyProposeIn,
    PolicyVersionRead,
    PromoteIn,
    PromotionRead,
    RollbackIn,
    RolloutAbortIn,
    RolloutAdvanceIn,
    RolloutChangeRead,
    RolloutEventRead,
    RolloutPlanRead,
    RolloutRead,
    RolloutStart,
    RolloutVerdictRead,
    UnfreezeIn,
)
from governance.errors import NotFound
from governance.outputs import service as outputs
from governance.principal import Principal

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])
Reader = Annotated[Principal, may("deployment.read")]
# a route naming one deployment: a scoped service key must be bound to it
DeploymentReader = Annotated[Principal, may_on_deployment("deployment.read")]


def deployment_read(session: Session, dep: Deployment) -> DeploymentRead:
    active = service.active_version(session, deployment=dep)
    return DeploymentRead(
        name=dep.name,
        base_model=service.base_model_of(session, deployment=dep).name,
        policy_sha256=service.policy_of(session, deployment=dep).sha256,
        gate_digest=policies.current_gate_digest(session, deployment=dep),
        policy_seq=policies.active_seq(session, deployment_id=dep.id),
        pending_policy_seq=policies.pending_seq(session, deployment_id=dep.id),
        generation=dep.generation,
        frozen=service.is_frozen(dep),
        frozen_until=dep.frozen_until,
        active_version_id=active.id if active else None,
        active_sha256=active.sha256 if active else None,
        created_at=dep.created_at,
    )


def promotion_read(name: str, p: Promotion) -> PromotionRead:
    return PromotionRead(
        deployment=name,
        generation=p.generation,
        kind=p.kind,
        version_id=p.version_id,
        previous_version_id=p.previous_version_id,
        actor=p.actor,
        reason=p.reason,
        created_at=p.created_at,
    )


@router.post("", response_model=DeploymentRead, status_code=201)
def create(
    body: DeploymentCreate, session: SessionDep, principal: Annotated[Principal, may("deployment.create")]
) -> DeploymentRead:
    dep = service.create_deployment(
        session, name=body.name, base_model=body.base_model, policy_text=body.policy, principal=principal
    )
    return deployment_read(session, dep)


@router.get("", response_model=list[DeploymentRead])
def list_all(session: SessionDep, principal: Reader) -> list[DeploymentRead]:
    return [deployment_read(session, d) for d in service.list_deployments(session) if principal.may_act_on(d.name)]


@router.get("/{name}", response_model=DeploymentRead)
def show(name: str, session: SessionDep, _: DeploymentReader) -> DeploymentRead:
    return deployment_read(session, service.get_deployment_or_raise(session, name=name))


@router.get("/{name}/active", response_model=ActiveRead)
def active(name: str, session: SessionDep, _: DeploymentReader) -> ActiveRead:
    info = service.active_info(session, name=name)
    return ActiveRead(
        deployment=info.deployment, version_id=info.version_id, sha256=info.sha256, generation=info.generation,
        rollout=RolloutPlanRead(**info.rollout) if info.rollout is not None else None,
    )


@router.get("/{name}/promotions", response_model=list[PromotionRead])
def history(name: str, session: SessionDep, page: PageDep, _: DeploymentReader) -> list[PromotionRead]:
    return [
        promotion_read(name, p) for p in service.promotions(session, name=name, limit=page.limit, offset=page.offset)
    ]


@router.post("/{name}/promote", response_model=PromotionRead)
def promote(
    name: str, body: PromoteIn, session: SessionDep, principal: Annotated[Principal, may("deployment.promote")]
) -> PromotionRead:
    return promotion_read(
        name, service.promote(session, deployment=name, version_id=body.version_id, principal=principal)
    )


@router.post("/{name}/rollback", response_model=PromotionRead)
def rollback(
    name: str, body: RollbackIn, session: SessionDep, principal: Annotated[Principal, may("deployment.rollback")]
) -> PromotionRead:
    outcome = service.rollback(
        session, deployment=name, principal=principal, reason=body.reason, to_version_id=body.to_version_id
    )
    promos = service.promotions(session, name=name, limit=1)
    assert outcome.status == "rolled_back" and promos
    return promotion_read(name, promos[0])


@router.post("/{name}/freeze", response_model=DeploymentRead)
def freeze(
    name: str, body: FreezeIn, session: SessionDep, principal: Annotated[Principal, may("deployment.freeze")]
) -> DeploymentRead:
    return deployment_read(
        session, service.freeze(session, deployment=name, principal=principal, until=body.until, reason=body.reason)
    )


@router.post("/{name}/unfreeze", response_model=DeploymentRead)
def unfreeze(
    name: str, body: UnfreezeIn, session: SessionDep, principal: Annotated[Principal, may("deployment.unfreeze")]
) -> DeploymentRead:
    return deployment_read(session, service.unfreeze(session, deployment=name, principal=principal, reason=body.reason))


def policy_version_read(name: str, v: policies.PolicyVersion) -> PolicyVersionRead:
    r = v.row
    return PolicyVersionRead(
        deployment=name, seq=r.seq, state=r.state, policy_sha256=r.policy_sha256, gate_digest=r.gate_digest,
        reason=r.reason, proposed_by=r.proposed_by_actor, proposed_at=r.proposed_at, decided_by=r.decided_by_actor,
        decided_at=r.decided_at, decision_comment=r.decision_comment, changed_sections=v.changed_sections,
        binds_approvals=v.binds_approvals, diff=v.diff, content=v.content,
    )


def _version_of(session: Session, name: str, seq: int) -> policies.PolicyVersion:
    return next(v for v in policies.history(session, deployment=name) if v.row.seq == seq)


@router.get("/{name}/policies", response_model=list[PolicyVersionRead])
def policy_history(name: str, session: SessionDep, _: DeploymentReader) -> list[PolicyVersionRead]:
    """Every version of the deployment's policy, newest first, each with its diff against the one before."""
    return [policy_version_read(name, v) for v in policies.history(session, deployment=name)]


@router.post("/{name}/policies", response_model=PolicyVersionRead, status_code=201)
def propose_policy(
    name: str, body: PolicyProposeIn, session: SessionDep,
    principal: Annotated[Principal, may("deployment.policy_propose")],
) -> PolicyVersionRead:
    """Propose the deployment's next policy; a compliance officer who did not propose it decides."""
    row = policies.propose_policy(session, deployment=name, policy_text=body.policy, reason=body.reason,
                                  principal=principal)
    return policy_version_read(name, _version_of(session, name, row.seq))


def _decide(name: str, seq: int, approve: bool, body: PolicyDecisionIn, session: Session,
            principal: Principal) -> PolicyDecisionRead:
    decision = policies.decide_policy(session, deployment=name, seq=seq, approve=approve, comment=body.comment,
                                      principal=principal)
    read = policy_version_read(name, _version_of(session, name, decision.row.seq))
    return PolicyDecisionRead(**read.model_dump(), versions_to_regate=decision.stale_version_ids)


@router.post("/{name}/policies/{seq}/approve", response_model=PolicyDecisionRead)
def approve_policy(
    name: str, seq: int, body: PolicyDecisionIn, session: SessionDep,
    principal: Annotated[Principal, may("deployment.policy_approve")],
) -> PolicyDecisionRead:
    """Make the proposed version the deployment's policy (one transaction with its audit entry)."""
    return _decide(name, seq, True, body, session, principal)


@router.post("/{name}/policies/{seq}/reject", response_model=PolicyDecisionRead)
def reject_policy(
    name: str, seq: int, body: PolicyDecisionIn, session: SessionDep,
    principal: Annotated[Principal, may("deployment.policy_reject")],
) -> PolicyDecisionRead:
    return _decide(name, seq, False, body, session, principal)


# ---------------------------------------------------------------- rollouts


def rollout_read(session: Session, name: str, ro: Rollout) -> RolloutRead:
    last = rollouts.latest_verdict(session, rollout_id=ro.id)
    return RolloutRead(
        id=ro.id, deployment=name, version_id=ro.version_id, baseline_version_id=ro.baseline_version_id,
        mode=ro.mode, state=ro.state, sample=float(ro.sample), steps=list(ro.steps), step=ro.step_index,
        weight=service.rollout_weight(ro), min_samples=ro.min_samples,
        pairs=outputs.pair_counts(session, rollout_ids=[ro.id]).get(ro.id, 0),
        started_by=ro.started_by_actor, started_at=ro.started_at, step_started_at=ro.step_started_at,
        ended_at=ro.ended_at, end_reason=ro.end_reason, generation=ro.generation,
        events=[RolloutEventRead(seq=e.seq, kind=e.kind, step=e.step_index, weight=e.weight, generation=e.generation,
                                 actor=e.actor, reason=e.reason, verdict_id=e.verdict_id, created_at=e.created_at)
                for e in rollouts.events(session, rollout_id=ro.id)],
        latest_verdict=verdict_read(last) if last is not None else None,
    )


def verdict_read(v: RolloutVerdict) -> RolloutVerdictRead:
    return RolloutVerdictRead(id=v.id, step=v.step_index, n_pairs=v.n_pairs, decision=v.decision, summary=v.summary,
                              tests=list(v.tests), differing=list(v.differing), evidence_digest=v.evidence_digest,
                              created_at=v.created_at)


def _change_read(session: Session, name: str, change: rollouts.RolloutChange) -> RolloutChangeRead:
    return RolloutChangeRead(changed=change.changed, message=change.message,
                             promotion_generation=change.promotion_generation,
                             rollout=rollout_read(session, name, change.rollout))


@router.post("/{name}/rollouts", response_model=RolloutRead, status_code=201)
def start_rollout(
    name: str, body: RolloutStart, session: SessionDep,
    principal: Annotated[Principal, may_on_deployment("rollout.start")],
) -> RolloutRead:
    """Start a shadow (gate passed) or canary (approved) rollout of a version; 409 names why not."""
    ro = rollouts.start_rollout(session, deployment=name, version_id=body.version_id, mode=body.mode,
                                principal=principal, sample=body.sample, steps=body.steps,
                                min_samples=body.min_samples)
    return rollout_read(session, name, ro)


@router.get("/{name}/rollouts", response_model=list[RolloutRead])
def rollout_history(
    name: str, session: SessionDep, page: PageDep, _: Annotated[Principal, may_on_deployment("rollout.read")],
) -> list[RolloutRead]:
    """The deployment's rollouts, newest first, each with its history and latest verdict."""
    return [rollout_read(session, name, ro)
            for ro in rollouts.history(session, deployment=name, limit=page.limit, offset=page.offset)]


@router.get("/{name}/rollouts/current", response_model=RolloutRead)
def current_rollout(
    name: str, session: SessionDep, _: Annotated[Principal, may_on_deployment("rollout.read")],
) -> RolloutRead:
    """The running rollout (404 when none runs)."""
    ro = rollouts.current(session, deployment=name)
    if ro is None:
        raise NotFound(f"deployment {name!r} runs no rollout")
    return rollout_read(session, name, ro)


@router.post("/{name}/rollouts/current/advance", response_model=RolloutChangeRead)
def advance_rollout(
    name: str, body: RolloutAdvanceIn, session: SessionDep,
    principal: Annotated[Principal, may_on_deployment("rollout.advance")],
) -> RolloutChangeRead:
    """Step the running canary on (from 50% to 100% this is the promotion); ``from_step`` makes it one step."""
    change = rollouts.advance(session, deployment=name, principal=principal, from_step=body.from_step,
                              reason=body.reason)
    return _change_read(session, name, change)


@router.post("/{name}/rollouts/current/abort", response_model=RolloutChangeRead)
def abort_rollout(
    name: str, body: RolloutAbortIn, session: SessionDep,
    principal: Annotated[Principal, may_on_deployment("rollout.abort")],
) -> RolloutChangeRead:
    """Stop the running rollout (all traffic on the active token). Idempotent: 200 with changed false."""
    change = rollouts.abort(session, deployment=name, principal=principal, reason=body.reason)
    if change is None:
        raise NotFound(f"deployment {name!r} has never had a rollout")
    return _change_read(session, name, change)
