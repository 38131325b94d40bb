"""``govern services`` and ``govern db``: bootstrap commands that talk to the servers directly."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from governance import embedded, migrate
from governance.cli.common import clear_errors, console
from governance.db import check_database, engine_for
from governance.settings import get_settings

services_app = typer.Typer(
    help="Embedded PostgreSQL + Redis (used when the GOVERN_ URLs are unset).", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)


@services_app.command("up")
@clear_errors
def services_up() -> None:
    """Start the embedded PostgreSQL and Redis (idempotent)."""
    t0 = time.monotonic()
    infos = embedded.up(get_settings())
    for info in infos:
        how = f"embedded, pid {info.pid}" if info.managed else "configured"
        console.print(f"[green]up[/] {info.name:<11} {info.url}  ({how})", highlight=False)
    console.print(f"ready in {time.monotonic() - t0:.1f} s")


@services_app.command("down")
@clear_errors
def services_down() -> None:
    """Stop the embedded servers started by `services up`."""
    stopped = embedded.down(get_settings())
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@services_app.command("status")
@clear_errors
def services_status() -> None:
    """Say what runs where."""
    table = Table("service", "where", "state")
    for row in embedded.status(get_settings()):
        table.add_row(*row)
    console.print(table)


@db_app.command("upgrade")
@clear_errors
def db_upgrade(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Apply migrations (alembic upgrade head). Starts the embedded servers if no URL is set."""
    settings = get_settings()
    if not settings.database_url:
        embedded.up(settings)
    engine = engine_for(embedded.resolve_database_url(settings))
    check_database(engine)
    migrate.upgrade(engine, revision)
    console.print(f"database at revision {migrate.current(engine)}")


@db_app.command("downgrade")
@clear_errors
def db_downgrade(revision: str = typer.Argument(..., help="target revision, e.g. base")) -> None:
    """Revert migrations down to REVISION."""
    engine = engine_for(embedded.resolve_database_url(get_settings()))
    check_database(engine)
    migrate.downgrade(engine, revision)
    console.print(f"database at revision {migrate.current(engine) or 'base'}")
