"""Routes of the audit log: a paginated read (auditors, admins, compliance officers) and the export.

The export (auditors only) is `governance.audit.export.export_stream`, shared with the web
UI: the checkpoint and the ``audit.export`` entry commit with the request's transaction
(before the response starts), then the lines stream from a fresh read-only session.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from governance.api.deps import SessionDep, may
from governance.audit import service as audit
from governance.audit.export import export_stream, prepare_export
from governance.audit.signing import load_signing_key
from governance.errors import ServiceUnavailable
from governance.principal import Principal
from governance.schemas import Out

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditEntryRead(Out):
    seq: int
    ts: datetime
    actor: str
    actor_key_id: str | None
    action: str
    subject_type: str
    subject_id: str
    payload: str
    prev_hash: str
    hash: str


class AuditPage(Out):
    items: list[AuditEntryRead]
    next_before_seq: int | None


@router.get("", response_model=AuditPage)
def list_audit(
    session: SessionDep,
    _: Annotated[Principal, may("audit.read")],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_seq: Annotated[int | None, Query(ge=1, description="the last seq of the previous page")] = None,
    actor: str | None = None,
    action: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditPage:
    rows = audit.list_entries(
        session,
        limit=limit,
        before_seq=before_seq,
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        since=since,
        until=until,
    )
    items = [AuditEntryRead.model_validate(r) for r in rows]
    return AuditPage(items=items, next_before_seq=items[-1].seq if len(items) == limit else None)


@router.get("/export")
def export_audit(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, may("audit.export")],
    fmt: Literal["jsonl", "csv"] = "jsonl",
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    try:
        key = load_signing_key(request.app.state.settings)
    except Exception as exc:  # AuditKeyError: the installation has no signing key yet
        raise ServiceUnavailable(f"the audit log cannot be exported: {exc}") from None
    plan = prepare_export(
        session,
        key=key,
        actor=principal.actor,
        actor_key_id=principal.key_prefix,
        since=since,
        until=until,
        fmt=fmt,
    )
    stream = export_stream(plan, engine=request.app.state.engine)
    return StreamingResponse(stream.body, media_type=stream.media_type, headers=stream.headers)
