"""Alerts, de-duplicated per incident: one open alert per incident key (partial unique index)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from governance.db import Base, utcnow


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("severity in ('info', 'warning', 'critical')", name="severity_known"),
        CheckConstraint("status in ('open', 'acknowledged')", name="status_known"),
        Index(
            "uq_alerts_open_incident", "incident_key", unique=True, postgresql_where=text("status = 'open'")
        ),
        Index("ix_alerts_status_created", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(50))
    severity: Mapped[str] = mapped_column(String(10))
    incident_key: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(15), default="open")
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    acked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    acked_at: Mapped[datetime | None]
    ack_comment: Mapped[str | None] = mapped_column(Text)
