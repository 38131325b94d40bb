"""``govern rollout start | status | advance | abort``: a candidate beside the active token on live traffic.

Through the HTTP API like every user action (``GOVERN_API_URL``, ``GOVERN_API_KEY``), so
the audit log records who acted. ``advance`` sends the step it saw, so two people
advancing at once make one step.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from governance.cli.common import console, fail
from governance.cli.deploy_cmds import MAX_REASON, api_errors, check_id, check_name, check_text, client

rollout_app = typer.Typer(help="Shadow and canary rollouts of a candidate version.", no_args_is_help=True)


def _parse_steps(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        steps = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        fail(f"--steps must be comma-separated percentages such as 5,25,50,100, got {value!r}")
    if not steps:
        fail("--steps needs at least one percentage")
    return steps


def _weight(ro: dict[str, Any]) -> str:
    if ro["mode"] == "shadow":
        return f"shadow {ro['sample'] * 100:g}% of requests decoded twice"
    step = ro["step"]
    return f"canary {ro['steps'][step]}% (step {step + 1} of {len(ro['steps'])})"


def print_rollout(ro: dict[str, Any]) -> None:
    console.print(
        f"rollout {ro['id']} on {ro['deployment']}: version {ro['version_id']} beside "
        f"{ro['baseline_version_id'] if ro['baseline_version_id'] is not None else 'the bare base model'}, "
        f"{ro['state']}, {_weight(ro)}; {ro['pairs']} pairs (a step needs {ro['min_samples']}), "
        f"generation {ro['generation']}", highlight=False)
    verdict = ro.get("latest_verdict")
    if verdict:
        console.print(f"latest verdict ({verdict['decision']}, {verdict['n_pairs']} pairs): {verdict['summary']}",
                      highlight=False)
        table = Table("test", "n", "statistic", "threshold", "p", "MDE", "decides", "outcome")
        for t in verdict["tests"]:
            table.add_row(*(_cell(t.get(k)) for k in ("name", "n", "statistic", "threshold", "p_value", "mde")),
                          "yes" if t.get("decides") else "no", str(t.get("outcome", "")))
        console.print(table)
    if ro.get("end_reason"):
        console.print(f"ended: {ro['end_reason']}", highlight=False)
    events = Table("#", "event", "step", "weight", "generation", "actor", "reason")
    for e in ro.get("events", []):
        events.add_row(str(e["seq"]), e["kind"], str(e["step"]), f"{e['weight'] * 100:g}%",
                       str(e["generation"] if e["generation"] is not None else ""), e["actor"], e["reason"] or "")
    console.print(events)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@rollout_app.command("start")
@api_errors
def rollout_start(
    version: int = typer.Argument(..., help="the candidate version id"),
    deployment: str = typer.Option(..., "--deployment", help="deployment name"),
    mode: str = typer.Option(..., "--mode", help="shadow (gate passed: no user sees it) or canary (approved)"),
    sample: float | None = typer.Option(None, "--sample", help="shadow: share of requests decoded twice (0-1]"),
    steps: str | None = typer.Option(None, "--steps", help="canary: weights in percent, e.g. 5,25,50,100"),
    min_samples: int | None = typer.Option(None, "--min-samples", help="pairs a step needs before it can pass"),
) -> None:
    """Start a shadow or canary rollout of VERSION beside the deployment's active token."""
    check_id(version, "VERSION")
    check_name(deployment, "--deployment", max_len=100)
    if mode not in ("shadow", "canary"):
        fail(f"--mode must be shadow or canary, got {mode!r}")
    if sample is not None and not 0.0 < sample <= 1.0:
        fail(f"--sample must be in (0, 1], got {sample:g}")
    if min_samples is not None and min_samples < 1:
        fail(f"--min-samples must be at least 1, got {min_samples}")
    with client() as c:
        ro = c.start_rollout(deployment, version, mode=mode, sample=sample, steps=_parse_steps(steps),
                             min_samples=min_samples)
    print_rollout(ro)


@rollout_app.command("status")
@api_errors
def rollout_status(
    deployment: str = typer.Option(..., "--deployment", help="deployment name"),
    history: bool = typer.Option(False, "--history", help="every rollout of the deployment, newest first"),
) -> None:
    """The running rollout (or the latest one) with its latest verdict and history."""
    check_name(deployment, "--deployment", max_len=100)
    with client() as c:
        found = c.rollouts(deployment, limit=20 if history else 1)
    if not found:
        console.print(f"{deployment} has never had a rollout", highlight=False)
        return
    for ro in found:
        print_rollout(ro)


@rollout_app.command("advance")
@api_errors
def rollout_advance(
    deployment: str = typer.Option(..., "--deployment", help="deployment name"),
    reason: str | None = typer.Option(None, "--reason", help="why (recorded in the audit log)"),
) -> None:
    """Step the running canary on (its last step is the promotion)."""
    check_name(deployment, "--deployment", max_len=100)
    check_text(reason, "--reason", max_len=MAX_REASON, required=False)
    with client() as c:
        ro = c.current_rollout(deployment)
        if ro is None:
            fail(f"{deployment} runs no rollout")
        change = c.advance_rollout(deployment, from_step=ro["step"], reason=reason)
    console.print(change["message"], highlight=False)
    print_rollout(change["rollout"])


@rollout_app.command("abort")
@api_errors
def rollout_abort(
    deployment: str = typer.Option(..., "--deployment", help="deployment name"),
    reason: str = typer.Option(..., "--reason", help="why (recorded in the audit log)"),
) -> None:
    """Stop the running rollout: all traffic back on the active token (idempotent)."""
    check_name(deployment, "--deployment", max_len=100)
    check_text(reason, "--reason", max_len=MAX_REASON)
    with client() as c:
        change = c.abort_rollout(deployment, reason=reason)
    console.print(change["message"], highlight=False)
