"""Deployments and their promotion history. The generation number only increases."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, String, Text, UniqueConstraint
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
