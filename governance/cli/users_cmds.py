"""``govern users ...``: create (bootstrap, direct to the database), list, disable, enable,
rotate-key, and ``users keys list|create|revoke``.

Creating a user talks to the database directly, so the first admin can exist before any
key does; the audit entry names the operating-system user as ``system:cli/<user>``.
Everything else is an admin's (or, for the listings, an auditor's) call through the API,
so the log knows who acted. A service user's key is bound to the deployments named with
``--deployment`` (one or more; required for the service role).
"""

from __future__ import annotations

import getpass
import re
from datetime import timedelta
from typing import Any

import typer
from rich.table import Table

from governance.auth import service
from governance.cli.common import clear_errors, console, fail
from governance.cli.deploy_cmds import _parse_time, api_errors, client
from governance.db import get_engine, unit_of_work
from governance.errors import DomainError
from governance.roles import ROLE_VALUES, Role

users_app = typer.Typer(help="Users and API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (admins, through the API).", no_args_is_help=True)
users_app.add_typer(keys_app, name="keys")

_DEPLOYMENT_HELP = "service keys: a deployment the key may act on (repeat for more)"
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


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
    deployment: list[str] = typer.Option([], "--deployment", help=_DEPLOYMENT_HELP),
) -> None:
    """Create a user and print its API key once (store it now: only its hash is kept)."""
    _check_user_name(name)
    if role not in ROLE_VALUES:
        fail(f"unknown role {role!r}; use one of: {', '.join(ROLE_VALUES)}")
    _check_scope_options(role, deployment)
    try:
        with unit_of_work(get_engine()) as session:
            _, key = service.create_user(
                session, name=name, role=role, actor=f"system:cli/{_os_user()}", deployments=deployment
            )
    except DomainError as exc:
        fail(exc.message)
    scope = f", bound to {', '.join(sorted(set(deployment)))}" if deployment else ""
    console.print(f"created user [bold]{name}[/] ({role}{scope}). API key (shown once):", highlight=False)
    print(key)


def _check_user_name(name: str) -> None:
    if not name or len(name) > 100 or any(c.isspace() for c in name) or "\x00" in name:
        fail(f"user name {name!r} is not valid: 1-100 characters without spaces")


def _check_prefix(prefix: str) -> None:
    if not re.fullmatch(r"[a-z0-9]{8}", prefix):
        fail(f"key prefix {prefix!r} is not valid: the 8 lowercase letters or digits after gov_")


def _check_scope_options(role: str, deployments: list[str]) -> None:
    if role == Role.service.value and not deployments:
        fail("a service key must be bound to at least one deployment: add --deployment NAME")
    if role != Role.service.value and deployments:
        fail(f"only service keys are bound to deployments (role {role} takes no --deployment)")


def parse_duration(value: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``12h`` or ``7d``; at most the rotation overlap's 7 days."""
    m = _DURATION.fullmatch(value.strip().lower())
    if m is None:
        fail(f"--overlap must be a duration like 30m, 12h or 7d (got {value!r})")
    span = timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    if span > service.MAX_ROTATION_OVERLAP:
        fail(f"--overlap is at most {service.MAX_ROTATION_OVERLAP.days} days (got {value!r})")
    return span


@users_app.command("list")
@api_errors
def list_users() -> None:
    """Users, their roles, whether they are disabled, and their service keys bound to no deployment."""
    with client() as c:
        users: list[dict[str, Any]] = c.request("GET", "/v1/users")
    table = Table("user", "role", "disabled", "unscoped keys")
    for u in users:
        table.add_row(u["name"], u["role"], u["disabled_at"] or "", ", ".join(u["unscoped_keys"]))
    console.print(table)


@users_app.command("disable")
def disable(name: str = typer.Argument(..., help="user name")) -> None:
    """Disable a user (admins): every key of theirs stops at once, their web sessions end."""
    _set_disabled(name, "disable", "all their keys stop working now")


@users_app.command("enable")
def enable(name: str = typer.Argument(..., help="user name")) -> None:
    """Enable a disabled user again (admins): their unrevoked, unexpired keys work again."""
    _set_disabled(name, "enable", "their unrevoked, unexpired keys work again")


@api_errors
def _set_disabled(name: str, verb: str, outcome: str) -> None:
    _check_user_name(name)
    with client() as c:
        c.request("POST", f"/v1/users/{name}/{verb}")
    console.print(f"{verb}d user {name}: {outcome}", highlight=False)


@users_app.command("rotate-key")
@api_errors
def rotate_key(
    prefix: str = typer.Argument(..., help="the old key's 8-character prefix"),
    overlap: str = typer.Option(..., "--overlap", help="how long the old key keeps working: 0, 30m, 12h, 7d"),
    expires: str | None = typer.Option(None, "--expires", help="the new key's expiry, ISO 8601 with timezone"),
) -> None:
    """Issue a new key with the same user and deployments (admins); the old one works for the overlap."""
    _check_prefix(prefix)
    span = parse_duration(overlap)
    new_expiry = _parse_time(expires, "--expires")
    body = {"overlap_seconds": int(span.total_seconds()), "expires_at": new_expiry.isoformat() if new_expiry else None}
    with client() as c:
        k = c.request("POST", f"/v1/keys/{prefix}/rotate", json=body)
    console.print(
        f"new key {k['key_prefix']} for {k['user']}; old key {prefix} works until {k['old_key_expires_at']}. "
        "New key, shown once:",
        highlight=False,
    )
    print(k["api_key"])


@keys_app.command("list")
@api_errors
def keys_list(user: str | None = typer.Argument(None, help="user name; all users when left out")) -> None:
    """A user's keys (admins, auditors): prefix, deployments, expiry, revocation, last use."""
    if user is not None:
        _check_user_name(user)
    with client() as c:
        keys: list[dict[str, Any]] = c.request("GET", f"/v1/users/{user}/keys" if user else "/v1/keys")
    table = Table("prefix", "user", "deployments", "created", "expires", "revoked", "last used")
    for k in keys:
        scope = "UNSCOPED" if k["unscoped"] else ", ".join(k["deployments"] or []) or "-"
        table.add_row(k["prefix"], k["user"], scope, k["created_at"], k["expires_at"] or "", k["revoked_at"] or "",
                      k["last_used_at"] or "")
    console.print(table)


@keys_app.command("create")
@api_errors
def keys_create(
    user: str = typer.Argument(..., help="user name"),
    expires: str | None = typer.Option(None, "--expires", help="expiry, ISO 8601 with timezone"),
    deployment: list[str] = typer.Option([], "--deployment", help=_DEPLOYMENT_HELP),
) -> None:
    """Issue another key for a user (admins); printed once."""
    _check_user_name(user)
    with client() as c:
        k = c.create_key(user, expires_at=_parse_time(expires, "--expires"), deployments=deployment)
    console.print(f"new key {k['key_prefix']} for {user} ({k['role']}), shown once:", highlight=False)
    print(k["api_key"])


@keys_app.command("revoke")
@api_errors
def keys_revoke(prefix: str = typer.Argument(..., help="the key's 8-character prefix")) -> None:
    """Revoke a key (admins); it stops working on the next request."""
    _check_prefix(prefix)
    with client() as c:
        c.revoke_key(prefix)
    console.print(f"revoked key {prefix}", highlight=False)
