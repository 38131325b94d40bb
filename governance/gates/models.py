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
        Index("ix_gate_runs_version", "version_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"))
    policy_sha256: Mapped[str] = mapped_column(String(64))
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
