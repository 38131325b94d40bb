"""Rollouts in the officers' UI: the deployment page's Rollout panel and history, the version
page's shadow evidence, and the Advance and Abort forms.

The panel and the evidence are built here as plain dicts (numbers already in words), so the
two pages only include a template partial; the forms post to routes that call the rollout
service with the signed-in person, who re-checks the role (`rollout.advance`, `rollout.abort`).
Advancing names the step the page showed (``from_step``): a second post of the same page,
or a colleague's click in between, changes nothing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from dashboards.deps import CsrfDep, SessionDep, ViewerDep
from dashboards.pages.common import redirect
from governance import metrics
from governance.deployments import rollouts
from governance.deployments import service as deployments
from governance.errors import NotFound
from governance.outputs import service as outputs

if TYPE_CHECKING:  # annotations only: rooms talk through service functions
    from governance.deployments.models import Deployment, Rollout, RolloutVerdict

router = APIRouter()
HISTORY = 10  # rollouts shown below the panel, newest first
DIFFERING_SHOWN = 50  # pairs whose checks differ, shown side by side (the verdict may hold more)
TEST_COLUMNS = ("name", "n", "statistic", "threshold", "p_value", "mde", "decides", "outcome")


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


def describe(ro: Rollout) -> str:
    """What the candidate gets, in words: "canary 25% (step 2 of 4)", "shadow 20% of requests"."""
    if ro.mode == "canary":
        weight = ro.steps[ro.step_index] if ro.step_index < len(ro.steps) else 100
        return f"canary {weight}% (step {ro.step_index + 1} of {len(ro.steps)})"
    return f"shadow {_percent(float(ro.sample))} of requests (decoded a second time, never returned)"


def _as_text(value: Any) -> str:
    """A prompt or an answer as stored by the worker: text as it is, chat messages as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def outcome_class(outcome: Any) -> str:
    text = str(outcome or "").lower()
    if text in ("pass", "passed", "ok"):
        return "pass"
    if text in ("fail", "failed"):
        return "fail"
    return "neutral"


def verdict_view(v: RolloutVerdict) -> dict[str, Any]:
    """A verdict for the templates: its tests (raw values, the template formats them) and its differing pairs."""
    tests = [{**{k: t.get(k) for k in TEST_COLUMNS}, "detail": t.get("detail"),
              "outcome_class": outcome_class(t.get("outcome"))}
             for t in (v.tests or []) if isinstance(t, dict)]
    differing = [{"request_id": d.get("request_id"), "prompt": _as_text(d.get("prompt")),
                  "active_answer": _as_text(d.get("active_answer")),
                  "candidate_answer": _as_text(d.get("candidate_answer")),
                  "checks": [str(c) for c in (d.get("checks") or [])]}
                 for d in (v.differing or []) if isinstance(d, dict)]
    return {"row": v, "tests": tests, "differing": differing[:DIFFERING_SHOWN],
            "differing_more": max(0, len(differing) - DIFFERING_SHOWN)}


def rollout_panel(session: Session, *, dep: Deployment) -> dict[str, Any]:
    """The deployment page's Rollout panel: the running rollout (or None) and the recent ones with their events."""
    recent = rollouts.history(session, deployment=dep.name, limit=HISTORY)
    running = next((ro for ro in recent if ro.state == "running"), None)
    pairs = outputs.pair_counts(session, rollout_ids=[ro.id for ro in recent])
    # a page read is a fresh look at the database: this process's gauges follow it
    metrics.observe_rollout(deployment=dep.name, mode=running.mode if running else None,
                            weight=deployments.rollout_weight(running) if running else 0.0,
                            generation=int(dep.generation))
    history = [{"row": ro, "described": describe(ro), "pairs": pairs.get(ro.id, 0),
                "events": [{"row": e, "step": f"{e.step_index + 1} of {len(ro.steps)}", "weight": _percent(e.weight)}
                           for e in rollouts.events(session, rollout_id=ro.id)]}
               for ro in recent]
    current = None
    if running is not None:
        last = rollouts.latest_verdict(session, rollout_id=running.id)
        current = {"row": running, "described": describe(running), "pairs": pairs.get(running.id, 0),
                   "verdict": last, "verdict_class": outcome_class(last.decision) if last else "neutral",
                   "can_advance": running.mode == "canary"}
    return {"current": current, "history": history}


def shadow_evidence(session: Session, *, version_id: int) -> list[dict[str, Any]]:
    """Each shadow rollout of the version, newest first, with its concluding (or latest) verdict;
    ``binding`` marks the verdict an approval of the version records (`rollouts.shadow_evidence`)."""
    binding = rollouts.shadow_evidence(session, version_id=version_id)
    names: dict[int, str] = {}
    out = []
    for ro in rollouts.shadow_rollouts_of(session, version_id=version_id):
        if ro.deployment_id not in names:
            dep = deployments.get_deployment_by_id(session, deployment_id=ro.deployment_id)
            names[ro.deployment_id] = dep.name if dep is not None else str(ro.deployment_id)
        # verdicts after the one that ends a rollout are dropped, so the latest is the concluding one
        last = rollouts.latest_verdict(session, rollout_id=ro.id)
        out.append({"row": ro, "deployment": names[ro.deployment_id], "described": describe(ro),
                    "verdict": verdict_view(last) if last is not None else None,
                    "binding": binding is not None and last is not None and binding.id == last.id})
    return out


@router.post("/deployments/{name}/rollout/advance", dependencies=[CsrfDep])
def advance(
    request: Request,
    name: str,
    session: SessionDep,
    viewer: ViewerDep,
    from_step: Annotated[int, Form(ge=0)],
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Step the running canary on from the step the page showed (the last step is the promotion)."""
    change = rollouts.advance(session, deployment=name, principal=viewer.principal, from_step=from_step,
                              reason=reason.strip() or None)
    if not change.changed:
        done = "rollout_unchanged"
    else:
        done = "rollout_completed" if change.promotion_generation is not None else "rollout_advanced"
    return redirect(request, f"/deployments/{name}", done=done)


@router.post("/deployments/{name}/rollout/abort", dependencies=[CsrfDep])
def abort(
    request: Request,
    name: str,
    session: SessionDep,
    viewer: ViewerDep,
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Stop the running rollout; with none running nothing changes (a second click, a verdict before it)."""
    change = rollouts.abort(session, deployment=name, principal=viewer.principal, reason=reason)
    if change is None:
        raise NotFound(f"deployment {name!r} has never had a rollout")
    return redirect(request, f"/deployments/{name}", done="rollout_aborted" if change.changed else "rollout_ended")
