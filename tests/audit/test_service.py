"""The in-database side: ``verify_chain_in_db`` (the dashboard's "verify now"), checkpoints, listing."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.orm import Session

from governance.audit.canonical import GENESIS_HASH, CanonicalError
from governance.audit.service import (
    append,
    checkpoint_record,
    head,
    latest_checkpoint,
    list_entries,
    verify_chain_in_db,
    write_checkpoint,
)
from governance.audit.signing import check_signed_checkpoint


def _fill(session: Session, n: int) -> list[int]:
    return [
        append(session, actor="user:eng", action="t.x", subject_type="thing", subject_id=i, payload={"i": i}).seq
        for i in range(n)
    ]


def _bypass_triggers(session: Session) -> None:
    # only the owner can do this, inside the test's (rolled back) transaction
    session.execute(text("alter table audit_log disable trigger audit_log_no_update_delete"))


def test_clean_chain_and_checkpoints_verify(session: Session, signing_key: Ed25519PrivateKey) -> None:
    _fill(session, 5)
    cp = write_checkpoint(session, key=signing_key, reason="schedule")
    size, head_hash = head(session)
    assert (cp.size, cp.head_hash) == (size, head_hash)
    assert latest_checkpoint(session).id == cp.id  # type: ignore[union-attr]
    assert check_signed_checkpoint(checkpoint_record(cp), signing_key.public_key()) is None
    _fill(session, 2)
    write_checkpoint(session, key=signing_key, reason="export", size=size - 1)
    check = verify_chain_in_db(session, public_key=signing_key.public_key())
    assert check.ok and check.size == size + 2 and check.checkpoints_checked >= 2, check
    assert check.as_dict()["ok"] is True
    with pytest.raises(ValueError, match="no such entry"):
        write_checkpoint(session, key=signing_key, size=size + 100)
    assert write_checkpoint(session, key=signing_key, size=0).head_hash == GENESIS_HASH


def test_altered_row_is_found(session: Session) -> None:
    seqs = _fill(session, 6)
    _bypass_triggers(session)
    session.execute(text("update audit_log set payload = :p where seq = :s"), {"p": '{"i":99}', "s": seqs[3]})
    check = verify_chain_in_db(session)
    assert not check.ok and check.bad_seq == seqs[3] and "altered" in check.reason  # type: ignore[operator]


def test_deleted_row_is_found(session: Session) -> None:
    seqs = _fill(session, 6)
    _bypass_triggers(session)
    session.execute(text("delete from audit_log where seq = :s"), {"s": seqs[2]})
    check = verify_chain_in_db(session)
    assert not check.ok and check.bad_seq == seqs[2] and "missing" in check.reason  # type: ignore[operator]


def test_truncated_log_below_a_checkpoint_and_forged_checkpoint_are_found(
    session: Session, signing_key: Ed25519PrivateKey
) -> None:
    seqs = _fill(session, 4)
    write_checkpoint(session, key=signing_key)
    _bypass_triggers(session)
    session.execute(text("delete from audit_log where seq = :s"), {"s": seqs[-1]})
    check = verify_chain_in_db(session)
    assert not check.ok and "beyond the log's end" in check.reason  # type: ignore[operator]


def test_checkpoint_signed_by_another_key_is_found(session: Session, signing_key: Ed25519PrivateKey) -> None:
    _fill(session, 2)
    write_checkpoint(session, key=Ed25519PrivateKey.generate())
    assert verify_chain_in_db(session).ok  # without a key only heads are compared
    check = verify_chain_in_db(session, public_key=signing_key.public_key())
    assert not check.ok and "not by the trusted public key" in check.reason  # type: ignore[operator]


def test_list_entries_filters_and_pages(session: Session) -> None:
    seqs = _fill(session, 5)
    append(session, actor="user:other", action="t.y", subject_type="thing", subject_id="z")
    page = list_entries(session, limit=2)
    assert [e.seq for e in page] == [seqs[-1] + 1, seqs[-1]]
    nxt = list_entries(session, limit=2, before_seq=page[-1].seq)
    assert [e.seq for e in nxt] == [seqs[-2], seqs[-3]]
    assert [e.subject_id for e in list_entries(session, actor="user:other")][:1] == ["z"]
    assert {e.subject_id for e in list_entries(session, subject_type="thing", subject_id="3")} == {"3"}
    with pytest.raises(ValueError, match="limit"):
        list_entries(session, limit=0)


def test_append_refuses_what_cannot_be_hashed_stably(session: Session) -> None:
    from datetime import datetime

    with pytest.raises(CanonicalError, match="non-finite"):
        append(session, actor="user:a", action="t", subject_type="x", subject_id=1, payload={"x": float("nan")})
    with pytest.raises(CanonicalError, match="naive datetime"):
        append(session, actor="user:a", action="t", subject_type="x", subject_id=1, payload={"t": datetime(2026, 1, 1)})
    e = append(session, actor="user:a", action="t", subject_type="x", subject_id=1, actor_key_id="")
    assert e.actor_key_id is None  # "" and None would be indistinguishable in CSV
