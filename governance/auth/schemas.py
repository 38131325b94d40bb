"""Users and API keys as the API shows them. A key's secret appears once, in the create response."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from governance.roles import Role
from governance.schemas import Out, StrictIn


class UserCreate(StrictIn):
    name: str = Field(min_length=1, max_length=100)
    role: Role


class UserRead(Out):
    name: str
    role: str
    created_at: datetime
    disabled_at: datetime | None = None


class KeyCreate(StrictIn):
    expires_at: datetime | None = None


class KeyCreated(Out):
    user: str
    role: str
    key_prefix: str
    api_key: str = Field(description="shown once; store it now")
    expires_at: datetime | None = None


class KeyRead(Out):
    prefix: str
    user: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class Me(Out):
    name: str
    role: str
    key_prefix: str | None
