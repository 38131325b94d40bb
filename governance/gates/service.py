"""Read a stored gate run back as the typed report (``governance.gates.report.GateReport``).

Keyword-only functions taking the session, read-only. The evaluators write gate runs
(``evaluators.store``); the dashboards, the CLI and the demo read them through here, so
none of them needs the evaluators. A stored summary that does not fit the contract
raises ``ReportUnreadable`` with the run's id (see ``governance.gates.report``).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from governance.gates.models import GateCaseResult, GateRun
from governance.gates.report import (
    CaseReport,
    GateReport,
    GateSummary,
    ReportUnreadable,
    StoredSuite,
    SuiteReport,
    WaiverReport,
    read_summary,
)

FINISHED = ("passed", "failed")


def latest_gate_run(session: Session, *, version_id: int) -> GateRun | None:
    return session.scalars(
        select(GateRun).where(GateRun.version_id == version_id).order_by(GateRun.id.desc()).limit(1)
    ).first()


def latest_report(session: Session, *, version_id: int) -> GateReport | None:
    """The report of the version's latest gate run, or None while it has no finished run."""
    run = latest_gate_run(session, version_id=version_id)
    if run is None or run.status not in FINISHED:
        return None
    return load_gate_report(session, gate_run=run)


def case_reports(session: Session, *, gate_run_id: int) -> dict[str, list[CaseReport]]:
    """The run's per-case rows, by suite, in the order they were written."""
    rows = session.scalars(
        select(GateCaseResult).where(GateCaseResult.gate_run_id == gate_run_id).order_by(GateCaseResult.id)
    ).all()
    cases: dict[str, list[CaseReport]] = {}
    for r in rows:
        scores = dict(r.scores or {})
        # the store keeps every baseline's output in scores; rows older than that have the base's only
        baselines = scores.pop("_baselines", None) or ({"base": r.baseline_output} if r.baseline_output else {})
        cases.setdefault(r.suite, []).append(CaseReport(
            case_id=r.case_id, category=r.category, prompt=r.prompt, candidate_output=r.candidate_output,
            baseline_outputs=baselines, passed=r.passed, scores=scores,
        ))
    return cases


def _in_hashed_order(summary: GateSummary) -> list[tuple[str, StoredSuite]]:
    """The stored suites in the order the evidence digest hashed them (``suite_order``; older
    rows: as stored), so a loaded report re-hashes to its digest."""
    order = [n for n in summary.suite_order if n in summary.suites]
    rest = [n for n in summary.suites if n not in order]
    return [(n, summary.suites[n]) for n in order + rest]


def load_gate_report(session: Session, *, gate_run: GateRun) -> GateReport:
    """Rebuild the report of a finished run (for the JSON route, the CLI and the HTML page)."""
    if gate_run.status not in FINISHED:
        raise ValueError(f"gate run {gate_run.id} is {gate_run.status}; there is no report yet")
    summary = read_summary(gate_run.summary, source=f"gate run {gate_run.id}")
    cases = case_reports(session, gate_run_id=gate_run.id)
    suites = [
        SuiteReport(suite=name, passed=info.passed, n_cases=info.n_cases, metrics=info.metrics,
                    notes=info.notes, details=summary.details.get(name, {}), cases=cases.get(name, []))
        for name, info in _in_hashed_order(summary)
    ]
    try:
        return GateReport(
            verdict=summary.verdict or gate_run.status,  # type: ignore[arg-type]  # FINISHED, checked above
            suites=suites,
            evidence_digest=gate_run.evidence_digest or "",
            policy_sha256=gate_run.policy_sha256,
            candidate_digest=summary.candidate_digest,
            active_digest=summary.active_digest,
            base_digest=summary.base_digest,
            decoding=summary.decoding,
            form_vs_knowledge=summary.form_vs_knowledge,
            waivers=summary.waivers,
            run=summary.run,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ReportUnreadable(f"gate run {gate_run.id}: the stored report does not fit the contract: {exc}") from exc


def waivers_of_run(gate_run: GateRun) -> list[WaiverReport]:
    """The bounds the run waived because the base breaks them too (none for runs stored before waivers)."""
    return list(read_summary(gate_run.summary, source=f"gate run {gate_run.id}").waivers)


def latest_runs(session: Session, *, version_ids: list[int]) -> dict[int, GateRun]:
    """The newest gate run of each version, in one query (a listing page must not ask per row)."""
    if not version_ids:
        return {}
    stmt = (
        select(GateRun)
        .where(GateRun.version_id.in_(version_ids))
        .order_by(GateRun.version_id, GateRun.id.desc())
        .distinct(GateRun.version_id)
    )
    return {run.version_id: run for run in session.scalars(stmt)}


def failing_cases(session: Session, *, gate_run_id: int, limit: int = 25, offset: int = 0) -> list[GateCaseResult]:
    """Failed cases of a gate run: prompt, candidate and baseline outputs side by side (paged)."""
    stmt = (
        select(GateCaseResult)
        .where(GateCaseResult.gate_run_id == gate_run_id, GateCaseResult.passed.is_(False))
        .order_by(GateCaseResult.suite, GateCaseResult.id)
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(stmt))


def count_failing_cases(session: Session, *, gate_run_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(GateCaseResult)
            .where(GateCaseResult.gate_run_id == gate_run_id, GateCaseResult.passed.is_(False))
        )
        or 0
    )


def latest_passed_gate_run(session: Session, *, version_id: int) -> GateRun | None:
    return session.scalars(
        select(GateRun)
        .where(GateRun.version_id == version_id, GateRun.status == "passed")
        .order_by(GateRun.id.desc())
        .limit(1)
    ).first()


def gate_runs(session: Session, *, version_id: int) -> list[GateRun]:
    return list(session.scalars(select(GateRun).where(GateRun.version_id == version_id).order_by(GateRun.id.desc())))


def case_outputs(session: Session, *, gate_run_id: int, limit: int = 2000) -> list[tuple[int, str, str]]:
    """(id, prompt, candidate output) of up to ``limit`` of the run's case rows, in one query."""
    rows = session.execute(select(GateCaseResult.id, GateCaseResult.prompt, GateCaseResult.candidate_output)
                           .where(GateCaseResult.gate_run_id == gate_run_id).limit(limit)).all()
    return [(int(r.id), r.prompt, r.candidate_output) for r in rows]


def get_gate_run(session: Session, *, gate_run_id: int) -> GateRun | None:
    return session.get(GateRun, gate_run_id)


def open_regate_run(
    session: Session, *, version_id: int, policy_sha256: str, gate_digest: str, deployment_id: int, requested_by: str
) -> GateRun:
    """A queued re-gate run of a version under a deployment's gate policy (the registry checks who and when)."""
    run = GateRun(version_id=version_id, policy_sha256=policy_sha256, gate_digest=gate_digest, kind="regate",
                  deployment_id=deployment_id, requested_by=requested_by, status="queued")
    session.add(run)
    session.flush()
    return run
