"""Gate runs and per-case results. The evaluators write them; the registry reads the verdict."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from governance.db import Base, utcnow


class GateRun(Base):
    __tablename__ = "gate_runs"
    __table_args__ = (
        CheckConstraint("status in ('queued', 'running', 'passed', 'failed', 'error')", name="status_known"),
        CheckConstraint("kind in ('first', 'regate')", name="kind_known"),
        Index("ix_gate_runs_version", "version_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"))
    policy_sha256: Mapped[str] = mapped_column(String(64))
    # the digest of the policy's binding sections (gate, format) the run judged by; an
    # approval binds to it (`governance.policy.gate_digest`); null only on rows whose
    # policy text was never stored
    gate_digest: Mapped[str | None] = mapped_column(String(64))
    # first: the gate of a new submission; regate: an existing version evaluated again
    # under a deployment's current gate policy (`deployment_id`)
    kind: Mapped[str] = mapped_column(String(10), default="first", server_default="first")
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id", ondelete="RESTRICT"))
    requested_by: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10), default="queued")
    evidence_digest: Mapped[str | None] = mapped_column(String(64))
    # per suite: metric, threshold, interval / p-value, sample size, verdict
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class GateCaseResult(Base):
    __tablename__ = "gate_case_results"
    __table_args__ = (UniqueConstraint("gate_run_id", "suite", "case_id", name="uq_gate_case_results_case"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    gate_run_id: Mapped[int] = mapped_column(ForeignKey("gate_runs.id", ondelete="CASCADE"))
    suite: Mapped[str] = mapped_column(String(50))
    case_id: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(100))
    prompt: Mapped[str] = mapped_column(Text)
    candidate_output: Mapped[str] = mapped_column(Text)
    baseline_output: Mapped[str | None] = mapped_column(Text)
    passed: Mapped[bool] = mapped_column(Boolean)
    scores: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
