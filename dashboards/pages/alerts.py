"""Alerts: open and acknowledged, acknowledge with a comment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy import select

from dashboards.deps import UI_ROLES, CsrfDep, SessionDep, ViewerDep, render, require
from dashboards.pages.common import DONE_MESSAGES, Paging, redirect, user_names
from governance.alerts import service as alerts
from governance.deployments.models import Deployment

router = APIRouter()
STATUSES = {"open": "Open", "acknowledged": "Acknowledged"}


@router.get("/alerts")
def alert_list(
    request: Request, session: SessionDep, viewer: ViewerDep, status: str = "open", page: int = 1,
    done: str | None = None,
) -> Response:
    require(viewer, UI_ROLES, "view alerts")
    if status not in STATUSES:
        status = "open"
    paging = Paging.of(page)
    rows = alerts.list_alerts(session, status=status, limit=paging.size + 1, offset=paging.offset)
    has_next = len(rows) > paging.size
    rows = rows[: paging.size]
    dep_ids = {a.deployment_id for a in rows if a.deployment_id is not None}
    dep_names: dict[int, str] = {}
    if dep_ids:
        rows_ = session.execute(select(Deployment.id, Deployment.name).where(Deployment.id.in_(dep_ids))).tuples()
        dep_names = {dep_id: dep_name for dep_id, dep_name in rows_}
    return render(
        request,
        "alerts.html",
        viewer,
        alerts=rows,
        status=status,
        statuses=STATUSES,
        paging=paging,
        has_next=has_next,
        dep_names=dep_names,
        names=user_names(session, {a.acked_by for a in rows}),
        can_ack=viewer.may("alert.ack"),
        done=DONE_MESSAGES.get(done or ""),
    )


@router.post("/alerts/{alert_id}/ack", dependencies=[CsrfDep])
def ack(
    request: Request, alert_id: int, session: SessionDep, viewer: ViewerDep, comment: Annotated[str, Form()] = ""
) -> Response:
    alerts.ack_alert(session, alert_id=alert_id, principal=viewer.principal, comment=comment)
    return redirect(request, "/alerts", status="open", done="acked")
