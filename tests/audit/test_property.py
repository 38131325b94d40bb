"""Arbitrary payloads survive append -> read back -> export -> offline verify with zero mismatches."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.audit.canonical import body_from_stored, canonical_json, chain_hash, entry_body, format_ts
from governance.audit.export import iter_export_lines, prepare_export
from governance.audit.models import AuditEntry
from governance.audit.service import append
from governance.audit.verify import verify_export

# PostgreSQL text cannot hold NUL; everything else of Unicode (minus lone surrogates) is fair game
text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=zones),
)
payloads = st.dictionaries(
    text,
    st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=12
    ),
    max_size=6,
)

KEY = Ed25519PrivateKey.generate()


def _jsonable(value: Any) -> Any:
    return json.loads(canonical_json(value))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads, actor=text.map(lambda s: "user:" + s), subject_id=text)
def test_payload_round_trip_export_verify(
    session: Session, payload: dict[str, Any], actor: str, subject_id: str
) -> None:
    entry = append(
        session, actor=actor, action="test.property", subject_type="thing", subject_id=subject_id, payload=payload
    )
    seq = entry.seq
    session.expunge_all()
    row = session.execute(select(AuditEntry).where(AuditEntry.seq == seq)).scalar_one()
    # read back: the stored text is the canonical encoding, and it means the same value
    assert row.payload == canonical_json(payload)
    assert json.loads(row.payload) == _jsonable(payload)
    # the hash recomputes from the row, both ways of building the body agree
    body = entry_body(
        seq=row.seq,
        ts=row.ts,
        actor=row.actor,
        actor_key_id=row.actor_key_id,
        action=row.action,
        subject_type=row.subject_type,
        subject_id=row.subject_id,
        payload=json.loads(row.payload),
    )
    assert body == body_from_stored(
        seq=row.seq,
        ts=format_ts(row.ts),
        actor=row.actor,
        actor_key_id=row.actor_key_id,
        action=row.action,
        subject_type=row.subject_type,
        subject_id=row.subject_id,
        payload_text=row.payload,
    )
    assert chain_hash(row.prev_hash, body) == row.hash
    # export just this entry and verify it offline
    plan = prepare_export(session, key=KEY, actor="user:auditor", since=row.ts)
    assert plan.first_seq == seq and plan.count == 1
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "one.jsonl"
        path.write_text("".join(iter_export_lines(session, plan)), encoding="utf-8")
        result = verify_export(path, public_key=KEY.public_key())
        assert result.ok, result.summary()
        exported = json.loads(path.read_bytes().split(b"\n")[1])
    assert exported["entry"]["payload"] == _jsonable(payload)
    assert exported["entry"]["actor"] == actor and exported["entry"]["subject_id"] == subject_id
