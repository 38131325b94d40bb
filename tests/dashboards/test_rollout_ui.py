"""Rollouts in the UI: the deployment page's panel and forms, the version page's shadow evidence, the metrics."""

from __future__ import annotations

import html as html_lib
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from governance.audit.models import AuditEntry
from governance.db import unit_of_work
from governance.deployments import rollouts
from governance.deployments import service as deployments
from governance.deployments.models import Rollout
from governance.principal import Principal
from tests.dashboards.conftest import World, sign_in

pytestmark = pytest.mark.usefixtures("settings_env")

WORKER = Principal.for_system("rollout-worker/test")
SCRIPT_PROMPT = "<script>alert('pwned')</script> Where does my neighbour live?"
TESTS: list[dict[str, Any]] = [
    {"name": "policy_violations", "n": 240, "statistic": 0.0123456, "threshold": 0.0, "p_value": 0.0000123,
     "mde": 0.04567, "decides": True, "outcome": "fail", "detail": "exact McNemar, 7 discordant pairs"},
    {"name": "length", "n": 240, "statistic": 1.23456, "threshold": 0.5, "p_value": 0.5, "mde": None,
     "decides": False, "outcome": "evidence", "detail": None},
]
DIFFERING: list[dict[str, Any]] = [
    {"request_id": "req-1", "prompt": SCRIPT_PROMPT, "active_answer": "I can't help with that.",
     "candidate_answer": "He lives at <b>12 Elm Street</b>.", "checks": ["pii", "must_refuse"]},
]


def _active_and_candidate(world: World) -> tuple[int, int]:
    """An active version and an approved candidate beside it."""
    active = world.gated_release()
    world.approve(active)
    world.promote(active)
    candidate = world.gated_release()
    world.approve(candidate)
    return active, candidate


def _start(world: World, version_id: int, mode: str = "canary", **kw: Any) -> int:
    with unit_of_work(world.engine) as s:
        return rollouts.start_rollout(s, deployment=world.deployment, version_id=version_id, mode=mode,
                                      principal=world.people["ml_engineer"].principal, **kw).id


def _rollout(world: World, rollout_id: int) -> Rollout:
    with unit_of_work(world.engine) as s:
        ro = rollouts.get_rollout(s, rollout_id=rollout_id)
        assert ro is not None
        s.expunge(ro)
        return ro


def _page(client: TestClient, world: World) -> str:
    r = client.get(f"/ui/deployments/{world.deployment}")
    assert r.status_code == 200, r.text
    return r.text


def _section(page: str, testid: str) -> str:
    start = page.index(f'data-testid="{testid}"')
    return page[start: page.index("</section>", start)]


def test_panel_shows_the_canary_and_the_buttons_by_role(client: TestClient, world: World) -> None:
    _, candidate = _active_and_candidate(world)
    rid = _start(world, candidate, min_samples=150)
    with unit_of_work(world.engine) as s:
        rollouts.advance(s, deployment=world.deployment, principal=world.people["ml_engineer"].principal,
                         from_step=0, reason="first step looked fine")
        rollouts.record_verdict(s, rollout_id=rid, principal=WORKER, step_index=1, n_pairs=40, decision="pending",
                                summary="40 of 150 pairs: waiting for more", tests=[], differing=[], upto_output_id=0)
    sign_in(client, world.people["ml_engineer"].key)
    panel = _section(_page(client, world), "rollout")
    assert "canary 25% (step 2 of 4)" in panel
    assert f'href="/ui/versions/{candidate}"' in panel and "a step needs 150" in panel
    assert "pending" in panel and "40 of 150 pairs: waiting for more" in panel
    assert 'data-testid="rollout-advance-form"' in panel and 'data-testid="rollout-abort-form"' in panel
    assert 'name="from_step" value="1"' in panel and "From 25% to 50% of callers" in panel
    # the history: start and advance, with actor, step, weight and reason
    history = panel[panel.index("Rollout history"):]
    assert f"Rollout {rid}: canary" in history and "first step looked fine" in history
    assert re.search(r"<td>start</td><td>1 of 4</td><td>5%</td><td>user:", history)
    assert re.search(r"<td>advance</td><td>2 of 4</td><td>25%</td><td>user:", history)

    client.cookies.clear()
    sign_in(client, world.people["auditor"].key)
    panel = _section(_page(client, world), "rollout")
    assert "canary 25% (step 2 of 4)" in panel
    assert "rollout-advance-form" not in panel and "rollout-abort-form" not in panel

    client.cookies.clear()
    sign_in(client, world.people["compliance_officer"].key)  # officers may stop a rollout, not step it on
    panel = _section(_page(client, world), "rollout")
    assert "rollout-advance-form" not in panel and "rollout-abort-form" in panel


