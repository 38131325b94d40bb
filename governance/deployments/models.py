"""Deployments and their promotion history. The generation number only increases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
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


ROLLOUT_MODES = ("shadow", "canary")
ROLLOUT_STATES = ("running", "passed", "failed", "aborted", "completed")


class Rollout(Base):
    """A candidate version beside a deployment's active one on live traffic.

    ``shadow``: a sampled share of requests is decoded a second time with the candidate in
    the same batch; only the active answer is returned. ``canary``: the share of callers
    whose stable key hashes below ``weight`` gets the candidate's answer (and the active
    answer is decoded beside it, unreturned), step by step through ``steps``. At most one
    rollout per deployment is running, enforced by a partial unique index. Every change
    bumps the deployment's generation, so replicas converge on it like on a promotion.
    """

    __tablename__ = "rollouts"
    __table_args__ = (
        CheckConstraint("mode in ('shadow', 'canary')", name="mode_known"),
        CheckConstraint("state in ('running', 'passed', 'failed', 'aborted', 'completed')", name="state_known"),
        CheckConstraint("sample > 0 and sample <= 1", name="sample_share"),
        CheckConstraint("min_samples >= 1", name="min_samples_positive"),
        CheckConstraint("step_index >= 0", name="step_index_nonneg"),
        Index("uq_rollouts_one_running", "deployment_id", unique=True, postgresql_where=text("state = 'running'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="RESTRICT"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"), index=True)
    # the active version the candidate is compared with (None: the bare base model)
    baseline_version_id: Mapped[int | None] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"))
    mode: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(10), default="running")
    sample: Mapped[float] = mapped_column(Float)  # shadow: share of requests decoded twice
    steps: Mapped[list[int]] = mapped_column(JSONB)  # canary: weights in percent, the last is 100
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    min_samples: Mapped[int] = mapped_column(Integer)
    started_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    started_by_actor: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    # pairs recorded since this time belong to the current step (a step's verdict reads only those)
    step_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(BigInteger)  # the deployment generation of the last change


class RolloutEvent(Base):
    """The history of a rollout, one row per change: start, advance, verdict, abort, fail, pass, complete."""

    __tablename__ = "rollout_events"
    __table_args__ = (UniqueConstraint("rollout_id", "seq", name="uq_rollout_events_seq"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="RESTRICT"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    step_index: Mapped[int] = mapped_column(Integer)
    weight: Mapped[float] = mapped_column(Float)  # share of callers on the candidate after the event (0..1)
    generation: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    verdict_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RolloutVerdict(Base):
    """One paired analysis of a rollout's pairs (the worker's): every test with n, statistic,
    threshold, p-value and minimum detectable effect, and the digest of that evidence."""

    __tablename__ = "rollout_verdicts"
    __table_args__ = (CheckConstraint("decision in ('pass', 'fail', 'pending')", name="decision_known"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="RESTRICT"), index=True)
    step_index: Mapped[int] = mapped_column(Integer)
    n_pairs: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(10))
    summary: Mapped[str] = mapped_column(Text)
    tests: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    differing: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)  # pairs whose checks differ, for the UI
    evidence_digest: Mapped[str] = mapped_column(String(64))
    upto_output_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
