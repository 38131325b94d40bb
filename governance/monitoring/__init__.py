"""Stored drift checks, references and sequential-detector state (the monitors write them)."""
