"""The one append path for every governed action (and every refusal of one).

``append`` runs inside the caller's transaction, so the entry commits with the change it
records or not at all. A transaction-scoped advisory lock serializes writers on the
chain head: no forks, and since the sequence number is taken under that lock from the
committed head, a rolled-back transaction leaves no gap.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from governance.audit.canonical import GENESIS_HASH, canonical_json, chain_hash, entry_body
from governance.audit.models import AuditEntry

# arbitrary constant naming "the audit chain head" among advisory locks
AUDIT_LOCK_KEY = 0x6A75_6469_7400


def _now() -> datetime:
    # PostgreSQL keeps microseconds; truncating here makes the round trip exact
    return datetime.now(UTC)


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str | int,
    payload: dict[str, Any] | None = None,
    actor_key_id: str | None = None,
) -> AuditEntry:
    """Append one entry to the chain inside the current transaction and return it."""
    payload_text = canonical_json(payload or {})
    session.execute(text("select pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
    head = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
    ts = _now()
    body = entry_body(
        seq=seq,
        ts=ts,
        actor=actor,
        actor_key_id=actor_key_id,
        action=action,
        subject_type=subject_type,
        subject_id=str(subject_id),
        payload=json.loads(payload_text),
    )
    entry = AuditEntry(
        seq=seq,
        ts=ts,
        actor=actor,
        actor_key_id=actor_key_id,
        action=action,
        subject_type=subject_type,
        subject_id=str(subject_id),
        payload=payload_text,
        prev_hash=prev,
        hash=chain_hash(prev, body),
    )
    session.add(entry)
    session.flush()
    return entry
