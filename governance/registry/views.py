"""Routes of the registry: base models, token versions (upload, read, artifact bytes), review."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session

from governance.api.deps import PageDep, SessionDep, may
from governance.auth import service as auth
from governance.deployments import rollouts
from governance.deployments import service as deployments
from governance.errors import InvalidInput, NotFound, PayloadTooLarge
from governance.gates import service as gates
from governance.principal import Principal, require_deployment
from governance.registry import service
from governance.registry.models import Review, TokenVersion
from governance.registry.schemas import (
    BaseModelCreate,
    BaseModelRead,
    GateRunRead,
    GateView,
    RegateIn,
    ReviewIn,
    ReviewRead,
    SubmitResult,
    VersionRead,
)

router = APIRouter(prefix="/v1", tags=["registry"])
Reader = Annotated[Principal, may("registry.read")]


def _user_name(session: Session, user_id: int) -> str:
    return auth.user_names(session, {user_id}).get(user_id, str(user_id))


def version_read(session: Session, v: TokenVersion) -> VersionRead:
    return VersionRead(
        id=v.id,
        adapter=service.adapter_name(session, adapter_id=v.adapter_id),
        base_model_id=v.base_model_id,
        sha256=v.sha256,
        size_bytes=v.size_bytes,
        manifest=v.manifest,
        n_tokens=v.n_tokens,
        param_count=v.param_count,
        data_digest=v.data_digest,
        parent_id=v.parent_id,
        deployment_id=v.deployment_id,
        state=v.state,
        submitted_by=_user_name(session, v.submitted_by),
        created_at=v.created_at,
        updated_at=v.updated_at,
    )


def check_version_scope(session: Session, principal: Principal, version: TokenVersion) -> None:
    """A scoped service key reads only the versions bound to its deployments."""
    if principal.deployments is None:
        return
    name = deployments.deployment_names(session, {version.deployment_id}).get(version.deployment_id or 0)
    require_deployment(principal, name, "registry.read", "token_version", version.id)


def review_read(session: Session, r: Review, state: str) -> ReviewRead:
    return ReviewRead(
        id=r.id,
        version_id=r.version_id,
        reviewer=_user_name(session, r.reviewer_id),
        decision=r.decision,
        comment=r.comment,
        artifact_sha256=r.artifact_sha256,
        evidence_digest=r.evidence_digest,
        policy_sha256=r.policy_sha256,
        gate_digest=r.gate_digest,
        gate_run_id=r.gate_run_id,
        acknowledged_waivers=r.acknowledged_waivers,
        shadow_evidence_digest=r.shadow_evidence_digest,
        created_at=r.created_at,
        state=state,
    )


@router.post("/base-models", response_model=BaseModelRead, status_code=201)
def register_base_model(
    body: BaseModelCreate, session: SessionDep, principal: Annotated[Principal, may("base_model.register")]
) -> BaseModelRead:
    base = service.register_base_model(
        session,
        name=body.name,
        weights_digest=body.weights_digest,
        tokenizer_digest=body.tokenizer_digest,
        config=body.config,
        actor=principal.actor,
        actor_key_id=principal.key_prefix,
    )
    return BaseModelRead.model_validate(base)


@router.get("/base-models", response_model=list[BaseModelRead])
def list_base_models(session: SessionDep, _: Reader) -> list[BaseModelRead]:
    return [BaseModelRead.model_validate(b) for b in service.list_base_models(session)]


@dataclass
class Upload:
    data: bytes
    adapter: str | None
    deployment: str | None
    parent_id: int | None


async def read_upload(
    request: Request,
    adapter: Annotated[str | None, Query(description="adapter (line) name; or a multipart form field")] = None,
    deployment: Annotated[str | None, Query()] = None,
    parent_id: Annotated[int | None, Query()] = None,
) -> Upload:
    """The artifact from a multipart form (field ``artifact``) or a raw octet-stream body."""
    limit: int = request.app.state.settings.max_artifact_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64_000:
        raise PayloadTooLarge(
            f"the upload is {declared} bytes; the artifact limit is {limit} (GOVERN_MAX_ARTIFACT_BYTES)"
        )
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("artifact")
        if upload is None or isinstance(upload, str):
            raise InvalidInput("the multipart form needs a file field named 'artifact'")
        data = await upload.read(limit + 1)
        adapter = adapter or _form_str(form.get("adapter"))
        deployment = deployment or _form_str(form.get("deployment"))
        parent = _form_str(form.get("parent_id"))
        if parent_id is None and parent:
            if not parent.isdigit():
                raise InvalidInput("parent_id must be a version id (an integer)")
            parent_id = int(parent)
    else:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
        data = b"".join(chunks) if size <= limit else b"\0" * (limit + 1)
    return Upload(data, adapter, deployment, parent_id)


def _form_str(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


@router.post("/versions", response_model=SubmitResult, status_code=201)
def submit_version(
    request: Request,
    response: Response,
    upload: Annotated[Upload, Depends(read_upload)],
    session: SessionDep,
    principal: Annotated[Principal, may("version.submit")],
) -> SubmitResult:
    if not upload.adapter:
        raise InvalidInput("name the adapter (query parameter or form field 'adapter')")
    sub = service.submit_version(
        session,
        data=upload.data,
        adapter=upload.adapter,
        principal=principal,
        max_bytes=request.app.state.settings.max_artifact_bytes,
        deployment=deployments.submission_target(session, name=upload.deployment),
        parent_id=upload.parent_id,
    )
    if not sub.created:
        response.status_code = 200
    return SubmitResult(**version_read(session, sub.version).model_dump(), created=sub.created)


@router.get("/versions", response_model=list[VersionRead])
def list_versions(
    session: SessionDep,
    page: PageDep,
    principal: Reader,
    state: str | None = None,
    adapter: str | None = None,
    deployment: str | None = None,
) -> list[VersionRead]:
    require_deployment(principal, deployment, "registry.read")  # a scoped key lists by its deployment
    deployment_id = None
    if deployment is not None:
        dep = deployments.get_deployment(session, name=deployment)
        if dep is None:  # a name no deployment has lists no versions; an unknown state is still refused
            if state is not None:
                service.check_state(state)
            return []
        deployment_id = dep.id
    rows = service.list_versions(
        session, state=state, adapter=adapter, deployment_id=deployment_id, limit=page.limit, offset=page.offset
    )
    return [version_read(session, v) for v in rows]


@router.get("/versions/by-sha/{sha256}/artifact", response_class=Response)
def artifact_by_sha(sha256: str, session: SessionDep, principal: Reader) -> Response:
    version = service.get_version_by_sha(session, sha256=sha256)
    if version is None:
        raise NotFound(f"no token version with sha256 {sha256[:16]}...")
    check_version_scope(session, principal, version)
    return _artifact_response(version)


@router.get("/versions/{version_id}", response_model=VersionRead)
def get_version(version_id: int, session: SessionDep, principal: Reader) -> VersionRead:
    version = service.get_version_or_raise(session, version_id=version_id)
    check_version_scope(session, principal, version)
    return version_read(session, version)


@router.get("/versions/{version_id}/artifact", response_class=Response)
def get_artifact(version_id: int, session: SessionDep, principal: Reader) -> Response:
    version = service.get_version_or_raise(session, version_id=version_id)
    check_version_scope(session, principal, version)
    return _artifact_response(version)


def _artifact_response(version: TokenVersion) -> Response:
    return Response(
        content=bytes(version.artifact),
        media_type="application/octet-stream",
        headers={
            "X-Artifact-Sha256": version.sha256,
            "ETag": f'"{version.sha256}"',
            "Content-Disposition": f'attachment; filename="token-{version.id}.safetensors"',
        },
    )


@router.get("/versions/{version_id}/gate", response_model=GateView)
def get_gate(version_id: int, session: SessionDep, _: Annotated[Principal, may("gate.read")]) -> GateView:
    version = service.get_version_or_raise(session, version_id=version_id)
    return GateView(
        version_id=version.id,
        state=version.state,
        runs=[GateRunRead.model_validate(r) for r in gates.gate_runs(session, version_id=version_id)],
        reviews=[review_read(session, r, version.state) for r in service.reviews(session, version_id=version_id)],
    )


@router.post("/versions/{version_id}/approve", response_model=ReviewRead)
def approve(
    version_id: int, body: ReviewIn, session: SessionDep, principal: Annotated[Principal, may("version.approve")]
) -> ReviewRead:
    review = service.approve(session, version_id=version_id, principal=principal, comment=body.comment,
                             acknowledged_waivers=body.acknowledged_waivers,
                             shadow=rollouts.approval_shadow(session, version_id=version_id))
    return review_read(session, review, "approved")


@router.post("/versions/{version_id}/reject", response_model=ReviewRead)
def reject(
    version_id: int, body: ReviewIn, session: SessionDep, principal: Annotated[Principal, may("version.reject")]
) -> ReviewRead:
    review = service.reject(session, version_id=version_id, principal=principal, comment=body.comment)
    return review_read(session, review, "rejected")


@router.post("/versions/{version_id}/gate-runs", response_model=GateRunRead, status_code=202)
def regate(
    version_id: int, body: RegateIn, session: SessionDep, principal: Annotated[Principal, may("version.regate")]
) -> GateRunRead:
    """Gate an existing version again under a deployment's current gate policy (queued for a gate worker)."""
    require_deployment(principal, body.deployment, "version.regate", "deployment", body.deployment)
    run = service.request_regate(session, version_id=version_id, principal=principal, queue=True,
                                 target=deployments.regate_target(session, name=body.deployment))
    return GateRunRead.model_validate(run)
