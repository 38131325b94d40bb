"""Users and API keys as the API shows them. A key's secret appears once, in the create (or rotate) response.

A key's ``deployments`` are the deployments a service key is bound to; ``unscoped`` marks a
service key bound to none (issued before scoping; refused unless the operator opts in).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from governance.roles import Role
from governance.schemas import Out, StrictIn

MAX_SCOPE = 50  # deployments one key may be bound to


def _scope_field() -> Any:
    return Field(
        default_factory=list,
        max_length=MAX_SCOPE,
        description="service keys: the deployments the key may act on (at least one); other roles: none",
    )


class UserCreate(StrictIn):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    deployments: list[str] = _scope_field()


class UserRead(Out):
    name: str
    role: str
    created_at: datetime
    disabled_at: datetime | None = None
    unscoped_keys: list[str] = Field(
        default_factory=list, description="prefixes of this service user's keys bound to no deployment"
    )


class KeyCreate(StrictIn):
    expires_at: datetime | None = None
    deployments: list[str] = _scope_field()


class RotateIn(StrictIn):
    overlap_seconds: int = Field(
        ge=0, le=7 * 86_400, description="how long the old key keeps working (0 to 7 days); 0: it stops now"
    )
    expires_at: datetime | None = Field(None, description="the new key's own expiry; none: it does not expire")


class KeyCreated(Out):
    user: str
    role: str
    key_prefix: str
    api_key: str = Field(description="shown once; store it now")
    expires_at: datetime | None = None
    deployments: list[str] | None = None


class KeyRotated(KeyCreated):
    old_key_prefix: str
    old_key_expires_at: datetime | None = Field(description="the old key works until then")


class KeyRead(Out):
    prefix: str
    user: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    deployments: list[str] | None = None
    unscoped: bool = Field(False, description="a service key bound to no deployment")


class Me(Out):
    name: str
    role: str
    key_prefix: str | None
    deployments: list[str] | None = None
