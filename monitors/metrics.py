"""Prometheus metrics of the monitors (exposed by a worker started with ``--metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CHECKS = Counter("govern_drift_checks_total", "drift checks by verdict", ["deployment", "verdict"])
DETECTOR_VERDICTS = Counter(
    "govern_detector_verdicts_total", "detector verdicts", ["deployment", "detector", "verdict"]
)
DETECTOR_STATISTIC = Gauge("govern_detector_statistic", "latest detector statistic", ["deployment", "detector"])
DETECTOR_THRESHOLD = Gauge("govern_detector_threshold", "latest detector threshold", ["deployment", "detector"])
ALERTS = Counter("govern_monitor_alerts_total", "alerts raised by the monitors", ["deployment", "kind", "severity"])
WEBHOOK_FAILURES = Counter("govern_alert_webhook_failures_total", "alert webhook deliveries that failed")
AUTO_ROLLBACKS = Counter("govern_auto_rollbacks_total", "automatic rollback decisions", ["deployment", "status"])
