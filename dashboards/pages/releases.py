"""Releases (gated versions waiting for review) and the Version page (gate report, lineage, review)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from dashboards import reports
from dashboards.deps import UI_ROLES, CsrfDep, SessionDep, Viewer, ViewerDep, render, require
from dashboards.gate_report_html import render_html
from dashboards.pages import rollouts
from dashboards.pages.common import DONE_MESSAGES, Paging, redirect
from dashboards.security import REPORT_CSP
from governance.auth import service as auth
from governance.deployments import service as deployments
from governance.errors import NotFound
from governance.gates import service as gates
from governance.gates.service import FINISHED, load_gate_report
from governance.registry import lifecycle
from governance.registry import service as registry
from governance.registry.models import VersionState

if TYPE_CHECKING:  # annotations only: rooms talk through service functions
    from governance.gates.models import GateRun
    from governance.registry.models import TokenVersion

router = APIRouter()

TABS = {
    "waiting": (VersionState.gate_passed.value, "Waiting for review"),
    "rereview": (VersionState.rolled_back.value, "Rolled back (review again)"),
    "failed": (VersionState.gate_failed.value, "Gate failed"),
    "all": (None, "All versions"),
}
CASES_PAGE = 10


def _gate_overview(session: Session, version: TokenVersion, latest: GateRun | None = None) -> dict[str, Any]:
    if latest is None:
        runs = gates.gate_runs(session, version_id=version.id)
        latest = runs[0] if runs else None
    outcome = reports.run_outcome(latest)
    return {
        "run": latest,
        "verdict": outcome,
        "verdict_class": "waived" if outcome == "passed with waivers" else outcome,
        "waivers": reports.run_waivers(latest),
        "suites": reports.suite_summaries(latest.summary if latest else None),
    }


@router.get("/releases")
def releases(request: Request, session: SessionDep, viewer: ViewerDep, tab: str = "waiting", page: int = 1) -> Response:
    require(viewer, UI_ROLES, "view releases")
    if tab not in TABS:
        tab = "waiting"
    state, _ = TABS[tab]
    paging = Paging.of(page)
    # one row more than a page tells whether there is a next page without counting the table
    versions = registry.list_versions(session, state=state, limit=paging.size + 1, offset=paging.offset)
    has_next = len(versions) > paging.size
    versions = versions[: paging.size]
    names = auth.user_names(session, {v.submitted_by for v in versions})
    runs = gates.latest_runs(session, version_ids=[v.id for v in versions])
    adapters = {a: registry.adapter_name(session, adapter_id=a) for a in {v.adapter_id for v in versions}}
    rows = [
        {
            "version": v,
            "adapter": adapters[v.adapter_id],
            "submitter": names.get(v.submitted_by, str(v.submitted_by)),
            **_gate_overview(session, v, runs.get(v.id)),
        }
        for v in versions
    ]
    return render(request, "releases.html", viewer, rows=rows, tab=tab, tabs=TABS, paging=paging, has_next=has_next)


def review_blockers(session: Session, viewer: Viewer, version: TokenVersion) -> list[str]:
    """Why this person cannot approve this version now (empty: they can). Mirrors the services' checks."""
    reasons: list[str] = []
    reapproval = version.state in registry.REAPPROVABLE
    move = lifecycle.find_move(version.state, version.state if reapproval else VersionState.approved.value, "approve")
    if reapproval and registry.awaiting_reapproval(session, version=version) is None:
        reasons.append(
            f"This version is {version.state} and approved under its newest passed gate run; a new approval "
            "needs a new gate run under a deployment's gate policy (`govern gate run VERSION --deployment NAME`)."
        )
    elif move is None:
        reasons.append(
            f"This version is {version.state}; only a gate_passed (or rolled_back) version can be reviewed."
        )
    elif viewer.principal.role not in {r.value for r in move.roles}:
        reasons.append(
            f"Your role ({viewer.principal.role}) may not review releases; "
            f"reviewers are {', '.join(sorted(r.value for r in move.roles))}."
        )
    if viewer.principal.user_id == version.submitted_by:
        reasons.append("Four eyes: you submitted this version, so another person must review it.")
    if move is not None and gates.latest_passed_gate_run(session, version_id=version.id) is None:
        reasons.append("There is no passed gate run to bind an approval to.")
    return reasons


