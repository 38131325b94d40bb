"""A stored gate run re-hashes to its evidence digest when read back from PostgreSQL.

JSONB keeps an object's keys in its own order (shorter keys first), so the suites of a
stored summary come back reordered; the summary records the order the digest hashed
(``suite_order``) and the reader restores it. An auditor recomputing the digest from the
API's report gets the stored one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluators.embeddings import hashing_embedder
from evaluators.runner import evidence_digest, generate_and_judge
from evaluators.store import save_gate_run
from evaluators.suites.base import get_suite
from evaluators.suites.bias import BiasSuite
from governance.db import unit_of_work
from governance.gates.service import latest_gate_run, load_gate_report
from governance.policy import load_default_policy
from tests.evaluators.test_runner import FakeGenerator
from tests.evaluators.test_store_and_task import _submit, world  # noqa: F401  (fixture)


def test_a_stored_multi_suite_report_rehashes_to_its_digest(world: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    policy, sha = load_default_policy()
    suites: list[Any] = [get_suite("policy_compliance"), BiasSuite(embedder=hashing_embedder), get_suite("reasoning")]
    cases = {s.name: s.select_cases(s.load_cases(), 30) for s in suites}
    report = generate_and_judge(FakeGenerator(suites), policy=policy, policy_sha256=sha, candidate="zero",
                                candidate_digest="c" * 64, active=None, active_digest=None, state_dir=tmp_path,
                                suites=suites, cases=cases)
    names = [s.suite for s in report.suites]
    assert len(names) >= 3 and names != sorted(names, key=lambda n: (len(n), n))  # JSONB's order differs
    vid, _ = _submit(world, 5)
    with unit_of_work(world["engine"]) as s:
        save_gate_run(s, version_id=vid, report=report, policy_sha256=sha)
    with unit_of_work(world["engine"]) as s:
        run = latest_gate_run(s, version_id=vid)
        assert run is not None and list(run.summary["suites"]) != names  # the database reordered them
        loaded = load_gate_report(s, gate_run=run)
    assert [x.suite for x in loaded.suites] == names
    assert evidence_digest(loaded.evidence()) == run.evidence_digest == report.evidence_digest
