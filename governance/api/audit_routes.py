"""Routes of the audit log: a paginated read (auditors, admins, compliance officers) and the export.

The export (auditors only) is two steps, as `governance.audit.export` wants: the
checkpoint and the ``audit.export`` entry commit with the request's transaction
(before the response starts), then the lines stream from a fresh read-only session.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from governance.api.deps import SessionDep, role
from governance.audit import service as audit
from governance.errors import InvalidInput, ServiceUnavailable
from governance.principal import Principal
from governance.roles import Role
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
    _: Annotated[Principal, role(Role.auditor, Role.admin, Role.compliance_officer)],
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
    principal: Annotated[Principal, role(Role.auditor)],
    fmt: Literal["jsonl", "csv"] = "jsonl",
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    from governance.audit.export import ExportError, iter_export_lines, prepare_export, sidecar_json
    from governance.audit.signing import load_signing_key
    from governance.db import unit_of_work

    try:
        key = load_signing_key(request.app.state.settings)
    except Exception as exc:  # AuditKeyError: the installation has no signing key yet
        raise ServiceUnavailable(f"the audit log cannot be exported: {exc}") from None
    try:
        plan = prepare_export(
            session,
            key=key,
            actor=principal.actor,
            actor_key_id=principal.key_prefix,
            since=since,
            until=until,
            fmt=fmt,
        )
    except ExportError as exc:
        raise InvalidInput(str(exc)) from None
    engine = request.app.state.engine

    def lines() -> Iterator[bytes]:
        with unit_of_work(engine) as read:
            for line in iter_export_lines(read, plan):
                yield line.encode("utf-8")

    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    headers: dict[str, Any] = {
        "Content-Disposition": f'attachment; filename="audit-{plan.first_seq}-{plan.last_seq}.{fmt}"',
        "X-Audit-Entries": str(plan.count),
    }
    if fmt == "csv":
        # the CSV's signed manifest travels in a header (it is small); JSONL carries it inline
        headers["X-Audit-Manifest"] = sidecar_json(plan).replace("\n", "")
    return StreamingResponse(lines(), media_type=media, headers=headers)
