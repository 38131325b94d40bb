"""Alerts: raised by monitors, replicas and the control plane; de-duplicated per open incident.

One open alert per ``incident_key`` (a partial unique index): raising it again bumps
``occurrences`` and ``last_seen_at`` in the same upsert statement, so concurrent
raisers cannot create twins. Opening an alert and acknowledging it are audited;
repeats of an open incident are counted on the alert, not logged one by one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import literal_column, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from governance.alerts.models import Alert
from governance.audit import service as audit
from governance.db import utcnow
from governance.deployments import service as deployments
from governance.errors import Conflict, InvalidInput, NotFound, Refusal
from governance.principal import Principal, require_allowed

SEVERITIES = ("info", "warning", "critical")


def raise_alert(
    session: Session,
    *,
    kind: str,
    severity: str,
    incident_key: str,
    message: str,
    details: dict[str, Any] | None = None,
    deployment_id: int | None = None,
    actor: str,
    actor_key_id: str | None = None,
) -> tuple[Alert, bool]:
    """Open an alert, or count one more occurrence of the open one; returns (alert, newly opened)."""
    if severity not in SEVERITIES:
        raise InvalidInput(f"unknown severity {severity!r}; use one of {', '.join(SEVERITIES)}")
    if not incident_key or len(incident_key) > 200:
        raise InvalidInput("incident_key must be 1-200 characters")
    if not kind or len(kind) > 50:
        raise InvalidInput("kind must be 1-50 characters")
    now = utcnow()
    stmt = (
        pg_insert(Alert)
        .values(
            kind=kind,
            severity=severity,
            incident_key=incident_key,
            status="open",
            message=message,
            details=details or {},
            occurrences=1,
            created_at=now,
            last_seen_at=now,
            deployment_id=deployment_id,
        )
        .on_conflict_do_update(
            index_elements=["incident_key"],
            index_where=text("status = 'open'"),
            set_={
                "occurrences": Alert.occurrences + 1,
                "last_seen_at": now,
                "message": message,
                "details": details or {},
                # an open incident only escalates, never calms down by repetition
                "severity": literal_column(
                    "case when array_position(array['info','warning','critical'], excluded.severity)"
                    " > array_position(array['info','warning','critical'], alerts.severity)"
                    " then excluded.severity else alerts.severity end"
                ),
            },
        )
        .returning(Alert.id, text("(xmax = 0) as inserted"))
    )
    alert_id, inserted = session.execute(stmt).one()
    alert = session.get(Alert, alert_id, populate_existing=True)
    assert alert is not None
    if inserted:
        audit.append(
            session,
            actor=actor,
            actor_key_id=actor_key_id,
            action="alert.raise",
            subject_type="alert",
            subject_id=alert.id,
            payload={
                "kind": kind,
                "severity": severity,
                "incident_key": incident_key,
                "message": message,
                "deployment_id": deployment_id,
            },
        )
    return alert, bool(inserted)


def ack_alert(session: Session, *, alert_id: int, principal: Principal, comment: str) -> Alert:
    require_allowed(principal, "alert.ack", "alert", alert_id)
    comment = (comment or "").strip()
    if not comment:
        raise InvalidInput("acknowledging an alert needs a comment")
    alert = session.scalars(select(Alert).where(Alert.id == alert_id).with_for_update()).first()
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    if alert.status != "open":
        raise Conflict(
            f"alert {alert_id} is already {alert.status}",
            details={"current_state": alert.status},
            refusal=Refusal.of(principal, "alert.ack", "alert", alert_id),
        )
    alert.status, alert.acked_by, alert.acked_at, alert.ack_comment = (
        "acknowledged",
        principal.user_id,
        utcnow(),
        comment,
    )
    audit.record(
        session,
        principal,
        action="alert.ack",
        subject_type="alert",
        subject_id=alert_id,
        payload={"comment": comment, "incident_key": alert.incident_key},
    )
    return alert


def list_alerts(
    session: Session,
    *,
    status: str | None = None,
    severity: str | None = None,
    kind: str | None = None,
    deployment: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Alert]:
    stmt = select(Alert).order_by(Alert.last_seen_at.desc(), Alert.id.desc())
    if status is not None:
        stmt = stmt.where(Alert.status == status)
    if severity is not None:
        stmt = stmt.where(Alert.severity == severity)
    if kind is not None:
        stmt = stmt.where(Alert.kind == kind)
    if deployment is not None:
        dep = deployments.get_deployment(session, name=deployment)
        if dep is None:
            return []
        stmt = stmt.where(Alert.deployment_id == dep.id)
    return list(session.scalars(stmt.limit(limit).offset(offset)))
