"""The reference of each (deployment, version): what its outputs looked like when it went live.

It is built from the version's first production windows after it became active (all
their outputs, not a sample) until it holds ``target_size`` outputs; until then checks
are "inconclusive: building reference". The gate's outputs for that version are
summarised next to it (shown in the report) but not mixed into the rows the detectors
compare with: the gate's prompts are adversarial by design, so they would inflate the
reference violation rate and blunt the detectors. Stored in ``monitor_references``:
per-output descriptor rows, flags, a capped list of texts (for Evidently's text drift)
and the whitened principal components of the embeddings with the projected rows, and
the embedding novelty score's model with the held-out rows' scores (its calibration).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from governance.db import utcnow
from governance.gates import service as gates
from governance.monitoring.models import MonitorReference
from monitors.descriptors import OutputRecord, describe
from monitors.detectors.base import Frame, Reference, novelty_score, t2_spe

MAX_COMPONENTS = 10
MAX_TEXTS = 300
# Each novelty score part is scaled by its upper 2.5% point on the fitting rows, so T^2
# and SPE share the tail of the combined score about equally.
NOVELTY_SCALE_QUANTILE = 0.975


REFERENCE_SIZE_ENV = "GOVERN_MONITOR_REFERENCE_SIZE"


def target_size(min_samples: int, configured: int | None = None) -> int:
    """Outputs a reference needs: the policy's ``monitoring.reference_size``, else 1,000
    (or 20 windows' minimum, if more).

    The violation detector's false-alarm budget rests on the reference rate p0: with 200
    outputs at a 1% rate it sees about 2 violations and p0 is off by 70% either way; with
    1,000 it is about 10 (bench/bench_monitors.py measures what that costs). The
    ``GOVERN_MONITOR_REFERENCE_SIZE`` variable overrides both (tests).
    """
    override = os.environ.get(REFERENCE_SIZE_ENV)
    if override:
        value = int(override)
        if value < 20:
            raise ValueError(f"{REFERENCE_SIZE_ENV} must be >= 20 (got {value})")
        return value
    if configured is not None:
        return configured
    return max(20 * min_samples, 1000)


def get_row(session: Session, *, deployment_id: int, version_id: int | None, lock: bool = False
            ) -> MonitorReference | None:
    if lock:
        # create the row first so concurrent checks serialise on it
        session.execute(pg_insert(MonitorReference).values(
            deployment_id=deployment_id, version_id=version_id, sample_size=0, stats={"status": "building"},
            created_at=utcnow()).on_conflict_do_nothing(constraint="uq_monitor_references_dv"))
    stmt = select(MonitorReference).where(MonitorReference.deployment_id == deployment_id,
                                          MonitorReference.version_id == version_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalars(stmt).first()


def is_ready(row: MonitorReference | None) -> bool:
    return row is not None and (row.stats or {}).get("status") == "ready"


def add_rows(row: MonitorReference, frame: Frame, *, target: int) -> bool:
    """Append a window's descriptor rows to a building reference; True when it became ready."""
    stats = dict(row.stats or {})
    numeric = {k: list(v) for k, v in (stats.get("numeric") or {}).items()}
    flags = {k: list(v) for k, v in (stats.get("flags") or {}).items()}
    texts = list(stats.get("texts") or [])
    ids = list(stats.get("output_ids") or [])
    room = max(target - row.sample_size, 0)
    take = min(room, frame.n)
    for k, v in frame.numeric.items():
        numeric.setdefault(k, []).extend(float(x) for x in v[:take])
    for k, v in frame.flags.items():
        flags.setdefault(k, []).extend(int(x) for x in v[:take])
    texts.extend(frame.texts[: max(0, min(take, MAX_TEXTS - len(texts)))])
    ids.extend(frame.output_ids[:take])
    row.sample_size += take
    stats.update(numeric=numeric, flags=flags, texts=texts, output_ids=ids, status="building")
    row.stats = stats
    return row.sample_size >= target


def finish(row: MonitorReference, embeddings: np.ndarray | None, *, gate_summary: dict[str, Any] | None) -> None:
    """Mark a reference ready: whiten its embeddings and store the summaries shown in reports."""
    stats = dict(row.stats or {})
    if embeddings is not None and len(embeddings) >= 3:
        emb = np.asarray(embeddings, dtype=float)
        mean, comps, proj = whiten(emb)
        stats.update(emb_mean=mean.tolist(), emb_components=comps.tolist(), emb_proj=proj.round(6).tolist(),
                     emb_novelty=novelty_model(emb, comps))
    numeric = stats.get("numeric") or {}
    flags = stats.get("flags") or {}
    stats["summary"] = {
        "n": row.sample_size,
        "means": {k: float(np.mean(v)) for k, v in numeric.items() if v},
        "sds": {k: float(np.std(v, ddof=1)) for k, v in numeric.items() if len(v) > 1},
        "rates": {k: float(np.mean(v)) for k, v in flags.items() if v},
    }
    if gate_summary:
        stats["gate"] = gate_summary
    stats["status"] = "ready"
    stats["ready_at"] = utcnow().isoformat()
    row.stats = stats


def whiten(emb: np.ndarray, k: int = MAX_COMPONENTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, components (k, d) scaled to unit variance, reference rows projected (m, k)).

    Cross-fitted: the principal directions come from one half of the rows, the centre and
    the scales from the other half, whose projections are the stored reference rows. Fitted
    and scaled on the same rows, the weaker components' variances are underestimated, so
    new outputs (which did not pick the directions) would look more spread than the
    reference and the embedding detectors would cry wolf; the held-out half behaves like
    new outputs do.
    """
    emb = np.asarray(emb, dtype=float)
    fit, held = _halves(emb)
    centred_fit = fit - fit.mean(axis=0)
    _, s, vt = np.linalg.svd(centred_fit, full_matrices=False)
    k = max(1, min(k, fit.shape[0] - 1, int((s > 1e-8).sum())))
    centre = held.mean(axis=0)
    raw = (held - centre) @ vt[:k].T  # (m, k)
    sd = raw.std(axis=0, ddof=1)
    sd = np.where(sd > 1e-9, sd, 1.0)
    comps = vt[:k] / sd[:, None]
    return centre, comps, raw / sd


def _halves(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows that pick the directions, held-out rows that become the reference rows)."""
    if emb.shape[0] < 40:
        return emb, emb
    return emb[0::2], emb[1::2]


def novelty_model(emb: np.ndarray, components: np.ndarray) -> dict[str, Any]:
    """The embedding novelty score (:func:`monitors.detectors.base.novelty_score`) fitted on the
    half of the rows that picked ``components`` (from :func:`whiten`), and the scores of the
    held-out half.

    Everything the score uses (directions, centre, spreads, scales) comes from the fitting
    half, so a held-out row is scored exactly as a new clean output would be: the two are
    exchangeable, and the share of new clean outputs above the k-th highest held-out score
    follows a known Beta law (split-conformal), which the detector's calibration uses.
    Centred and scaled on the held-out rows instead, as :func:`whiten` does, they sit
    closer to the centre than new outputs and the flag rate comes out ~10% low.
    """
    fit, held = _halves(np.asarray(emb, dtype=float))
    centre = fit.mean(axis=0)
    norms = np.linalg.norm(components, axis=1, keepdims=True)
    sd = ((fit - centre) @ (components / norms).T).std(axis=0, ddof=1)
    sd = np.where(sd > 1e-9, sd, 1.0)
    t2, spe = t2_spe(fit, components, centre=centre, sd=sd)
    t2_scale = float(np.quantile(t2, NOVELTY_SCALE_QUANTILE))
    spe_scale = float(np.quantile(spe, NOVELTY_SCALE_QUANTILE))
    spe_scale = spe_scale if spe_scale > 1e-9 * max(t2_scale, 1.0) else 0.0  # nothing outside the span
    scores = novelty_score(held, components, centre=centre, sd=sd, t2_scale=t2_scale, spe_scale=spe_scale)
    return {"centre": centre.tolist(), "sd": sd.tolist(), "t2_scale": t2_scale, "spe_scale": spe_scale,
            "scores": scores.round(6).tolist()}


def to_reference(row: MonitorReference) -> Reference:
    stats = row.stats or {}
    frame = Frame(
        numeric={k: np.asarray(v, dtype=float) for k, v in (stats.get("numeric") or {}).items()},
        flags={k: np.asarray(v, dtype=np.int8) for k, v in (stats.get("flags") or {}).items()},
        embeddings=np.asarray(stats["emb_proj"], dtype=float) if stats.get("emb_proj") else None,
        texts=list(stats.get("texts") or []),
        output_ids=list(stats.get("output_ids") or []),
    )
    return Reference(
        frame=frame,
        emb_mean=np.asarray(stats["emb_mean"], dtype=float) if stats.get("emb_mean") else None,
        emb_components=np.asarray(stats["emb_components"], dtype=float) if stats.get("emb_components") else None,
        emb_novelty=stats.get("emb_novelty") or None,
        meta={"id": row.id, "version_id": row.version_id, "summary": stats.get("summary"), "gate": stats.get("gate")},
    )


def gate_summary(session: Session, *, version_id: int | None, fmt: Any = None) -> dict[str, Any] | None:
    """Descriptor rates and means of the version's latest gate outputs (for the report)."""
    if version_id is None:
        return None
    run = gates.latest_gate_run(session, version_id=version_id)
    if run is None:
        return None
    rows = gates.case_outputs(session, gate_run_id=run.id, limit=2000)
    if not rows:
        return None
    frame = describe([OutputRecord(i, prompt, output) for i, prompt, output in rows], fmt=fmt,
                     with_embeddings=False)
    return {"gate_run_id": int(run.id), "n": frame.n,
            "means": {k: float(np.mean(v)) for k, v in frame.numeric.items()},
            "rates": {k: float(np.mean(v)) for k, v in frame.flags.items()}}
