"""The one table of action -> roles (`governance.roles.PERMISSIONS`) drives every consumer.

Routes: each route's role check holds exactly its action's row. Lifecycle: each move's roles
are the row ``version.<action>``. Services: their role constants and checks read the table.
Docs: the table in docs/audit-roles.md equals the code's. (The dashboard's buttons are
checked against the table in tests/dashboards/test_roles_table_ui.py.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from governance.api.app import PUBLIC_PATHS
from governance.api.deps import RequireRole
from governance.deployments import service as deployments
from governance.errors import Forbidden
from governance.principal import Principal, require_allowed
from governance.registry import lifecycle
from governance.roles import PERMISSIONS, Role, allowed

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-roles.md"

# governance/api/audit_routes.py still lists its roles itself (converted after the merge);
# its routes are held to the table by name here


def _guards(route: APIRoute) -> list[RequireRole]:
    found, stack = [], list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, RequireRole):
            found.append(dep.call)
        stack.extend(dep.dependencies)
    return found


def test_every_route_admits_exactly_its_actions_row(app: Any) -> None:
    wrong = []
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        if not isinstance(route, APIRoute) or (ctx.path or route.path) in PUBLIC_PATHS:
            continue
        for method in route.methods:
            key = (method, ctx.path or route.path)
            for guard in _guards(route):
                action = guard.action
                if action is None or guard.roles != allowed(action):
                    wrong.append(f"{key}: action={action} roles={sorted(guard.roles)}")
    assert not wrong, wrong


def test_approve_route_uses_the_approve_row(app: Any) -> None:
    route = next(
        ctx.original_route
        for ctx in iter_route_contexts(app.routes)
        if (ctx.path or getattr(ctx.original_route, "path", "")) == "/v1/versions/{version_id}/approve"
    )
    assert isinstance(route, APIRoute)
    (guard,) = _guards(route)
    assert guard.action == "version.approve"
    assert guard.roles == allowed("version.approve") == {Role.compliance_officer, Role.admin}


def test_every_lifecycle_move_holds_its_version_row() -> None:
    for move in lifecycle.MOVES:
        assert move.roles == allowed(f"version.{move.action}"), move
    approve = lifecycle.find_move("gate_passed", "approved", "approve")
    assert approve is not None and approve.roles == allowed("version.approve")


def test_the_services_read_the_table() -> None:
    assert set(deployments.ADMINS) == allowed("deployment.create")
    assert set(deployments.PROMOTERS) == allowed("deployment.promote")
    assert set(deployments.ROLLBACKERS) == allowed("deployment.rollback", "deployment.auto_rollback")
    assert set(deployments.FREEZERS) == allowed("deployment.freeze") == allowed("deployment.unfreeze")


@pytest.mark.parametrize("action", ["alert.ack", "version.submit", "user.create"])
def test_require_allowed_admits_exactly_the_row(action: str) -> None:
    for role in Role:
        p = Principal(name="x", role=role.value, user_id=1, key_prefix="abcdefgh")
        if role in allowed(action):
            require_allowed(p, action, "thing", 1)
        else:
            with pytest.raises(Forbidden) as exc:
                require_allowed(p, action, "thing", 1)
            assert exc.value.refusal is not None and exc.value.refusal.attempted == action


def test_allowed_unions_rows_and_refuses_unknown_names() -> None:
    assert allowed("deployment.rollback", "deployment.auto_rollback") == {
        Role.compliance_officer,
        Role.admin,
        Role.service,
    }
    with pytest.raises(KeyError):
        allowed("version.teleport")
    with pytest.raises(ValueError):
        allowed()
    assert all(p.why and p.roles for p in PERMISSIONS.values())


def test_the_docs_table_is_the_codes_table() -> None:
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([a-z_, ]+) \| (.+?) \|$", DOC.read_text(), flags=re.M)
    documented = {a: ({r.strip() for r in roles.split(",")}, why) for a, roles, why in rows}
    in_code = {a: ({r.value for r in p.roles}, p.why) for a, p in PERMISSIONS.items()}
    assert documented == in_code
