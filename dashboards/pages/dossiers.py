"""The "Download dossier" buttons: a version's or a deployment's evidence dossier (PDF), for the UI's session.

Same service as ``GET /v1/.../dossier`` (`governance.dossier.service`) and the same row of
the roles table (``dossier.read``); the sealing checkpoint commits with the page's transaction.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from dashboards.deps import SessionDep, ViewerDep, parent_app, require
from governance.audit.signing import load_signing_key
from governance.dossier import service as dossiers
from governance.errors import ServiceUnavailable
from governance.roles import allowed

router = APIRouter()
READERS = allowed("dossier.read")


def _download(doc: dossiers.Document) -> Response:
    return Response(doc.content, media_type=doc.media_type,
                    headers={"Content-Disposition": f'attachment; filename="{doc.filename}"'})


def _key(request: Request):  # type: ignore[no-untyped-def]
    try:
        return load_signing_key(parent_app(request).state.settings)
    except Exception as exc:  # AuditKeyError: no signing key yet
        raise ServiceUnavailable(f"a dossier cannot be sealed: {exc}") from None


@router.get("/versions/{version_id}/dossier.pdf")
def version_dossier(request: Request, version_id: int, session: SessionDep, viewer: ViewerDep) -> Response:
    require(viewer, READERS, "download dossiers")
    return _download(dossiers.version_dossier(session, version_id=version_id, fmt="pdf", key=_key(request),
                                              actor=viewer.principal.actor,
                                              actor_key_id=viewer.principal.key_prefix))


@router.get("/deployments/{name}/dossier.pdf")
def deployment_dossier(request: Request, name: str, session: SessionDep, viewer: ViewerDep) -> Response:
    require(viewer, READERS, "download dossiers")
    return _download(dossiers.deployment_dossier(session, name=name, fmt="pdf", key=_key(request),
                                                 actor=viewer.principal.actor,
                                                 actor_key_id=viewer.principal.key_prefix))
