"""The lifecycle of a token version: one table of allowed moves and one function that applies it.

Each move is (from state, to state, action) and the roles that may make it, which are
the row ``version.<action>`` of `governance.roles.PERMISSIONS`. Anything
not in the table is refused with `InvalidTransition` (409, naming the current state);
a move in the table by a role it does not list is refused with `Forbidden` (403). Both
refusals carry a `Refusal` so the edge writes a ``denied`` audit entry after rolling
back. `transition` takes a row lock on the version (SELECT ... FOR UPDATE), so two
concurrent requests serialize and the second one sees the first one's state; the
optimistic ``row_version`` on `TokenVersion` is a second guard for code that loaded
the row earlier without a lock.

    submitted -> evaluating -> gate_failed
                            -> gate_passed -> rejected
                                           -> approved -> active -> superseded | rolled_back
    superseded -> active (rollback target);  rolled_back -> approved | rejected (a new review)

Re-gating (a version gated again under a deployment's new gate policy) moves no state;
its approval under the new gate digest is the move approve from approved, active or
superseded to the same state. gate_failed and rejected stay terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance import metrics
from governance.audit import service as audit
from governance.errors import Forbidden, InvalidTransition, NotFound, Refusal
from governance.principal import Principal
from governance.registry.models import TokenVersion, VersionState
from governance.roles import Role, allowed

S = VersionState


@dataclass(frozen=True)
class Move:
    from_state: VersionState
    to_state: VersionState
    action: str
    roles: frozenset[Role]
    why: str


# each action's moves as (from, to, why); the action's roles are the row version.<action> of the roles table
_MOVES_OF: dict[str, tuple[tuple[VersionState, VersionState, str], ...]] = {
    "gate_start": ((S.submitted, S.evaluating, "the gate worker picked the version up"),),
    "gate_pass": ((S.evaluating, S.gate_passed, "every gate suite passed"),),
    "gate_fail": ((S.evaluating, S.gate_failed, "a gate suite failed or the run errored"),),
    "approve": (
        (S.gate_passed, S.approved, "four-eyes review approved it"),
        (S.rolled_back, S.approved, "a new review re-approved a rolled-back version"),
        # a re-gate under a new gate policy passed: the approval under its digest is added,
        # the state stays (`governance.registry.service.approve`)
        (S.approved, S.approved, "re-approved under a deployment's new gate policy"),
        (S.active, S.active, "re-approved under a deployment's new gate policy"),
        (S.superseded, S.superseded, "re-approved under a deployment's new gate policy"),
    ),
    "reject": (
        (S.gate_passed, S.rejected, "four-eyes review rejected it"),
        (S.rolled_back, S.rejected, "a new review rejected a rolled-back version"),
    ),
    "promote": ((S.approved, S.active, "promoted onto a deployment"),),
    "supersede": ((S.active, S.superseded, "another version became active"),),
    "restore": (
        (S.superseded, S.active, "reactivated as a rollback target"),
        (S.approved, S.active, "a named approved version as rollback target"),
    ),
    "rollback": ((S.active, S.rolled_back, "rolled back (manual or automatic)"),),
}

MOVES: tuple[Move, ...] = tuple(
    Move(src, dst, action, allowed(f"version.{action}"), why)
    for action, moves in _MOVES_OF.items()
    for src, dst, why in moves
)

_BY_KEY: dict[tuple[str, str, str], Move] = {(m.from_state.value, m.to_state.value, m.action): m for m in MOVES}


def find_move(from_state: str, to_state: str, action: str) -> Move | None:
    return _BY_KEY.get((from_state, to_state, action))


def moves_for(action: str) -> list[Move]:
    return [m for m in MOVES if m.action == action]


def lock_version(session: Session, version_id: int) -> TokenVersion:
    version = session.scalars(
        select(TokenVersion)
        .where(TokenVersion.id == version_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if version is None:
        raise NotFound(f"no token version {version_id}")
    return version


def check_move(version: TokenVersion, *, to: str, action: str, principal: Principal) -> Move:
    """The table's move for this version, or the refusal (409 wrong state, 403 wrong role)."""
    attempted = f"version.{action}"
    move = find_move(version.state, to, action)
    if move is None:
        allowed_from = sorted({m.from_state.value for m in moves_for(action) if m.to_state.value == to})
        raise InvalidTransition(
            f"version {version.id} is {version.state}; '{action}' to {to} needs state "
            f"{' or '.join(allowed_from) or '(none)'}",
            details={"version_id": version.id, "current_state": version.state, "action": action, "to": to},
            refusal=Refusal.of(principal, attempted, "version", version.id),
        )
    if principal.role not in move.roles:
        raise Forbidden(
            f"role {principal.role} may not {action} a version (allowed: {', '.join(sorted(move.roles))})",
            details={"version_id": version.id, "current_state": version.state, "action": action},
            refusal=Refusal.of(principal, attempted, "version", version.id),
        )
    return move


def transition(
    session: Session,
    *,
    version_id: int,
    to: str,
    principal: Principal,
    action: str,
    reason: str | None = None,
    expected_state: str | None = None,
    payload: dict[str, Any] | None = None,
    audited: bool = True,
) -> TokenVersion:
    """Apply one move of the table to a version under a row lock; audit it unless told otherwise.

    ``audited=False`` is for composite actions (a promotion moves two versions) that write
    their own single audit entry in the same transaction.
    """
    version = lock_version(session, version_id)
    if expected_state is not None and version.state != expected_state:
        raise InvalidTransition(
            f"version {version.id} is {version.state}, expected {expected_state}",
            details={"version_id": version.id, "current_state": version.state, "expected_state": expected_state},
            refusal=Refusal.of(principal, f"version.{action}", "version", version.id),
        )
    move = check_move(version, to=to, action=action, principal=principal)
    version.state = move.to_state.value
    session.flush()
    if audited:
        audit.record(
            session,
            principal,
            action=f"version.{action}",
            subject_type="version",
            subject_id=version.id,
            payload={"from": move.from_state.value, "to": move.to_state.value, "reason": reason, **(payload or {})},
        )
    metrics.TRANSITIONS.labels(from_state=move.from_state.value, to_state=move.to_state.value, action=action).inc()
    return version
