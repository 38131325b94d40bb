"""Routes of alerts: list (people), raise (service keys: replicas, workers), acknowledge (officers)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter

from governance.alerts import service
from governance.alerts.schemas import AckIn, AlertIn, AlertRaised, AlertRead
from governance.api.deps import PageDep, SessionDep, may
from governance.deployments import service as deployments
from governance.principal import Principal, require_deployment

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


@router.get("", response_model=list[AlertRead])
def list_alerts(
    session: SessionDep,
    page: PageDep,
    _: Annotated[Principal, may("alert.read")],
    status: Literal["open", "acknowledged"] | None = None,
    severity: Literal["info", "warning", "critical"] | None = None,
    kind: str | None = None,
    deployment: str | None = None,
) -> list[AlertRead]:
    rows = service.list_alerts(
        session,
        status=status,
        severity=severity,
        kind=kind,
        deployment=deployment,
        limit=page.limit,
        offset=page.offset,
    )
    return [AlertRead.model_validate(a) for a in rows]


@router.post("", response_model=AlertRaised, status_code=201)
def raise_alert(body: AlertIn, session: SessionDep, principal: Annotated[Principal, may("alert.raise")]) -> AlertRaised:
    # a scoped service key raises alerts only about its own deployments (and must name one)
    require_deployment(principal, body.deployment, "alert.raise")
    dep_id = deployments.get_deployment_or_raise(session, name=body.deployment).id if body.deployment else None
    alert, opened = service.raise_alert(
        session,
        kind=body.kind,
        severity=body.severity,
        incident_key=body.incident_key,
        message=body.message,
        details=body.details,
        deployment_id=dep_id,
        actor=principal.actor,
        actor_key_id=principal.key_prefix,
    )
    return AlertRaised(**AlertRead.model_validate(alert).model_dump(), opened=opened)


@router.post("/{alert_id}/ack", response_model=AlertRead)
def ack(
    alert_id: int, body: AckIn, session: SessionDep, principal: Annotated[Principal, may("alert.ack")]
) -> AlertRead:
    return AlertRead.model_validate(
        service.ack_alert(session, alert_id=alert_id, principal=principal, comment=body.comment)
    )
