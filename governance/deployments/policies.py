"""Versions of a deployment's policy: proposed by one person, approved by another, all kept.

A deployment starts with version 1 (the policy it was created with). A change is a
proposal (`propose_policy`: an ML engineer or an admin, with a reason) that a compliance
officer who did not propose it approves or rejects (`decide_policy`); approving makes it
the deployment's policy (`Deployment.policy_id`) in the same transaction as its audit
entry. Every version stays in `deployment_policies` with its sha256, gate digest, author,
time, reason and decision; `history` gives them newest first with a diff against the
version before.

Only the policy's binding sections (`governance.policy.BINDING_SECTIONS`: gate, format)
bind approvals: a change elsewhere keeps every approval valid, a change there leaves the
versions approved under the old gate policy to be re-gated (`stale_versions` names them).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from governance import policy as policy_schema
from governance.audit import service as audit
from governance.db import utcnow
from governance.deployments.models import Deployment, DeploymentPolicy
from governance.errors import Conflict, Forbidden, InvalidInput, NotFound, Refusal
from governance.policy_store import store_policy
from governance.principal import Principal, require_allowed
from governance.registry import service as registry

if TYPE_CHECKING:  # annotations only: rooms talk through service functions
    from governance.registry.models import Policy


@dataclass(frozen=True)
class PolicyVersion:
    """One version of a deployment's policy, as the history shows it."""

    row: DeploymentPolicy
    content: str
    diff: str  # unified diff against the version before ("" for version 1)
    changed_sections: list[str]
    binds_approvals: bool  # its gate digest differs from the version before


@functools.lru_cache(maxsize=256)
def gate_digest_of_text(content: str) -> str:
    """The gate digest of a stored policy file; memoized, as every promotion, rollback and
    deployment read asks it of the same few files (a pure function of the text and this release)."""
    return policy_schema.gate_digest(policy_schema.parse_policy(content)[0])


def current_gate_digest(session: Session, *, deployment: Deployment) -> str:
    """The gate digest of the policy the deployment runs now."""
    policy = registry.get_policy(session, policy_id=deployment.policy_id)
    assert policy is not None  # foreign key
    return gate_digest_of_text(policy.content)


def record_initial(
    session: Session, *, deployment: Deployment, policy: Policy, principal: Principal
) -> DeploymentPolicy:
    """Version 1: the policy a deployment is created with (its creation's audit entry covers it)."""
    row = DeploymentPolicy(
        deployment_id=deployment.id, seq=1, policy_id=policy.id, policy_sha256=policy.sha256,
        gate_digest=gate_digest_of_text(policy.content), state="active",
        reason="the policy the deployment was created with", proposed_by=principal.user_id,
        proposed_by_actor=principal.actor, decided_by=principal.user_id, decided_by_actor=principal.actor,
        decided_at=utcnow(), decision_comment="created with the deployment",
    )
    session.add(row)
    session.flush()
    return row


def _rows(session: Session, deployment: Deployment) -> list[DeploymentPolicy]:
    return list(session.scalars(
        select(DeploymentPolicy).where(DeploymentPolicy.deployment_id == deployment.id).order_by(DeploymentPolicy.seq)
    ))


def _ensure_initial(session: Session, deployment: Deployment, principal: Principal) -> list[DeploymentPolicy]:
    """The deployment's versions; a deployment stored without any gets its current policy as version 1."""
    rows = _rows(session, deployment)
    if not rows:
        policy = registry.get_policy(session, policy_id=deployment.policy_id)
        assert policy is not None  # foreign key
        rows = [record_initial(session, deployment=deployment, policy=policy, principal=principal)]
    return rows


def _lock_deployment(session: Session, name: str) -> Deployment:
    dep = session.scalars(select(Deployment).where(Deployment.name == name).with_for_update()
                          .execution_options(populate_existing=True)).first()
    if dep is None:
        raise NotFound(f"no deployment named {name!r}")
    return dep


def propose_policy(
    session: Session, *, deployment: str, policy_text: str, reason: str, principal: Principal
) -> DeploymentPolicy:
    """A new version of the deployment's policy, waiting for a compliance officer's decision."""
    require_allowed(principal, "deployment.policy_propose", "deployment", deployment)
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("a policy change needs a reason (--reason): what it changes and why")
    dep = _lock_deployment(session, deployment)
    refusal = Refusal.of(principal, "deployment.policy_propose", "deployment", deployment)
    rows = _ensure_initial(session, dep, principal)
    pending = next((r for r in rows if r.state == "proposed"), None)
    if pending is not None:
        raise Conflict(
            f"deployment {deployment!r} already has policy version {pending.seq} waiting for a decision; a compliance "
            f"officer approves or rejects it first (`govern deployments approve-policy {deployment} --comment TEXT` "
            f"or `reject-policy`)",
            details={"deployment": deployment, "pending_seq": pending.seq}, refusal=refusal)
    policy = store_policy(session, content=policy_text)
    active = next(r for r in rows if r.state == "active")
    if policy.sha256 == active.policy_sha256:
        raise Conflict(f"deployment {deployment!r} already runs this policy (version {active.seq}); nothing to change",
                       details={"deployment": deployment, "seq": active.seq}, refusal=refusal)
    row = DeploymentPolicy(
        deployment_id=dep.id, seq=max(r.seq for r in rows) + 1, policy_id=policy.id, policy_sha256=policy.sha256,
        gate_digest=gate_digest_of_text(policy.content), state="proposed", reason=reason,
        proposed_by=principal.user_id, proposed_by_actor=principal.actor,
    )
    session.add(row)
    session.flush()
    old = registry.get_policy(session, policy_id=active.policy_id)
    assert old is not None  # foreign key
    audit.record(session, principal, action="deployment.policy_propose", subject_type="deployment",
                 subject_id=deployment, payload={
                     "seq": row.seq, "policy_sha256": row.policy_sha256, "gate_digest": row.gate_digest,
                     "previous_seq": active.seq, "previous_policy_sha256": active.policy_sha256,
                     "changed_sections": _sections(old.content, policy.content),
                     "binds_approvals": row.gate_digest != active.gate_digest, "reason": reason})
    return row


