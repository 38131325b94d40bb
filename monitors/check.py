"""One drift check: one deployment, one window. Idempotent, safe under concurrent beats.

``run_check`` first claims the unique (deployment_id, window_key) row in ``drift_checks``
(INSERT ... ON CONFLICT DO NOTHING): a second beat, or a redelivered task after the first
committed, finds the row and does nothing. Everything then happens in the caller's
transaction (claim, reference, detector states, the stored numbers, alerts and the
outbox row of a rollback): a worker killed half-way leaves no trace and the redelivered
task starts over. Checks of one deployment are serialised by an advisory lock so two
windows never read the same output range.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from governance.deployments.service import active_version, deployment_policy, get_deployment_by_id
from governance.monitoring.models import DetectorState, DriftCheck
from governance.outputs import service as outputs
from governance.policy import Policy
from governance.settings import get_settings
from monitors import metrics, reference, sampling
from monitors.alerting import Notification
from monitors.descriptors import describe
from monitors.detectors import (
    Detector,
    DetectorContext,
    DetectorResult,
    Frame,
    Reference,
    build_detector,
    resolve_kind,
)
from monitors.embeddings import embed
from monitors.rollback import on_drift

if TYPE_CHECKING:  # annotations only: rooms talk through service functions
    from governance.deployments.models import Deployment
    from governance.registry.models import TokenVersion

log = logging.getLogger(__name__)

MONITOR_LOCK = 0x6D6F_6E69  # "moni": one check per deployment at a time
NEEDS_EMBEDDINGS = {"cusum_embeddings", "evidently_embeddings"}


@dataclass
class CheckResult:
    status: Literal["done", "duplicate", "missing"]
    check_id: int | None = None
    verdict: str | None = None
    sample_size: int = 0
    detectors: dict[str, Any] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    # the kwargs of the rollback task this check queued in the outbox (sent after the commit)
    rollback: dict[str, Any] | None = None
    message: str = ""


def window_key(deployment_id: int, interval_seconds: int, now: datetime) -> tuple[str, datetime, datetime]:
    """The window that ended last before ``now``: (key, start, end), aligned to the interval.

    Every beat process computes the same key for the same window, which is what makes
    the unique row in ``drift_checks`` a guard against doubled checks.
    """
    if interval_seconds < 1:
        raise ValueError("interval_seconds must be >= 1")
    epoch = int(now.timestamp())
    end = epoch - epoch % interval_seconds
    start = end - interval_seconds
    return (f"d{deployment_id}:i{interval_seconds}:{start}", datetime.fromtimestamp(start, UTC),
            datetime.fromtimestamp(end, UTC))


def parse_window_key(key: str) -> tuple[datetime, datetime] | None:
    try:
        _, interval, start = key.split(":")
        s, i = int(start), int(interval.lstrip("i"))
    except ValueError:
        return None
    return datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(s + i, UTC)


def state_dirs() -> tuple[Path, Path]:
    root = get_settings().state_path
    return root / "monitor-reports", root / "cache" / "monitors"


def run_check(session: Session, *, deployment_id: int, window_key: str, now: datetime,
              write_report: bool = True) -> CheckResult:
    """Judge one window of one deployment; returns what was stored (or that it already was)."""
    dep = get_deployment_by_id(session, deployment_id=deployment_id)
    if dep is None:
        return CheckResult("missing", message=f"no deployment {deployment_id}")
    policy = deployment_policy(session, deployment=dep)
    mon = policy.monitoring
    active = active_version(session, deployment=dep)
    check = _claim(session, dep, active, window_key, now)
    if check is None:
        existing = session.scalars(select(DriftCheck).where(DriftCheck.deployment_id == dep.id,
                                                            DriftCheck.window_key == window_key)).first()
        return CheckResult("duplicate", existing.id if existing else None, existing.verdict if existing else None,
                           message="this window was already checked")
    after, upto = sampling.window_range(session, deployment_id=dep.id, exclude_check_id=check.id)
    check.first_output_id, check.last_output_id = after + 1, upto
    result = CheckResult("done", check.id)
    if active is None:
        return _finish(check, result, "inconclusive", {"reason": "no active version"}, dep.name)

    ref_row = reference.get_row(session, deployment_id=dep.id, version_id=active.id, lock=True)
    assert ref_row is not None
    if not reference.is_ready(ref_row):
        return _grow_reference(session, dep, active.id, ref_row, check, result, policy, after, upto)

    win = sampling.sample_window(
        session, deployment_id=dep.id, version_id=active.id, after_id=after, upto_id=upto,
        rate=mon.sample_rate, min_samples=mon.min_samples, key=window_key,
    )
    if win.inconclusive_reason:
        # too few to judge: the outputs are not used up, they wait for the next window
        check.last_output_id = after
        return _finish(check, result, "inconclusive", {"reason": win.inconclusive_reason,
                                                       "population": win.population, "carried_over": True},
                       dep.name)
    ref = reference.to_reference(ref_row)
    flags = sorted(ref.frame.flags)
    detectors = [build_detector(name, cfg, policy=policy, flags=flags) for name, cfg in mon.detectors.items()]
    frame = describe(win.sample, fmt=policy.format,
                     with_embeddings=any(d.kind in NEEDS_EMBEDDINGS for d in detectors) and ref.emb_mean is not None)
    report_dir, cache_dir = state_dirs()
    ctx = DetectorContext(window_key=window_key, report_dir=report_dir / dep.name, cache_dir=cache_dir,
                          write_report=write_report)
    results = [_run_detector(session, dep, active.id, det, ref, frame, ctx) for det in detectors]
    check.sample_size = frame.n
    verdicts = {r.verdict for r in results}
    verdict = "drift" if "drift" in verdicts else "ok" if "ok" in verdicts else "inconclusive"
    check.detectors = {r.name: r.to_json() for r in results} | {
        "_window": {"population": win.population, "sample_size": frame.n, "after_id": after, "upto_id": upto,
                    "sample_rate": mon.sample_rate, "reference_id": ref_row.id,
                    "reference_summary": (ref_row.stats or {}).get("summary"),
                    "reference_gate": (ref_row.stats or {}).get("gate")}}
    check.report_path = next((r.evidence["report_html"] for r in results if r.evidence.get("report_html")), None)
    result.sample_size = frame.n
    _finish(check, result, verdict, None, dep.name)
    if verdict == "drift":
        result.rollback = on_drift(session, deployment=dep, policy=policy, check=check, results=results,
                                   result=result, now=now)
    return result


def _claim(session: Session, dep: Deployment, active: TokenVersion | None, window_key: str,
           now: datetime) -> DriftCheck | None:
    """Claim the window's unique row (None: already claimed), then take the deployment's check lock."""
    bounds = parse_window_key(window_key) or (now, now)
    claimed = session.execute(
        pg_insert(DriftCheck).values(
            deployment_id=dep.id, window_key=window_key, window_start=bounds[0], window_end=bounds[1],
            version_id=active.id if active else None, generation=int(dep.generation), verdict="pending",
        ).on_conflict_do_nothing(constraint="uq_drift_checks_window").returning(DriftCheck.id)
    ).scalar()
    if claimed is None:
        return None
    session.execute(text("select pg_advisory_xact_lock(:a, :b)"), {"a": MONITOR_LOCK, "b": dep.id})
    check = session.get(DriftCheck, claimed)
    assert check is not None
    return check


def _run_detector(session: Session, dep: Deployment, version_id: int, det: Detector, ref: Reference,
                  frame: Frame, ctx: DetectorContext) -> DetectorResult:
    """One detector on the window, from its stored state; stores the new state and the metrics."""
    row = session.scalars(select(DetectorState).where(
        DetectorState.deployment_id == dep.id, DetectorState.version_id == version_id,
        DetectorState.detector == det.name)).first()
    res = det.run(reference=ref, window=frame, state=dict(row.state) if row else None, context=ctx)
    if res.state is not None:
        if row is None:
            session.add(DetectorState(deployment_id=dep.id, version_id=version_id, detector=det.name,
                                      state=res.state))
        else:
            row.state = res.state
    metrics.DETECTOR_VERDICTS.labels(deployment=dep.name, detector=det.name, verdict=res.verdict).inc()
    if res.statistic is not None:
        metrics.DETECTOR_STATISTIC.labels(deployment=dep.name, detector=det.name).set(res.statistic)
    if res.threshold is not None:
        metrics.DETECTOR_THRESHOLD.labels(deployment=dep.name, detector=det.name).set(res.threshold)
    return res


def _finish(check: DriftCheck, result: CheckResult, verdict: str, reason: dict[str, Any] | None,
            deployment: str) -> CheckResult:
    check.verdict = verdict
    if reason is not None:
        check.detectors = {"_window": reason}
    check.finished_at = datetime.now(UTC)
    result.verdict = verdict
    result.detectors = dict(check.detectors or {})
    metrics.CHECKS.labels(deployment=deployment, verdict=verdict).inc()
    return result


def _grow_reference(session: Session, dep: Deployment, version_id: int, ref_row: Any, check: DriftCheck,
                    result: CheckResult, policy: Policy, after: int, upto: int) -> CheckResult:
    target = reference.target_size(policy.monitoring.min_samples, policy.monitoring.reference_size)
    ids = outputs.output_ids(session, deployment_id=dep.id, version_id=version_id, after_id=after, upto_id=upto)
    ids = ids[: max(target - ref_row.sample_size, 0)]
    frame = describe(sampling.load_records(session, ids), fmt=policy.format, with_embeddings=False)
    ready = reference.add_rows(ref_row, frame, target=target) if frame.n else False
    if ready and ids:
        check.last_output_id = ids[-1]  # outputs past the reference are the next window's to judge
    if ready:
        emb = None
        if any(_needs_embeddings(name, cfg) for name, cfg in policy.monitoring.detectors.items()):
            records = sampling.load_records(session, list((ref_row.stats or {}).get("output_ids") or []))
            emb = embed([r.output for r in records])
        reference.finish(ref_row, emb,
                         gate_summary=reference.gate_summary(session, version_id=version_id, fmt=policy.format))
    return _finish(check, result, "inconclusive", {
        "reason": "reference ready" if ready else "building reference", "reference_id": ref_row.id,
        "reference_size": ref_row.sample_size, "reference_target": target, "added": frame.n}, dep.name)



def _needs_embeddings(name: str, config: Any) -> bool:
    return resolve_kind(name, str(getattr(config, "kind", "")))[0] in NEEDS_EMBEDDINGS
