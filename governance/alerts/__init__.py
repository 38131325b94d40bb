"""Alerts raised by monitors, replicas and the gate; acknowledged by compliance officers."""
