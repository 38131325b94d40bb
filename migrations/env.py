"""Alembic environment: the URL comes from the settings (or a connection handed in by the caller)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from governance.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from governance.db import make_engine
    from governance.embedded import resolve_database_url

    url = config.get_main_option("sqlalchemy.url") or resolve_database_url()
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `govern db upgrade` against a database")
run_migrations_online()
