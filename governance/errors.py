"""Domain errors: the words every room raises, with no web framework behind them.

Service functions raise these (they carry an HTTP status and a stable code); the API
maps them to the error envelope in `governance.api.app`. A refusal of a governed action
(403 four-eyes or role, 409 wrong state) carries a `Refusal`, which the edge writes as
one ``denied`` audit entry after rolling back (`governance.refusals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the principal's module raises these errors
    from governance.principal import Principal


@dataclass(frozen=True)
class Refusal:
    """Who tried which governed action on what; written as a ``denied`` audit entry."""

    actor: str
    actor_key_id: str | None
    attempted: str
    subject_type: str
    subject_id: str

    @classmethod
    def of(cls, principal: Principal, attempted: str, subject_type: str, subject_id: str | int) -> Refusal:
        return cls(principal.actor, principal.key_prefix, attempted, subject_type, str(subject_id))


class DomainError(Exception):
    """Base of every error raised on purpose by governance services; never a 500."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, details: Any = None, refusal: Refusal | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.refusal = refusal

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidInput(DomainError):
    status, code = 422, "invalid_input"


class Unauthorized(DomainError):
    status, code = 401, "unauthorized"


class Forbidden(DomainError):
    status, code = 403, "forbidden"


class NotFound(DomainError):
    status, code = 404, "not_found"


class Conflict(DomainError):
    status, code = 409, "conflict"


class InvalidTransition(Conflict):
    """The lifecycle table has no such move from the version's current state."""

    code = "invalid_transition"


class BindingMismatch(Conflict):
    """What an approval was bound to (artifact, evidence, policy digests) changed since."""

    code = "approval_binding_mismatch"


class NoRollbackTarget(Conflict):
    code = "no_rollback_target"


class PayloadTooLarge(DomainError):
    status, code = 413, "payload_too_large"


class ServiceUnavailable(DomainError):
    status, code = 503, "unavailable"


class TooManyRequests(DomainError):
    """A rate limit or the failed-authentication throttle; the answer carries ``Retry-After``."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, details={"retry_after": max(1, int(retry_after + 0.999))})
        self.retry_after = max(1, int(retry_after + 0.999))
