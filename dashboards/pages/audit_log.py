"""Audit: the filterable log (keyset-paged), export download with its checkpoint, verify the chain now."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response, StreamingResponse

from dashboards.deps import CsrfDep, SessionDep, ViewerDep, get_engine, parent_app, render, require
from governance.audit import service as audit
from governance.audit.export import export_stream, prepare_export
from governance.audit.signing import AuditKeyError, default_private_key_path, load_public_key, load_signing_key
from governance.errors import InvalidInput, ServiceUnavailable
from governance.roles import allowed

router = APIRouter()
# the same roles as GET /v1/audit and GET /v1/audit/export
PAGE = 50
FILTERS = ("actor", "action", "subject_type", "subject_id")


def _when(name: str, value: str | None) -> datetime | None:
    if not value or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} {value!r} is not a date and time (e.g. 2026-11-28T09:00)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _signing_key(request: Request) -> Ed25519PrivateKey:
    return load_signing_key(getattr(parent_app(request).state, "settings", None))


def _page(
    request: Request, session: SessionDep, viewer: ViewerDep, *, check: audit.ChainCheck | None = None
) -> Response:
    require(viewer, allowed("audit.read"), "read the audit log")
    q = request.query_params
    filters = {k: (q.get(k) or "").strip() or None for k in FILTERS}
    since, until = _when("since", q.get("since")), _when("until", q.get("until"))
    before = q.get("before")
    before_seq = int(before) if before and before.isdigit() else None
    entries = audit.list_entries(session, limit=PAGE, before_seq=before_seq, since=since, until=until, **filters)
    size, head_hash = audit.head(session)
    query = {k: v for k, v in {**filters, "since": q.get("since"), "until": q.get("until")}.items() if v}
    return render(
        request, "audit.html", viewer, entries=entries, filters=filters, query=query,
        since=q.get("since") or "", until=q.get("until") or "",
        next_before=entries[-1].seq if len(entries) == PAGE else None,
        size=size, head_hash=head_hash, checkpoint=audit.latest_checkpoint(session), check=check,
        can_export=viewer.may("audit.export"),
    )


@router.get("/audit")
def audit_page(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    return _page(request, session, viewer)


@router.get("/audit/verify")
def verify_now(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    require(viewer, allowed("audit.verify"), "verify the audit log")
    public_key = None
    try:
        public_key = _signing_key(request).public_key()
    except AuditKeyError:
        public_key = None  # links and heads are still checked; signatures need the key
    # Retired public keys kept beside the signing key (after a rotation) stay trusted;
    # checkpoints under keys unknown here are shown as a warning, not hidden.
    retired = []
    settings = getattr(parent_app(request).state, "settings", None)
    with contextlib.suppress(AuditKeyError, OSError):
        folder = default_private_key_path(settings).parent
        retired = [load_public_key(p) for p in sorted(folder.glob("*.pub"))]
    check = audit.verify_chain_in_db(session, public_key=public_key, trusted_keys=retired, count_unknown_keys=True)
    return _page(request, session, viewer, check=check)


@router.post("/audit/export", dependencies=[CsrfDep])
def export(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    since: Annotated[str, Form()] = "",
    until: Annotated[str, Form()] = "",
) -> Response:
    """A JSONL export (manifest line, entries, signed checkpoint line) as a download."""
    require(viewer, allowed("audit.export"), "export the audit log")
    try:
        key = _signing_key(request)
    except AuditKeyError as exc:
        raise ServiceUnavailable(f"cannot export: {exc}") from None
    plan = prepare_export(
        session, key=key, actor=viewer.principal.actor, actor_key_id=viewer.principal.key_prefix,
        since=_when("since", since), until=_when("until", until), fmt="jsonl",
    )
    stream = export_stream(plan, engine=get_engine(request))
    return StreamingResponse(stream.body, media_type=stream.media_type, headers=stream.headers)
