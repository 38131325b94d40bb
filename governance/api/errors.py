"""Domain errors, in one module, and the one place that records refusals of governed actions.

Service functions raise these (they carry an HTTP status and a stable code, but no
FastAPI import); the API maps them to the error envelope in `governance.api.app`. A
refusal of a governed action (403 four-eyes or role, 409 wrong state) carries a
`Refusal`: the edge that rolled back the refused change then writes one ``denied``
audit entry in a transaction of its own (`record_refusal`), so the log shows who
tried what even though nothing changed. Workers and CLI commands that call services
directly get the same behaviour from `governed_unit_of_work`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from governance.auth.service import Principal

log = logging.getLogger(__name__)


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


def record_refusal(engine: Engine, exc: DomainError) -> None:
    """Write the ``denied`` audit entry of a refused governed action in its own transaction."""
    if exc.refusal is None:
        return
    from governance.audit import service as audit
    from governance.db import unit_of_work

    r = exc.refusal
    try:
        with unit_of_work(engine) as session:
            audit.append(
                session,
                actor=r.actor,
                actor_key_id=r.actor_key_id,
                action="denied",
                subject_type=r.subject_type,
                subject_id=r.subject_id,
                payload={"attempted": r.attempted, "status": exc.status, "code": exc.code, "reason": exc.message},
            )
    except Exception:  # the refusal still reaches the caller; losing its entry is logged loudly
        log.exception("could not record the refusal of %s by %s", r.attempted, r.actor)
    from governance.api import metrics

    metrics.DENIED.labels(action=r.attempted, status=str(exc.status)).inc()


@contextmanager
def governed_unit_of_work(engine: Engine) -> Iterator[Session]:
    """`unit_of_work` for workers and CLI edges: a refused action is rolled back, then audited."""
    from governance.db import unit_of_work

    try:
        with unit_of_work(engine) as session:
            yield session
    except DomainError as exc:
        record_refusal(engine, exc)
        raise
