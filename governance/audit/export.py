"""Streaming export of the audit log (JSONL or CSV) with a signed manifest and checkpoint.

Two steps, so that an HTTP response can stream after the bookkeeping has committed:

1. ``prepare_export(session, ...)`` resolves ``since``/``until`` to one contiguous range of
   sequence numbers (a subset must verify on its own, so it never skips entries inside the
   range), writes a signed checkpoint at the range's last entry, appends the
   ``audit.export`` entry and signs the manifest. The caller commits.
2. ``iter_export_lines(session, plan)`` streams the lines through a server-side cursor:
   JSONL is one self-contained file (manifest line, entry lines, checkpoint line); CSV is
   the entry table, with ``sidecar_json(plan)`` as ``<file>.manifest.json`` beside it.

``export_stream(plan, engine=...)`` turns a prepared plan into an HTTP download (the API's
``GET /v1/audit/export`` and the web UI's export button): one file name, media type and set
of headers for every caller. ``ExportError`` is an ``InvalidInput``, so both answer 422.

The layout is documented in docs/audit-export-format.md and checked by ``verify.py``.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from governance.audit.canonical import body_of_row, format_ts
from governance.audit.models import AuditEntry
from governance.audit.service import append, checkpoint_record, iter_rows, write_checkpoint
from governance.audit.signing import sign_manifest
from governance.audit.verify import CSV_COLUMNS, FORMAT_NAME, FORMAT_VERSION, csv_sidecar_path, entry_line
from governance.db import unit_of_work, utcnow
from governance.errors import InvalidInput

ExportFormat = Literal["jsonl", "csv"]
FORMATS: tuple[str, ...] = ("jsonl", "csv")
HASH_RULE = "hash = sha256(utf8(prev_hash_hex + entry_json)); first prev_hash of the log = 64 zeros"


class ExportError(InvalidInput, ValueError):
    """The export request is invalid (bad format, a range that ends before it starts); a 422 over HTTP."""


@dataclass(frozen=True)
class ExportPlan:
    """What one export will contain; returned by ``prepare_export``, consumed by the streamers."""

    fmt: str
    first_seq: int | None
    last_seq: int | None
    count: int
    manifest: dict[str, Any]
    checkpoint: dict[str, Any]
    export_entry_seq: int

    @property
    def media_type(self) -> str:
        return "application/x-ndjson" if self.fmt == "jsonl" else "text/csv"

    @property
    def filename(self) -> str:
        rng = f"{self.first_seq}-{self.last_seq}" if self.count else "empty"
        return f"audit-{rng}.{self.fmt}"


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ExportError(f"{name} must carry a time zone (e.g. 2026-01-31T00:00:00Z)")
    return value


def resolve_range(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> tuple[int | None, int | None, int]:
    """(first_seq, last_seq, head size): entries with since <= ts < until, as one contiguous run."""
    since, until = _aware("since", since), _aware("until", until)
    if since is not None and until is not None and until <= since:
        raise ExportError(f"--until ({format_ts(until)}) must be later than --since ({format_ts(since)})")
    head = session.scalar(select(func.max(AuditEntry.seq))) or 0
    lo = (
        1
        if since is None
        else session.scalar(select(func.min(AuditEntry.seq)).where(AuditEntry.ts >= since, AuditEntry.seq <= head))
    )
    hi = (
        head
        if until is None
        else session.scalar(select(func.max(AuditEntry.seq)).where(AuditEntry.ts < until, AuditEntry.seq <= head))
    )
    if head == 0 or lo is None or hi is None or lo > hi:
        return None, None, head
    return lo, hi, head


def build_manifest(
    *,
    first_seq: int | None,
    last_seq: int | None,
    first_prev_hash: str | None,
    last_hash: str | None,
    since: datetime | None,
    until: datetime | None,
    fmt: str,
    created_at: datetime,
    export_entry_seq: int | None = None,
) -> dict[str, Any]:
    """The unsigned manifest; ``signing.sign_manifest`` adds ``key_id`` and ``signature``."""
    count = 0 if first_seq is None or last_seq is None else last_seq - first_seq + 1
    return {
        "record": "manifest",
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "file_format": fmt,
        "algorithm": "sha256",
        "hash_rule": HASH_RULE,
        "since": format_ts(since) if since else None,
        "until": format_ts(until) if until else None,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "count": count,
        "first_prev_hash": first_prev_hash,
        "last_hash": last_hash,
        "created_at": format_ts(created_at),
        "export_entry_seq": export_entry_seq,
    }


def prepare_export(
    session: Session,
    *,
    key: Ed25519PrivateKey,
    actor: str,
    actor_key_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: str = "jsonl",
    seqs: tuple[int, int] | None = None,
    purpose: str | None = None,
) -> ExportPlan:
    """Resolve the range, write the export checkpoint, audit the export, sign the manifest.

    ``seqs`` (first, last) exports that range of sequence numbers instead of a time range
    (an evidence dossier embeds the entries it cites); ``purpose`` is recorded in the
    ``audit.export`` entry. Commits with the caller's transaction; stream afterwards with
    ``iter_export_lines``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if seqs is None:
        lo, hi, head = resolve_range(session, since=since, until=until)
    else:
        head = session.scalar(select(func.max(AuditEntry.seq))) or 0
        if not 1 <= seqs[0] <= seqs[1] <= head:
            raise ExportError(f"entries #{seqs[0]}..#{seqs[1]} are not in the log (head #{head})")
        lo, hi = seqs
    first_prev = last_hash = None
    if lo is not None and hi is not None:
        first_prev = session.scalar(select(AuditEntry.prev_hash).where(AuditEntry.seq == lo))
        last_hash = session.scalar(select(AuditEntry.hash).where(AuditEntry.seq == hi))
    # the export's checkpoint names the last exported entry, so a truncated tail is caught
    cp_row = write_checkpoint(session, key=key, reason="export", size=hi if hi is not None else head)
    count = 0 if lo is None or hi is None else hi - lo + 1
    entry = append(
        session,
        actor=actor,
        actor_key_id=actor_key_id,
        action="audit.export",
        subject_type="audit_log",
        subject_id=f"{lo}-{hi}" if count else "empty",
        payload={
            "format": fmt,
            "since": since,
            "until": until,
            "first_seq": lo,
            "last_seq": hi,
            "count": count,
            "last_hash": last_hash,
            "checkpoint_id": cp_row.id,
            **({"purpose": purpose} if purpose else {}),
        },
    )
    manifest = build_manifest(
        first_seq=lo,
        last_seq=hi,
        first_prev_hash=first_prev,
        last_hash=last_hash,
        since=since,
        until=until,
        fmt=fmt,
        created_at=utcnow(),
        export_entry_seq=entry.seq,
    )
    return ExportPlan(
        fmt=fmt,
        first_seq=lo,
        last_seq=hi,
        count=count,
        manifest=sign_manifest(key, manifest),
        checkpoint=checkpoint_record(cp_row),
        export_entry_seq=entry.seq,
    )


