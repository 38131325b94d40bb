"""Routes of deployments: create, read, the active version, promote, roll back, freeze."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from sqlalchemy.orm import Session

from governance.api.deps import PageDep, SessionDep, may, may_on_deployment
from governance.deployments import policies, service
from governance.deployments.models import Deployment, Promotion
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
    UnfreezeIn,
)
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
        deployment=info.deployment, version_id=info.version_id, sha256=info.sha256, generation=info.generation
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
