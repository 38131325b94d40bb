"""As the application's role (INSERT/SELECT only, not the owner) the audit table cannot be rewritten.

The role and its grants are created inside the test's transaction, so they vanish with it.
This is the deployment recipe of docs/audit-roles.md, exercised.
"""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import Session

from governance.audit.service import append, write_checkpoint


@pytest.fixture()
def app_role(session: Session) -> str:
    role = f"govern_app_{uuid.uuid4().hex[:8]}"
    try:
        with session.begin_nested():
            session.execute(text(f'create role "{role}" nologin'))
    except ProgrammingError:
        pytest.skip("the test database user may not create roles")
    session.execute(text(f'grant select, insert on audit_log, audit_checkpoints to "{role}"'))
    session.execute(text(f'grant usage on sequence audit_checkpoints_id_seq to "{role}"'))
    session.execute(text(f'set local role "{role}"'))
    return role


def test_app_role_appends_but_cannot_rewrite(session: Session, app_role: str, signing_key: Ed25519PrivateKey) -> None:
    assert session.execute(text("select current_user")).scalar() == app_role
    entry = append(session, actor="user:app", action="test.role", subject_type="none", subject_id="-")
    write_checkpoint(session, key=signing_key, reason="test")
    assert entry.seq >= 1
    refused = [
        "update audit_log set actor = 'user:mallory'",
        "delete from audit_log",
        "truncate audit_log",
        "alter table audit_log disable trigger audit_log_no_update_delete",
        "drop trigger audit_log_no_truncate on audit_log",
        "drop table audit_log",
        "update audit_checkpoints set head_hash = repeat('0', 64)",
        "delete from audit_checkpoints",
        "truncate audit_checkpoints",
    ]
    for stmt in refused:
        with pytest.raises(DBAPIError) as info, session.begin_nested():
            session.execute(text(stmt))
        msg = str(info.value.orig).lower()
        assert "permission denied" in msg or "must be owner" in msg, (stmt, msg)


def test_owner_is_stopped_by_the_triggers(session: Session) -> None:
    append(session, actor="user:owner", action="test.role", subject_type="none", subject_id="-")
    for stmt in ("update audit_log set actor = 'x'", "delete from audit_log", "truncate audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
            session.execute(text(stmt))
