"""Read models of the dashboard: gate reports and drift series, shaped for the templates.

The gate runner (``evaluators``) and the monitors own the shapes of ``GateRun.summary``
and ``DriftCheck.detectors``; this module is the one place that reads them, tolerant of
the spellings those producers use (``p_value``/``p``, ``n``/``sample_size``, a
``suites`` mapping or suites at the top level), so that a change of the producers
touches only this file. Everything here is read-only and bounded: the callers page.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.gates.models import GateCaseResult, GateRun
from governance.monitoring.models import DriftCheck

_VALUE_KEYS = ("value", "observed", "rate", "estimate", "metric_value", "statistic", "ratio", "gap", "drop")
_THRESHOLD_KEYS = ("threshold", "max", "min", "limit", "max_allowed", "min_allowed", "bound")
_INTERVAL_KEYS = ("interval", "ci", "confidence_interval", "wilson", "bounds")
_P_KEYS = ("p_value", "p", "pvalue", "p_adjusted", "p_holm", "adjusted_p")
_N_KEYS = ("n", "sample_size", "n_cases", "cases", "count", "size")
_PASSED_WORDS = {"pass", "passed", "ok", "true", "green"}
_FAILED_WORDS = {"fail", "failed", "false", "red", "error"}
_META_KEYS = {"verdict", "passed", "status", "name", "suite", "metric", "metrics", "checks", "tests", "details",
              "notes"}


def _first(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def _passed(d: dict[str, Any]) -> bool | None:
    for k in ("passed", "ok", "pass"):
        if isinstance(d.get(k), bool):
            return bool(d[k])
    for k in ("verdict", "status", "result"):
        v = str(d.get(k, "")).lower()
        if v in _PASSED_WORDS:
            return True
        if v in _FAILED_WORDS:
            return False
    return None


def fmt_num(value: Any) -> str:
    """A number as a person reads it: 4 significant digits, p-values in e-notation when tiny."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"[{fmt_num(value[0])}, {fmt_num(value[1])}]"
    if isinstance(value, dict):
        lo, hi = _first(value, ("low", "lo", "lower")), _first(value, ("high", "hi", "upper"))
        if lo is not None or hi is not None:
            return f"[{fmt_num(lo)}, {fmt_num(hi)}]"
        return json.dumps(value, sort_keys=True, default=str)[:200]
    return str(value)


@dataclass(frozen=True)
class MetricRow:
    name: str
    value: Any
    threshold: Any
    interval: Any
    p_value: Any
    n: Any
    passed: bool | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SuiteSummary:
    name: str
    passed: bool | None
    metrics: list[MetricRow]
    note: str | None = None


def _metric(name: str, d: dict[str, Any]) -> MetricRow:
    extra = {k: v for k, v in d.items() if not isinstance(v, (dict, list))}
    return MetricRow(
        name=str(d.get("metric") or d.get("name") or name),
        value=_first(d, _VALUE_KEYS),
        threshold=_first(d, _THRESHOLD_KEYS),
        interval=_first(d, _INTERVAL_KEYS),
        p_value=_first(d, _P_KEYS),
        n=_first(d, _N_KEYS),
        passed=_passed(d),
        extra=extra,
    )


def suite_summaries(summary: dict[str, Any] | None) -> list[SuiteSummary]:
    """Per suite: verdict and metric rows (metric, threshold, interval or p-value, sample size)."""
    if not isinstance(summary, dict):
        return []
    suites = summary.get("suites", summary)
    if isinstance(suites, list):
        suites = {str(s.get("name") or s.get("suite") or i): s for i, s in enumerate(suites) if isinstance(s, dict)}
    out: list[SuiteSummary] = []
    for name, s in (suites or {}).items():
        if not isinstance(s, dict):
            continue
        raw = s.get("metrics") or s.get("checks") or s.get("tests")
        rows: list[MetricRow] = []
        if isinstance(raw, dict):
            rows = [_metric(k, v) for k, v in raw.items() if isinstance(v, dict)]
        elif isinstance(raw, list):
            rows = [_metric(str(i), v) for i, v in enumerate(raw) if isinstance(v, dict)]
        if not rows:
            rows = [_metric(str(name), s)]
        passed = _passed(s)
        if passed is None and rows and all(r.passed is not None for r in rows):
            passed = all(bool(r.passed) for r in rows)
        notes = s.get("notes")
        note = "; ".join(str(n) for n in notes) if isinstance(notes, list) and notes else None
        note = note or s.get("reason") or s.get("message") or s.get("error")
        out.append(SuiteSummary(str(name), passed, rows, str(note) if note else None))
    return out


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


