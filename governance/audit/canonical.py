"""Canonical JSON: the exact bytes that are hashed into the audit chain.

Rules (also in docs/audit-export-format.md): UTF-8, keys sorted, no insignificant
whitespace (separators ``,`` and ``:``), non-ASCII kept as is, floats in Python's
shortest round-trip repr, integers as digits, no NaN/Infinity, datetimes as
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC. Encoding is idempotent: parsing the text and
encoding it again yields the same bytes, so a database round trip cannot change a hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

GENESIS_HASH = "0" * 64


class CanonicalError(ValueError):
    """The value cannot be encoded canonically (e.g. NaN, a non-string key)."""


def format_ts(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise CanonicalError("naive datetime in audit payload; use timezone-aware UTC times")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normalize(value: Any, path: str = "$") -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalError(f"non-finite number at {path}")
        return value
    if isinstance(value, Decimal):
        f = float(value)
        if not math.isfinite(f):
            raise CanonicalError(f"non-finite number at {path}")
        return f
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return _normalize(value.value, path)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonicalError(f"non-string key {k!r} at {path}")
            out[k] = _normalize(v, f"{path}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_normalize(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, bytes):
        return value.hex()
    raise CanonicalError(f"cannot encode {type(value).__name__} at {path}")


def canonical_json(value: Any) -> str:
    try:
        return json.dumps(
            _normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError as exc:  # e.g. an integer beyond Python's 4300-digit str() limit
        if isinstance(exc, CanonicalError):
            raise
        raise CanonicalError(f"cannot encode value canonically: {exc}") from None


def entry_body(
    *,
    seq: int,
    ts: datetime | str,
    actor: str,
    actor_key_id: str | None,
    action: str,
    subject_type: str,
    subject_id: str,
    payload: Any,
) -> str:
    """The canonical text of one entry (without hashes)."""
    return canonical_json(
        {
            "seq": seq,
            "ts": ts if isinstance(ts, str) else format_ts(ts),
            "actor": actor,
            "actor_key_id": actor_key_id,
            "action": action,
            "subject_type": subject_type,
            "subject_id": subject_id,
            "payload": payload,
        }
    )


# The body's keys in canonical (sorted) order; ``body_from_stored`` relies on it.
ENTRY_FIELDS = ("action", "actor", "actor_key_id", "payload", "seq", "subject_id", "subject_type", "ts")

_dump_scalar = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def body_from_stored(
    *,
    seq: int,
    ts: str,
    actor: str,
    actor_key_id: str | None,
    action: str,
    subject_type: str,
    subject_id: str,
    payload_text: str,
) -> str:
    """The same text as ``entry_body``, assembled from a stored canonical payload text.

    No re-parsing of the payload: this is what makes export and in-database verification
    fast, and it is exact because ``payload_text`` is already canonical (if it was altered,
    the assembled body differs and the hash check fails, which is the point).
    """
    d = _dump_scalar
    return (
        '{"action":' + d(action)
        + ',"actor":' + d(actor)
        + ',"actor_key_id":' + d(actor_key_id)
        + ',"payload":' + payload_text
        + ',"seq":' + str(int(seq))
        + ',"subject_id":' + d(subject_id)
        + ',"subject_type":' + d(subject_type)
        + ',"ts":' + d(ts)
        + "}"
    )


def body_of_row(row: Any, ts: str | None = None) -> str:
    """`body_from_stored` for a stored audit row (an `AuditEntry` or a row of its columns);
    ``ts`` when the caller has already formatted the row's timestamp."""
    return body_from_stored(
        seq=row.seq, ts=ts if ts is not None else format_ts(row.ts), actor=row.actor, actor_key_id=row.actor_key_id,
        action=row.action, subject_type=row.subject_type, subject_id=row.subject_id, payload_text=row.payload,
    )


def chain_hash(prev_hash: str, body: str) -> str:
    """hash = sha256(prev_hash_hex || body), both UTF-8."""
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()
