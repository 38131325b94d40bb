"""Alerts from the monitors: stored (de-duplicated per incident by the core's ``raise_alert``)
and sent to channels after the transaction commits: the log, Prometheus, and a JSON
webhook (plain JSON, or Slack's ``{"text": ...}`` format). A channel that fails is logged
and counted; it never fails the check that raised the alert.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from governance.alerts.service import raise_alert
from monitors import metrics

log = logging.getLogger("monitors.alerts")


@dataclass
class Notification:
    """An alert to send once its transaction has committed."""

    alert_id: int
    deployment: str
    kind: str
    severity: str
    incident_key: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None
    webhook_format: str = "json"


def raise_monitor_alert(
    session: Session,
    *,
    deployment_id: int,
    deployment: str,
    kind: str,
    severity: str,
    incident_key: str,
    message: str,
    details: dict[str, Any],
    actor: str,
    policy: Any = None,
) -> Notification | None:
    """Store the alert (one open alert per incident); a Notification when it is newly opened."""
    alert, opened = raise_alert(
        session, kind=kind, severity=severity, incident_key=incident_key, message=message, details=details,
        deployment_id=deployment_id, actor=actor,
    )
    if not opened:
        return None  # the same incident again: counted on the open alert, not re-sent
    alerts = getattr(policy, "alerts", None)
    return Notification(
        alert_id=int(alert.id), deployment=deployment, kind=kind, severity=severity, incident_key=incident_key,
        message=message, details=details, webhook_url=getattr(alerts, "webhook_url", None),
        webhook_format=getattr(alerts, "format", "json"),
    )


def webhook_body(note: Notification) -> dict[str, Any]:
    if note.webhook_format == "slack":
        icon = {"critical": ":rotating_light:", "warning": ":warning:"}.get(note.severity, ":information_source:")
        return {"text": f"{icon} [{note.severity}] {note.deployment}: {note.message} (alert {note.alert_id})"}
    return {"alert": asdict(note) | {"webhook_url": None}}


def deliver(notes: list[Notification], *, timeout: float = 5.0) -> None:
    """Send notifications to every channel; failures are logged, never raised."""
    for note in notes:
        level = logging.ERROR if note.severity == "critical" else logging.WARNING
        log.log(level, "alert %s [%s] %s: %s", note.alert_id, note.severity, note.deployment, note.message)
        metrics.ALERTS.labels(deployment=note.deployment, kind=note.kind, severity=note.severity).inc()
        if not note.webhook_url:
            continue
        try:
            import httpx

            resp = httpx.post(note.webhook_url, json=webhook_body(note), timeout=timeout)
            resp.raise_for_status()
        except Exception as exc:
            metrics.WEBHOOK_FAILURES.inc()
            log.warning("alert %s: webhook %s failed: %s", note.alert_id, note.webhook_url, exc)
