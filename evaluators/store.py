"""Persist a gate report (GateRun + one GateCaseResult per case) and read it back.

Keyword-only functions taking the session; they never commit (the caller's unit of
work does, together with the version's transition and its audit entry). The run's
``summary`` holds the verdict, the digests, the form-vs-knowledge summary and every
suite's metrics with thresholds, intervals and p-values; the cases hold prompt,
candidate output, base output (the active version's output sits in ``scores``) and the
case's scores. ``load_gate_report`` rebuilds a ``GateReport`` for the JSON route and
the HTML renderer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from evaluators.runner import GateReport
from evaluators.suites.base import CaseResult, Metric, SuiteResult
from governance.db import utcnow
from governance.gates.models import GateCaseResult, GateRun


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
    run.summary = _summary(report)
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


def open_gate_run(session: Session, *, version_id: int, policy_sha256: str) -> GateRun:
    """A ``running`` row, so a gate in progress (or one that crashed) is visible."""
    run = GateRun(version_id=version_id, policy_sha256=policy_sha256, status="running", started_at=utcnow())
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


def _summary(report: GateReport) -> dict[str, Any]:
    s = report.summary()
    s.update({
        "candidate_digest": report.candidate_digest,
        "active_digest": report.active_digest,
        "base_digest": report.base_digest,
        "decoding": report.decoding,
        "details": {suite.suite: suite.details for suite in report.suites},
    })
    return s


def latest_gate_run(session: Session, *, version_id: int) -> GateRun | None:
    return session.scalars(
        select(GateRun).where(GateRun.version_id == version_id).order_by(GateRun.id.desc()).limit(1)
    ).first()


def latest_report(session: Session, *, version_id: int) -> GateReport | None:
    """The report of the version's latest gate run, or None while it has no finished run."""
    run = latest_gate_run(session, version_id=version_id)
    if run is None or run.status not in ("passed", "failed"):
        return None
    return load_gate_report(session, gate_run=run)


def load_gate_report(session: Session, *, gate_run: GateRun) -> GateReport:
    """Rebuild the report of a finished run (for the JSON route and the HTML page)."""
    if gate_run.status not in ("passed", "failed"):
        raise ValueError(f"gate run {gate_run.id} is {gate_run.status}; there is no report yet")
    summary = gate_run.summary or {}
    rows = session.scalars(
        select(GateCaseResult).where(GateCaseResult.gate_run_id == gate_run.id).order_by(GateCaseResult.id)
    ).all()
    cases: dict[str, list[CaseResult]] = {}
    for r in rows:
        scores = dict(r.scores or {})
        baselines = scores.pop("_baselines", None) or ({"base": r.baseline_output} if r.baseline_output else {})
        cases.setdefault(r.suite, []).append(CaseResult(
            case_id=r.case_id, category=r.category, prompt=r.prompt, candidate_output=r.candidate_output,
            baseline_outputs=baselines, passed=r.passed, scores=scores,
        ))
    suites = []
    details = summary.get("details", {})
    for name, info in summary.get("suites", {}).items():
        metrics = [_metric(m) for m in info.get("metrics", [])]
        suites.append(SuiteResult(name, bool(info.get("passed")), metrics, cases.get(name, []),
                                  list(info.get("notes", [])), details.get(name, {})))
    return GateReport(
        verdict=summary.get("verdict", gate_run.status),
        suites=suites,
        evidence_digest=gate_run.evidence_digest or "",
        policy_sha256=gate_run.policy_sha256,
        candidate_digest=summary.get("candidate_digest", ""),
        active_digest=summary.get("active_digest"),
        base_digest=summary.get("base_digest", ""),
        decoding=summary.get("decoding", {}),
        form_vs_knowledge=summary.get("form_vs_knowledge", {}),
        run=summary.get("run", {}),
    )


def _metric(d: dict[str, Any]) -> Metric:
    interval = d.get("interval")
    return Metric(
        name=d["name"], value=d.get("value"), threshold=d.get("threshold"), passed=bool(d.get("passed")),
        n=int(d.get("n", 0)), comparator=d.get("comparator", "<="), p_value=d.get("p_value"),
        p_adjusted=d.get("p_adjusted"), interval=tuple(interval) if interval else None,  # type: ignore[arg-type]
        baseline=d.get("baseline"), decisive=bool(d.get("decisive", True)), detail=d.get("detail", ""),
    )