def run_verdict(run: GateRun | None) -> str:
    """'passed', 'failed', 'error', 'running', 'queued' or 'none' (no gate run yet)."""
    return "none" if run is None else str(run.status)


def case_baselines(case: GateCaseResult) -> dict[str, str]:
    """The comparison outputs of a case: {"base": ..., "active": ...} (the runner keeps them in scores)."""
    stored = (case.scores or {}).get("_baselines")
    if isinstance(stored, dict) and stored:
        return {str(k): str(v) for k, v in stored.items() if v is not None}
    return {"base": case.baseline_output} if case.baseline_output is not None else {}


def case_scores(case: GateCaseResult) -> dict[str, Any]:
    return {k: v for k, v in (case.scores or {}).items() if not str(k).startswith("_")}


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
    from sqlalchemy import func

    return int(
        session.scalar(
            select(func.count())
            .select_from(GateCaseResult)
            .where(GateCaseResult.gate_run_id == gate_run_id, GateCaseResult.passed.is_(False))
        )
        or 0
    )


# ---------------------------------------------------------------- drift


def list_checks(
    session: Session, *, deployment_id: int, limit: int = 50, before_id: int | None = None
) -> list[DriftCheck]:
    """Newest first, keyset-paged by id."""
    stmt = select(DriftCheck).where(DriftCheck.deployment_id == deployment_id)
    if before_id is not None:
        stmt = stmt.where(DriftCheck.id < before_id)
    return list(session.scalars(stmt.order_by(DriftCheck.id.desc()).limit(limit)))


def get_check(session: Session, *, check_id: int) -> DriftCheck | None:
    return session.get(DriftCheck, check_id)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(float(v)) else None
    return None


@dataclass
class Series:
    name: str
    x: list[str] = field(default_factory=list)
    y: list[float | None] = field(default_factory=list)
    threshold: list[float | None] = field(default_factory=list)


@dataclass
class Chart:
    """One plotly chart: a title, its series, and whether the y axis is logarithmic (p-values)."""

    key: str
    title: str
    series: list[Series]
    log_y: bool = False
    with_thresholds: bool = True


# detector kinds whose statistic is a p-value (drift when it falls below the threshold)
P_VALUE_KINDS = {"evidently", "evidently_embeddings"}
# per-window descriptor summaries that the detectors record in their details
DESCRIPTOR_DETAILS = ("window_rate", "mean_shift_sd", "window_mean_shift_norm", "mean_shift_norm")


def _descriptor_values(d: Any) -> dict[str, float]:
    """{descriptor: current value} from ``{"length": 12.3}`` or ``{"length": {"current": ..}}``."""
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            n = _num(v)
            if n is None and isinstance(v, dict):
                n = _num(_first(v, ("current", "mean", "value", "current_mean")))
            if n is not None:
                out[str(k)] = n
    return out


def detector_items(check: DriftCheck) -> list[tuple[str, dict[str, Any]]]:
    """The detector results of a check (``_window`` and other bookkeeping keys left out)."""
    dets = check.detectors if isinstance(check.detectors, dict) else {}
    return [(str(k), v) for k, v in dets.items() if not str(k).startswith("_") and isinstance(v, dict)]


def _add(series: dict[str, Series], name: str, x: str, y: float | None, thr: float | None = None) -> None:
    s = series.setdefault(name, Series(name))
    s.x.append(x)
    s.y.append(y)
    s.threshold.append(thr)


