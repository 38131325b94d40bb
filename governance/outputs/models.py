"""Recorded production outputs. (deployment, request id) is unique so a replayed spool never doubles."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
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


class Output(Base):
    __tablename__ = "outputs"
    __table_args__ = (
        UniqueConstraint("deployment_id", "request_id", name="uq_outputs_request"),
        Index("ix_outputs_deployment_id_id", "deployment_id", "id"),
        Index("ix_outputs_deployment_created", "deployment_id", "created_at"),
        CheckConstraint("prompt_tokens >= 0 and completion_tokens >= 0", name="tokens_nonneg"),
        Index("ix_outputs_rollout", "rollout_id", "id", postgresql_where=text("rollout_id is not null")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="RESTRICT"))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("token_versions.id", ondelete="RESTRICT"))
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    request_id: Mapped[str] = mapped_column(String(100))
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    output: Mapped[str] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A rollout's pairs: both answers to one prompt carry the rollout; the unreturned one
    # (shadow: the candidate's; canary: the active's) names its served twin's request id.
    # Rows with a twin_of never enter a version's monitoring windows.
    rollout_id: Mapped[int | None] = mapped_column(ForeignKey("rollouts.id", ondelete="RESTRICT"))
    twin_of: Mapped[str | None] = mapped_column(String(100))
