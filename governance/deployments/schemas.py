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
