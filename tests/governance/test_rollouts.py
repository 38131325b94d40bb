"""Rollouts in the control plane, with real PostgreSQL: start, 409s, one at a time, advance, abort, completion.

Every change is one transaction with its audit entry and a publish of the new generation;
`/active` carries the running rollout so a replica restarted mid-rollout rejoins at its
step; two advances of the same step make one; abort is idempotent; the last canary step is
an ordinary promotion; a promotion or rollback of something else ends a running rollout;
approvals record the shadow evidence and honour `rollout.require_shadow`.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from governance.db import unit_of_work
from governance.deployments import rollouts
from governance.deployments import service as deployments
from governance.deployments.models import Promotion, Rollout
from governance.errors import Conflict, InvalidInput
from governance.outbox.models import OutboxMessage
from governance.outputs import service as outputs
from governance.registry import service as registry
from governance.registry.models import Review, TokenVersion
from tests.governance.conftest import POLICY_TEXT, World, audit_head, audit_since, make_world, uid
from tests.governance.test_cli import _govern, server  # noqa: F401  (the live API fixture)


def _start(world: World, vid: int, mode: str, **kw: Any) -> int:
    with unit_of_work(world.engine) as s:
        return rollouts.start_rollout(s, deployment=world.deployment, version_id=vid, mode=mode,
                                      principal=world.actor("ml_engineer").principal, **kw).id


def _gate_passed(world: World) -> int:
    vid = world.submit()
    world.gate(vid)
    return vid


def _active_json(client: TestClient, world: World) -> dict[str, Any]:
    r = client.get(f"/v1/deployments/{world.deployment}/active", headers=world.actor("service").headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _verdict(world: World, rollout_id: int, decision: str, *, step: int = 0, n: int = 300) -> Any:
    with unit_of_work(world.engine) as s:
        return rollouts.record_verdict(
            s, rollout_id=rollout_id, principal=world.actor("service").principal, step_index=step, n_pairs=n,
            decision=decision, summary=f"test verdict: {decision}",
            tests=[{"name": "policy_violations", "n": n, "statistic": 0, "threshold": 0.0, "p_value": 1.0,
                    "mde": 0.03, "decides": True, "outcome": "pass" if decision != "fail" else "fail"}],
            differing=[], upto_output_id=0)


def test_a_shadow_rollout_is_published_with_the_active_state(world: World, client: TestClient) -> None:
    active = world.approved()
    world.promote(active)
    candidate = _gate_passed(world)
    before = _active_json(client, world)
    assert before["rollout"] is None
    head = audit_head(world.engine)
    rid = _start(world, candidate, "shadow", sample=0.3)
    after = _active_json(client, world)
    assert after["generation"] == before["generation"] + 1 and after["version_id"] == active
    plan = after["rollout"]
    assert plan["rollout_id"] == rid and plan["mode"] == "shadow" and plan["version_id"] == candidate
    assert plan["sample"] == 0.3 and plan["weight"] == 0.0 and len(plan["sha256"]) == 64
    with unit_of_work(world.engine) as s:
        msg = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "publish")
                        .order_by(OutboxMessage.id.desc()).limit(1)).one()
        assert msg.payload["rollout"]["rollout_id"] == rid and msg.payload["generation"] == after["generation"]
        assert msg.payload["kind"] == "rollout_start"
    entries = audit_since(world.engine, head)
    assert [e.action for e in entries] == ["rollout.start"]
    r = client.get(f"/v1/deployments/{world.deployment}/rollouts/current", headers=world.actor("auditor").headers)
    assert r.status_code == 200 and r.json()["state"] == "running" and r.json()["events"][0]["kind"] == "start"


def test_wrong_state_other_deployment_and_a_running_rollout_are_409s_naming_why(
    world: World, client: TestClient
) -> None:
    active = world.approved()
    world.promote(active)
    headers = world.actor("ml_engineer").headers
    url = f"/v1/deployments/{world.deployment}/rollouts"

    submitted = world.submit()  # not gated yet
    r = client.post(url, json={"version_id": submitted, "mode": "shadow"}, headers=headers)
    assert r.status_code == 409 and "passed the gate" in r.json()["error"]["message"]

    gated = _gate_passed(world)
    r = client.post(url, json={"version_id": gated, "mode": "canary"}, headers=headers)
    assert r.status_code == 409 and "needs an approved version" in r.json()["error"]["message"]
    assert f"govern review approve {gated}" in r.json()["error"]["message"]

    r = client.post(url, json={"version_id": active, "mode": "shadow"}, headers=headers)
    assert r.status_code == 409 and "already the active version" in r.json()["error"]["message"]

    other = make_world(world.engine)  # another deployment (and base model)
    foreign = other.submit()
    other.gate(foreign)
    r = client.post(url, json={"version_id": foreign, "mode": "shadow"}, headers=headers)
    assert r.status_code == 409 and "another base model" in r.json()["error"]["message"]

    r = client.post(url, json={"version_id": gated, "mode": "shadow"}, headers=headers)
    assert r.status_code == 201, r.text
    again = _gate_passed(world)
    r = client.post(url, json={"version_id": again, "mode": "shadow"}, headers=headers)
    assert r.status_code == 409 and "already runs rollout" in r.json()["error"]["message"]

    r = client.post(url, json={"version_id": again, "mode": "canary", "steps": [50, 10, 100]}, headers=headers)
    assert r.status_code == 422 or r.status_code == 400 or r.status_code == 409
    r = client.post(url, json={"version_id": again, "mode": "sideways"}, headers=headers)
    assert r.status_code in (400, 422)
    r = client.post(url, json={"version_id": again, "mode": "shadow"}, headers=world.actor("auditor").headers)
    assert r.status_code == 403


def test_the_database_allows_one_running_rollout_per_deployment(world: World) -> None:
    world.promote(world.approved())
    rid = _start(world, _gate_passed(world), "shadow")
    other = _gate_passed(world)
    with pytest.raises(IntegrityError), unit_of_work(world.engine) as s:
        first = s.get(Rollout, rid)
        assert first is not None
        s.add(Rollout(deployment_id=first.deployment_id, version_id=other, mode="shadow", state="running",
                      sample=0.2, steps=[100], step_index=0, min_samples=10, started_by_actor="x", generation=1))
        s.flush()


def test_steps_and_bad_parameters_are_refused_clearly(world: World) -> None:
    world.promote(world.approved())
    vid = world.approved()
    for kw, words in (({"steps": [5, 25]}, "last step must be 100"), ({"steps": [25, 5, 100]}, "increasing"),
                      ({"sample": 1.5}, "sample must be"), ({"min_samples": 0}, "min_samples")):
        with pytest.raises(InvalidInput, match=words), unit_of_work(world.engine) as s:
            rollouts.start_rollout(s, deployment=world.deployment, version_id=vid, mode="canary",
                                   principal=world.actor("ml_engineer").principal, **kw)


def test_two_advances_of_one_step_make_one_step(world: World) -> None:
    world.promote(world.approved())
    candidate = world.approved()
    _start(world, candidate, "canary", steps=[5, 25, 50, 100])
    barrier = threading.Barrier(2)
    results: list[rollouts.RolloutChange] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            barrier.wait(5)
            with unit_of_work(world.engine) as s:
                change = rollouts.advance(s, deployment=world.deployment, principal=world.actor("ml_engineer")
                                          .principal, from_step=0)
                results.append(change)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(c.changed for c in results) == [False, True]
    with unit_of_work(world.engine) as s:
        ro = rollouts.current(s, deployment=world.deployment)
        assert ro is not None and ro.step_index == 1 and deployments.rollout_weight(ro) == 0.25
        assert [e.kind for e in rollouts.events(s, rollout_id=ro.id)] == ["start", "advance"]


def test_abort_is_idempotent_and_takes_the_candidate_off_the_replicas(world: World, client: TestClient) -> None:
    world.promote(world.approved())
    _start(world, world.approved(), "canary")
    gen = _active_json(client, world)["generation"]
    url = f"/v1/deployments/{world.deployment}/rollouts/current/abort"
    r = client.post(url, json={"reason": "looks wrong"}, headers=world.actor("compliance_officer").headers)
    assert r.status_code == 200 and r.json()["changed"] is True and r.json()["rollout"]["state"] == "aborted"
    r = client.post(url, json={"reason": "again"}, headers=world.actor("compliance_officer").headers)
    assert r.status_code == 200 and r.json()["changed"] is False
    after = _active_json(client, world)
    assert after["rollout"] is None and after["generation"] == gen + 1
    r = client.get(f"/v1/deployments/{world.deployment}/rollouts/current", headers=world.actor("auditor").headers)
    assert r.status_code == 404


def test_a_canary_steps_to_100_percent_through_an_ordinary_promotion(world: World, client: TestClient) -> None:
    old = world.approved()
    world.promote(old)
    candidate = world.approved()
    rid = _start(world, candidate, "canary", steps=[10, 50, 100], min_samples=5)
    _verdict(world, rid, "pending", step=0)
    _verdict(world, rid, "pass", step=0)  # -> 50%
    assert _active_json(client, world)["rollout"]["weight"] == 0.5
    _, change = _verdict(world, rid, "pass", step=1)  # -> 100%: the promotion
    assert change is not None and change.promotion_generation is not None
    state = _active_json(client, world)
    assert state["version_id"] == candidate and state["rollout"] is None
    with unit_of_work(world.engine) as s:
        ro = s.get(Rollout, rid)
        assert ro is not None and ro.state == "completed"
        kinds = [e.kind for e in rollouts.events(s, rollout_id=rid)]
        assert kinds == ["start", "verdict", "advance", "verdict", "complete"]
        promo = s.scalars(select(Promotion).where(Promotion.generation == state["generation"],
                                                  Promotion.version_id == candidate)).one()
        assert promo.kind == "promote" and "canary rollout" in (promo.reason or "")
        old_row = s.get(TokenVersion, old)
        assert old_row is not None and old_row.state == "superseded"
    # the last approved token is the one before the canary: rollback keeps working unchanged
    with unit_of_work(world.engine) as s:
        out = deployments.rollback(s, deployment=world.deployment, reason="test",
                                   principal=world.actor("compliance_officer").principal)
    assert out.to_version_id == old


def test_a_failing_canary_verdict_aborts_and_a_late_verdict_changes_nothing(world: World) -> None:
    world.promote(world.approved())
    rid = _start(world, world.approved(), "canary")
    verdict, change = _verdict(world, rid, "fail")
    assert verdict is not None and change is not None and change.rollout.state == "aborted"
    late, nothing = _verdict(world, rid, "pass")
    assert late is None and nothing is None


def test_promoting_something_else_ends_the_running_rollout(world: World) -> None:
    world.promote(world.approved())
    rid = _start(world, _gate_passed(world), "shadow")
    world.promote(world.approved())
    with unit_of_work(world.engine) as s:
        ro = s.get(Rollout, rid)
        assert ro is not None and ro.state == "aborted" and "active version changed" in (ro.end_reason or "")


def test_a_shadow_verdict_ends_it_and_the_approval_records_its_digest(world: World) -> None:
    world.promote(world.approved())
    candidate = _gate_passed(world)
    rid = _start(world, candidate, "shadow")
    verdict, change = _verdict(world, rid, "pass")
    assert change is not None and change.rollout.state == "passed"
    with unit_of_work(world.engine) as s:
        shadow = rollouts.approval_shadow(s, version_id=candidate)
        review = registry.approve(s, version_id=candidate, principal=world.actor("compliance_officer").principal,
                                  comment="shadow clean", shadow=shadow)
        assert review.shadow_evidence_digest == verdict.evidence_digest


def test_require_shadow_refuses_an_approval_without_a_passed_shadow(engine: Any, client: TestClient) -> None:
    world = make_world(engine)
    text = POLICY_TEXT.replace("require_shadow: false", "require_shadow: true")
    assert text != POLICY_TEXT
    name = uid("dep")
    with unit_of_work(engine) as s:
        deployments.create_deployment(s, name=name, base_model=world.base_name, policy_text=text,
                                      principal=world.actor("admin").principal)
    vid = world.submit(deployment=name)
    world.gate(vid)
    r = client.post(f"/v1/versions/{vid}/approve", json={"comment": "looks fine"},
                    headers=world.actor("compliance_officer").headers)
    assert r.status_code == 409, r.text
    assert "requires a passed shadow rollout" in r.json()["error"]["message"]
    assert f"govern rollout start {vid} --deployment {name} --mode shadow" in r.json()["error"]["message"]
    with unit_of_work(engine) as s:
        rid = rollouts.start_rollout(s, deployment=name, version_id=vid, mode="shadow",
                                     principal=world.actor("ml_engineer").principal).id
    with unit_of_work(engine) as s:
        rollouts.record_verdict(s, rollout_id=rid, principal=world.actor("service").principal, step_index=0,
                                n_pairs=300, decision="pass", summary="clean", tests=[], differing=[],
                                upto_output_id=0)
    r = client.post(f"/v1/versions/{vid}/approve", json={"comment": "shadow clean"},
                    headers=world.actor("compliance_officer").headers)
    assert r.status_code == 200, r.text
    assert r.json()["shadow_evidence_digest"]
    with unit_of_work(engine) as s:
        review = s.scalars(select(Review).where(Review.version_id == vid)).one()
        assert review.shadow_evidence_digest == r.json()["shadow_evidence_digest"]


def test_pairs_are_ingested_checked_and_kept_out_of_monitoring_windows(world: World) -> None:
    active = world.approved()
    world.promote(active)
    candidate = _gate_passed(world)
    rid = _start(world, candidate, "shadow")
    rows = [{"request_id": "r1", "version_id": active, "output": "hello", "rollout_id": rid},
            {"request_id": "r1~twin", "version_id": candidate, "output": "hi", "rollout_id": rid, "twin_of": "r1"},
            {"request_id": "r2", "version_id": active, "output": "plain"}]
    with unit_of_work(world.engine) as s:
        assert outputs.ingest_outputs(s, deployment=world.deployment, rows=rows) == (3, 0)
    with unit_of_work(world.engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        window = outputs.output_ids(s, deployment_id=dep.id, version_id=None, after_id=0, upto_id=10**12)
        assert len(window) == 2  # the twin is not part of any window
        pairs = outputs.rollout_pairs(s, rollout_id=rid)
        assert [(p.served_output, p.twin_output, p.twin_version_id) for p in pairs] == [("hello", "hi", candidate)]
        assert outputs.pair_counts(s, rollout_ids=[rid]) == {rid: 1}
    with pytest.raises(InvalidInput, match="must name its rollout_id"), unit_of_work(world.engine) as s:
        outputs.ingest_outputs(s, deployment=world.deployment,
                               rows=[{"request_id": "x~twin", "version_id": candidate, "twin_of": "x"}])
    other = make_world(world.engine)
    with pytest.raises(InvalidInput, match="not a rollout of deployment"), unit_of_work(world.engine) as s:
        outputs.ingest_outputs(s, deployment=other.deployment, rows=[{"request_id": "y", "rollout_id": rid}])


def test_a_rollout_cannot_start_on_a_shadow_advance(world: World) -> None:
    world.promote(world.approved())
    _start(world, _gate_passed(world), "shadow")
    with pytest.raises(Conflict, match="shadow rollout: it has no steps"), unit_of_work(world.engine) as s:
        rollouts.advance(s, deployment=world.deployment, principal=world.actor("ml_engineer").principal)


def test_a_version_submitted_without_a_deployment_joins_it_when_its_shadow_starts(world: World) -> None:
    active = world.approved()
    world.promote(active)
    with unit_of_work(world.engine) as s:  # submitted without a target deployment
        loose = registry.submit_version(s, data=world.artifact(), adapter=uid("adapter"),
                                        principal=world.actor("ml_engineer").principal, max_bytes=1_000_000,
                                        deployment=None).version.id
    world.gate(loose)
    rid = _start(world, loose, "shadow")
    rows = [{"request_id": "q1", "version_id": active, "output": "a", "rollout_id": rid},
            {"request_id": "q1~twin", "version_id": loose, "output": "b", "rollout_id": rid, "twin_of": "q1"}]
    with unit_of_work(world.engine) as s:
        assert outputs.ingest_outputs(s, deployment=world.deployment, rows=rows) == (2, 0)
        version = s.get(TokenVersion, loose)
        assert version is not None and version.deployment_id is not None


@pytest.mark.usefixtures("settings_env")
def test_govern_rollout_start_status_advance_abort(server: str, world: World) -> None:  # noqa: F811
    eng, officer = world.actor("ml_engineer").key, world.actor("compliance_officer").key
    world.promote(world.approved())
    candidate = world.approved()
    r = _govern(server, eng, "rollout", "start", str(candidate), "--deployment", world.deployment, "--mode",
                "canary", "--steps", "10,50,100", "--min-samples", "30")
    assert r.exit_code == 0, r.output
    assert "canary 10% (step 1 of 3)" in " ".join(r.output.split())
    r = _govern(server, eng, "rollout", "status", "--deployment", world.deployment)
    assert r.exit_code == 0 and "running" in r.output and "start" in r.output, r.output
    r = _govern(server, eng, "rollout", "advance", "--deployment", world.deployment, "--reason", "looks fine")
    assert r.exit_code == 0 and "advanced to 50%" in r.output, r.output
    r = _govern(server, eng, "rollout", "start", str(candidate), "--deployment", world.deployment, "--mode", "shadow")
    assert r.exit_code == 1 and "already runs rollout" in r.output, r.output
    r = _govern(server, officer, "rollout", "abort", "--deployment", world.deployment, "--reason", "complaints")
    assert r.exit_code == 0 and "aborted" in r.output, r.output
    r = _govern(server, officer, "rollout", "abort", "--deployment", world.deployment, "--reason", "again")
    assert r.exit_code == 0 and "already ended" in r.output, r.output
    r = _govern(server, eng, "rollout", "start", str(candidate), "--deployment", world.deployment, "--mode",
                "sideways")
    assert r.exit_code != 0 and "--mode must be shadow or canary" in r.output, r.output
    r = _govern(server, eng, "rollout", "start", str(candidate), "--deployment", world.deployment, "--mode",
                "canary", "--steps", "5,x")
    assert r.exit_code != 0 and "--steps must be comma-separated" in r.output, r.output