def drift_charts(checks: list[DriftCheck]) -> list[Chart]:
    """Charts over time: one per detector (statistic and threshold), then the main descriptors.

    Descriptors are what the detectors record per window: the rate of a watched flag
    (e.g. policy violations), mean shifts, and the per-descriptor p-values of the
    Evidently-backed test with its (Bonferroni) threshold.
    """
    per_detector: dict[str, dict[str, Series]] = {}
    kinds: dict[str, str] = {}
    rates: dict[str, Series] = {}
    pvals: dict[str, Series] = {}
    generic: dict[str, Series] = {}
    for c in sorted(checks, key=lambda c: (c.window_end, c.id)):
        x = c.window_end.isoformat() if isinstance(c.window_end, datetime) else str(c.window_end)
        for name, d in detector_items(c):
            if name == "descriptors" and not any(k in d for k in ("statistic", "threshold", "kind")):
                for k, v in _descriptor_values(d).items():
                    _add(generic, k, x, v)
                continue
            kinds[name] = str(d.get("kind") or "")
            stat = _num(_first(d, ("statistic", "value", "score", "s")))
            thr = _num(_first(d, ("threshold", "h", "limit")))
            if stat is not None or thr is not None:
                _add(per_detector.setdefault(name, {}), name, x, stat, thr)
            details: dict[str, Any] = d["details"] if isinstance(d.get("details"), dict) else {}
            for key in DESCRIPTOR_DETAILS:
                value = _num(details.get(key))
                if value is not None:
                    _add(rates, f"{name}: {key.replace('_', ' ')}", x, value)
            if kinds[name] == "evidently" and isinstance(d.get("p_values"), dict):
                for col, p in d["p_values"].items():
                    _add(pvals, str(col), x, _num(p), thr)
            for k, v in _descriptor_values(d.get("descriptors")).items():
                _add(generic, k, x, v)
    charts: list[Chart] = []
    for name, series in per_detector.items():
        is_p = kinds.get(name) in P_VALUE_KINDS
        title = f"{name}: p-value (drift below the threshold)" if is_p else f"{name}: statistic and threshold"
        charts.append(Chart(f"det-{len(charts)}", title, list(series.values()), log_y=is_p))
    if rates:
        charts.append(Chart("descriptors", "Main descriptors per window", list(rates.values()), with_thresholds=False))
    if generic:
        charts.append(Chart("descriptor-values", "Descriptors", list(generic.values()), with_thresholds=False))
    if pvals:
        # one threshold line is enough: every column shares the Bonferroni threshold
        columns = list(pvals.values())
        for col in columns[1:]:
            col.threshold = [None] * len(col.x)
        charts.append(Chart("descriptor-pvalues", "Descriptor drift p-values (threshold dashed)", columns, log_y=True))
    return charts


def plotly_figure(chart: Chart) -> dict[str, Any]:
    """A plotly.js figure (data + layout) as plain JSON; the page's script draws it."""
    data: list[dict[str, Any]] = []
    for s in chart.series:
        data.append({"type": "scatter", "mode": "lines+markers", "name": s.name, "x": s.x, "y": s.y})
        if chart.with_thresholds and any(t is not None for t in s.threshold):
            data.append({"type": "scatter", "mode": "lines", "name": f"{s.name} threshold", "x": s.x,
                         "y": s.threshold, "line": {"dash": "dash"}})
    layout = {
        "title": {"text": chart.title},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "height": 300,
        "xaxis": {"type": "date"},
        "yaxis": {"type": "log"} if chart.log_y else {},
        "legend": {"orientation": "h"},
    }
    return {"data": data, "layout": layout}


def detector_rows(check: DriftCheck) -> list[tuple[str, MetricRow]]:
    """Per detector of one check: (name, statistic/threshold/p-value/verdict row)."""
    rows = []
    for name, d in detector_items(check):
        p_values: dict[str, Any] = d["p_values"] if isinstance(d.get("p_values"), dict) else {}
        numbers = [n for n in (_num(v) for v in p_values.values()) if n is not None]
        smallest = min(numbers) if numbers else None
        row = _metric(name, d)
        rows.append((name, MetricRow(row.name, row.value, row.threshold, row.interval,
                                     row.p_value if row.p_value is not None else smallest, row.n, row.passed,
                                     {"verdict": d.get("verdict"), "kind": d.get("kind")})))
    return rows


def detector_reports(check: DriftCheck) -> dict[str, str]:
    """{detector: stored report path} (the Evidently HTML each detector saved as evidence)."""
    out = {}
    for name, d in detector_items(check):
        ev = d.get("evidence")
        if isinstance(ev, dict) and isinstance(ev.get("report_html"), str):
            out[name] = ev["report_html"]
    return out
