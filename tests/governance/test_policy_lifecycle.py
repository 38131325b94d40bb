"""Policy versions of a deployment, approvals bound to the gate digest, re-gating, with real services.

A monitoring-only change keeps every approval (promote and roll back still work); a gate
change leaves the versions approved under the old gate policy to be re-gated, with 409s
that name the command; four eyes applies to policy changes; the history and its audit
entries are complete.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from governance.db import unit_of_work
from governance.deployments import policies
from governance.deployments import service as deployments
from governance.errors import BindingMismatch, Conflict, Forbidden, NoRollbackTarget
from governance.gates.models import GateRun
from governance.outbox.models import OutboxMessage
from governance.outbox.names import REGATE_TASK
from governance.policy import gate_digest, parse_policy
from governance.principal import Principal
from governance.registry import service as registry
from governance.registry.models import TokenVersion
from tests.governance.conftest import GATE_DIGEST, POLICY_TEXT, World, audit_head, audit_since, uid
from tests.governance.test_cli import _govern, server  # noqa: F401  (the live API fixture)

# the default policy with only monitoring changed (10-second windows, a 40-output reference)
MONITORING_ONLY = POLICY_TEXT.replace("interval_seconds: 60", "interval_seconds: 10") + (
    "\n# held-out style: compressed in time\n")
STRICTER_GATE = POLICY_TEXT.replace("max_accuracy_drop: 0.02", "max_accuracy_drop: 0.01")


def test_the_fixture_policies_change_what_they_say() -> None:
    assert "interval_seconds: 10" in MONITORING_ONLY and "max_accuracy_drop: 0.01" in STRICTER_GATE
    base, mon, gate = (parse_policy(t)[0] for t in (POLICY_TEXT, MONITORING_ONLY, STRICTER_GATE))
    assert gate_digest(base) == gate_digest(mon) == GATE_DIGEST != gate_digest(gate)


def test_the_gate_digest_covers_gate_and_format_and_ignores_the_rest() -> None:
    minimal = "version: 1\n"
    explicit_default = "version: 1\nname: other\ngate:\n  max_new_tokens: 96\nalerts: {format: slack}\n"
    digest = gate_digest(parse_policy(minimal)[0])
    assert gate_digest(parse_policy(explicit_default)[0]) == digest  # defaults written out, name, alerts
    assert gate_digest(parse_policy("version: 1\nmonitoring: {interval_seconds: 5}\n")[0]) == digest
    assert gate_digest(parse_policy("version: 1\ngate: {max_new_tokens: 64}\n")[0]) != digest
    assert gate_digest(parse_policy("version: 1\nformat: {max_chars: 500}\n")[0]) != digest
    assert gate_digest(parse_policy("version: 1\ngate: {bias: {alpha: 0.01}}\n")[0]) != digest


def _change_policy(world: World, text: str, *, reason: str = "tune") -> policies.PolicyDecision:
    with unit_of_work(world.engine) as s:
        policies.propose_policy(s, deployment=world.deployment, policy_text=text, reason=reason,
                                principal=world.actor("ml_engineer").principal)
    with unit_of_work(world.engine) as s:
        return policies.decide_policy(s, deployment=world.deployment, approve=True, comment="reviewed",
                                      principal=world.actor("compliance_officer").principal)


def _rollback(world: World, **kw: Any) -> deployments.RollbackOutcome:
    with unit_of_work(world.engine) as s:
        officer = world.actor("compliance_officer").principal
        return deployments.rollback(s, deployment=world.deployment, principal=officer, reason="test", **kw)


def _active(world: World) -> int | None:
    with unit_of_work(world.engine) as s:
        return deployments.active_info(s, name=world.deployment).version_id


def test_a_monitoring_only_change_keeps_every_approval(world: World) -> None:
    v1 = world.approved()
    world.promote(v1)
    v2 = world.approved()
    world.promote(v2)
    waiting = world.approved()
    decision = _change_policy(world, MONITORING_ONLY)
    assert decision.stale_version_ids == [] and decision.row.seq == 2
    world.promote(waiting)  # approved before the change: still promotable
    assert _active(world) == waiting
    assert _rollback(world).to_version_id == v2  # the last approved token is still valid
    assert _rollback(world, to_version_id=v1).to_version_id == v1


def test_a_gate_change_invalidates_approvals_with_a_409_that_names_the_fix(world: World, client: TestClient) -> None:
    v1 = world.approved()
    world.promote(v1)
    v2 = world.approved()
    world.promote(v2)
    waiting = world.approved()
    decision = _change_policy(world, STRICTER_GATE, reason="stricter reasoning after an incident")
    assert decision.stale_version_ids == [v1, v2, waiting]
    before = audit_head(world.engine)
    r = client.post(f"/v1/deployments/{world.deployment}/promote", json={"version_id": waiting},
                    headers=world.actor("ml_engineer").headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "approval_binding_mismatch"
    message = r.json()["error"]["message"]
    assert f"govern gate run {waiting} --deployment {world.deployment}" in message
    assert f"govern review approve {waiting}" in message and "policy version 2" in message
    assert [e.action for e in audit_since(world.engine, before)] == ["denied"]
    # the automatic-rollback target is gone too, and the refusal names the versions to re-gate
    with pytest.raises(NoRollbackTarget, match=rf"version\(s\) {v1} .*need re-gating"):
        _rollback(world)
    with pytest.raises(BindingMismatch, match=f"govern gate run {v1} --deployment"):
        _rollback(world, to_version_id=v1)
    assert _active(world) == v2


def _regate(world: World, vid: int, *, passed: bool = True, new_gate: bool = True) -> int:
    """Re-gate through the services as the gate worker would record it (rows, no model)."""
    with unit_of_work(world.engine) as s:
        run = registry.request_regate(s, version_id=vid, principal=world.actor("ml_engineer").principal,
                                      target=deployments.regate_target(s, name=world.deployment))
        run_id, digest = run.id, run.gate_digest
    with unit_of_work(world.engine) as s:
        row = s.get(GateRun, run_id)
        assert row is not None and row.kind == "regate" and row.status == "queued"
        row.status, row.evidence_digest = ("passed" if passed else "failed"), f"{run_id:064x}"
        registry.finish_regate(s, version_id=vid, gate_run_id=run_id, passed=passed,
                               evidence_digest=row.evidence_digest, principal=Principal.for_system("gate"))
    assert (digest != GATE_DIGEST) == new_gate
    return run_id


def test_regate_then_approve_then_promote_and_roll_back(world: World, client: TestClient) -> None:
    v1 = world.approved()
    world.promote(v1)
    v2 = world.approved()
    _change_policy(world, STRICTER_GATE)
    # before the re-gate's approval the promotion is refused with the approve command
    run_id = _regate(world, v2)
    r = client.post(f"/v1/deployments/{world.deployment}/promote", json={"version_id": v2},
                    headers=world.actor("ml_engineer").headers)
    assert r.status_code == 409 and f"gate run {run_id}" in r.json()["error"]["message"]
    assert f"govern review approve {v2}" in r.json()["error"]["message"]
    r = client.post(f"/v1/versions/{v2}/approve", json={"comment": "re-gated under v2 of the policy"},
                    headers=world.actor("compliance_officer").headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "approved" and body["gate_run_id"] == run_id and body["gate_digest"] != GATE_DIGEST
    # a second approval of the same run is refused: a new approval needs a new gate run
    r = client.post(f"/v1/versions/{v2}/approve", json={"comment": "again"},
                    headers=world.actor("compliance_officer").headers)
    assert r.status_code == 409 and "new gate run" in r.json()["error"]["message"]
    world.promote(v2)
    assert _active(world) == v2
    # the old evidence stays beside the new
    with unit_of_work(world.engine) as s:
        kinds = [(g.kind, g.status) for g in s.scalars(select(GateRun).where(GateRun.version_id == v2)
                                                       .order_by(GateRun.id))]
    assert kinds == [("first", "passed"), ("regate", "passed")]
    # v1 (superseded, approved under the old gate only) is no rollback target until re-gated
    with pytest.raises(NoRollbackTarget):
        _rollback(world)
    _regate(world, v1)
    with unit_of_work(world.engine) as s:
        review = registry.approve(s, version_id=v1, principal=world.actor("compliance_officer").principal,
                                  comment="re-gated the fallback")
        assert review.gate_digest is not None
        assert s.get(TokenVersion, v1).state == "superseded"  # type: ignore[union-attr]  # a re-approval moves nothing
    assert _rollback(world).to_version_id == v1


def test_the_regate_route_queues_a_gate_worker_task(world: World, client: TestClient) -> None:
    v1 = world.approved()
    world.promote(v1)
    _change_policy(world, STRICTER_GATE)
    svc = world.actor("service")  # a service key bound to this deployment may ask too
    r = client.post(f"/v1/versions/{v1}/gate-runs", json={"deployment": world.deployment}, headers=svc.headers)
    assert r.status_code == 202, r.text
    run = r.json()
    assert (run["kind"], run["status"], run["version_id"]) == ("regate", "queued", v1)
    with unit_of_work(world.engine) as s:
        msgs = [m for m in s.scalars(select(OutboxMessage).where(OutboxMessage.target == REGATE_TASK))
                if m.payload["args"] == [run["id"]]]
    assert len(msgs) == 1 and msgs[0].payload["queue"] == "gates"
    # while it is queued, a second request is refused
    r = client.post(f"/v1/versions/{v1}/gate-runs", json={"deployment": world.deployment},
                    headers=world.actor("ml_engineer").headers)
    assert r.status_code == 409 and "queued" in r.json()["error"]["message"]


def test_regate_refuses_what_cannot_be_regated(world: World) -> None:
    submitted = world.submit()
    failed = world.submit()
    world.gate(failed, passed=False)
    approved = world.approved()
    with unit_of_work(world.engine) as s:
        target = deployments.regate_target(s, name=world.deployment)
    for vid, words in ((submitted, "first gate has not finished"), (failed, "failed its gate, which is final"),
                       (approved, "already passed the gate under")):
        with pytest.raises(Conflict, match=words), unit_of_work(world.engine) as s:
            registry.request_regate(s, version_id=vid, target=target, principal=world.actor("ml_engineer").principal)


def test_four_eyes_and_roles_on_policy_changes(world: World) -> None:
    ml, co, admin = (world.actor(r).principal for r in ("ml_engineer", "compliance_officer", "admin"))
    with pytest.raises(Forbidden), unit_of_work(world.engine) as s:
        policies.propose_policy(s, deployment=world.deployment, policy_text=MONITORING_ONLY, reason="x", principal=co)
    with unit_of_work(world.engine) as s:
        policies.propose_policy(s, deployment=world.deployment, policy_text=MONITORING_ONLY, reason="x", principal=ml)
    with pytest.raises(Conflict, match="waiting for a decision"), unit_of_work(world.engine) as s:
        policies.propose_policy(s, deployment=world.deployment, policy_text=STRICTER_GATE, reason="y", principal=admin)
    for who in (ml, admin):  # the proposer, and a role that does not decide policy
        with pytest.raises(Forbidden), unit_of_work(world.engine) as s:
            policies.decide_policy(s, deployment=world.deployment, approve=True, comment="self", principal=who)
    # an officer who also proposes (an officer cannot: the role table) — the service checks the person too
    proposer_as_officer = Principal(name=ml.name, role="compliance_officer", user_id=ml.user_id, key_prefix="x")
    with pytest.raises(Forbidden, match="four eyes"), unit_of_work(world.engine) as s:
        policies.decide_policy(s, deployment=world.deployment, approve=True, comment="mine",
                               principal=proposer_as_officer)
    with unit_of_work(world.engine) as s:
        decision = policies.decide_policy(s, deployment=world.deployment, approve=False, comment="not now",
                                          principal=co)
    assert decision.row.state == "rejected"
    with unit_of_work(world.engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        assert deployments.policy_of(s, deployment=dep).content == POLICY_TEXT  # nothing changed


def test_bad_policy_changes_are_refused_and_nothing_is_stored(world: World) -> None:
    ml = world.actor("ml_engineer").principal
    for text, reason, words in ((POLICY_TEXT, "same", "already runs this policy"),
                                ("version: 1\ngate: {bais: {}}\n", "typo", "unknown key gate.bais"),
                                (MONITORING_ONLY, "  ", "needs a reason")):
        with pytest.raises(Exception, match=words), unit_of_work(world.engine) as s:
            policies.propose_policy(s, deployment=world.deployment, policy_text=text, reason=reason, principal=ml)
    with unit_of_work(world.engine) as s:
        assert [v.row.seq for v in policies.history(s, deployment=world.deployment)] == [1]


def test_history_and_audit_entries_are_complete(world: World, client: TestClient) -> None:
    headers = {r: world.actor(r).headers for r in ("ml_engineer", "compliance_officer", "auditor")}
    before = audit_head(world.engine)
    r = client.post(f"/v1/deployments/{world.deployment}/policies",
                    json={"policy": MONITORING_ONLY, "reason": "faster windows"}, headers=headers["ml_engineer"])
    assert r.status_code == 201 and r.json()["state"] == "proposed" and r.json()["binds_approvals"] is False
    assert r.json()["changed_sections"] == ["monitoring"]
    assert client.get(f"/v1/deployments/{world.deployment}", headers=headers["auditor"]).json()[
        "pending_policy_seq"] == 2
    r = client.post(f"/v1/deployments/{world.deployment}/policies/2/approve", json={"comment": "fine"},
                    headers=headers["compliance_officer"])
    assert r.status_code == 200 and r.json()["state"] == "active"
    r = client.post(f"/v1/deployments/{world.deployment}/policies",
                    json={"policy": STRICTER_GATE, "reason": "stricter"}, headers=headers["ml_engineer"])
    assert r.json()["binds_approvals"] is True and r.json()["changed_sections"] == ["gate", "monitoring"]
    client.post(f"/v1/deployments/{world.deployment}/policies/3/reject", json={"comment": "too strict"},
                headers=headers["compliance_officer"])
    history = client.get(f"/v1/deployments/{world.deployment}/policies", headers=headers["auditor"]).json()
    assert [(v["seq"], v["state"]) for v in history] == [(3, "rejected"), (2, "active"), (1, "superseded")]
    assert "-  interval_seconds: 60" in history[1]["diff"] and "+  interval_seconds: 10" in history[1]["diff"]
    assert history[0]["decided_by"] and history[0]["decision_comment"] == "too strict"
    assert all(v["reason"] and v["proposed_by"] for v in history)
    d = client.get(f"/v1/deployments/{world.deployment}", headers=headers["auditor"]).json()
    assert d["policy_seq"] == 2 and d["pending_policy_seq"] is None and d["gate_digest"] == GATE_DIGEST
    entries = [(e.action, json.loads(e.payload)) for e in audit_since(world.engine, before)]
    assert [a for a, _ in entries] == ["deployment.policy_propose", "deployment.policy_approve",
                                       "deployment.policy_propose", "deployment.policy_reject"]
    assert entries[1][1]["seq"] == 2 and entries[1][1]["binds_approvals"] is False
    assert entries[2][1]["binds_approvals"] is True and entries[2][1]["reason"] == "stricter"


def test_held_out_scenario_promotes_without_retraining(world: World, engine: Any) -> None:
    """Gated and approved under the default policy without a deployment; then a deployment
    whose policy differs only in monitoring promotes it."""
    with unit_of_work(engine) as s:
        sub = registry.submit_version(s, data=world.artifact(), adapter=uid("line"), max_bytes=1_000_000,
                                      principal=world.actor("ml_engineer").principal)
        vid = sub.version.id
    world.gate(vid)
    with unit_of_work(engine) as s:
        registry.approve(s, version_id=vid, principal=world.actor("compliance_officer").principal, comment="ok")
    heldout = uid("heldout")
    text = MONITORING_ONLY.replace("reference_size: null", "reference_size: 40")
    with unit_of_work(engine) as s:
        deployments.create_deployment(s, name=heldout, base_model=world.base_name, policy_text=text,
                                      principal=world.actor("admin").principal)
    world.promote(vid, deployment=heldout)
    with unit_of_work(engine) as s:
        assert deployments.active_info(s, name=heldout).version_id == vid


def test_policy_commands_in_the_cli(server: str, world: World, tmp_path: Any) -> None:  # noqa: F811
    path = tmp_path / "stricter.yaml"
    path.write_text(STRICTER_GATE)
    ml, co = world.actor("ml_engineer").key, world.actor("compliance_officer").key
    v1 = world.approved()
    world.promote(v1)
    r = _govern(server, ml, "deployments", "set-policy", world.deployment, "--policy", str(path),
                "--reason", "stricter reasoning")
    assert r.exit_code == 0 and "proposed policy v2" in r.output and "changes the gate" in r.output, r.output
    r = _govern(server, ml, "deployments", "approve-policy", world.deployment, "--comment", "mine")
    assert r.exit_code == 1 and "403" in r.output
    r = _govern(server, co, "deployments", "approve-policy", world.deployment, "--comment", "agreed")
    assert r.exit_code == 0 and "policy v2 is now" in r.output and f"version(s) {v1}" in r.output, r.output
    assert f"govern gate run VERSION --deployment {world.deployment}" in r.output
    r = _govern(server, co, "deployments", "show", world.deployment)
    assert r.exit_code == 0 and "policy history" in r.output and "+    max_accuracy_drop: 0.01" in r.output, r.output
    r = _govern(server, ml, "deployments", "set-policy", world.deployment, "--policy", str(tmp_path / "missing.yaml"),
                "--reason", "x")
    assert r.exit_code != 0 and "missing.yaml" in r.output


def test_a_run_without_a_recorded_digest_resolves_it_from_its_policy_file(engine: Any) -> None:
    """Rows written without a digest (before 0003) resolve it from their policy file; an unknown file gives none."""
    with unit_of_work(engine) as s:
        run = GateRun(version_id=0, policy_sha256=parse_policy(POLICY_TEXT)[1], status="passed")
        assert registry.gate_digest_of_run(s, run=run) == GATE_DIGEST
        run.policy_sha256 = "f" * 64
        assert registry.gate_digest_of_run(s, run=run) is None


def test_altered_gate_evidence_is_resolved_by_the_command_the_409_names(world: World, client: TestClient) -> None:
    vid = world.approved()
    with unit_of_work(world.engine) as s:  # the approved run's evidence is altered in the database
        run = s.scalars(select(GateRun).where(GateRun.version_id == vid)).one()
        run.evidence_digest = "9" * 64
    r = client.post(f"/v1/deployments/{world.deployment}/promote", json={"version_id": vid},
                    headers=world.actor("ml_engineer").headers)
    assert r.status_code == 409 and "gate evidence changed" in r.json()["error"]["message"]
    assert f"govern gate run {vid} --deployment {world.deployment}" in r.json()["error"]["message"]
    again_id = _regate(world, vid, new_gate=False)  # what the named command does first: a re-gate is allowed
    r = client.post(f"/v1/versions/{vid}/approve", json={"comment": "evidence regenerated"},
                    headers=world.actor("compliance_officer").headers)
    assert r.status_code == 200 and r.json()["gate_run_id"] == again_id, r.text
    world.promote(vid)
    assert _active(world) == vid


def test_gate_run_with_a_deployment_refuses_in_one_line(world: World, settings_env: None) -> None:
    from typer.testing import CliRunner

    from governance.cli.main import app as cli

    vid = world.approved()
    runner = CliRunner()
    r = runner.invoke(cli, ["gate", "run", str(vid), "--deployment", "no-such-deployment"])
    assert r.exit_code == 2 and "no deployment named 'no-such-deployment'" in r.output, r.output
    r = runner.invoke(cli, ["gate", "run", str(vid), "--deployment", world.deployment])
    assert r.exit_code == 2 and "already passed the gate under" in r.output, r.output
    with unit_of_work(world.engine) as s:  # nothing was queued or opened
        assert [g.kind for g in s.scalars(select(GateRun).where(GateRun.version_id == vid))] == ["first"]
