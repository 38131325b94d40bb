"""Build the Grafana dashboard JSON (``aligner-governance.json``) for the Prometheus metrics.

The JSON is committed (Grafana imports it as it is); this script is how it is made, so a
change is a reviewed diff here rather than hand-edited JSON. It names only metrics the
services export; ``tests/dashboards/test_grafana.py`` checks that against the live
registries and that the committed file equals this script's output.

    .venv/bin/python -m dashboards.grafana.build
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("aligner-governance.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
D = 'deployment=~"$deployment"'


class _Layout:
    """Panels placed left to right, top to bottom, on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0

    def _id(self) -> int:
        return len(self.panels) + 1

    def row(self, title: str) -> None:
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": self._id(),
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def ts(
        self,
        title: str,
        targets: list[tuple[str, str]],
        unit: str = "short",
        w: int = 12,
        x: int = 0,
        desc: str = "",
        h: int = 8,
    ) -> None:
        self.panels.append(
            {
                "type": "timeseries",
                "title": title,
                "id": self._id(),
                "description": desc,
                "datasource": DS,
                "gridPos": {"h": h, "w": w, "x": x, "y": self.y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(65 + i), "expr": e, "legendFormat": legend, "datasource": DS}
                    for i, (e, legend) in enumerate(targets)
                ],
            }
        )

    def nl(self, h: int = 8) -> None:
        self.y += h


