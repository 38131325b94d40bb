"""Routes of evidence dossiers: a version's and a deployment period's, as PDF or HTML.

Officers, auditors and admins (`dossier.read`). Building a dossier seals the audit
entries it cites (a signed export checkpoint and an ``audit.export`` entry) in the
request's transaction, which commits before the response is sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from governance.api.deps import SessionDep, may
from governance.audit.signing import load_signing_key
from governance.dossier import service
from governance.errors import ServiceUnavailable
from governance.principal import Principal

router = APIRouter(prefix="/v1", tags=["dossiers"])
Reader = Annotated[Principal, may("dossier.read")]
Format = Annotated[Literal["pdf", "html"], Query(description="pdf or html")]


def _key(request: Request):  # type: ignore[no-untyped-def]
    try:
        return load_signing_key(request.app.state.settings)
    except Exception as exc:  # AuditKeyError: the installation has no signing key yet
        raise ServiceUnavailable(f"a dossier cannot be sealed: {exc}") from None


def _response(doc: service.Document) -> Response:
    return Response(doc.content, media_type=doc.media_type, headers={
        "Content-Disposition": f'attachment; filename="{doc.filename}"', "X-Dossier-Facts": str(doc.facts)})


@router.get("/versions/{version_id}/dossier", response_class=Response)
def version_dossier(version_id: int, request: Request, session: SessionDep, principal: Reader,
                    format: Format = "pdf") -> Response:
    doc = service.version_dossier(session, version_id=version_id, fmt=format, key=_key(request),
                                  actor=principal.actor, actor_key_id=principal.key_prefix)
    return _response(doc)


@router.get("/deployments/{name}/dossier", response_class=Response)
def deployment_dossier(name: str, request: Request, session: SessionDep, principal: Reader,
                       since: datetime | None = None, until: datetime | None = None,
                       format: Format = "pdf") -> Response:
    doc = service.deployment_dossier(session, name=name, fmt=format, key=_key(request), since=since, until=until,
                                     actor=principal.actor, actor_key_id=principal.key_prefix)
    return _response(doc)
