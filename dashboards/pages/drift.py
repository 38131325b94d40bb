"""Drift: per deployment, charts of detector statistics and descriptors, the checks, their reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from dashboards import reports
from dashboards.deps import UI_ROLES, SessionDep, ViewerDep, render, require
from dashboards.security import REPORT_CSP
from governance.deployments import service as deployments
from governance.errors import NotFound
from governance.monitoring import service as monitoring
from governance.settings import get_settings

if TYPE_CHECKING:  # annotations only: rooms talk through service functions
    from governance.deployments.models import Deployment
    from governance.monitoring.models import DriftCheck

router = APIRouter()
CHART_POINTS = 200
LIST_PAGE = 50


def _chart_json(figure: dict[str, object]) -> str:
    # embedded in <script type="application/json">: '<' escaped so no text can close the element
    return json.dumps(figure, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")


@router.get("/deployments/{name}/drift")
def drift_page(
    request: Request, name: str, session: SessionDep, viewer: ViewerDep, before: int | None = None
) -> Response:
    require(viewer, UI_ROLES, "view drift")
    dep = deployments.get_deployment_or_raise(session, name=name)
    recent = monitoring.list_checks(session, deployment_id=dep.id, limit=CHART_POINTS)
    checks = recent[:LIST_PAGE] if before is None else monitoring.list_checks(
        session, deployment_id=dep.id, limit=LIST_PAGE, before_id=before
    )
    charts = [(c.key, _chart_json(reports.plotly_figure(c))) for c in reports.drift_charts(recent)]
    return render(
        request, "drift.html", viewer, dep=dep, checks=checks, charts=charts,
        next_before=checks[-1].id if len(checks) == LIST_PAGE else None,
        detector_rows=reports.detector_rows, reports_of=lambda c: _reports(c),
    )


def _reports(check: DriftCheck) -> list[str]:
    """Detectors of a check whose stored report can be served."""
    found = [name for name, path in reports.detector_reports(check).items() if report_file(path) is not None]
    if not found and report_file(check.report_path) is not None:
        found = [""]
    return found


def _check_for(session: SessionDep, check_id: int) -> tuple[DriftCheck, Deployment]:
    check = monitoring.get_check(session, check_id=check_id)
    if check is None:
        raise NotFound(f"no drift check {check_id}")
    dep = deployments.get_deployment_by_id(session, deployment_id=check.deployment_id)
    if dep is None:
        raise NotFound(f"no deployment for drift check {check_id}")
    return check, dep


@router.get("/drift/checks/{check_id}")
def check_page(request: Request, check_id: int, session: SessionDep, viewer: ViewerDep) -> Response:
    require(viewer, UI_ROLES, "view drift")
    check, dep = _check_for(session, check_id)
    return render(request, "check.html", viewer, check=check, dep=dep, rows=reports.detector_rows(check),
                  report_names=_reports(check),
                  details=json.dumps(check.detectors or {}, indent=2, sort_keys=True, default=str))


def report_file(report_path: str | None) -> Path | None:
    """The stored report's file, only if it lies inside the state folder (no path tricks)."""
    if not report_path:
        return None
    state = get_settings().state_path
    path = Path(report_path)
    path = (path if path.is_absolute() else state / path).resolve()
    if not path.is_relative_to(state) or not path.is_file() or path.suffix.lower() not in {".html", ".htm"}:
        return None
    return path


@router.get("/drift/checks/{check_id}/report")
def check_report(check_id: int, session: SessionDep, viewer: ViewerDep, detector: str = "") -> Response:
    """A stored Evidently report: the named detector's, or the check's main one."""
    require(viewer, UI_ROLES, "view drift reports")
    check, _ = _check_for(session, check_id)
    stored = reports.detector_reports(check).get(detector) if detector else check.report_path
    path = report_file(stored)
    if path is None:
        what = f"detector {detector!r} of drift check {check_id}" if detector else f"drift check {check_id}"
        raise NotFound(f"{what} has no stored report")
    # Evidently's page runs its own inline scripts: sandboxed, in an opaque origin
    return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP})
