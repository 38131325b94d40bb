"""Deployments and their promotion history. The generation number only increases."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from governance.db import Base, utcnow


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (CheckConstraint("generation >= 0", name="generation_nonneg"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="RESTRICT"))
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="RESTRICT"))
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    frozen: Mapped[bool] = mapped_column(Boolean, default=False)
    frozen_until: Mapped[datetime | None]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Promotion(Base):
    """One row per change of the active version (promotion or rollback), by generation."""

    __tablename__ = "promotions"
    __table_args__ = (
        UniqueConstraint("deployment_id", "generation", name="uq_promotions_deployment_generation"),
        CheckConstraint("kind in ('promote', 'rollback', 'auto_rollback')", name="kind_known"),
        CheckConstraint("generation >= 1", name="generation_positive"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="RESTRICT"), index=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"))
    previous_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("token_versions.id", ondelete="RESTRICT")
    )
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


POLICY_STATES = ("proposed", "active", "superseded", "rejected")


class DeploymentPolicy(Base):
    """One version of a deployment's policy: proposed by one person, decided by another.

    ``seq`` counts a deployment's versions from 1 (the policy it was created with). At most
    one is active (the one `Deployment.policy_id` points to) and at most one is proposed,
    both enforced by the database.
    """

    __tablename__ = "deployment_policies"
    __table_args__ = (
        UniqueConstraint("deployment_id", "seq", name="uq_deployment_policies_seq"),
        CheckConstraint("state in ('proposed', 'active', 'superseded', 'rejected')", name="state_known"),
        CheckConstraint("seq >= 1", name="seq_positive"),
        CheckConstraint("length(btrim(reason)) > 0", name="reason_required"),
        Index("uq_deployment_policies_one_active", "deployment_id", unique=True,
              postgresql_where=text("state = 'active'")),
        Index("uq_deployment_policies_one_proposed", "deployment_id", unique=True,
              postgresql_where=text("state = 'proposed'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="RESTRICT"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="RESTRICT"))
    policy_sha256: Mapped[str] = mapped_column(String(64))
    gate_digest: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str] = mapped_column(Text)
    proposed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    proposed_by_actor: Mapped[str] = mapped_column(String(200))
    proposed_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    decided_by_actor: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None]
    decision_comment: Mapped[str | None] = mapped_column(Text)
