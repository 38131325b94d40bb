"""Grafana dashboard of the service's Prometheus metrics (JSON plus the script that builds it)."""
