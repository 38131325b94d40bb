"""Registry tables: base models, adapters (named lines of versions), token versions, reviews, policies."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from governance.auth.models import _in
from governance.db import Base, utcnow


class VersionState(enum.StrEnum):
    submitted = "submitted"
    evaluating = "evaluating"
    gate_failed = "gate_failed"
    gate_passed = "gate_passed"
    rejected = "rejected"
    approved = "approved"
    active = "active"
    superseded = "superseded"
    rolled_back = "rolled_back"


STATE_VALUES = tuple(s.value for s in VersionState)


class BaseModel_(Base):
    __tablename__ = "base_models"
    __table_args__ = (CheckConstraint("length(weights_digest) = 64", name="digest_len"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    weights_digest: Mapped[str] = mapped_column(String(64), unique=True)
    tokenizer_digest: Mapped[str] = mapped_column(String(64))
    # hidden size, layers, heads, kv heads: what token shapes must match
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Policy(Base):
    __tablename__ = "policies"
    __table_args__ = (CheckConstraint("length(sha256) = 64", name="sha_len"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Adapter(Base):
    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="RESTRICT"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TokenVersion(Base):
    __tablename__ = "token_versions"
    __table_args__ = (
        CheckConstraint(_in("state", STATE_VALUES), name="state_known"),
        CheckConstraint("length(sha256) = 64", name="sha_len"),
        CheckConstraint("size_bytes > 0", name="size_positive"),
        CheckConstraint("state <> 'active' or deployment_id is not null", name="active_has_deployment"),
        # One active version per deployment, enforced by the database itself.
        Index(
            "uq_token_versions_one_active",
            "deployment_id",
            unique=True,
            postgresql_where=text("state = 'active'"),
        ),
        Index("ix_token_versions_state", "state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="RESTRICT"), index=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="RESTRICT"))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    size_bytes: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONB)
    n_tokens: Mapped[int] = mapped_column(Integer)
    param_count: Mapped[int] = mapped_column(Integer)
    data_digest: Mapped[str | None] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"))
    # the deployment it was submitted for (gate compares with its active version), and
    # after promotion the deployment it serves on
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id", ondelete="RESTRICT"))
    state: Mapped[str] = mapped_column(String(20), default=VersionState.submitted.value)
    submitted_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # optimistic concurrency: every transition bumps it
    row_version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": row_version}


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("decision in ('approve', 'reject')", name="decision_known"),
        CheckConstraint("length(btrim(comment)) > 0", name="comment_required"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    decision: Mapped[str] = mapped_column(String(10))
    comment: Mapped[str] = mapped_column(Text)
    # what the approval is bound to; promotion re-checks them
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    evidence_digest: Mapped[str | None] = mapped_column(String(64))
    policy_sha256: Mapped[str | None] = mapped_column(String(64))
    # the gate policy (binding sections) and the gate run the approval rests on: a
    # deployment accepts the approval while it gates with the same digest
    gate_digest: Mapped[str | None] = mapped_column(String(64))
    gate_run_id: Mapped[int | None] = mapped_column(ForeignKey("gate_runs.id", ondelete="RESTRICT"))
    # the waivers of that gate run the officer acknowledged by name (null: it waived none,
    # or the review predates waivers)
    acknowledged_waivers: Mapped[list[str] | None] = mapped_column(JSONB, nullable=True)
    # the digest of the shadow rollout verdict the officer saw, when the version had one
    shadow_evidence_digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
