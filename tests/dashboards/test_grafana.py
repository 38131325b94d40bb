"""The Grafana dashboard parses and names only metrics the services actually export.

The exported names come from the live metric registries of the API, the monitors and a
serving replica (not from a hand-kept list), expanded the way Prometheus exposes them:
counters as ``_total``, histograms as ``_bucket``/``_sum``/``_count``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "grafana" / "aligner-governance.json"
PROMQL_FUNCTIONS = {
    "rate", "irate", "increase", "sum", "max", "min", "avg", "count", "histogram_quantile", "clamp_min",
    "clamp_max", "topk", "bottomk", "abs", "delta", "deriv", "label_values", "time", "vector", "scalar",
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def _names(registry: CollectorRegistry, prefixes: tuple[str, ...]) -> set[str]:
    out: set[str] = set()
    for family in registry.collect():
        if not family.name.startswith(prefixes):
            continue
        if family.type == "counter":
            out |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            out |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        elif family.type == "summary":
            out |= {family.name, f"{family.name}_sum", f"{family.name}_count", f"{family.name}_created"}
        else:
            out.add(family.name)
    return out


def exported_metrics() -> set[str]:
    import governance.metrics  # noqa: F401  (registers the control plane's metrics)
    import monitors.metrics  # noqa: F401  (the workers')
    from serving.metrics import ServingMetrics

    return _names(REGISTRY, ("govern_",)) | _names(ServingMetrics().registry, ("serving_",))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels and durations removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"(?<![A-Za-z0-9_:])\d+(\.\d+)?(e[-+]?\d+)?", "", expr)  # numbers: 0.95, 1e-9
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, rest = m.group(0), expr[m.end():].lstrip()
        if word in PROMQL_WORDS:  # before the call check: `x and on (l) (y)` leaves `and (`
            continue
        if rest.startswith("("):
            assert word in PROMQL_FUNCTIONS, f"unknown PromQL function {word!r} in {expr!r}"
            continue
        names.add(word)
    return names


def _exprs(dash: dict[str, Any]) -> list[str]:
    exprs = []
    for panel in dash["panels"]:
        for sub in [panel, *panel.get("panels", [])]:
            exprs += [t["expr"] for t in sub.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str) and "label_values" in q:
            exprs.append(re.sub(r",\s*\w+\)\s*$", ")", q))
    return exprs


def test_dashboard_parses_and_has_panels() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["targets"], p["title"]


def test_dashboard_names_only_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exported = exported_metrics()
    used: set[str] = set()
    for expr in _exprs(dash):
        used |= metric_names(expr)
    unknown = used - exported
    assert not unknown, f"the dashboard reads metrics no service exports: {sorted(unknown)}"
    # the topics the operators asked for are all there
    for needed in ("govern_http_requests_total", "govern_http_request_seconds_bucket", "govern_active_generation",
                   "govern_drift_checks_total", "govern_auto_rollbacks_total", "govern_monitor_alerts_total",
                   "govern_promotions_total", "serving_requests_total", "serving_active_generation",
                   "govern_auth_failures_total", "govern_rollout_running", "govern_rollout_canary_weight",
                   "govern_rollout_pairs", "govern_rollout_verdicts_total", "govern_rollout_changes_total"):
        assert needed in used, needed


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (route) (rate(a_total{status=~"5.."}[5m])) / clamp_min(b, 1e-9)') == {"a_total", "b"}
    assert metric_names("a and on (instance, d) (b == on (d) group_left max by (d) (b))") == {"a", "b"}


def test_committed_json_is_what_the_builder_makes() -> None:
    from dashboards.grafana.build import render

    assert DASHBOARD.read_text(encoding="utf-8") == render(), "run: python -m dashboards.grafana.build"
