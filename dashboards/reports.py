"""Read models of the dashboard: gate reports and drift series, shaped for the templates.

A gate run's summary is read through the report contract (``governance.gates.report``):
``suite_summaries`` validates it and hands the templates typed metrics, so a change of
the producer that breaks the contract fails here loudly (``ReportUnreadable``) instead
of showing guessed numbers. Drift checks are read by the keys of the monitors'
``DetectorResult``. Everything here is read-only and bounded: the callers page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from governance.gates.report import MetricReport, WaiverReport, read_summary

if TYPE_CHECKING:  # annotations only: rooms talk through service functions
    from governance.gates.models import GateCaseResult, GateRun
    from governance.monitoring.models import DriftCheck


@dataclass(frozen=True)
class SuiteSummary:
    """One suite of a stored gate run as the pages show it: verdict, typed metrics, notes joined."""

    name: str
    passed: bool
    metrics: list[MetricReport]
    note: str | None = None


def suite_summaries(summary: dict[str, Any] | None) -> list[SuiteSummary]:
    """Per suite: verdict and metrics (value, threshold, interval, p-values, n) of a stored summary.

    A running gate's empty summary has no suites; one that does not fit the contract
    raises ``ReportUnreadable``.
    """
    stored = read_summary(summary)
    return [SuiteSummary(name, s.passed, s.metrics, "; ".join(s.notes) or None) for name, s in stored.suites.items()]


def run_verdict(run: GateRun | None) -> str:
    """'passed', 'failed', 'error', 'running', 'queued' or 'none' (no gate run yet)."""
    return "none" if run is None else str(run.status)


def run_waivers(run: GateRun | None) -> list[WaiverReport]:
    """The bounds a finished run waived because the base breaks them too (none before waivers were listed)."""
    if run is None or run.status not in ("passed", "failed"):
        return []
    return list(read_summary(run.summary, source=f"gate run {run.id}").waivers)


def run_outcome(run: GateRun | None) -> str:
    """run_verdict, except that a pass resting on waived bounds reads 'passed with waivers'."""
    verdict = run_verdict(run)
    return "passed with waivers" if verdict == "passed" and run_waivers(run) else verdict


def case_baselines(case: GateCaseResult) -> dict[str, str]:
    """The comparison outputs of a case: {"base": ..., "active": ...} (the runner keeps them in scores)."""
    stored = (case.scores or {}).get("_baselines")
    if isinstance(stored, dict) and stored:
        return {str(k): str(v) for k, v in stored.items() if v is not None}
    return {"base": case.baseline_output} if case.baseline_output is not None else {}


def case_scores(case: GateCaseResult) -> dict[str, Any]:
    return {k: v for k, v in (case.scores or {}).items() if not str(k).startswith("_")}


# ---------------------------------------------------------------- drift




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
    for c in sorted(checks, key=lambda c: (c.window_end, c.id)):
        x = c.window_end.isoformat() if isinstance(c.window_end, datetime) else str(c.window_end)
        for name, d in detector_items(c):
            kinds[name] = str(d.get("kind") or "")
            stat, thr = _num(d.get("statistic")), _num(d.get("threshold"))
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
    charts: list[Chart] = []
    for name, series in per_detector.items():
        is_p = kinds.get(name) in P_VALUE_KINDS
        title = f"{name}: p-value (drift below the threshold)" if is_p else f"{name}: statistic and threshold"
        charts.append(Chart(f"det-{len(charts)}", title, list(series.values()), log_y=is_p))
    if rates:
        charts.append(Chart("descriptors", "Main descriptors per window", list(rates.values()), with_thresholds=False))
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


@dataclass(frozen=True)
class DetectorRow:
    """One detector of a drift check as the pages show it (the keys of the monitors' ``DetectorResult``)."""

    name: str
    value: float | None  # the detector's statistic
    threshold: float | None
    p_value: float | None  # the smallest of its per-column p-values, if it has any
    n: int | None  # sample size
    extra: dict[str, Any] = field(default_factory=dict)  # verdict and kind


def detector_rows(check: DriftCheck) -> list[tuple[str, DetectorRow]]:
    """Per detector of one check: (name, statistic/threshold/smallest p-value/verdict row)."""
    rows = []
    for name, d in detector_items(check):
        p_values: dict[str, Any] = d["p_values"] if isinstance(d.get("p_values"), dict) else {}
        numbers = [n for n in (_num(v) for v in p_values.values()) if n is not None]
        size = d.get("sample_size")
        rows.append((name, DetectorRow(str(d.get("name") or name), _num(d.get("statistic")),
                                       _num(d.get("threshold")), min(numbers) if numbers else None,
                                       size if isinstance(size, int) else None,
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
