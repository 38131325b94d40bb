"""Database plumbing: the declarative base, engines, and one transaction per unit of work.

Service functions take a ``session`` and never commit; the edge (an HTTP request, a
Celery task, a CLI command) opens ``unit_of_work()`` and everything inside it commits
together or not at all. That is how a state change and its audit entry stay inseparable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from governance.embedded import resolve_database_url

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: DateTime(timezone=True)}


def utcnow() -> datetime:
    return datetime.now(UTC)


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached; the message says where and how to fix it."""


def make_engine(url: str, **kwargs: object) -> Engine:
    engine = create_engine(url, pool_pre_ping=True, future=True, **kwargs)  # type: ignore[arg-type]

    @event.listens_for(engine, "connect")
    def _utc(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # Timestamps are hashed into the audit chain; every session speaks UTC.
        with dbapi_conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")

    return engine


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine() -> Engine:
    return engine_for(resolve_database_url())


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=engine or get_engine(), expire_on_commit=False, future=True)


@contextmanager
def unit_of_work(engine: Engine | None = None) -> Iterator[Session]:
    """Open a session and a transaction; commit on success, roll back on any error."""
    session = session_factory(engine)()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


def check_database(engine: Engine) -> None:
    """Raise DatabaseUnavailable with one clear line if the database cannot be reached."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot reach PostgreSQL at {engine.url.render_as_string(hide_password=True)}: {reason}. "
            "Check GOVERN_DATABASE_URL, or unset it and run `govern services up`."
        ) from None