def test_advancing_through_the_form_moves_one_step(client: TestClient, world: World) -> None:
    _, candidate = _active_and_candidate(world)
    rid = _start(world, candidate)
    csrf = sign_in(client, world.people["ml_engineer"].key)
    url = f"/ui/deployments/{world.deployment}/rollout/advance"
    assert client.post(url, data={"from_step": "0"}).status_code == 403  # no CSRF token
    assert client.post(url, data={"from_step": "0", "csrf_token": "guess"}).status_code == 403
    assert _rollout(world, rid).step_index == 0
    assert client.post(url, data={"csrf_token": csrf}).status_code == 422  # the step the page showed is required

    r = client.post(url, data={"from_step": "0", "reason": "looks good", "csrf_token": csrf})
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "Rollout advanced one step" in page and "canary 25% (step 2 of 4)" in page
    # the same form again (a double click, a stale tab): nothing changes
    r = client.post(url, data={"from_step": "0", "reason": "looks good", "csrf_token": csrf})
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "Nothing changed" in page and "canary 25% (step 2 of 4)" in page
    ro = _rollout(world, rid)
    assert ro.step_index == 1 and ro.state == "running"
    with unit_of_work(world.engine) as s:
        assert [e.kind for e in rollouts.events(s, rollout_id=rid)] == ["start", "advance"]

    # 25% -> 50% -> 100%: the last step is the promotion
    assert client.post(url, data={"from_step": "1", "csrf_token": csrf}).status_code == 303
    page = _page(client, world)
    assert "advancing promotes version" in page
    r = client.post(url, data={"from_step": "2", "csrf_token": csrf})
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "Rollout complete" in page and "No rollout running" in page
    assert _rollout(world, rid).state == "completed"


def test_an_auditor_cannot_advance_and_a_409_is_an_error_page(client: TestClient, world: World) -> None:
    active = world.gated_release()
    world.approve(active)
    world.promote(active)
    shadowed = world.gated_release()  # gate passed, not approved: shadow only
    rid = _start(world, shadowed, mode="shadow")
    auditor = world.people["auditor"]
    csrf = sign_in(client, auditor.key)
    url = f"/ui/deployments/{world.deployment}/rollout/advance"
    r = client.post(url, data={"from_step": "0", "csrf_token": csrf})
    assert r.status_code == 403 and "Traceback" not in r.text
    with unit_of_work(world.engine) as s:
        denied = s.scalars(select(AuditEntry).where(AuditEntry.actor == f"user:{auditor.name}",
                                                    AuditEntry.action == "denied")).all()
        assert denied

    client.cookies.clear()
    csrf = sign_in(client, world.people["ml_engineer"].key)
    panel = _section(_page(client, world), "rollout")
    assert "shadow 20% of requests" in panel and "rollout-advance-form" not in panel  # a shadow has no steps
    r = client.post(url, data={"from_step": "0", "csrf_token": csrf})
    assert r.status_code == 409 and "shadow rollout" in html_lib.unescape(r.text)
    assert "409 · Conflict" in r.text and 'role="alert"' in r.text  # the dashboard's error page
    assert _rollout(world, rid).state == "running"


def test_aborting_works_and_is_idempotent(client: TestClient, world: World) -> None:
    _, candidate = _active_and_candidate(world)
    url = f"/ui/deployments/{world.deployment}/rollout/abort"
    officer = world.people["compliance_officer"]
    csrf = sign_in(client, officer.key)
    r = client.post(url, data={"reason": "nothing runs", "csrf_token": csrf})
    assert r.status_code == 404 and "never had a rollout" in html_lib.unescape(r.text)
    rid = _start(world, candidate)
    assert client.post(url, data={"reason": "forged"}).status_code == 403
    assert client.post(url, data={"reason": "", "csrf_token": csrf}).status_code == 422
    assert _rollout(world, rid).state == "running"

    r = client.post(url, data={"reason": "complaints <about> tone", "csrf_token": csrf})
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "Rollout aborted" in page and "No rollout running" in page
    assert "complaints &lt;about&gt; tone" in page and "<about>" not in page
    r = client.post(url, data={"reason": "again", "csrf_token": csrf})
    assert r.status_code == 303
    assert "already ended" in client.get(r.headers["location"]).text
    ro = _rollout(world, rid)
    assert ro.state == "aborted" and ro.end_reason == "complaints <about> tone"
    with unit_of_work(world.engine) as s:
        events = rollouts.events(s, rollout_id=rid)
    assert [e.kind for e in events] == ["start", "abort"] and events[-1].actor == f"user:{officer.name}"
    history = _section(_page(client, world), "rollout")
    assert re.search(r"<td>abort</td><td>1 of 4</td><td>0%</td><td>user:" + re.escape(officer.name), history)


