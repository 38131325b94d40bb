"""The database enforces the domain's invariants itself, not only the Python code."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from governance import migrate
from governance.models import Adapter, BaseModel_, Deployment, Policy, TokenVersion, User

DIGEST = "a" * 64


def _world(session: Session) -> tuple[Deployment, Adapter, User, BaseModel_]:
    user = User(name="eng", role="ml_engineer")
    base = BaseModel_(name="tiny", weights_digest=DIGEST, tokenizer_digest="b" * 64, config={})
    policy = Policy(sha256="c" * 64, content="gate: {}")
    session.add_all([user, base, policy])
    session.flush()
    dep = Deployment(name="prod", base_model_id=base.id, policy_id=policy.id)
    adapter = Adapter(name="house", base_model_id=base.id)
    session.add_all([dep, adapter])
    session.flush()
    return dep, adapter, user, base


def _version(session: Session, n: int, adapter: Adapter, user: User, base: BaseModel_, **kw: object) -> TokenVersion:
    v = TokenVersion(
        adapter_id=adapter.id,
        base_model_id=base.id,
        sha256=f"{n:064x}",
        artifact=b"x",
        size_bytes=1,
        manifest={},
        n_tokens=1,
        param_count=846,
        submitted_by=user.id,
        **kw,
    )
    session.add(v)
    session.flush()
    return v


def test_database_refuses_second_active_version_per_deployment(session: Session) -> None:
    dep, adapter, user, base = _world(session)
    _version(session, 1, adapter, user, base, state="active", deployment_id=dep.id)
    with pytest.raises(IntegrityError, match="uq_token_versions_one_active"), session.begin_nested():
        _version(session, 2, adapter, user, base, state="active", deployment_id=dep.id)
    # another state on the same deployment is fine
    _version(session, 3, adapter, user, base, state="superseded", deployment_id=dep.id)


def test_database_refuses_unknown_state_and_duplicate_sha(session: Session) -> None:
    _, adapter, user, base = _world(session)
    with pytest.raises(IntegrityError, match="ck_token_versions_state_known"), session.begin_nested():
        _version(session, 1, adapter, user, base, state="shipped")
    _version(session, 2, adapter, user, base)
    with pytest.raises(IntegrityError, match="uq_token_versions_sha256"), session.begin_nested():
        _version(session, 2, adapter, user, base)


def test_database_refuses_unknown_role_and_dangling_foreign_key(session: Session) -> None:
    with pytest.raises(IntegrityError, match="ck_users_role_known"), session.begin_nested():
        session.add(User(name="x", role="superuser"))
        session.flush()
    with pytest.raises(IntegrityError, match="fk_"), session.begin_nested():
        session.add(Adapter(name="orphan", base_model_id=999_999))
        session.flush()


def test_audit_log_rejects_update_delete_truncate(session: Session) -> None:
    from governance.audit.service import append

    append(session, actor="system:test", action="test", subject_type="none", subject_id="-", payload={"a": 1})
    for stmt in ("update audit_log set actor = 'x'", "delete from audit_log", "truncate audit_log"):
        with pytest.raises(Exception, match="append-only"), session.begin_nested():
            session.execute(text(stmt))


def test_downgrade_to_base_and_upgrade_again(engine: Engine) -> None:
    # run on a scratch database so the shared one stays intact
    import uuid

    import psycopg

    from governance.db import make_engine

    name = f"govern_mig_{uuid.uuid4().hex[:8]}"
    base_url, _, query = engine.url.render_as_string(hide_password=False).partition("?")
    admin = base_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin + (f"?{query}" if query else ""), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = base_url.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    scratch = make_engine(url)
    try:
        migrate.upgrade(scratch)
        assert migrate.current(scratch) is not None
        migrate.downgrade(scratch, "base")
        assert migrate.current(scratch) is None
        with scratch.connect() as conn:
            left = conn.execute(text("select count(*) from pg_tables where schemaname = 'public'")).scalar()
        assert left == 1  # only alembic_version remains
        migrate.upgrade(scratch)
        assert migrate.current(scratch) == "0001" or migrate.current(scratch) is not None
    finally:
        scratch.dispose()
        with psycopg.connect(admin + (f"?{query}" if query else ""), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
