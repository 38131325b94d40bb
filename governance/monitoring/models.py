"""Monitoring tables. (deployment, window_key) is unique so two beat processes cannot double a check."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from governance.db import Base, utcnow


class MonitorReference(Base):
    __tablename__ = "monitor_references"
    __table_args__ = (UniqueConstraint("deployment_id", "version_id", name="uq_monitor_references_dv"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="RESTRICT"))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"))
    sample_size: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DriftCheck(Base):
    __tablename__ = "drift_checks"
    __table_args__ = (
        UniqueConstraint("deployment_id", "window_key", name="uq_drift_checks_window"),
        CheckConstraint(
            "verdict in ('pending', 'ok', 'drift', 'inconclusive', 'error')", name="verdict_known"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="RESTRICT"), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"))
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    window_key: Mapped[str] = mapped_column(String(100))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    first_output_id: Mapped[int | None] = mapped_column(BigInteger)
    last_output_id: Mapped[int | None] = mapped_column(BigInteger)
    sample_size: Mapped[int] = mapped_column(Integer, default=0)
    verdict: Mapped[str] = mapped_column(String(20), default="pending")
    # per detector: statistic, threshold, p-values, verdict, evidence links
    detectors: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    report_path: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class DetectorState(Base):
    """Sequential detector state (e.g. the CUSUM statistic) carried across windows."""

    __tablename__ = "detector_states"
    __table_args__ = (
        UniqueConstraint("deployment_id", "version_id", "detector", name="uq_detector_states_key"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="RESTRICT"))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"))
    detector: Mapped[str] = mapped_column(String(100))
    state: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