@dataclass(frozen=True)
class PolicyDecision:
    row: DeploymentPolicy
    previous: DeploymentPolicy
    stale_version_ids: list[int]  # approved under the old gate policy, to re-gate (when the gate changed)


def decide_policy(
    session: Session, *, deployment: str, approve: bool, comment: str, principal: Principal, seq: int | None = None
) -> PolicyDecision:
    """Approve (it becomes the deployment's policy) or reject the pending proposal; four eyes."""
    action = "deployment.policy_approve" if approve else "deployment.policy_reject"
    require_allowed(principal, action, "deployment", deployment)
    comment = (comment or "").strip()
    if not comment:
        raise InvalidInput("a policy decision needs a comment that says why (--comment)")
    dep = _lock_deployment(session, deployment)
    refusal = Refusal.of(principal, action, "deployment", deployment)
    rows = _ensure_initial(session, dep, principal)
    pending = next((r for r in rows if r.state == "proposed"), None)
    if pending is None or (seq is not None and pending.seq != seq):
        what = f"policy version {seq}" if seq is not None else "a policy version"
        raise Conflict(f"deployment {deployment!r} has no {what} waiting for a decision "
                       f"(propose one with `govern deployments set-policy {deployment} --policy FILE --reason TEXT`)",
                       details={"deployment": deployment, "pending_seq": pending.seq if pending else None},
                       refusal=refusal)
    if principal.user_id is None or principal.user_id == pending.proposed_by:
        raise Forbidden(f"four eyes: {principal.actor} proposed policy version {pending.seq} and may not decide on it",
                        details={"deployment": deployment, "seq": pending.seq}, refusal=refusal)
    previous = next(r for r in rows if r.state == "active")
    pending.decided_by, pending.decided_by_actor = principal.user_id, principal.actor
    pending.decided_at, pending.decision_comment = utcnow(), comment
    stale: list[int] = []
    if approve:
        previous.state = "superseded"
        session.flush()  # the partial unique index allows one active version
        pending.state = "active"
        dep.policy_id = pending.policy_id
        if pending.gate_digest != previous.gate_digest:
            stale = registry.versions_needing_regate(session, deployment_id=dep.id, gate_digest=pending.gate_digest)
    else:
        pending.state = "rejected"
    session.flush()
    audit.record(session, principal, action=action, subject_type="deployment", subject_id=deployment, payload={
        "seq": pending.seq, "policy_sha256": pending.policy_sha256, "gate_digest": pending.gate_digest,
        "previous_seq": previous.seq, "previous_gate_digest": previous.gate_digest,
        "binds_approvals": pending.gate_digest != previous.gate_digest, "comment": comment,
        **({"versions_to_regate": stale} if approve else {})})
    return PolicyDecision(pending, previous, stale)


def _sections(old: str, new: str) -> list[str]:
    try:
        return policy_schema.changed_sections(policy_schema.parse_policy(old)[0], policy_schema.parse_policy(new)[0])
    except policy_schema.PolicyError:
        return []


def history(session: Session, *, deployment: str) -> list[PolicyVersion]:
    """Every version of the deployment's policy, newest first, each with its diff against the one before."""
    dep = session.scalars(select(Deployment).where(Deployment.name == deployment)).first()
    if dep is None:
        raise NotFound(f"no deployment named {deployment!r}")
    rows = _rows(session, dep)
    texts = registry.policy_texts(session, policy_ids={r.policy_id for r in rows} | {dep.policy_id})
    if not rows:  # stored before policy versions existed and never changed since
        content = texts[dep.policy_id]
        return [PolicyVersion(DeploymentPolicy(
            deployment_id=dep.id, seq=1, policy_id=dep.policy_id, policy_sha256=policy_schema.parse_policy(content)[1],
            gate_digest=gate_digest_of_text(content), state="active",
            reason="the policy the deployment was created with", proposed_by_actor="", proposed_at=dep.created_at),
            content, "", [], False)]
    out: list[PolicyVersion] = []
    before: DeploymentPolicy | None = None
    for row in rows:
        content = texts[row.policy_id]
        if before is None:
            out.append(PolicyVersion(row, content, "", [], False))
        else:
            old = texts[before.policy_id]
            diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), content.splitlines(keepends=True),
                                                fromfile=f"policy v{before.seq}", tofile=f"policy v{row.seq}"))
            binds = row.gate_digest != before.gate_digest
            out.append(PolicyVersion(row, content, diff, _sections(old, content), binds))
        # a rejected proposal is diffed against what was active, and the next one too
        if row.state != "rejected":
            before = row
    return out[::-1]


def pending_seq(session: Session, *, deployment_id: int) -> int | None:
    return session.scalar(select(DeploymentPolicy.seq).where(
        DeploymentPolicy.deployment_id == deployment_id, DeploymentPolicy.state == "proposed"))


def active_seq(session: Session, *, deployment_id: int) -> int:
    """The number of the deployment's policy version in force (1 for one never changed)."""
    return int(session.scalar(select(func.max(DeploymentPolicy.seq)).where(
        DeploymentPolicy.deployment_id == deployment_id, DeploymentPolicy.state == "active")) or 1)
