"""Read the monitor's drift checks (written by `monitors.check`), for the web UI and the CLI."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.monitoring.models import DriftCheck


def list_checks(
    session: Session, *, deployment_id: int, limit: int = 50, before_id: int | None = None
) -> list[DriftCheck]:
    """Newest first, keyset-paged by id."""
    stmt = select(DriftCheck).where(DriftCheck.deployment_id == deployment_id)
    if before_id is not None:
        stmt = stmt.where(DriftCheck.id < before_id)
    return list(session.scalars(stmt.order_by(DriftCheck.id.desc()).limit(limit)))


def get_check(session: Session, *, check_id: int) -> DriftCheck | None:
    return session.get(DriftCheck, check_id)


def checks_between(session: Session, *, deployment_id: int, since: datetime, until: datetime) -> list[DriftCheck]:
    """The deployment's checks created in [since, until), oldest first (a period's report reads them all)."""
    stmt = select(DriftCheck).where(DriftCheck.deployment_id == deployment_id, DriftCheck.created_at >= since,
                                    DriftCheck.created_at < until)
    return list(session.scalars(stmt.order_by(DriftCheck.id)))
