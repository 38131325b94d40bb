"""Deployments, promotion, rollback and freeze."""
