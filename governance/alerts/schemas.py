"""Alerts as the API shows and accepts them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from governance.schemas import Out, StrictIn


class AlertIn(StrictIn):
    kind: str = Field(min_length=1, max_length=50)
    severity: Literal["info", "warning", "critical"]
    incident_key: str = Field(min_length=1, max_length=200, description="repeats of an open incident are counted")
    message: str = Field(min_length=1, max_length=4_000)
    details: dict[str, Any] = Field(default_factory=dict)
    deployment: str | None = Field(None, max_length=200)


class AckIn(StrictIn):
    comment: str = Field(min_length=1, max_length=4_000)


class AlertRead(Out):
    id: int
    deployment_id: int | None
    kind: str
    severity: str
    incident_key: str
    status: str
    message: str
    details: dict[str, Any]
    occurrences: int
    created_at: datetime
    last_seen_at: datetime
    acked_by: int | None
    acked_at: datetime | None
    ack_comment: str | None


class AlertRaised(AlertRead):
    opened: bool = Field(description="false when an open alert of the same incident was counted again")
