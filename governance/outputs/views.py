"""Route of production output ingest (service keys: serving replicas, each bound to its deployments)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from governance.api.deps import SessionDep, may_on_deployment
from governance.errors import PayloadTooLarge
from governance.outputs import service
from governance.outputs.schemas import IngestIn, IngestResult
from governance.principal import Principal

router = APIRouter(prefix="/v1/deployments", tags=["outputs"])


@router.post("/{name}/outputs", response_model=IngestResult)
def ingest(
    name: str,
    body: IngestIn,
    request: Request,
    session: SessionDep,
    _: Annotated[Principal, may_on_deployment("output.ingest")],
) -> IngestResult:
    cap: int = request.app.state.settings.max_ingest_batch
    if len(body.outputs) > cap:
        raise PayloadTooLarge(f"{len(body.outputs)} outputs in one batch; the limit is {cap} (GOVERN_MAX_INGEST_BATCH)")
    inserted, dups = service.ingest_outputs(
        session, deployment=name, rows=[o.model_dump(exclude_none=False) for o in body.outputs]
    )
    return IngestResult(accepted=inserted, duplicates=dups)