def _lineage(session: Session, version: TokenVersion) -> list[TokenVersion]:
    chain: list[TokenVersion] = []
    seen = {version.id}
    parent_id = version.parent_id
    while parent_id is not None and len(chain) < 20 and parent_id not in seen:
        parent = registry.get_version(session, version_id=parent_id)
        if parent is None:
            break
        chain.append(parent)
        seen.add(parent.id)
        parent_id = parent.parent_id
    return chain


@router.get("/versions/{version_id}")
def version_page(
    request: Request, version_id: int, session: SessionDep, viewer: ViewerDep, cases_page: int = 1,
    done: str | None = None,
) -> Response:
    require(viewer, UI_ROLES, "view versions")
    version = registry.get_version_or_raise(session, version_id=version_id)
    gate = _gate_overview(session, version)
    run = gate["run"]
    paging = Paging.of(cases_page, CASES_PAGE)
    cases, n_failing = [], 0
    if run is not None:
        n_failing = gates.count_failing_cases(session, gate_run_id=run.id)
        cases = gates.failing_cases(session, gate_run_id=run.id, limit=paging.size, offset=paging.offset)
    reviews = registry.reviews(session, version_id=version.id)
    names = auth.user_names(session, {version.submitted_by, *(r.reviewer_id for r in reviews)})
    base_model = registry.get_base_model_by_id(session, base_model_id=version.base_model_id)
    deployment = (deployments.get_deployment_by_id(session, deployment_id=version.deployment_id)
                  if version.deployment_id else None)
    blockers = review_blockers(session, viewer, version)
    # the waivers an approval must acknowledge: those of the gate run it would bind (the newest passed one)
    bind = gates.latest_passed_gate_run(session, version_id=version.id)
    bind_waivers = reports.run_waivers(bind)
    return render(
        request,
        "version.html",
        viewer,
        version=version,
        adapter=registry.adapter_name(session, adapter_id=version.adapter_id),
        submitter=names.get(version.submitted_by, str(version.submitted_by)),
        gate=gate,
        cases=cases,
        n_failing=n_failing,
        paging=paging,
        has_next=paging.offset + len(cases) < n_failing,
        reviews=reviews,
        names=names,
        base_model=base_model,
        deployment=deployment,
        lineage=_lineage(session, version),
        manifest=json.dumps(version.manifest, indent=2, sort_keys=True, default=str),
        can_review=not blockers,
        bind_run=bind,
        bind_waivers=bind_waivers,
        reapproval=version.state in registry.REAPPROVABLE,
        blockers=blockers,
        case_baselines=reports.case_baselines,
        case_scores=reports.case_scores,
        shadow=rollouts.shadow_evidence(session, version_id=version.id),
        done=DONE_MESSAGES.get(done or ""),
    )


@router.get("/versions/{version_id}/gate-report")
def gate_report(version_id: int, session: SessionDep, viewer: ViewerDep) -> Response:
    """The printable report of the latest finished gate run, rendered from the typed report."""
    require(viewer, UI_ROLES, "view gate reports")
    registry.get_version_or_raise(session, version_id=version_id)
    run = next((r for r in gates.gate_runs(session, version_id=version_id) if r.status in FINISHED),
               None)
    if run is None:
        raise NotFound(f"version {version_id} has no finished gate run")
    html = render_html(load_gate_report(session, gate_run=run), title=f"Gate report · version {version_id}")
    # a static page with inline CSS and no scripts; sandboxed all the same (it shows model outputs)
    return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_CSP})


@router.post("/versions/{version_id}/approve", dependencies=[CsrfDep])
def approve(
    request: Request, version_id: int, session: SessionDep, viewer: ViewerDep, comment: Annotated[str, Form()] = "",
    acknowledge: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Approve; a gate that passed with waivers needs each waiver's checkbox ticked (409 otherwise)."""
    registry.approve(session, version_id=version_id, principal=viewer.principal, comment=comment,
                     acknowledged_waivers=acknowledge or [])
    return redirect(request, f"/versions/{version_id}", done="approved")


@router.post("/versions/{version_id}/reject", dependencies=[CsrfDep])
def reject(
    request: Request, version_id: int, session: SessionDep, viewer: ViewerDep, comment: Annotated[str, Form()] = ""
) -> Response:
    registry.reject(session, version_id=version_id, principal=viewer.principal, comment=comment)
    return redirect(request, f"/versions/{version_id}", done="rejected")
