"""Users and keys (admins): every user with their keys, disable and enable a user, rotate a key.

A rotation's new key is shown once, on the page that answers the form post (never in a
redirect URL); the old key keeps working for the overlap chosen in the form. The services
do the work and the audit (`governance.auth.service`), and re-check the role.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from dashboards.deps import CsrfDep, SessionDep, Viewer, ViewerDep, render, require
from dashboards.pages.common import DONE_MESSAGES, redirect
from governance.auth import service as auth
from governance.roles import allowed

router = APIRouter()
ADMIN_ROLES = allowed("user.disable", "user.enable", "key.rotate")
# the overlaps the form offers, in seconds (the service refuses more than 7 days anyway)
OVERLAPS = {0: "none: the old key stops now", 3600: "1 hour", 86_400: "1 day", 7 * 86_400: "7 days"}


def _page(request: Request, session: SessionDep, viewer: Viewer, **extra: Any) -> Response:
    require(viewer, ADMIN_ROLES, "manage users and keys")
    users = auth.list_users(session)
    rows = auth.list_keys(session)
    scopes = auth.key_scopes(session, key_ids={k.id for k, _ in rows})
    keys_of: dict[int, list[Any]] = {}
    for key, user in rows:
        keys_of.setdefault(user.id, []).append(key)
    return render(
        request,
        "users.html",
        viewer,
        users=users,
        keys_of=keys_of,
        scopes=scopes,
        overlaps=OVERLAPS,
        **extra,
    )


@router.get("/users")
def user_list(request: Request, session: SessionDep, viewer: ViewerDep, done: str | None = None) -> Response:
    return _page(request, session, viewer, done=DONE_MESSAGES.get(done or ""))


@router.post("/users/{name}/disable", dependencies=[CsrfDep])
def disable(request: Request, name: str, session: SessionDep, viewer: ViewerDep) -> Response:
    auth.set_disabled(session, name=name, disabled=True, principal=viewer.principal)
    return redirect(request, "/users", done="user_disabled")


@router.post("/users/{name}/enable", dependencies=[CsrfDep])
def enable(request: Request, name: str, session: SessionDep, viewer: ViewerDep) -> Response:
    auth.set_disabled(session, name=name, disabled=False, principal=viewer.principal)
    return redirect(request, "/users", done="user_enabled")


@router.post("/keys/{prefix}/rotate", dependencies=[CsrfDep])
def rotate(
    request: Request, prefix: str, session: SessionDep, viewer: ViewerDep, overlap: Annotated[int, Form()] = 3600
) -> Response:
    rotation = auth.rotate_key(session, prefix=prefix, principal=viewer.principal, overlap=timedelta(seconds=overlap))
    return _page(request, session, viewer, rotated=rotation)
