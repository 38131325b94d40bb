"""Re-gating end to end through the real gate unit of work (PostgreSQL; only the model is fake).

A deployment's gate policy changes; a version approved under the old one is gated again
under the new one (`run_regate`, the body of the ``evaluators.run_regate`` task), approved
under the new gate digest, and promoted; a superseded version re-gated the same way becomes
the rollback target again. The base model's outputs come from the cache (same decoding,
same cases), so a re-gate generates only the candidate's and the active version's rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from evaluators.tasks import run_gate_for_version, run_regate
from governance.audit.models import AuditEntry
from governance.auth import service as auth
from governance.db import unit_of_work
from governance.deployments import policies
from governance.deployments import service as deployments
from governance.errors import BindingMismatch, Conflict
from governance.gates.models import GateRun
from governance.policy import default_policy_path
from governance.principal import Principal
from governance.registry import service as registry
from tests.evaluators.test_store_and_task import ShaGenerator, _submit, _uid, world  # noqa: F401  (fixture)

STRICTER = default_policy_path().read_text().replace("max_accuracy_drop: 0.02", "max_accuracy_drop: 0.015")


class CountingGenerator(ShaGenerator):
    """Counts the rows decoded without a token (the bare base model's)."""

    base_rows = 0
    token_rows = 0

    def generate(self, prompts: Sequence[str], row_tokens: Sequence[Any | None], progress: Any = None,
                 max_new_tokens: Any = None) -> list[str]:
        self.base_rows += sum(t is None for t in row_tokens)
        self.token_rows += sum(t is not None for t in row_tokens)
        return super().generate(prompts, row_tokens, progress, max_new_tokens=max_new_tokens)


def _release(w: dict[str, Any], seed: int, state: Path) -> int:
    vid, _ = _submit(w, seed)
    gen = ShaGenerator(w["digest"], {})
    out = run_gate_for_version(vid, engine=w["engine"], state_dir=state, generator=gen, suites=["reasoning"])
    assert out["verdict"] == "passed"
    with unit_of_work(w["engine"]) as s:
        registry.approve(s, version_id=vid, principal=w["people"]["admin"], comment="gate passed")
    return vid


def _promote(w: dict[str, Any], vid: int) -> None:
    with unit_of_work(w["engine"]) as s:
        deployments.promote(s, deployment=w["deployment"], version_id=vid, principal=w["people"]["ml_engineer"])


def _regate(w: dict[str, Any], vid: int, state: Path, gen: ShaGenerator) -> dict[str, Any]:
    with unit_of_work(w["engine"]) as s:
        run = registry.request_regate(s, version_id=vid, principal=w["people"]["ml_engineer"],
                                      target=deployments.regate_target(s, name=w["deployment"]))
        run_id = run.id
    return run_regate(run_id, engine=w["engine"], state_dir=state, generator=gen, suites=["reasoning"])


def test_regate_approve_promote_and_roll_back_under_a_new_gate_policy(world: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    engine, dep = world["engine"], world["deployment"]
    v1 = _release(world, 11, tmp_path)
    _promote(world, v1)
    v2 = _release(world, 12, tmp_path)
    _promote(world, v2)
    v3 = _release(world, 13, tmp_path)
    with unit_of_work(engine) as s:  # a first gate stores the policy text and the gate digest it judged by
        first = s.scalars(select(GateRun).where(GateRun.version_id == v3)).one()
        old_digest = first.gate_digest
        assert old_digest is not None and registry.policy_text_by_sha(s, sha256=first.policy_sha256) is not None
    officer = _uid("officer")
    with unit_of_work(engine) as s:
        user, _ = auth.create_user(s, name=officer, role="compliance_officer", actor="system:test")
        co = Principal(name=officer, role="compliance_officer", user_id=user.id, key_prefix="co")
        policies.propose_policy(s, deployment=dep, policy_text=STRICTER, reason="a stricter reasoning bound",
                                principal=world["people"]["ml_engineer"])
    with unit_of_work(engine) as s:
        decision = policies.decide_policy(s, deployment=dep, approve=True, comment="agreed", principal=co)
        assert decision.stale_version_ids == [v1, v2, v3]
    with pytest.raises(BindingMismatch, match=f"govern gate run {v3} --deployment {dep}"):
        _promote(world, v3)

    gen = CountingGenerator(world["digest"], {})
    out = _regate(world, v3, tmp_path, gen)
    assert out["verdict"] == "passed"
    assert gen.base_rows == 0 and gen.token_rows > 0  # base outputs from the cache; candidate and active rows
    with unit_of_work(engine) as s:
        runs = list(s.scalars(select(GateRun).where(GateRun.version_id == v3).order_by(GateRun.id)))
        assert [(r.kind, r.status) for r in runs] == [("first", "passed"), ("regate", "passed")]
        assert runs[1].gate_digest not in (None, old_digest) and runs[1].evidence_digest == out["evidence_digest"]
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "version.regate_result",
                                                   AuditEntry.subject_id == str(v3))).one()
        assert json.loads(entry.payload)["verdict"] == "passed"
        assert registry.get_version_or_raise(s, version_id=v3).state == "approved"  # the state did not move
    with unit_of_work(engine) as s:
        review = registry.approve(s, version_id=v3, principal=co, comment="re-gated under policy v2")
        assert review.gate_run_id == runs[1].id
    _promote(world, v3)

    # v2 (superseded now) is approved under the old gate only: not a rollback target until re-gated
    with unit_of_work(engine) as s:
        outcome = deployments.rollback(s, deployment=dep, principal=Principal.for_system("monitor/test"),
                                       reason="drift", expected_active_version_id=v3, automatic=True)
        assert outcome.status == "no_target" and outcome.stale_version_ids == [v2, v1]
    assert _regate(world, v2, tmp_path, ShaGenerator(world["digest"], {}))["verdict"] == "passed"
    with unit_of_work(engine) as s:
        registry.approve(s, version_id=v2, principal=co, comment="re-gated the fallback")
    with unit_of_work(engine) as s:
        outcome = deployments.rollback(s, deployment=dep, principal=Principal.for_system("monitor/test"),
                                       reason="drift", expected_active_version_id=v3, automatic=True)
        assert outcome.status == "rolled_back" and outcome.to_version_id == v2


def test_a_regate_that_fails_records_it_and_grants_nothing(world: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    engine, dep = world["engine"], world["deployment"]
    v1 = _release(world, 21, tmp_path)
    with unit_of_work(engine) as s:
        policies.propose_policy(s, deployment=dep, policy_text=STRICTER, reason="stricter",
                                principal=world["people"]["ml_engineer"])
        user, _ = auth.create_user(s, name=_uid("officer"), role="compliance_officer", actor="system:test")
        co = Principal(name=user.name, role="compliance_officer", user_id=user.id, key_prefix="co")
    with unit_of_work(engine) as s:
        policies.decide_policy(s, deployment=dep, approve=True, comment="ok", principal=co)
    with unit_of_work(engine) as s:
        sha = registry.get_version_or_raise(s, version_id=v1).sha256
    out = _regate(world, v1, tmp_path, ShaGenerator(world["digest"], {sha: "damaged"}))
    assert out["verdict"] == "failed" and out["failing_suites"] == ["reasoning"]
    with unit_of_work(engine) as s:
        assert registry.get_version_or_raise(s, version_id=v1).state == "approved"
    # the newest passed run is the old one, already approved: nothing to approve
    with pytest.raises(Conflict, match="already approved"), unit_of_work(engine) as s:
        registry.approve(s, version_id=v1, principal=co, comment="no")
    with pytest.raises(BindingMismatch):
        _promote(world, v1)
