"""Production outputs: batch ingest, idempotent per (deployment, request id).

One INSERT ... ON CONFLICT DO NOTHING statement per batch: a replayed spool or a
retried request never doubles a row, and the database does the de-duplication in the
same round trip. Rows name their version by id or by sha256 (replicas know the
sha256 they serve); unknown versions are refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from governance.api import metrics
from governance.api.errors import InvalidInput, NotFound
from governance.db import utcnow
from governance.deployments.models import Deployment
from governance.outputs.models import Output
from governance.registry.models import TokenVersion

_COLUMNS = (
    "request_id",
    "version_id",
    "generation",
    "messages",
    "output",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "created_at",
)


def _resolve_deployment(session: Session, deployment: Deployment | str) -> Deployment:
    if isinstance(deployment, Deployment):
        return deployment
    dep = session.scalars(select(Deployment).where(Deployment.name == deployment)).first()
    if dep is None:
        raise NotFound(f"no deployment named {deployment!r}")
    return dep


def ingest_outputs(
    session: Session, *, deployment: Deployment | str, rows: Sequence[dict[str, Any]]
) -> tuple[int, int]:
    """Store a batch of outputs; returns (inserted, duplicates). Keys as in `OutputIn`."""
    if not rows:
        return 0, 0
    dep = _resolve_deployment(session, deployment)
    shas = {str(r["sha256"]).lower() for r in rows if r.get("sha256") and r.get("version_id") is None}
    by_sha: dict[str, int] = {}
    if shas:
        by_sha = {
            sha: vid
            for vid, sha in session.execute(
                select(TokenVersion.id, TokenVersion.sha256).where(TokenVersion.sha256.in_(shas))
            ).tuples()
        }
        unknown = shas - set(by_sha)
        if unknown:
            raise InvalidInput(f"unknown version sha256: {', '.join(sorted(s[:12] + '...' for s in unknown))}")
    ids = {int(r["version_id"]) for r in rows if r.get("version_id") is not None} | set(by_sha.values())
    if ids:
        found = dict(
            session.execute(select(TokenVersion.id, TokenVersion.deployment_id).where(TokenVersion.id.in_(ids))).all()
        )
        if ids - set(found):
            raise InvalidInput(f"unknown version id(s): {', '.join(str(i) for i in sorted(ids - set(found)))}")
        # a replica reports what this deployment served; another deployment's version is a bug upstream
        foreign = sorted(i for i, d in found.items() if d != dep.id)
        if foreign:
            raise InvalidInput(f"version(s) {', '.join(map(str, foreign))} are not served by deployment {dep.name!r}")
    now = utcnow()
    values = []
    for r in rows:
        version_id = r.get("version_id")
        if version_id is None and r.get("sha256"):
            version_id = by_sha[str(r["sha256"]).lower()]
        created: datetime = r.get("created_at") or now
        values.append(
            {
                "deployment_id": dep.id,
                "request_id": str(r["request_id"]),
                "version_id": version_id,
                "generation": int(r.get("generation") or 0),
                "messages": r.get("messages") or [],
                "output": r.get("output") or "",
                "prompt_tokens": int(r.get("prompt_tokens") or 0),
                "completion_tokens": int(r.get("completion_tokens") or 0),
                "latency_ms": float(r.get("latency_ms") or 0.0),
                "created_at": created,
            }
        )
    stmt = (
        pg_insert(Output)
        .values(values)
        .on_conflict_do_nothing(index_elements=["deployment_id", "request_id"])
        .returning(Output.id)
    )
    inserted = len(session.execute(stmt).all())
    metrics.OUTPUTS_INGESTED.labels(deployment=dep.name).inc(inserted)
    return inserted, len(values) - inserted
