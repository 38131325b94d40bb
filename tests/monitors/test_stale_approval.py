"""The monitor's automatic rollback after the deployment's gate policy changed.

The last approved token is the most recent version approved under the deployment's
current gate digest. When the earlier-active versions are approved under an older gate
policy only, `monitoring.rollback.on_stale_approval` decides: `alert` (the default) rolls
nothing back and raises a critical alert naming the versions to re-gate,
`use_previous_approval` rolls back to the most recent one and the audit entry says under
which gate policy it was approved. A re-gated and re-approved version is a target again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select

from governance.alerts.models import Alert
from governance.audit.models import AuditEntry
from governance.db import unit_of_work
from governance.deployments import policies
from governance.deployments import service as deployments
from governance.gates.models import GateRun
from governance.principal import Principal
from governance.registry import service as registry
from monitors.rollback import RollbackDecision, auto_rollback
from tests.monitors.conftest import World, make_world


def _rollback(world: World, expected: int) -> RollbackDecision:
    with unit_of_work(world.engine) as s:
        return auto_rollback(s, deployment_id=world.deployment_id, expected_version_id=expected, check_id=0,
                             detector="policy_violations", now=datetime.now(UTC))


def _change(world: World, text: str) -> None:
    with unit_of_work(world.engine) as s:
        policies.propose_policy(s, deployment=world.deployment, policy_text=text, reason="new gate",
                                principal=world.people["ml_engineer"])
    with unit_of_work(world.engine) as s:
        policies.decide_policy(s, deployment=world.deployment, approve=True, comment="ok",
                               principal=world.people["compliance_officer"])


def _stricter(world: World, on_stale: str | None = None) -> str:
    text = world.policy_text + "gate: {reasoning: {max_accuracy_drop: 0.01}}\n"
    if on_stale is not None:
        text = text.replace("fallback_to_base:", f"on_stale_approval: {on_stale}, fallback_to_base:")
    return text


def _alerts(world: World, kind: str) -> list[Alert]:
    with unit_of_work(world.engine) as s:
        return list(s.scalars(select(Alert).where(Alert.deployment_id == world.deployment_id, Alert.kind == kind)))


def test_default_alert_rolls_nothing_back_and_names_the_versions_to_regate(world: World) -> None:
    v1 = world.release()
    v2 = world.release()
    _change(world, _stricter(world))
    decision = _rollback(world, v2)
    assert decision.status == "no_target" and world.active() == v2
    (alert,) = _alerts(world, "rollback_no_target")
    assert alert.severity == "critical" and alert.details["versions_to_regate"] == [v1]
    assert f"version(s) {v1}" in alert.message and f"--deployment {world.deployment}" in alert.message


def test_a_monitoring_only_change_keeps_the_rollback_target(world: World) -> None:
    v1 = world.release()
    v2 = world.release()
    _change(world, world.policy_text.replace("min_samples: 20", "min_samples: 25"))
    assert _rollback(world, v2).status == "rolled_back" and world.active() == v1


def test_use_previous_approval_rolls_back_and_says_so(engine, settings_env) -> None:  # type: ignore[no-untyped-def]
    world = make_world(engine)
    v1 = world.release()
    v2 = world.release()
    _change(world, _stricter(world, "use_previous_approval"))
    decision = _rollback(world, v2)
    assert decision.status == "rolled_back" and decision.to_version_id == v1 and world.active() == v1
    with unit_of_work(engine) as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "deployment.auto_rollback",
                                                   AuditEntry.subject_id == world.deployment)).one()
    approval = json.loads(entry.payload)["approval"]
    assert approval["stale_approval"] is True
    assert approval["deployment_gate_digest"] not in approval["target_approved_under"]


def test_fallback_to_base_still_applies_when_the_only_target_is_stale(engine, settings_env) -> None:  # type: ignore[no-untyped-def]
    world = make_world(engine, fallback_to_base=True)
    world.release()
    v2 = world.release()
    _change(world, _stricter(world))
    decision = _rollback(world, v2)
    assert decision.status == "rolled_back" and decision.to_version_id is None and world.active() is None


def test_a_regated_and_reapproved_version_is_a_target_again(world: World) -> None:
    v1 = world.release()
    v2 = world.release()
    _change(world, _stricter(world))
    with unit_of_work(world.engine) as s:
        run = registry.request_regate(s, version_id=v1, principal=world.people["ml_engineer"],
                                      target=deployments.regate_target(s, name=world.deployment))
        run_id = run.id
    with unit_of_work(world.engine) as s:
        row = s.get(GateRun, run_id)
        assert row is not None
        row.status, row.evidence_digest = "passed", "e" * 64
        registry.finish_regate(s, version_id=v1, gate_run_id=run_id, passed=True, evidence_digest="e" * 64,
                               principal=Principal.for_system("gate"))
    with unit_of_work(world.engine) as s:
        registry.approve(s, version_id=v1, principal=world.people["compliance_officer"], comment="re-gated")
    decision = _rollback(world, v2)
    assert decision.status == "rolled_back" and decision.to_version_id == v1
    with unit_of_work(world.engine) as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "deployment.auto_rollback",
                                                   AuditEntry.subject_id == world.deployment)).one()
    assert json.loads(entry.payload)["approval"]["stale_approval"] is False
