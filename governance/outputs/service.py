"""Production outputs: batch ingest, idempotent per (deployment, request id).

One INSERT ... ON CONFLICT DO NOTHING statement per batch: a replayed spool or a
retried request never doubles a row, and the database does the de-duplication in the
same round trip. Rows name their version by id or by sha256 (replicas know the
sha256 they serve); unknown versions are refused before anything is written. The
monitors read their windows through the id-range reads at the end (``output_ids``,
``output_texts``), so no other room queries the table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from governance import metrics
from governance.db import utcnow
from governance.deployments import rollouts
from governance.deployments import service as deployments
from governance.errors import InvalidInput
from governance.outputs.models import Output
from governance.registry import service as registry

if TYPE_CHECKING:  # annotations only: rooms talk through service functions
    from governance.deployments.models import Deployment

_INSERT_BATCH = text(
    """
    insert into outputs (deployment_id, request_id, version_id, generation, messages, output,
                         prompt_tokens, completion_tokens, latency_ms, created_at, rollout_id, twin_of)
    select :dep, r.request_id, r.version_id, r.generation, coalesce(r.messages, '[]'::jsonb), r.output,
           r.prompt_tokens, r.completion_tokens, r.latency_ms, coalesce(r.created_at, :now), r.rollout_id, r.twin_of
    from jsonb_to_recordset(cast(:rows as jsonb)) as r(
        request_id text, version_id bigint, generation bigint, messages jsonb, output text,
        prompt_tokens integer, completion_tokens integer, latency_ms double precision, created_at timestamptz,
        rollout_id bigint, twin_of text)
    on conflict (deployment_id, request_id) do nothing
    returning 1
    """
)


def _resolve_deployment(session: Session, deployment: Deployment | str) -> Deployment:
    if not isinstance(deployment, str):
        return deployment
    return deployments.get_deployment_or_raise(session, name=deployment)


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
        by_sha = registry.version_ids_by_sha(session, shas=shas)
        unknown = shas - set(by_sha)
        if unknown:
            raise InvalidInput(f"unknown version sha256: {', '.join(sorted(s[:12] + '...' for s in unknown))}")
    ids = {int(r["version_id"]) for r in rows if r.get("version_id") is not None} | set(by_sha.values())
    if ids:
        found = registry.version_deployments(session, version_ids=ids)
        if ids - set(found):
            raise InvalidInput(f"unknown version id(s): {', '.join(str(i) for i in sorted(ids - set(found)))}")
        # a replica reports what this deployment served; another deployment's version is a bug upstream
        foreign = sorted(i for i, d in found.items() if d != dep.id)
        if foreign:
            raise InvalidInput(f"version(s) {', '.join(map(str, foreign))} are not served by deployment {dep.name!r}")
    rollout_ids = {int(r["rollout_id"]) for r in rows if r.get("rollout_id") is not None}
    for rid in sorted(rollout_ids):
        ro = rollouts.get_rollout(session, rollout_id=rid)
        if ro is None or ro.deployment_id != dep.id:
            raise InvalidInput(f"rollout {rid} is not a rollout of deployment {dep.name!r}")
    if any(r.get("twin_of") and r.get("rollout_id") is None for r in rows):
        raise InvalidInput("an output with twin_of (the unreturned answer of a pair) must name its rollout_id")
    values = []
    for r in rows:
        version_id = r.get("version_id")
        if version_id is None and r.get("sha256"):
            version_id = by_sha[str(r["sha256"]).lower()]
        created = r.get("created_at")
        values.append(
            {
                "request_id": str(r["request_id"]),
                "version_id": version_id,
                "generation": int(r.get("generation") or 0),
                "messages": r.get("messages") or [],
                "output": r.get("output") or "",
                "prompt_tokens": int(r.get("prompt_tokens") or 0),
                "completion_tokens": int(r.get("completion_tokens") or 0),
                "latency_ms": float(r.get("latency_ms") or 0.0),
                "created_at": created.isoformat() if isinstance(created, datetime) else created,
                "rollout_id": int(r["rollout_id"]) if r.get("rollout_id") is not None else None,
                "twin_of": str(r["twin_of"]) if r.get("twin_of") else None,
            }
        )
    # the whole batch travels as one JSON parameter: one round trip, no per-row bind
    # parameters to compile (a 1,000-row VALUES list costs more to build than to run)
    result = session.execute(
        _INSERT_BATCH, {"dep": dep.id, "now": utcnow(), "rows": json.dumps(values, ensure_ascii=False)}
    )
    inserted = len(result.all())
    metrics.OUTPUTS_INGESTED.labels(deployment=dep.name).inc(inserted)
    return inserted, len(values) - inserted


def last_output_id(session: Session, *, deployment_id: int) -> int:
    """The highest output id recorded for the deployment (0 while it has none)."""
    return int(session.scalar(select(func.max(Output.id)).where(Output.deployment_id == deployment_id)) or 0)


def output_ids(session: Session, *, deployment_id: int, version_id: int | None, after_id: int, upto_id: int
               ) -> list[int]:
    """Ids of the deployment's served outputs in (after_id, upto_id], of one version unless None,
    ascending. The unreturned answers of rollout pairs (``twin_of``) are never part of a window."""
    stmt = select(Output.id).where(Output.deployment_id == deployment_id, Output.id > after_id, Output.id <= upto_id,
                                   Output.twin_of.is_(None))
    if version_id is not None:
        stmt = stmt.where(Output.version_id == version_id)
    return [int(i) for i in session.scalars(stmt.order_by(Output.id))]


def output_texts(session: Session, *, ids: list[int]) -> list[tuple[int, Any, str]]:
    """(id, messages, output) of the outputs with these ids, ascending, in one query."""
    if not ids:
        return []
    rows = session.execute(select(Output.id, Output.messages, Output.output).where(Output.id.in_(ids))
                           .order_by(Output.id)).all()
    return [(int(r.id), r.messages, r.output) for r in rows]


def count_outputs(session: Session, *, deployment_id: int, since: datetime, until: datetime) -> int:
    """How many outputs the deployment recorded in [since, until)."""
    return int(session.scalar(select(func.count()).select_from(Output).where(
        Output.deployment_id == deployment_id, Output.created_at >= since, Output.created_at < until)) or 0)


@dataclass(frozen=True)
class Pair:
    """One rollout pair: the served answer and its unreturned twin to the same prompt."""

    served_id: int
    twin_id: int
    request_id: str
    messages: Any
    served_version_id: int | None
    served_output: str
    twin_version_id: int | None
    twin_output: str
    created_at: datetime


def rollout_pairs(session: Session, *, rollout_id: int, since: datetime | None = None, after_twin_id: int = 0,
                  limit: int = 100_000) -> list[Pair]:
    """The rollout's pairs (twin recorded at or after ``since``, twin id above ``after_twin_id``), by twin id."""
    twin = Output.__table__.alias("twin")
    served = Output.__table__.alias("served")
    stmt = (select(served.c.id, twin.c.id, served.c.request_id, served.c.messages, served.c.version_id,
                   served.c.output, twin.c.version_id, twin.c.output, twin.c.created_at)
            .select_from(twin.join(served, (served.c.deployment_id == twin.c.deployment_id)
                                   & (served.c.request_id == twin.c.twin_of)))
            .where(twin.c.rollout_id == rollout_id, twin.c.twin_of.is_not(None), twin.c.id > after_twin_id)
            .order_by(twin.c.id).limit(limit))
    if since is not None:
        stmt = stmt.where(twin.c.created_at >= since)
    return [Pair(int(r[0]), int(r[1]), str(r[2]), r[3], r[4], r[5], r[6], r[7], r[8])
            for r in session.execute(stmt).all()]


def pair_counts(session: Session, *, rollout_ids: list[int]) -> dict[int, int]:
    """rollout id -> unreturned twins recorded (each is one pair once its served answer is in)."""
    if not rollout_ids:
        return {}
    stmt = (select(Output.rollout_id, func.count()).where(Output.rollout_id.in_(rollout_ids),
                                                           Output.twin_of.is_not(None))
            .group_by(Output.rollout_id))
    return {int(rid): int(n) for rid, n in session.execute(stmt).tuples() if rid is not None}
