"""Request dependencies: the session (one transaction per request), the principal, roles, paging.

`SessionDep` opens a transaction around the route function and commits it before the
response is sent (dependency scope "function"), so a failed commit is an error
response, never a lost success. A refused governed action is rolled back and then its
``denied`` entry is written in a transaction of its own. After a commit that wrote
outbox rows, they are sent right away from memory (`outbox.publish_committed`; the
periodic sweep is the safety net).

Every route declares its action with `may("<action>")`, which admits the roles
`governance.roles.PERMISSIONS` gives it; a test walks the app's routes and fails on a
route without a role check or with roles other than its action's row. A route whose path
names a deployment declares it with `may_on_deployment`, which also refuses a scoped
service key bound to other deployments (`governance.principal.require_deployment`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from governance.api.guard import Guard
from governance.auth.service import authenticate
from governance.db import session_factory
from governance.errors import DomainError, Forbidden, Refusal, Unauthorized
from governance.outbox import service as outbox
from governance.principal import Principal, require_deployment
from governance.refusals import record_refusal
from governance.roles import Role, allowed

log = logging.getLogger(__name__)

MAX_PAGE = 500
MAX_OFFSET = 100_000  # deeper pages cost a scan; filter instead (docs/limits.md)


def get_engine(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def transaction(engine: Engine, publish: Callable[[outbox.Outgoing], object] | None) -> Iterator[Session]:
    """One request's unit of work: commit on success; a refused action rolls back and is
    audited as denied in its own transaction; outbox rows are published after the commit."""
    session = session_factory(engine)()
    try:
        with session.begin():
            yield session
    except DomainError as exc:
        record_refusal(engine, exc)
        raise
    finally:
        outgoing = outbox.take_outgoing(session)
        session.close()
    if outgoing and publish is not None:  # only reached once the commit returned
        publish(outgoing)


def get_session(request: Request) -> Iterator[Session]:
    yield from transaction(get_engine(request), request.app.state.publish_outbox)


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _raw_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def get_guard(request: Request) -> Guard:
    return request.app.state.guard_fn()  # type: ignore[no-any-return]


def get_principal(request: Request, session: SessionDep) -> Principal:
    """The caller's principal; failed keys are counted, throttled and audited (`governance.api.guard`).

    A presented key from an address that failed too often is refused (429) before the
    database is asked; a failed key is audited at most once per window per address and
    prefix. An authenticated write or ingest is counted against the key's budget. A service
    key bound to no deployment is refused (403, audited) unless the operator opted in
    (``GOVERN_ALLOW_UNSCOPED_SERVICE_KEYS``).
    """
    raw = _raw_key(request)
    guard = get_guard(request)
    address = request.client.host if request.client else "unknown"
    if raw:
        guard.check_address_failures(address)
    principal = authenticate(session, raw_key=raw) if raw else None
    if principal is None:
        if raw:
            guard.record_failure(get_engine(request), address=address, raw_key=raw, via="api")
        # one answer for missing, unknown, revoked and expired keys
        raise Unauthorized("a valid API key is required (Authorization: Bearer gov_...)")
    if principal.unscoped_service_key and not request.app.state.settings.allow_unscoped_service_keys:
        raise Forbidden(
            "this service key is bound to no deployment; issue a scoped key (govern users keys create USER "
            "--deployment NAME) or set GOVERN_ALLOW_UNSCOPED_SERVICE_KEYS=true",
            refusal=Refusal.of(principal, "use unscoped service key", "key", principal.key_prefix or "-"),
        )
    guard.limit_key(request.method, request.url.path, principal.key_prefix or principal.actor)
    request.state.principal = principal
    return principal


CurrentUser = Annotated[Principal, Depends(get_principal, scope="function")]


class RequireRole:
    """Dependency that admits only the listed roles; a refusal is a 403 with a ``denied`` entry.

    ``action`` names the row of `governance.roles.PERMISSIONS` the roles came from (`may`);
    ``deployment_param`` names the path parameter holding the deployment a scoped key must hold.
    """

    def __init__(self, *roles: Role, action: str | None = None, deployment_param: str | None = None) -> None:
        if not roles:
            raise ValueError("RequireRole needs at least one role")
        self.roles = frozenset(roles)
        self.action = action
        self.deployment_param = deployment_param

    def __call__(self, request: Request, principal: CurrentUser) -> Principal:
        if principal.role not in self.roles:
            route = request.scope.get("route")
            path = getattr(route, "path", request.url.path)
            raise Forbidden(
                f"role {principal.role} may not call {request.method} {path} "
                f"(allowed: {', '.join(sorted(r.value for r in self.roles))})",
                refusal=Refusal.of(principal, f"{request.method} {path}", "route", request.url.path),
            )
        if self.deployment_param is not None:
            deployment = request.path_params.get(self.deployment_param)
            require_deployment(principal, deployment, self.action or f"{request.method} {request.url.path}")
        return principal


def role(*roles: Role) -> object:
    """``principal: Annotated[Principal, role(Role.admin)]`` in a route signature."""
    return Depends(RequireRole(*roles), scope="function")


def may(action: str) -> object:
    """``principal: Annotated[Principal, may("version.approve")]``: the roles the table gives the action."""
    return Depends(RequireRole(*sorted(allowed(action)), action=action), scope="function")


def may_on_deployment(action: str, param: str = "name") -> object:
    """`may` for a route whose path parameter ``param`` names a deployment: a scoped key must hold it."""
    return Depends(RequireRole(*sorted(allowed(action)), action=action, deployment_param=param), scope="function")


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def get_page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"at most {MAX_PAGE}")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"at most {MAX_OFFSET}")] = 0,
) -> Page:
    return Page(limit, offset)


PageDep = Annotated[Page, Depends(get_page)]