def _record_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def iter_export_lines(session: Session, plan: ExportPlan) -> Iterator[str]:
    """The export's lines, each ending in a newline. Read-only: run after ``prepare_export`` commits.

    JSONL: the manifest, one line per entry, the checkpoint. CSV: a header and one row per
    entry (serve ``sidecar_json(plan)`` beside it).
    """
    if plan.fmt == "jsonl":
        yield _record_line(plan.manifest)
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
    if plan.count and plan.first_seq is not None and plan.last_seq is not None:
        for r in iter_rows(session, plan.first_seq, plan.last_seq):
            ts = format_ts(r.ts)
            if plan.fmt == "jsonl":
                body = body_of_row(r, ts)
                yield entry_line(r.prev_hash, r.hash, body)
            else:
                writer.writerow(
                    (
                        r.seq,
                        ts,
                        r.actor,
                        r.actor_key_id or "",
                        r.action,
                        r.subject_type,
                        r.subject_id,
                        r.payload,
                        r.prev_hash,
                        r.hash,
                    )
                )
                if buf.tell() > 1 << 16:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
    if plan.fmt == "jsonl":
        yield _record_line(plan.checkpoint)
    elif buf.tell():
        yield buf.getvalue()


def sidecar_json(plan: ExportPlan) -> str:
    """``<file>.manifest.json`` of a CSV export: the manifest and the checkpoint."""
    return json.dumps({"manifest": plan.manifest, "checkpoint": plan.checkpoint}, ensure_ascii=False, indent=2) + "\n"


@dataclass(frozen=True)
class ExportStream:
    """An export ready to become a streaming HTTP response (no web framework here)."""

    plan: ExportPlan
    body: Iterator[bytes]
    media_type: str
    headers: dict[str, str]


def export_stream(plan: ExportPlan, *, engine: Engine) -> ExportStream:
    """The download of a prepared export: its lines stream from a fresh read-only transaction.

    Read the body only after the transaction that prepared ``plan`` committed (a streaming
    response starts after the route returned, so that holds for the routes).
    """

    def body() -> Iterator[bytes]:
        with unit_of_work(engine) as read:
            for line in iter_export_lines(read, plan):
                yield line.encode("utf-8")

    headers = {"Content-Disposition": f'attachment; filename="{plan.filename}"', "X-Audit-Entries": str(plan.count)}
    if plan.fmt == "csv":
        # the CSV's signed manifest travels in a header (it is small); JSONL carries it inline
        headers["X-Audit-Manifest"] = sidecar_json(plan).replace("\n", "")
    return ExportStream(plan=plan, body=body(), media_type=plan.media_type, headers=headers)


def export_to_file(
    engine: Engine,
    out: Path,
    *,
    key: Ed25519PrivateKey,
    actor: str | None = None,
    actor_key_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: str = "jsonl",
) -> ExportPlan:
    """The CLI's export: audit + checkpoint in one transaction, then stream to ``out`` atomically."""
    out = Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not out.parent.exists():
        raise ExportError(f"folder {out.parent} does not exist")
    with unit_of_work(engine) as session:
        plan = prepare_export(
            session,
            key=key,
            actor=actor or f"system:cli/{_os_user()}",
            actor_key_id=actor_key_id,
            since=since,
            until=until,
            fmt=fmt,
        )
    tmp = out.with_name(out.name + ".partial")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f, unit_of_work(engine) as session:
            for line in iter_export_lines(session, plan):
                f.write(line)
        if fmt == "csv":
            csv_sidecar_path(out).write_text(sidecar_json(plan), encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return plan


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


__all__ = [
    "ExportError",
    "ExportPlan",
    "ExportStream",
    "build_manifest",
    "export_stream",
    "export_to_file",
    "iter_export_lines",
    "prepare_export",
    "resolve_range",
    "sidecar_json",
]
