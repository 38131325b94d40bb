"""Request plumbing of the dashboard: the transaction, the signed-in person, CSRF, rendering.

Each request is one unit of work, as in the API: the route runs inside a transaction
that commits before the response is sent; a refused governed action is rolled back and
its ``denied`` entry written on its own (`governance.refusals.record_refusal`), and
outbox rows are published right after the commit. The engine and the outbox publisher
are the host API's (``app.state.engine`` / ``app.state.publish_outbox``), found through
the parent application that `dashboards.app.install` records.

Who is signed in comes from the signed session cookie (`dashboards.security`); the key
it names is re-checked on every request, so a revoked key or a disabled user is signed
out at once, and a role change applies at the next click.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dashboards.security import CSRF_FIELD, SESSION_COOKIE, BadSignature, UiSession, tokens_match
from governance.api.deps import transaction
from governance.auth.service import principal_for_key_prefix
from governance.db import get_engine as default_engine
from governance.errors import DomainError
from governance.gates.report import format_number, rule_in_words
from governance.outbox.service import Outgoing
from governance.principal import Principal
from governance.roles import Role, allowed
from governance.settings import get_settings

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
UI_ROLES = allowed("ui.sign_in")

env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["num"] = format_number
env.filters["rule"] = rule_in_words


def _ts(value: Any) -> str:
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%S UTC"))
    return "—" if value is None else str(value)


env.filters["ts"] = _ts


class LoginRequired(Exception):
    """No valid session: pages redirect to sign-in, form posts answer 401."""


class CsrfRejected(Exception):
    """A form post without the session's CSRF token."""


class PageForbidden(DomainError):
    status, code = 403, "forbidden"


def parent_app(request: Request) -> Any:
    return getattr(request.app.state, "parent", None) or request.app


def get_engine(request: Request) -> Engine:
    engine = getattr(parent_app(request).state, "engine", None)
    if engine is None:
        engine = default_engine()
    return engine  # type: ignore[no-any-return]


def ui_session(request: Request) -> Iterator[Session]:
    publish = getattr(parent_app(request).state, "publish_outbox", None)

    def publish_quietly(outgoing: Outgoing) -> None:
        if not callable(publish):
            return
        try:
            publish(outgoing)
        except Exception:  # the periodic sweep sends it later; the change itself committed
            log.exception("publishing the outbox after a dashboard action failed")

    yield from transaction(get_engine(request), publish_quietly)


SessionDep = Annotated[Session, Depends(ui_session, scope="function")]


def session_secret() -> str:
    return get_settings().session_secret.get_secret_value()


def read_ui_session(request: Request) -> UiSession | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        return UiSession.from_cookie(session_secret(), raw)
    except BadSignature:
        return None


def principal_for(session: Session, ui: UiSession) -> Principal | None:
    """The person a session cookie names, if the key is still valid (the auth service's rules)
    and the role may sign in here."""
    principal = principal_for_key_prefix(session, prefix=ui.key_prefix, user_id=ui.user_id)
    if principal is None or principal.role not in UI_ROLES:
        return None
    return principal


@dataclass(frozen=True)
class Viewer:
    """The signed-in person and their session (for the CSRF token of the forms)."""

    principal: Principal
    ui: UiSession

    @property
    def csrf(self) -> str:
        return self.ui.csrf

    def has(self, *roles: Role | str) -> bool:
        return self.principal.role in {str(getattr(r, "value", r)) for r in roles}

    def may(self, action: str) -> bool:
        """Whether the table (`governance.roles.PERMISSIONS`) lets this person's role do the action."""
        return self.has(*allowed(action))


def get_viewer(request: Request, session: SessionDep) -> Viewer:
    ui = read_ui_session(request)
    principal = principal_for(session, ui) if ui is not None else None
    if ui is None or principal is None:
        raise LoginRequired()
    request.state.principal = principal
    return Viewer(principal, ui)


ViewerDep = Annotated[Viewer, Depends(get_viewer, scope="function")]


async def check_csrf(request: Request) -> None:
    """Every dashboard form post carries the session's CSRF token; anything else is refused."""
    ui = read_ui_session(request)
    if ui is None:
        raise LoginRequired()
    form = await request.form()
    presented = form.get(CSRF_FIELD)
    header = request.headers.get("x-csrf-token")
    if not (tokens_match(ui.csrf, presented if isinstance(presented, str) else None) or tokens_match(ui.csrf, header)):
        raise CsrfRejected()


CsrfDep = Depends(check_csrf)


def require(viewer: Viewer, roles: Collection[Role], what: str) -> None:
    """Page-level role check with the API's wording (the services re-check every action)."""
    if not viewer.has(*roles):
        raise PageForbidden(
            f"role {viewer.principal.role} may not {what} (allowed: {', '.join(sorted(r.value for r in roles))})"
        )


def render(
    request: Request, template: str, viewer: Viewer | None = None, *, http_status: int = 200, **ctx: Any
) -> HTMLResponse:
    base = str(request.scope.get("root_path", "")).rstrip("/")
    csrf = ctx.pop("csrf", None) or (viewer.csrf if viewer else None)
    html = env.get_template(template).render(
        request=request,
        viewer=viewer,
        csrf=csrf,
        ui=base,
        static=f"{base}/static",
        **ctx,
    )
    return HTMLResponse(html, status_code=http_status)
