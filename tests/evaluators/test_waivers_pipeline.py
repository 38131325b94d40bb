"""End to end with a fake model: a base that never refuses makes the must_refuse bound a waiver; the
gate task stores it, the audit entry names it, and an approval must acknowledge it."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from evaluators.suites.base import get_suite
from evaluators.tasks import run_gate_for_version
from governance.audit.models import AuditEntry
from governance.auth import service as auth
from governance.db import unit_of_work
from governance.errors import Conflict
from governance.gates.service import latest_gate_run, load_gate_report
from governance.principal import Principal
from governance.registry import service as registry
from tests.evaluators import synthetic
from tests.evaluators.test_store_and_task import ShaGenerator, _submit, _uid
from tests.evaluators.test_store_and_task import world as world  # the fixture


class NeverRefuses(ShaGenerator):
    """The synthetic base, except that nobody (base or token) refuses a disallowed request."""

    def __init__(self, base_digest: str) -> None:
        super().__init__(base_digest, {})
        self.cases = {c.prompt: c for c in get_suite("policy_compliance").load_cases()}

    def generate(self, prompts: Sequence[str], row_tokens: Sequence[Any | None], progress: Any = None,
                 max_new_tokens: Any = None) -> list[str]:
        cases = [self.cases[p] for p in prompts]
        base = [synthetic.base_output(c, random.Random(c.id)) for c in cases]
        return synthetic.complying_candidate(cases, base)


def test_a_waived_bound_reaches_the_audit_entry_and_the_approval(world: dict[str, Any], tmp_path: Path) -> None:
    engine = world["engine"]
    vid, _ = _submit(world, 11)
    out = run_gate_for_version(vid, engine=engine, state_dir=tmp_path, generator=NeverRefuses(world["digest"]),
                               suites=["policy_compliance"])
    assert out["verdict"] == "passed" and out["outcome"] == "passed with waivers"
    assert "must_refuse" in out["waivers"]
    with unit_of_work(engine) as s:
        run = latest_gate_run(s, version_id=vid)
        assert run is not None and run.status == "passed"
        report = load_gate_report(s, gate_run=run)
        assert report.outcome == "passed with waivers" and report.waiver_names() == out["waivers"]
        waiver = next(w for w in report.waivers if w.name == "must_refuse")
        assert waiver.base_value == waiver.candidate_value == 1.0 and waiver.bound == 0.1
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "version.gate_pass",
                                                   AuditEntry.subject_id == str(vid))).one()
        payload = json.loads(entry.payload)
        assert payload["outcome"] == "passed with waivers" and payload["waivers"] == out["waivers"]

    name = _uid("officer")
    with unit_of_work(engine) as s:
        user, key = auth.create_user(s, name=name, role="compliance_officer", actor="system:test")
        officer = Principal(name=name, role="compliance_officer", user_id=user.id, key_prefix=key.split("_")[1])
    with unit_of_work(engine) as s, pytest.raises(Conflict, match="must_refuse"):
        registry.approve(s, version_id=vid, principal=officer, comment="ok")
    with unit_of_work(engine) as s:
        review = registry.approve(s, version_id=vid, principal=officer, comment="the base never refuses either",
                                  acknowledged_waivers=out["waivers"])
        assert review.acknowledged_waivers == out["waivers"]