# The dashboard's variables: the Prometheus data source and the deployments it knows.
_VARIABLES: list[dict[str, Any]] = [
    {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
    {
        "name": "deployment",
        "type": "query",
        "label": "Deployment",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "definition": "label_values(govern_active_generation, deployment)",
        "query": {"query": "label_values(govern_active_generation, deployment)", "refId": "deployments"},
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "refresh": 2,
        "current": {"text": "All", "value": "$__all"},
    },
]


def _api(g: _Layout) -> None:
    """The control plane API: traffic, errors, latency, refusals, ingest, outbox."""
    row, ts, nl = g.row, g.ts, g.nl
    row("Control plane API")
    ts(
        "Requests per second by route and status",
        [("sum by (route, status) (rate(govern_http_requests_total[5m]))", "{{route}} {{status}}")],
        "reqps",
        desc="govern_http_requests_total",
    )
    ts(
        "Server errors (5xx share)",
        [
            (
                'sum(rate(govern_http_requests_total{status=~"5.."}[5m]))'
                " / clamp_min(sum(rate(govern_http_requests_total[5m])), 1e-9)",
                "5xx share",
            )
        ],
        "percentunit",
        x=12,
    )
    nl()
    ts(
        "Latency p50 / p95 / p99",
        [
            ("histogram_quantile(0.5, sum by (le) (rate(govern_http_request_seconds_bucket[5m])))", "p50"),
            ("histogram_quantile(0.95, sum by (le) (rate(govern_http_request_seconds_bucket[5m])))", "p95"),
            ("histogram_quantile(0.99, sum by (le) (rate(govern_http_request_seconds_bucket[5m])))", "p99"),
        ],
        "s",
    )
    ts(
        "Latency p95 by route",
        [("histogram_quantile(0.95, sum by (le, route) (rate(govern_http_request_seconds_bucket[5m])))", "{{route}}")],
        "s",
        x=12,
    )
    nl()
    ts(
        "Refused governed actions (403/409)",
        [("sum by (action, status) (increase(govern_denied_actions_total[1h]))", "{{action}} {{status}}")],
        desc="four-eyes and role refusals, wrong-state moves",
    )
    ts("Lifecycle transitions", [("sum by (action) (increase(govern_transitions_total[1h]))", "{{action}}")], x=12)
    nl()
    ts(
        "Outputs ingested per second",
        [(f"sum by (deployment) (rate(govern_outputs_ingested_total{{{D}}}[5m]))", "{{deployment}}")],
        "ops",
    )
    ts("Outbox messages sent", [("sum by (kind) (rate(govern_outbox_published_total[5m]))", "{{kind}}")], "ops", x=12)
    nl()


def _deployments(g: _Layout) -> None:
    """Deployments: the active generation (database and replicas), promotions, rollbacks."""
    row, ts, nl = g.row, g.ts, g.nl
    row("Deployments: active generation, promotions, rollbacks")
    ts(
        "Active generation per deployment (control plane)",
        [(f"max by (deployment) (govern_active_generation{{{D}}})", "{{deployment}}")],
        desc="the generation the database made active",
    )
    ts(
        "Generation served per replica",
        [("serving_active_generation", "{{instance}}")],
        x=12,
        desc="-1 until the replica loaded a token; compare with the control plane",
    )
    nl()
    ts(
        "Promotions and rollbacks",
        [(f"sum by (deployment, kind) (increase(govern_promotions_total{{{D}}}[1h]))", "{{deployment}} {{kind}}")],
    )
    ts(
        "Automatic rollback decisions",
        [
            (
                f"sum by (deployment, status) (increase(govern_auto_rollbacks_total{{{D}}}[1h]))",
                "{{deployment}} {{status}}",
            )
        ],
        x=12,
        desc="rolled_back, no_target, frozen, stale, ...",
    )
    nl()


def _freshest(metric: str) -> str:
    """``metric`` as seen by the process that saw the deployment's newest rollout state.

    The API and the rollout worker both change rollouts and each keeps its own gauges, so a
    process that did not make the last change still holds the state before it; the one with
    the highest ``govern_rollout_generation`` for the deployment is the one to believe."""
    return (f"{metric}{{{D}}} and on (instance, deployment) (govern_rollout_generation{{{D}}}"
            f" == on (deployment) group_left max by (deployment) (govern_rollout_generation{{{D}}}))")


def _rollouts(g: _Layout) -> None:
    """Rollouts: which deployments run a shadow or canary, the canary's weight, pairs, verdicts, changes."""
    row, ts, nl = g.row, g.ts, g.nl
    row("Rollouts: shadow and canary candidates")
    ts(
        "Rollout running per deployment",
        [(f"max by (deployment, mode) ({_freshest('govern_rollout_running')})", "{{deployment}} {{mode}}")],
        desc="1 while a shadow or canary rollout runs beside the active version",
    )
    ts(
        "Canary weight per deployment",
        [(f"max by (deployment) ({_freshest('govern_rollout_canary_weight')})", "{{deployment}}")],
        "percentunit",
        x=12,
        desc="share of callers served by the candidate; a step of the canary is a step here",
    )
    nl()
    ts(
        "Pairs analysed and the step's minimum",
        [
            (f"max by (deployment, mode) (govern_rollout_pairs{{{D}}})", "{{deployment}} {{mode}} pairs"),
            (f"max by (deployment) (govern_rollout_min_samples{{{D}}})", "{{deployment}} min samples"),
        ],
        desc="pairs the latest verdict analysed (those of the current step); a step passes only above its minimum",
    )
    ts(
        "Verdicts by decision",
        [
            (
                f"sum by (deployment, decision) (increase(govern_rollout_verdicts_total{{{D}}}[1h]))",
                "{{deployment}} {{decision}}",
            )
        ],
        x=12,
        desc="pass advances a canary or ends a shadow; fail aborts; pending waits for more pairs",
    )
    nl()
    ts(
        "Rollout changes by kind",
        [
            (
                f"sum by (deployment, kind) (increase(govern_rollout_changes_total{{{D}}}[1h]))",
                "{{deployment}} {{kind}}",
            )
        ],
        w=24,
        h=6,
        desc="start, advance, abort, passed, failed, complete",
    )
    nl(6)


def _drift(g: _Layout) -> None:
    """Drift: checks, detector verdicts, statistics against thresholds."""
    row, ts, nl = g.row, g.ts, g.nl
    row("Drift")
    ts(
        "Drift checks by verdict",
        [
            (
                f"sum by (deployment, verdict) (increase(govern_drift_checks_total{{{D}}}[1h]))",
                "{{deployment}} {{verdict}}",
            )
        ],
    )
    ts(
        "Detector verdicts",
        [
            (
                f"sum by (deployment, detector, verdict) (increase(govern_detector_verdicts_total{{{D}}}[1h]))",
                "{{deployment}} {{detector}} {{verdict}}",
            )
        ],
        x=12,
    )
    nl()
    ts(
        "Detector statistic and threshold",
        [
            (f"govern_detector_statistic{{{D}}}", "{{deployment}} {{detector}}"),
            (f"govern_detector_threshold{{{D}}}", "{{deployment}} {{detector}} threshold"),
        ],
        w=24,
    )
    nl()


def _alerts(g: _Layout) -> None:
    """Alerts raised by the monitors and webhook failures."""
    row, ts, nl = g.row, g.ts, g.nl
    row("Alerts")
    ts(
        "Alerts raised by the monitors",
        [
            (
                f"sum by (deployment, kind, severity) (increase(govern_monitor_alerts_total{{{D}}}[1h]))",
                "{{deployment}} {{kind}} {{severity}}",
            )
        ],
    )
    ts("Alert webhook failures", [("increase(govern_alert_webhook_failures_total[1h])", "{{instance}}")], x=12)
    nl()


def _security(g: _Layout) -> None:
    """Security: failed sign-ins, throttling, the rate limiter's health."""
    row, ts, nl = g.row, g.ts, g.nl
    row("Security")
    ts(
        "Failed authentications",
        [("sum by (via) (increase(govern_auth_failures_total[1h]))", "{{via}}")],
        desc="bad API keys and failed dashboard sign-ins",
    )
    ts(
        "Requests refused with 429",
        [("sum by (scope, by) (increase(govern_throttled_total[1h]))", "{{scope}} by {{by}}")],
        x=12,
    )
    nl()
    ts(
        "Rate limiter unavailable (requests let through)",
        [("increase(govern_ratelimit_unavailable_total[1h])", "{{instance}}")],
        w=24,
        h=6,
    )
    nl(6)


def _serving(g: _Layout) -> None:
    """Serving replicas: requests, latency, throughput, swaps, output recording."""
    row, ts, nl = g.row, g.ts, g.nl
    row("Serving replicas")
    ts(
        "Chat completion requests by status",
        [("sum by (status) (rate(serving_requests_total[5m]))", "{{status}}")],
        "reqps",
    )
    ts(
        "Request latency p95 (stream: first byte)",
        [
            (
                "histogram_quantile(0.95, sum by (le, stream) (rate(serving_request_latency_seconds_bucket[5m])))",
                "stream={{stream}}",
            )
        ],
        "s",
        x=12,
    )
    nl()
    ts(
        "Generation latency p50 / p95",
        [
            ("histogram_quantile(0.5, sum by (le) (rate(serving_generation_latency_seconds_bucket[5m])))", "p50"),
            ("histogram_quantile(0.95, sum by (le) (rate(serving_generation_latency_seconds_bucket[5m])))", "p95"),
        ],
        "s",
    )
    ts(
        "Tokens per second and queue depth",
        [("serving_tokens_per_second", "tokens/s {{instance}}"), ("serving_queue_depth", "queue {{instance}}")],
        x=12,
    )
    nl()
    ts(
        "Token swaps, rejections, overload",
        [
            ("sum(increase(serving_token_swaps_total[1h]))", "swaps"),
            ("sum(increase(serving_token_rejections_total[1h]))", "rejected tokens"),
            ("sum(increase(serving_overload_rejections_total[1h]))", "429 overload"),
        ],
    )
    ts(
        "Output recording",
        [
            ("serving_spool_pending", "spool {{instance}}"),
            ("serving_record_queue_depth", "in memory {{instance}}"),
            ("rate(serving_outputs_spooled_total[5m])", "spooled/s {{instance}}"),
        ],
        x=12,
    )
    nl()


def build() -> dict[str, Any]:
    g = _Layout()
    for section in (_api, _deployments, _rollouts, _drift, _alerts, _security, _serving):
        section(g)
    return {
        "title": "Aligner governance",
        "uid": "aligner-governance",
        "description": "API, serving replicas and workers of the Aligner governance service (Prometheus).",
        "tags": ["aligner", "governance"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": _VARIABLES},
        "annotations": {"list": []},
        "panels": g.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
