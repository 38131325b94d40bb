"""Stored gate runs and their per-case results (the evidence an officer reviews)."""
