"""Deployments: the active version, the promotion history as a timeline, rollback and freeze."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from dashboards.deps import UI_ROLES, CsrfDep, SessionDep, ViewerDep, render, require
from dashboards.pages import rollouts
from dashboards.pages.common import DONE_MESSAGES, Paging, redirect
from governance.auth import service as auth
from governance.deployments import policies
from governance.deployments import service as deployments
from governance.errors import InvalidInput
from governance.registry import service as registry
from governance.registry.models import VersionState

router = APIRouter()
TIMELINE_PAGE = 25


@router.get("/deployments")
def deployment_list(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    require(viewer, UI_ROLES, "view deployments")
    rows = []
    for dep in deployments.list_deployments(session):
        active = deployments.active_info(session, name=dep.name)
        rows.append({"dep": dep, "active": active, "frozen": deployments.is_frozen(dep)})
    return render(request, "deployments.html", viewer, rows=rows)


@router.get("/deployments/{name}")
def deployment_page(
    request: Request, name: str, session: SessionDep, viewer: ViewerDep, page: int = 1, done: str | None = None
) -> Response:
    require(viewer, UI_ROLES, "view deployments")
    dep = deployments.get_deployment_or_raise(session, name=name)
    active = deployments.active_version(session, deployment=dep)
    paging = Paging.of(page, TIMELINE_PAGE)
    history = deployments.promotions(session, name=name, limit=paging.size + 1, offset=paging.offset)
    has_next = len(history) > paging.size
    history = history[: paging.size]
    targets = registry.list_versions(session, deployment_id=dep.id, state=VersionState.superseded.value, limit=20)
    # why a version was promoted: the approval it rests on (a rollback carries its own reason)
    approvals = {}
    for vid in {p.version_id for p in history if p.kind == "promote" and p.version_id is not None}:
        review = registry.latest_review(session, version_id=vid)
        if review is not None and review.decision == "approve":
            approvals[vid] = review
    reviewers = auth.user_names(session, {r.reviewer_id for r in approvals.values()})
    policy = deployments.policy_of(session, deployment=dep)
    evidence = (deployments.rollback_evidence(session, deployment=name)
                if any(p.kind == "auto_rollback" for p in history) else {})
    return render(
        request,
        "deployment.html",
        viewer,
        dep=dep,
        active=active,
        active_adapter=registry.adapter_name(session, adapter_id=active.adapter_id) if active else None,
        frozen=deployments.is_frozen(dep),
        history=history,
        paging=paging,
        has_next=has_next,
        targets=targets,
        approvals=approvals,
        reviewers=reviewers,
        evidence=evidence,
        policy=policy,
        policy_versions=policies.history(session, deployment=name),
        gate_digest=policies.current_gate_digest(session, deployment=dep),
        can_decide_policy=viewer.may("deployment.policy_approve"),
        can_rollback=viewer.may("deployment.rollback"),
        can_freeze=viewer.may("deployment.freeze"),
        rollout=rollouts.rollout_panel(session, dep=dep),
        can_advance_rollout=viewer.may("rollout.advance"),
        can_abort_rollout=viewer.may("rollout.abort"),
        done=DONE_MESSAGES.get(done or ""),
    )


@router.post("/deployments/{name}/rollback", dependencies=[CsrfDep])
def rollback(
    request: Request,
    name: str,
    session: SessionDep,
    viewer: ViewerDep,
    reason: Annotated[str, Form()] = "",
    to_version: Annotated[str, Form()] = "",
) -> Response:
    to_id: int | None = None
    if to_version.strip():
        if not to_version.strip().isdigit():
            raise InvalidInput("the rollback target must be a version number (or empty for the last approved one)")
        to_id = int(to_version.strip())
    deployments.rollback(session, deployment=name, principal=viewer.principal, reason=reason, to_version_id=to_id)
    return redirect(request, f"/deployments/{name}", done="rolled_back")


@router.post("/deployments/{name}/policies/{seq}/decide", dependencies=[CsrfDep])
def decide_policy(
    request: Request,
    name: str,
    seq: int,
    session: SessionDep,
    viewer: ViewerDep,
    decision: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
) -> Response:
    if decision not in ("approve", "reject"):
        raise InvalidInput("decide with approve or reject")
    policies.decide_policy(session, deployment=name, seq=seq, approve=decision == "approve", comment=comment,
                           principal=viewer.principal)
    return redirect(request, f"/deployments/{name}", done=f"policy_{decision}d")


def _parse_until(value: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"freeze until {value!r} is not a date and time (e.g. 2026-12-01T12:00)") from None
    # the form's datetime-local has no zone; the dashboard shows and takes UTC throughout
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.post("/deployments/{name}/freeze", dependencies=[CsrfDep])
def freeze(
    request: Request,
    name: str,
    session: SessionDep,
    viewer: ViewerDep,
    reason: Annotated[str, Form()] = "",
    until: Annotated[str, Form()] = "",
) -> Response:
    deployments.freeze(
        session, deployment=name, principal=viewer.principal, until=_parse_until(until), reason=reason.strip() or None
    )
    return redirect(request, f"/deployments/{name}", done="frozen")


@router.post("/deployments/{name}/unfreeze", dependencies=[CsrfDep])
def unfreeze(
    request: Request, name: str, session: SessionDep, viewer: ViewerDep, reason: Annotated[str, Form()] = ""
) -> Response:
    deployments.unfreeze(session, deployment=name, principal=viewer.principal, reason=reason.strip() or None)
    return redirect(request, f"/deployments/{name}", done="unfrozen")
