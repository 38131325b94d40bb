"""Who acts: the principal every service function is handed, and the role check on it.

A request's principal comes from its API key (`governance.auth.service.authenticate`);
automation acts as ``system:<component>``. A service key may be bound to named
deployments (`Principal.deployments`); `require_deployment` is the check every route and
service applies before acting on a deployment. Nothing here touches the database or a web
framework, so every room can take a principal without importing the auth room.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from governance.errors import Forbidden, Refusal
from governance.roles import Role, allowed


@dataclass(frozen=True)
class Principal:
    """Who acts: a user holding an API key, or an automated component (``system:<name>``)."""

    name: str
    role: str
    user_id: int | None = None
    key_prefix: str | None = None
    system: bool = False
    # the deployments a scoped service key may act on; None: not bound (people, automation,
    # and service keys issued before scoping, which work only where the operator opts in)
    deployments: frozenset[str] | None = None

    @property
    def actor(self) -> str:
        return f"system:{self.name}" if self.system else f"user:{self.name}"

    @classmethod
    def for_system(cls, component: str, role: str = Role.service.value) -> Principal:
        """The principal of automation, e.g. ``Principal.for_system("monitor/cusum")``."""
        return cls(name=component, role=role, system=True)

    @property
    def unscoped_service_key(self) -> bool:
        """A service key bound to no deployment (issued before scoping)."""
        return self.role == Role.service.value and not self.system and self.deployments is None

    def may_act_on(self, deployment: str | None) -> bool:
        """Whether the principal may act on this deployment (None: on no named deployment)."""
        return self.deployments is None or (deployment is not None and deployment in self.deployments)


def require_role(
    principal: Principal, roles: Iterable[Role], attempted: str, subject_type: str, subject_id: str | int
) -> None:
    """Refuse (403, audited by the edge) unless the principal holds one of the roles."""
    allowed = {r.value for r in roles}
    if principal.role not in allowed:
        raise Forbidden(
            f"role {principal.role} may not {attempted} (allowed: {', '.join(sorted(allowed))})",
            refusal=Refusal.of(principal, attempted, subject_type, subject_id),
        )


def require_allowed(principal: Principal, action: str, subject_type: str, subject_id: str | int) -> None:
    """`require_role` with the roles the table (`governance.roles.PERMISSIONS`) gives the action."""
    require_role(principal, allowed(action), action, subject_type, subject_id)


def require_deployment(
    principal: Principal, deployment: str | None, attempted: str, subject_type: str = "deployment",
    subject_id: str | int | None = None,
) -> None:
    """Refuse (403, audited by the edge) a scoped key acting outside its deployments."""
    if principal.may_act_on(deployment):
        return
    assert principal.deployments is not None
    where = f"deployment {deployment!r}" if deployment else "no named deployment"
    subject = subject_id if subject_id is not None else deployment or "-"
    raise Forbidden(
        f"this key may act only on deployment(s) {', '.join(sorted(principal.deployments))}, not on {where}",
        refusal=Refusal.of(principal, attempted, subject_type, subject),
    )
