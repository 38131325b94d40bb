"""The one append path for every governed action (and every refusal of one).

``append`` runs inside the caller's transaction, so the entry commits with the change it
records or not at all. A transaction-scoped advisory lock serializes writers on the
chain head: no forks, and since the sequence number is taken under that lock from the
committed head, a rolled-back transaction leaves no gap. (The head is read with a fresh
snapshot, so callers run at READ COMMITTED, the default; under REPEATABLE READ a stale
head makes the insert fail on the primary key rather than fork the chain.)

``record`` is ``append`` on behalf of a `Principal` (its actor and key prefix). Also
here: signed checkpoints (``write_checkpoint``, which the scheduler calls), the chain
check the dashboard runs (``verify_chain_in_db``) and the listing behind ``GET /v1/audit``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from governance.audit.canonical import (
    GENESIS_HASH,
    body_of_row,
    canonical_json,
    chain_hash,
    entry_body,
    format_ts,
)
from governance.audit.models import AuditCheckpoint, AuditEntry
from governance.audit.signing import check_signed_checkpoint, key_id_for, sign_checkpoint
from governance.principal import Principal

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
    # an empty key id would be indistinguishable from "no key" in the CSV export
    actor_key_id = actor_key_id or None
    payload_text = canonical_json(payload or {})
    session.execute(text("select pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
    top = session.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
    seq, prev = (top[0] + 1, top[1]) if top else (1, GENESIS_HASH)
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


def record(
    session: Session,
    principal: Principal,
    *,
    action: str,
    subject_type: str,
    subject_id: str | int,
    payload: dict[str, Any] | None = None,
) -> AuditEntry:
    """`append` on behalf of a principal: its actor and key prefix go into the entry."""
    return append(
        session,
        actor=principal.actor,
        actor_key_id=principal.key_prefix,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        payload=payload,
    )


def head(session: Session) -> tuple[int, str]:
    """(size, head hash) of the committed chain as this transaction sees it; (0, genesis) if empty."""
    row = session.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
    return (row[0], row[1]) if row else (0, GENESIS_HASH)


def list_entries(
    session: Session,
    *,
    limit: int = 100,
    before_seq: int | None = None,
    actor: str | None = None,
    action: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEntry]:
    """Newest first, keyset-paginated by ``before_seq`` (pass the last seq of the previous page)."""
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    stmt = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
    if before_seq is not None:
        stmt = stmt.where(AuditEntry.seq < before_seq)
    if actor is not None:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    if subject_type is not None:
        stmt = stmt.where(AuditEntry.subject_type == subject_type)
    if subject_id is not None:
        stmt = stmt.where(AuditEntry.subject_id == str(subject_id))
    if since is not None:
        stmt = stmt.where(AuditEntry.ts >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.ts < until)
    return list(session.scalars(stmt))


def checkpoint_record(row: AuditCheckpoint) -> dict[str, Any]:
    """The portable JSON form of a stored checkpoint (what ``govern audit verify --checkpoint`` reads)."""
    return {
        "record": "checkpoint",
        "size": row.size,
        "head_hash": row.head_hash,
        "time": format_ts(row.ts),
        "key_id": row.key_id,
        "signature": row.signature,
    }


def write_checkpoint(
    session: Session, *, key: Ed25519PrivateKey, reason: str = "schedule", size: int | None = None
) -> AuditCheckpoint:
    """Sign and store a checkpoint of the chain (the head, or the first ``size`` entries).

    The scheduler calls this with ``reason="schedule"``; exports with ``reason="export"``.
    Commits with the caller's transaction.
    """
    if size is None:
        size, head_hash = head(session)
    elif size == 0:
        head_hash = GENESIS_HASH
    else:
        found = session.scalar(select(AuditEntry.hash).where(AuditEntry.seq == size))
        if found is None:
            raise ValueError(f"cannot checkpoint at #{size}: the log has no such entry")
        head_hash = found
    now = _now()
    cp = sign_checkpoint(key, size=size, head_hash=head_hash, time=now)
    row = AuditCheckpoint(
        size=size, head_hash=head_hash, ts=now, key_id=cp["key_id"], signature=cp["signature"], reason=reason
    )
    session.add(row)
    session.flush()
    return row


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    return session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)).first()


@dataclass(frozen=True)
class ChainCheck:
    """Outcome of ``verify_chain_in_db``; ``as_dict()`` is ready for JSON/the dashboard."""

    ok: bool
    size: int
    head_hash: str
    checkpoints_checked: int
    bad_seq: int | None = None
    reason: str | None = None
    # checkpoints signed by a key that is not among the trusted ones (e.g. a key retired
    # before rotation whose public half is not kept here): their head hash was checked,
    # their signature could not be
    unverified_checkpoints: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Checkpoints:
    """The stored checkpoints by log size, matched against the recomputed head as the chain is walked."""

    def __init__(self, session: Session, keys: dict[str, Ed25519PublicKey], count_unknown_keys: bool) -> None:
        self.by_size: dict[int, list[AuditCheckpoint]] = {}
        for cp in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)):
            self.by_size.setdefault(cp.size, []).append(cp)
        self.keys, self.count_unknown_keys = keys, count_unknown_keys
        self.checked = self.unverified = 0

    def check(self, size: int, head_hash: str) -> str | None:
        """The first problem with the checkpoints taken at ``size``, or None."""
        for cp in self.by_size.pop(size, []):
            if cp.head_hash != head_hash:
                return f"checkpoint {cp.id} ({cp.reason}, {format_ts(cp.ts)}) records a different head hash"
            if self.keys:
                key = self.keys.get(cp.key_id)
                if key is None and self.count_unknown_keys:
                    self.unverified += 1
                elif key is None:
                    return f"checkpoint {cp.id}: signed by key {cp.key_id}, not by the trusted public key(s)"
                else:
                    problem = check_signed_checkpoint(checkpoint_record(cp), key)
                    if problem:
                        return f"checkpoint {cp.id}: {problem}"
            self.checked += 1
        return None


def _stored_row_problem(r: Any, expected_seq: int, prev: str) -> str | None:
    """Why stored row ``r`` does not continue the chain whose head is ``prev``, or None."""
    if r.seq != expected_seq:
        return f"entry #{expected_seq} is missing (next stored entry is #{r.seq})"
    if r.prev_hash != prev:
        return "prev_hash does not match the hash of the entry before it"
    body = body_of_row(r)
    if hashlib.sha256((prev + body).encode("utf-8")).hexdigest() != r.hash:
        return "stored hash does not match the stored content (row altered)"
    return None


def verify_chain_in_db(
    session: Session,
    *,
    public_key: Ed25519PublicKey | None = None,
    trusted_keys: Sequence[Ed25519PublicKey] = (),
    count_unknown_keys: bool = False,
) -> ChainCheck:
    """Recompute the whole chain from the stored rows and match it against the stored checkpoints.

    Stops at the first problem: a gap, a broken link, a hash that does not match the stored
    content, or a checkpoint whose head differs (or, given trusted public keys, whose
    signature does not verify under the key it names). A checkpoint naming a key that is
    not trusted here fails, unless ``count_unknown_keys`` (the dashboard's view, which shows
    the count as a warning): then it lands in ``unverified_checkpoints``. Keep retired
    public keys after a rotation so that their checkpoints stay verifiable. One streaming pass; constant
    memory apart from the checkpoints.
    """
    keys = {key_id_for(k): k for k in [*([public_key] if public_key is not None else []), *trusted_keys]}
    cps = _Checkpoints(session, keys, count_unknown_keys)

    def bad(seq: int | None, reason: str, size: int, head_hash: str) -> ChainCheck:
        return ChainCheck(False, size, head_hash, cps.checked, seq, reason, cps.unverified)

    prev, exp = GENESIS_HASH, 1
    problem = cps.check(0, prev)
    if problem:
        return bad(0, problem, 0, prev)
    last_seq = session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)) or 0
    for r in iter_rows(session, 1, last_seq):
        problem = _stored_row_problem(r, exp, prev)
        if problem:
            return bad(exp, problem, exp - 1, prev)
        prev = r.hash
        if exp in cps.by_size:
            problem = cps.check(exp, prev)
            if problem:
                return bad(exp, problem, exp, prev)
        exp += 1
    if cps.by_size:
        size = min(cps.by_size)
        return bad(
            exp, f"checkpoint at #{size} lies beyond the log's end #{exp - 1}: entries were removed", exp - 1, prev
        )
    return ChainCheck(True, exp - 1, prev, cps.checked, unverified_checkpoints=cps.unverified)


def iter_rows(session: Session, first_seq: int, last_seq: int) -> Iterator[Any]:
    """Entries first_seq..last_seq in order, through a server-side cursor (constant memory)."""
    stmt = (
        select(
            AuditEntry.seq,
            AuditEntry.ts,
            AuditEntry.actor,
            AuditEntry.actor_key_id,
            AuditEntry.action,
            AuditEntry.subject_type,
            AuditEntry.subject_id,
            AuditEntry.payload,
            AuditEntry.prev_hash,
            AuditEntry.hash,
        )
        .where(AuditEntry.seq >= first_seq, AuditEntry.seq <= last_seq)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=5_000)
    )
    yield from session.execute(stmt)
