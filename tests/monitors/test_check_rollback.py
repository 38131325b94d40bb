"""The check and the guarded rollback against the real PostgreSQL (in process).

Drift is driven through recorded outputs: clean ones build the reference, violating ones
(personal data, insults) drive the policy-violation CUSUM over its threshold.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from governance.alerts.models import Alert
from governance.audit.models import AuditEntry
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.deployments.models import Promotion
from governance.errors import Conflict
from governance.monitoring.models import DetectorState, DriftCheck, MonitorReference
from governance.outbox.models import OutboxMessage
from governance.registry.models import TokenVersion
from monitors.rollback import auto_rollback
from tests.monitors.conftest import World, make_world


def _rollback(world: World, expected: int | None, check_id: int = 0, detector: str = "policy_violations"):  # type: ignore[no-untyped-def]
    with unit_of_work(world.engine) as s:
        return auto_rollback(s, deployment_id=world.deployment_id, expected_version_id=expected, check_id=check_id,
                             detector=detector, now=datetime.now(UTC))


def _count(world: World, model, *where) -> int:  # type: ignore[no-untyped-def]
    with unit_of_work(world.engine) as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _rollback_rows(world: World) -> list[OutboxMessage]:
    with unit_of_work(world.engine) as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.target == "monitors.auto_rollback"))
        return [r for r in rows if r.payload["kwargs"]["deployment_id"] == world.deployment_id]


def _alerts(world: World, kind: str) -> list[Alert]:
    with unit_of_work(world.engine) as s:
        return list(s.scalars(select(Alert).where(Alert.deployment_id == world.deployment_id, Alert.kind == kind)))


def test_drift_alerts_then_rolls_back_once_with_evidence(world: World) -> None:
    v1 = world.release()
    v2 = world.release()
    world.record(v2, 210)
    first = world.check("w1")
    assert first.verdict == "inconclusive" and first.detectors["_window"]["reason"] == "reference ready"
    world.record(v2, 40)
    ok = world.check("w2")
    assert ok.verdict == "ok", ok.detectors
    # the same window again (a second beat, a redelivered task): nothing new
    again = world.check("w2")
    assert again.status == "duplicate" and again.check_id == ok.check_id
    world.record(v2, 40, violating_every=2)
    bad1 = world.check("w3")
    assert bad1.verdict == "drift" and bad1.detectors["policy_violations"]["verdict"] == "drift"
    assert bad1.rollback is None  # one window is not enough (consecutive_windows: 2)
    assert _rollback_rows(world) == []
    world.record(v2, 40, violating_every=2)
    bad2 = world.check("w4")
    assert bad2.verdict == "drift" and bad2.rollback is not None
    kwargs = bad2.rollback
    assert kwargs == {"deployment_id": world.deployment_id, "expected_version_id": v2,
                      "check_id": bad2.check_id, "detector": "policy_violations"}
    assert _count(world, OutboxMessage, OutboxMessage.target == "monitors.auto_rollback") >= 1
    # queued once, in the outbox only (sent after the commit by the task edge or the sweep)
    assert [(r.payload["kwargs"], r.payload["queue"]) for r in _rollback_rows(world)] == [(kwargs, "rollback")]
    # one open drift alert for the incident, counted twice
    drift = [a for a in _alerts(world, "drift") if a.details.get("detector") == "policy_violations"]
    assert len(drift) == 1 and drift[0].occurrences == 2 and drift[0].severity == "critical"

    # the rollback task delivered three times: one effect
    outcomes = [_rollback(world, v2, bad2.check_id).status for _ in range(3)]
    assert outcomes == ["rolled_back", "already_done", "already_done"]
    assert world.active() == v1
    assert _count(world, Promotion, Promotion.deployment_id == world.deployment_id,
                  Promotion.kind == "auto_rollback") == 1
    with unit_of_work(world.engine) as s:
        entries = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "deployment.auto_rollback",
                                                          AuditEntry.subject_id == world.deployment)))
    assert len(entries) == 1
    assert entries[0].actor == "system:monitor/policy_violations"
    # the evidence as structured fields an auditor can query; the reason says it in words
    payload = json.loads(entries[0].payload)
    ev = payload["evidence"]
    assert ev["detector"] == "policy_violations" and ev["statistic"] >= ev["threshold"] > 0 and ev["n"] == 40
    assert ev["check_id"] == bad2.check_id and ev["window_key"] == "w4"
    assert ev["window_ids"] == sorted([bad1.check_id, bad2.check_id])
    assert [(w["window_key"], w["n"]) for w in ev["windows"]] == [("w3", 40), ("w4", 40)]
    assert set(ev["guards"]) == {"already_done", "stale", "frozen", "consecutive_windows", "daily_cap", "cooldown"}
    assert all(g["passed"] for g in ev["guards"].values())
    assert ev["guards"]["consecutive_windows"] == {"passed": True, "required": 2, "seen": 2}
    assert ev["guards"]["stale"]["expected_version_id"] == ev["guards"]["stale"]["active_version_id"] == v2
    assert payload["reason"].startswith("automatic rollback on drift: policy_violations statistic ")
    (rolled,) = _alerts(world, "auto_rollback")
    assert rolled.details["evidence"]["window_ids"] == ev["window_ids"]
    assert rolled.details["evidence"]["guards"]["daily_cap"]["max_per_day"] == ev["guards"]["daily_cap"]["max_per_day"]

    with unit_of_work(world.engine) as s:
        checks = list(s.scalars(select(DriftCheck).where(DriftCheck.deployment_id == world.deployment_id)
                                .order_by(DriftCheck.id)))
        states = list(s.scalars(select(DetectorState).where(DetectorState.deployment_id == world.deployment_id)))
        refs = list(s.scalars(select(MonitorReference).where(MonitorReference.deployment_id == world.deployment_id)))
    assert [c.verdict for c in checks] == ["inconclusive", "ok", "drift", "drift"]
    # windows follow each other without gaps or overlaps
    for a, b in itertools.pairwise(checks):
        assert b.first_output_id == a.last_output_id + 1
    stored = checks[-1].detectors["policy_violations"]
    assert stored["statistic"] >= stored["threshold"] > 0 and stored["sample_size"] == 40
    assert {s.detector for s in states} == {"policy_violations", "descriptor_means"}
    assert refs[0].sample_size == 200 and refs[0].stats["summary"]["rates"]["violation"] == 0.0


def test_too_few_outputs_is_inconclusive_never_drift(world: World) -> None:
    v1 = world.release()
    world.record(v1, 200)
    world.check("a")
    world.record(v1, 5, violating_every=1)
    res = world.check("b")
    assert res.verdict == "inconclusive" and "fewer than min_samples" in res.detectors["_window"]["reason"]
    # those 5 are not used up: the next window judges them with the new ones
    world.record(v1, 20)
    nxt = world.check("c")
    assert nxt.verdict in ("ok", "drift") and nxt.detectors["_window"]["population"] == 25
    with unit_of_work(world.engine) as s:
        b, c = (s.get(DriftCheck, res.check_id), s.get(DriftCheck, nxt.check_id))
        assert b is not None and c is not None
        assert b.last_output_id == b.first_output_id - 1  # nothing used up
        assert c.first_output_id == b.first_output_id


def test_frozen_deployment_only_alerts(world: World) -> None:
    world.release()
    v2 = world.release()
    with unit_of_work(world.engine) as s:
        deployments.freeze(s, deployment=world.deployment, principal=world.people["compliance_officer"])
    assert _rollback(world, v2).status == "frozen"
    assert world.active() == v2
    assert len(_alerts(world, "rollback_frozen")) == 1


def test_changed_precondition_does_nothing(world: World) -> None:
    v1 = world.release()
    v2 = world.release()
    decision = _rollback(world, v1)  # the decision was based on v1, but v2 is active now
    assert decision.status == "stale"
    assert world.active() == v2
    assert _count(world, Promotion, Promotion.deployment_id == world.deployment_id,
                  Promotion.kind == "auto_rollback") == 0


def test_missing_target_raises_critical_alert_and_changes_nothing(world: World) -> None:
    v1 = world.release()
    assert _rollback(world, v1).status == "no_target"
    assert world.active() == v1
    (alert,) = _alerts(world, "rollback_no_target")
    assert alert.severity == "critical"
    # redelivery: the same incident, counted, not a second alert
    assert _rollback(world, v1).status == "no_target"
    (alert,) = _alerts(world, "rollback_no_target")
    assert alert.occurrences == 2


def test_fallback_to_base_takes_the_token_out_once(engine, settings_env) -> None:  # type: ignore[no-untyped-def]
    """Policy ``fallback_to_base: true`` and no earlier approved version: the replicas are
    told to serve the bare base model (a generation without a version), once."""
    world = make_world(engine, fallback_to_base=True)
    v1 = world.release()
    with unit_of_work(world.engine) as s:
        generation = deployments.active_info(s, name=world.deployment).generation
    decision = _rollback(world, v1)
    assert decision.status == "rolled_back" and decision.to_version_id is None
    with unit_of_work(world.engine) as s:
        info = deployments.active_info(s, name=world.deployment)
        assert (info.version_id, info.sha256, info.generation) == (None, None, generation + 1)
        (promo,) = s.scalars(select(Promotion).where(Promotion.deployment_id == world.deployment_id,
                                                     Promotion.kind == "auto_rollback")).all()
        assert (promo.version_id, promo.previous_version_id) == (None, v1)
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "deployment.auto_rollback",
                                                   AuditEntry.subject_id == world.deployment)).one()
        payload = json.loads(entry.payload)
        assert payload["version_id"] is None and payload["previous_version_id"] == v1
        state = s.scalar(select(TokenVersion.state).where(TokenVersion.id == v1))
        assert state == "rolled_back"
    (alert,) = _alerts(world, "auto_rollback")
    assert "bare base model" in alert.message
    assert _alerts(world, "rollback_no_target") == []
    # redelivery: already done, nothing more
    assert _rollback(world, v1).status == "already_done"
    assert _count(world, Promotion, Promotion.deployment_id == world.deployment_id,
                  Promotion.kind == "auto_rollback") == 1


def test_cooldown_then_only_alerts(world: World) -> None:
    world.release()
    v2 = world.release()
    v3 = world.release()
    assert _rollback(world, v3).status == "rolled_back"
    assert world.active() == v2
    assert _rollback(world, v2).status == "cooldown"
    assert world.active() == v2
    (alert,) = _alerts(world, "rollback_cooldown")
    assert alert.severity == "critical"


@pytest.fixture()
def capped_world(engine, settings_env) -> World:  # type: ignore[no-untyped-def]
    return make_world(engine, cooldown=0, cap=1)


def test_daily_cap_then_only_alerts(capped_world: World) -> None:
    w = capped_world
    w.release()
    v2 = w.release()
    v3 = w.release()
    assert _rollback(w, v3).status == "rolled_back"
    assert _rollback(w, v2).status == "capped"
    assert w.active() == v2
    assert len(_alerts(w, "rollback_capped")) == 1


def test_two_dispatchers_one_check_per_window(world: World, redis_url: str) -> None:
    from monitors import tasks
    from monitors.check import window_key

    v1 = world.release()
    world.record(v1, 30)
    now = datetime.now(UTC)
    sent_a = tasks.dispatch(now, redis_url=redis_url)
    sent_b = tasks.dispatch(now, redis_url=redis_url)
    key, _, _ = window_key(world.deployment_id, 60, now)
    assert key in sent_a and key not in sent_b
    # the checks themselves, run twice (two workers got the task): one row
    results = [world.check(key), world.check(key)]
    assert sorted(r.status for r in results) == ["done", "duplicate"]
    assert _count(world, DriftCheck, DriftCheck.deployment_id == world.deployment_id) == 1


def test_the_manual_and_the_automatic_rollback_share_one_set_of_guards(world: World) -> None:
    v1 = world.release()
    v2 = world.release()
    officer = world.people["compliance_officer"]
    with unit_of_work(world.engine) as s:
        deployments.freeze(s, deployment=world.deployment, principal=officer)

    def guard(expected: int, automatic: bool) -> deployments.RollbackOutcome | None:
        with unit_of_work(world.engine) as s:
            dep = deployments.get_deployment_or_raise(s, name=world.deployment, lock=True)
            current = deployments.active_version(s, deployment=dep, lock=True)
            return deployments.check_rollback_guards(s, dep=dep, current=current, automatic=automatic,
                                                     expected_active_version_id=expected)

    frozen, stale = guard(v2, automatic=True), guard(v1, automatic=False)
    assert frozen is not None and frozen.status == "frozen" and "automatic rollback is off" in frozen.message
    assert stale is not None and stale.status == "stale" and f"now serves version {v2}, not {v1}" in stale.message
    assert guard(v2, automatic=False) is None  # freezing stops the monitor, not a person
    with pytest.raises(Conflict, match="nothing rolled back"), unit_of_work(world.engine) as s:
        deployments.rollback(s, deployment=world.deployment, principal=officer, reason="bad release",
                             expected_active_version_id=v1)
    with unit_of_work(world.engine) as s:
        deployments.unfreeze(s, deployment=world.deployment, principal=officer)
    assert _rollback(world, v2).status == "rolled_back"
    done = guard(v2, automatic=True)
    assert done is not None and done.status == "already_done"
    assert world.active() == v1


def test_the_dispatcher_reads_all_deployments_in_a_fixed_number_of_queries(world: World) -> None:
    """The drift dispatcher runs every few seconds on the worker that also runs the checks and
    the rollout looks: its cost must not grow by a query (and a policy parse) per deployment."""
    from sqlalchemy import event

    from monitors import tasks
    from tests.monitors.conftest import make_world

    def queries(now: datetime) -> tuple[int, list[tuple[int, str, int]]]:
        seen: list[str] = []

        def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
            seen.append(statement)

        event.listen(world.engine, "before_cursor_execute", count)
        try:
            with unit_of_work(world.engine) as s:
                due = tasks.due_checks(s, now)
        finally:
            event.remove(world.engine, "before_cursor_execute", count)
        return len(seen), due

    world.release()
    now = datetime.now(UTC)
    before, due = queries(now)
    assert world.deployment_id in [d for d, _, _ in due]
    others = [make_world(world.engine) for _ in range(3)]
    for other in others:
        other.release()
    after, due = queries(now)
    assert after == before, (before, after)
    assert {world.deployment_id, *(o.deployment_id for o in others)} <= {d for d, _, _ in due}
