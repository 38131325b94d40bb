"""Deployments, promotions, rollbacks and freezes as the API shows and accepts them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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


class RolloutPlanRead(Out):
    """The running rollout as replicas apply it (inside ``ActiveRead.rollout``)."""

    rollout_id: int
    mode: str
    version_id: int
    sha256: str
    sample: float = Field(description="shadow: share of requests decoded a second time with the candidate")
    weight: float = Field(description="canary: share of callers served by the candidate")
    step: int


class ActiveRead(Out):
    deployment: str
    version_id: int | None
    sha256: str | None
    generation: int
    rollout: RolloutPlanRead | None = Field(None, description="the running rollout's candidate, if any")


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


class RolloutStart(StrictIn):
    version_id: int = Field(ge=1)
    mode: str = Field(pattern="^(shadow|canary)$", description="shadow (gate passed) or canary (approved)")
    sample: float | None = Field(None, gt=0.0, le=1.0, description="shadow share; default: the policy's rollout.sample")
    steps: list[int] | None = Field(None, min_length=1, max_length=20,
                                    description="canary weights in percent, increasing, the last 100")
    min_samples: int | None = Field(None, ge=1, le=1_000_000, description="pairs a step needs before it can pass")


class RolloutAdvanceIn(StrictIn):
    from_step: int | None = Field(None, ge=0, description="the step the caller saw; another one changes nothing")
    reason: str | None = Field(None, max_length=2000)


class RolloutAbortIn(StrictIn):
    reason: str = Field(min_length=1, max_length=2000)


class RolloutEventRead(Out):
    seq: int
    kind: str
    step: int
    weight: float
    generation: int | None
    actor: str
    reason: str | None
    verdict_id: int | None
    created_at: datetime


class RolloutVerdictRead(Out):
    id: int
    step: int
    n_pairs: int
    decision: str
    summary: str
    tests: list[dict[str, Any]]
    differing: list[dict[str, Any]]
    evidence_digest: str
    created_at: datetime


class RolloutRead(Out):
    id: int
    deployment: str
    version_id: int
    baseline_version_id: int | None
    mode: str
    state: str
    sample: float
    steps: list[int]
    step: int
    weight: float = Field(description="share of callers on the candidate now (0 when not a running canary)")
    min_samples: int
    pairs: int = Field(description="pairs recorded so far (all steps)")
    started_by: str
    started_at: datetime
    step_started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    generation: int
    events: list[RolloutEventRead]
    latest_verdict: RolloutVerdictRead | None


class RolloutChangeRead(Out):
    changed: bool = Field(description="false: nothing to do (already advanced, already ended)")
    message: str
    promotion_generation: int | None
    rollout: RolloutRead
