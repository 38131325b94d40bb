"""``govern users create NAME --role ROLE`` (bootstrap, direct to the database) and ``users keys``.

Creating a user talks to the database directly, so the first admin can exist before any
key does; the audit entry names the operating-system user as ``system:cli/<user>``.
Key management by admins goes through the API, so the log knows which admin acted.
"""

from __future__ import annotations

import getpass
import re

import typer

from governance.auth import service
from governance.cli.common import clear_errors, console, fail
from governance.cli.deploy_cmds import _parse_time, api_errors, client
from governance.db import get_engine, unit_of_work
from governance.errors import DomainError
from governance.roles import ROLE_VALUES

users_app = typer.Typer(help="Users and API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (admins, through the API).", no_args_is_help=True)
users_app.add_typer(keys_app, name="keys")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@users_app.command("create")
@clear_errors
def create(
    name: str = typer.Argument(..., help="user name (no spaces)"),
    role: str = typer.Option(..., "--role", help=f"one of: {', '.join(ROLE_VALUES)}"),
) -> None:
    """Create a user and print its API key once (store it now: only its hash is kept)."""
    _check_user_name(name)
    if role not in ROLE_VALUES:
        fail(f"unknown role {role!r}; use one of: {', '.join(ROLE_VALUES)}")
    try:
        with unit_of_work(get_engine()) as session:
            _, key = service.create_user(session, name=name, role=role, actor=f"system:cli/{_os_user()}")
    except DomainError as exc:
        fail(exc.message)
    console.print(f"created user [bold]{name}[/] ({role}). API key (shown once):", highlight=False)
    print(key)


def _check_user_name(name: str) -> None:
    if not name or len(name) > 100 or any(c.isspace() for c in name) or "\x00" in name:
        fail(f"user name {name!r} is not valid: 1-100 characters without spaces")


@keys_app.command("create")
@api_errors
def keys_create(
    user: str = typer.Argument(..., help="user name"),
    expires: str | None = typer.Option(None, "--expires", help="expiry, ISO 8601 with timezone"),
) -> None:
    """Issue another key for a user (admins); printed once."""
    _check_user_name(user)
    with client() as c:
        k = c.create_key(user, expires_at=_parse_time(expires, "--expires"))
    console.print(f"new key {k['key_prefix']} for {user} ({k['role']}), shown once:", highlight=False)
    print(k["api_key"])


@keys_app.command("revoke")
@api_errors
def keys_revoke(prefix: str = typer.Argument(..., help="the key's 8-character prefix")) -> None:
    """Revoke a key (admins); it stops working on the next request."""
    if not re.fullmatch(r"[a-z0-9]{8}", prefix):
        fail(f"key prefix {prefix!r} is not valid: the 8 lowercase letters or digits after gov_")
    with client() as c:
        c.revoke_key(prefix)
    console.print(f"revoked key {prefix}", highlight=False)
