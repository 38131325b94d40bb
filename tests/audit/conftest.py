"""Fixtures for the audit tests: signing keys, scratch databases, and export-file surgery helpers.

Concurrency and CLI tests commit, and audit rows can never be deleted, so they run in a
scratch database of their own (created, migrated and dropped here) instead of the run's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine

from governance import migrate
from governance.db import make_engine


@pytest.fixture()
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture()
def public_key(signing_key: Ed25519PrivateKey) -> Ed25519PublicKey:
    return signing_key.public_key()


def _admin_and_base(url: str) -> tuple[str, str, str]:
    base, _, query = url.partition("?")
    q = f"?{query}" if query else ""
    return base.replace("postgresql+psycopg://", "postgresql://") + q, base.rsplit("/", 1)[0], q


@pytest.fixture()
def scratch_db(engine: Engine) -> Iterator[Callable[[], str]]:
    """A factory of fresh migrated databases (URLs); all are dropped after the test."""
    admin, base, q = _admin_and_base(engine.url.render_as_string(hide_password=False))
    made: list[str] = []

    def make() -> str:
        name = f"govern_audit_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        made.append(name)
        url = f"{base}/{name}{q}"
        eng = make_engine(url)
        try:
            migrate.upgrade(eng)
        finally:
            eng.dispose()
        return url

    yield make
    from governance.db import engine_for

    engine_for.cache_clear()  # the CLI's cached engines point at these databases
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in made:
            conn.execute(f'drop database if exists "{name}" with (force)')


# --- export-file surgery -------------------------------------------------------------


def read_lines(path: Path) -> list[str]:
    # split on "\n" only: str.splitlines() would also split inside strings holding U+0085 or U+2028
    with path.open(encoding="utf-8", newline="\n") as f:
        return list(f)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="package")
def engine(database_url: str) -> Iterator[Engine]:
    """The audit tests' own database: they verify whole chains and checkpoints, which rows
    and keys written by other test packages into the run's shared database would disturb."""
    admin, base, q = _admin_and_base(database_url)
    name = f"govern_audit_pkg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    eng = make_engine(f"{base}/{name}{q}")
    migrate.upgrade(eng)
    yield eng
    eng.dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
