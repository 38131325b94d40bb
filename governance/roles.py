"""The roles a principal can hold; the database and every rule about who may act name them."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    ml_engineer = "ml_engineer"
    compliance_officer = "compliance_officer"
    auditor = "auditor"
    admin = "admin"
    service = "service"


ROLE_VALUES = tuple(r.value for r in Role)
