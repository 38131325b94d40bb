"""Alerts: open and acknowledged, acknowledge with a comment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from dashboards.deps import UI_ROLES, CsrfDep, SessionDep, ViewerDep, render, require
from dashboards.pages.common import DONE_MESSAGES, Paging, redirect
from governance.alerts import service as alerts
from governance.auth import service as auth
from governance.deployments import service as deployments

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
    dep_names = deployments.deployment_names(session, {a.deployment_id for a in rows})
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
        names=auth.user_names(session, {a.acked_by for a in rows}),
        can_ack=viewer.may("alert.ack"),
        done=DONE_MESSAGES.get(done or ""),
    )


@router.post("/alerts/{alert_id}/ack", dependencies=[CsrfDep])
def ack(
    request: Request, alert_id: int, session: SessionDep, viewer: ViewerDep, comment: Annotated[str, Form()] = ""
) -> Response:
    alerts.ack_alert(session, alert_id=alert_id, principal=viewer.principal, comment=comment)
    return redirect(request, "/alerts", status="open", done="acked")
