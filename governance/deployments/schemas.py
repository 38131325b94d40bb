"""Deployments, promotions, rollbacks and freezes as the API shows and accepts them."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from governance.schemas import Out, StrictIn


class DeploymentCreate(StrictIn):
    name: str = Field(min_length=1, max_length=100)
    base_model: str = Field(min_length=1, max_length=200, description="a registered base model's name")
    policy: str = Field(
        min_length=1, max_length=200_000, description="the policy file's YAML text (stored with its sha256)"
    )


class DeploymentRead(Out):
    name: str
    base_model: str
    policy_sha256: str
    gate_digest: str = Field(description="digest of the policy's binding sections (gate, format); approvals bind to it")
    policy_seq: int = Field(description="the number of the deployment's policy version in force")
    pending_policy_seq: int | None = Field(description="a proposed policy version waiting for a decision")
    generation: int
    frozen: bool
    frozen_until: datetime | None
    active_version_id: int | None
    active_sha256: str | None
    created_at: datetime


class ActiveRead(Out):
    deployment: str
    version_id: int | None
    sha256: str | None
    generation: int


class PromoteIn(StrictIn):
    version_id: int = Field(ge=1)


class RollbackIn(StrictIn):
    reason: str = Field(min_length=1, max_length=2_000)
    to_version_id: int | None = Field(None, ge=1, description="default: the last approved token")


class FreezeIn(StrictIn):
    until: datetime | None = Field(None, description="optional expiry (with a timezone)")
    reason: str | None = Field(None, max_length=2_000)


class UnfreezeIn(StrictIn):
    reason: str | None = Field(None, max_length=2_000)


class PromotionRead(Out):
    deployment: str
    generation: int
    kind: str
    version_id: int | None
    previous_version_id: int | None
    actor: str
    reason: str | None
    created_at: datetime


class PolicyProposeIn(StrictIn):
    policy: str = Field(min_length=1, max_length=200_000, description="the new policy file's YAML text")
    reason: str = Field(min_length=1, max_length=2_000, description="what the change is for")


class PolicyDecisionIn(StrictIn):
    comment: str = Field(min_length=1, max_length=10_000)


class PolicyVersionRead(Out):
    deployment: str
    seq: int
    state: str = Field(description="proposed, active, superseded or rejected")
    policy_sha256: str
    gate_digest: str
    reason: str
    proposed_by: str
    proposed_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_comment: str | None
    changed_sections: list[str] = Field(description="top-level sections that differ from the version before")
    binds_approvals: bool = Field(description="the gate digest changed: approvals under the old one do not carry over")
    diff: str = Field(description="unified diff of the file against the version before")
    content: str


class PolicyDecisionRead(PolicyVersionRead):
    versions_to_regate: list[int] = Field(
        description="versions of the deployment approved under the old gate policy only (re-gate them to keep them "
                    "as promotion or rollback targets)")