def test_version_page_shows_the_shadow_verdict_escaped(client: TestClient, world: World) -> None:
    active = world.gated_release()
    world.approve(active)
    world.promote(active)
    shadowed = world.gated_release()
    rid = _start(world, shadowed, mode="shadow", min_samples=200)
    sign_in(client, world.people["compliance_officer"].key)
    page = client.get(f"/ui/versions/{shadowed}").text
    section = _section(page, "shadow-evidence")
    assert f"Rollout {rid} on" in section and "No verdict yet" in section
    with unit_of_work(world.engine) as s:
        verdict, change = rollouts.record_verdict(
            s, rollout_id=rid, principal=WORKER, step_index=0, n_pairs=240, decision="fail",
            summary="violations rose: 7 of 240 pairs", tests=TESTS, differing=DIFFERING, upto_output_id=0)
        assert verdict is not None and change is not None and change.changed
        digest = verdict.evidence_digest

    page = client.get(f"/ui/versions/{shadowed}").text
    section = _section(page, "shadow-evidence")
    assert "state-failed" in section and "Concluding verdict" in section
    assert "violations rose: 7 of 240 pairs" in section
    assert digest in section and 'data-testid="shadow-binding"' in section
    tests = section[section.index('data-testid="shadow-tests"'):]
    tests = tests[: tests.index("</table>")]
    # the project's number formatter: 4 significant digits, tiny p-values in e-notation, yes/no, — for none
    for cell in ("<td>240</td>", "<td>0.01235</td>", "<td>1.23e-05</td>", "<td>0.04567</td>", "<td>yes</td>",
                 "<td>1.235</td>", "<td>—</td>", "<td>no</td>"):
        assert cell in tests, cell
    assert "policy_violations" in tests and "exact McNemar, 7 discordant pairs" in tests and ">fail<" in tests
    # the differing pair side by side, every text escaped
    pair = section[section.index('data-testid="shadow-pair"'):]
    assert "<script>" not in page and "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in pair
    assert "He lives at &lt;b&gt;12 Elm Street&lt;/b&gt;." in pair and "I can&#39;t help with that." in pair
    assert "<code>pii</code>, <code>must_refuse</code>" in pair and "req-1" in pair
    assert pair.index("Active answer") < pair.index("Candidate answer")


def test_version_without_shadow_rollout_says_so(client: TestClient, world: World) -> None:
    vid = world.gated_release()
    sign_in(client, world.people["auditor"].key)
    section = _section(client.get(f"/ui/versions/{vid}").text, "shadow-evidence")
    assert "No shadow rollout of this version" in section


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus text exposition (labels in any order)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line[len(name): line.rindex("}") + 1]))
        if got == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_expose_the_rollout_series(client: TestClient, world: World) -> None:
    _, candidate = _active_and_candidate(world)
    dep = world.deployment
    rid = _start(world, candidate, min_samples=120)
    text = client.get("/metrics").text
    assert _sample(text, "govern_rollout_running", deployment=dep, mode="canary") == 1.0
    assert _sample(text, "govern_rollout_running", deployment=dep, mode="shadow") == 0.0
    assert _sample(text, "govern_rollout_canary_weight", deployment=dep) == 0.05
    assert _sample(text, "govern_rollout_min_samples", deployment=dep) == 120.0
    assert _sample(text, "govern_rollout_pairs", deployment=dep, mode="canary") == 0.0
    assert _sample(text, "govern_rollout_changes_total", deployment=dep, mode="canary", kind="start") == 1.0
    with unit_of_work(world.engine) as s:
        generation = int(deployments.get_deployment_or_raise(s, name=dep).generation)
    assert _sample(text, "govern_rollout_generation", deployment=dep) == float(generation)

    # a passing verdict with enough pairs steps the canary on; a failing one aborts it
    for decision, step in (("pass", 0), ("fail", 1)):
        with unit_of_work(world.engine) as s:
            rollouts.record_verdict(s, rollout_id=rid, principal=WORKER, step_index=step, n_pairs=130,
                                    decision=decision, summary=decision, tests=TESTS, differing=[],
                                    upto_output_id=0)
        text = client.get("/metrics").text
        assert _sample(text, "govern_rollout_verdicts_total", deployment=dep, mode="canary", decision=decision) == 1.0
        if decision == "pass":
            assert _sample(text, "govern_rollout_canary_weight", deployment=dep) == 0.25
            assert _sample(text, "govern_rollout_pairs", deployment=dep, mode="canary") == 0.0  # a new step
            assert _sample(text, "govern_rollout_changes_total", deployment=dep, mode="canary", kind="advance") == 1.0
    assert _sample(text, "govern_rollout_pairs", deployment=dep, mode="canary") == 130.0
    assert _sample(text, "govern_rollout_running", deployment=dep, mode="canary") == 0.0
    assert _sample(text, "govern_rollout_canary_weight", deployment=dep) == 0.0
    assert _sample(text, "govern_rollout_changes_total", deployment=dep, mode="canary", kind="abort") == 1.0


def test_a_page_read_refreshes_the_state_gauges(client: TestClient, world: World) -> None:
    """A promotion ends a running rollout inside the deployments service; the next read of the
    deployment page sets this process's gauges from the database."""
    _, candidate = _active_and_candidate(world)
    _start(world, candidate)
    world.promote(candidate)  # the candidate promoted by hand: the canary is complete
    sign_in(client, world.people["auditor"].key)
    assert "No rollout running" in _page(client, world)
    text = client.get("/metrics").text
    with unit_of_work(world.engine) as s:
        generation = int(deployments.get_deployment_or_raise(s, name=world.deployment).generation)
    assert _sample(text, "govern_rollout_running", deployment=world.deployment, mode="canary") == 0.0
    assert _sample(text, "govern_rollout_canary_weight", deployment=world.deployment) == 0.0
    assert _sample(text, "govern_rollout_generation", deployment=world.deployment) == float(generation)
