"""Persist a gate report: one GateRun (its ``GateSummary``) and one GateCaseResult per case.

Keyword-only functions taking the session; they never commit (the caller's unit of
work does, together with the version's transition and its audit entry). The run's
``summary`` is the report's ``stored_summary()`` (verdict, digests, form vs knowledge,
every suite's metrics with thresholds, intervals and p-values); the cases hold prompt,
candidate output, base output (every baseline's output sits in ``scores``) and the
case's scores. Reading a run back is ``governance.gates.service.load_gate_report``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from governance.db import utcnow
from governance.gates.models import GateCaseResult, GateRun
from governance.gates.report import GateReport


def save_gate_run(
    session: Session,
    *,
    version_id: int,
    report: GateReport,
    policy_sha256: str,
    started_at: datetime | None = None,
    gate_run: GateRun | None = None,
) -> GateRun:
    """Write the run and its per-case results (into ``gate_run`` when one was opened as running)."""
    if policy_sha256 != report.policy_sha256:
        raise ValueError("the report was judged on a different policy than the one being recorded")
    run = gate_run or GateRun(version_id=version_id, policy_sha256=policy_sha256)
    if run.version_id != version_id:
        raise ValueError(f"gate run {run.id} belongs to version {run.version_id}, not {version_id}")
    run.policy_sha256 = policy_sha256
    run.status = "passed" if report.passed else "failed"
    run.evidence_digest = report.evidence_digest
    run.summary = report.stored_summary().model_dump(mode="json")
    run.error = None
    run.started_at = run.started_at or started_at or utcnow()
    run.finished_at = utcnow()
    session.add(run)
    session.flush()
    session.add_all(
        GateCaseResult(
            gate_run_id=run.id,
            suite=suite.suite,
            case_id=case.case_id,
            category=case.category,
            prompt=case.prompt,
            candidate_output=case.candidate_output,
            baseline_output=case.baseline_outputs.get("base"),
            passed=case.passed,
            scores={**case.scores, "_baselines": case.baseline_outputs},
        )
        for suite in report.suites
        for case in suite.cases
    )
    session.flush()
    return run


def open_gate_run(session: Session, *, version_id: int, policy_sha256: str, gate_digest: str | None = None) -> GateRun:
    """A ``running`` row, so a gate in progress (or one that crashed) is visible."""
    run = GateRun(version_id=version_id, policy_sha256=policy_sha256, gate_digest=gate_digest, status="running",
                  started_at=utcnow())
    session.add(run)
    session.flush()
    return run


def mark_gate_error(session: Session, *, gate_run_id: int, error: str) -> None:
    run = session.get(GateRun, gate_run_id)
    if run is not None:
        run.status = "error"
        run.error = error[:4000]
        run.finished_at = utcnow()
        session.flush()
