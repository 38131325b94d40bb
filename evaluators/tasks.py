"""The gate as a unit of work: ``run_gate_for_version(version_id)``, called by the Celery task
``evaluators.run_gate`` (registered by ``monitors.celery_app``) and by ``govern gate run``.

Idempotent and guarded (PostHog style): a version that is not ``submitted`` or
``evaluating`` is left alone. Three short transactions around the long generation, so
no database transaction stays open while the model runs: (1) move the version to
``evaluating`` and open a ``running`` gate run; (2) generate and judge, outside any
transaction; (3) record the report's rows and move the version to ``gate_passed`` or
``gate_failed`` with its audit entry, together. An error marks the run ``error`` and
leaves the version ``evaluating`` for a retry.

Sharded: ``plan_sharded_gate`` (transaction 1 + the plan), ``run_gate_shard`` on each
worker (every n-th generation group), ``finish_sharded_gate`` (merge, judge, transaction 3); the
same evidence digest as the single-process gate. The worker's tasks in
``monitors.tasks`` wire them as a Celery chord (``GOVERN_GATE_SHARDS`` > 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from evaluators.runner import (
    DEFAULT_SUITES,
    AlignerGenerator,
    Progress,
    aligner_decoding,
    finish_gate,
    generate_and_judge,
    generate_rows,
    outputs_from_json,
    outputs_to_json,
    plan_gate,
)
from evaluators.store import mark_gate_error, open_gate_run, save_gate_run
from governance.db import get_engine, unit_of_work, utcnow
from governance.deployments import service as deployments
from governance.gates import service as gates
from governance.gates.models import GateRun
from governance.gates.report import GateReport
from governance.policy import default_policy_path, gate_digest, parse_policy
from governance.policy_store import store_policy
from governance.principal import Principal
from governance.registry import service as registry
from governance.registry.models import VersionState
from governance.settings import get_settings

if TYPE_CHECKING:  # annotations only: rooms talk through service functions
    from governance.registry.models import TokenVersion

log = logging.getLogger(__name__)

GATE_ACTOR = "gate"


@dataclass(frozen=True)
class GateInputs:
    version_id: int
    candidate_artifact: bytes
    candidate_sha256: str
    active_artifact: bytes | None
    active_sha256: str | None
    base_name: str
    base_digest: str
    policy_text: str


def load_inputs(session: Any, *, version_id: int) -> GateInputs:
    """What the gate needs, copied out of the database (no ORM objects leave the session)."""
    version = registry.get_version_or_raise(session, version_id=version_id)
    base = registry.get_base_model_by_id(session, base_model_id=version.base_model_id)
    assert base is not None  # foreign key
    policy_text: str | None = None
    active: TokenVersion | None = None
    if version.deployment_id is not None:
        dep = deployments.get_deployment_by_id(session, deployment_id=version.deployment_id)
        if dep is not None:
            policy_text = deployments.policy_of(session, deployment=dep).content
            # the deployment has one active row at most (a partial unique index); the candidate is not it
            active = deployments.active_version(session, deployment=dep)
            if active is not None and active.id == version.id:
                active = None
    if policy_text is None:
        policy_text = default_policy_path().read_text(encoding="utf-8")
    return GateInputs(
        version_id=version.id,
        candidate_artifact=bytes(version.artifact),
        candidate_sha256=version.sha256,
        active_artifact=bytes(active.artifact) if active is not None else None,
        active_sha256=active.sha256 if active is not None else None,
        base_name=base.name,
        base_digest=base.weights_digest,
        policy_text=policy_text,
    )


def _generator(inputs: GateInputs, *, state_dir: Path, max_new_tokens: int, width: int) -> AlignerGenerator:
    from aligner import attach  # defers torch
    from aligner.providers import load_base_model  # defers torch

    model, tokenizer, digests = load_base_model(inputs.base_name, state_dir=state_dir)
    if digests.weights != inputs.base_digest:
        raise RuntimeError(
            f"base model {inputs.base_name!r} loaded with digest {digests.weights[:12]}…, registered as "
            f"{inputs.base_digest[:12]}…: refusing to gate against a different model"
        )
    attach(model, base_digest=digests.weights).set_token(None)
    return AlignerGenerator(model, tokenizer, base_digest=digests.weights, max_new_tokens=max_new_tokens,
                            width=width)


def evaluate_version(
    inputs: GateInputs,
    *,
    state_dir: str | Path,
    generator: Any | None = None,
    progress: Progress | None = None,
    suites: Any = DEFAULT_SUITES,
) -> tuple[GateReport, str]:
    """Generate and judge (no database). Returns the report and the policy's sha256."""
    from aligner.artifact import AlignerToken  # defers torch

    policy, policy_sha = parse_policy(inputs.policy_text)
    gen = generator or _generator(inputs, state_dir=Path(state_dir), max_new_tokens=policy.gate.max_new_tokens,
                                       width=policy.gate.batch_size)
    candidate = AlignerToken.from_bytes(inputs.candidate_artifact)
    active = AlignerToken.from_bytes(inputs.active_artifact) if inputs.active_artifact else None
    report = generate_and_judge(
        gen, policy=policy, policy_sha256=policy_sha, candidate=candidate, candidate_digest=inputs.candidate_sha256,
        active=active, active_digest=inputs.active_sha256, state_dir=state_dir, suites=suites, progress=progress,
    )
    return report, policy_sha


def _engine(engine: Engine | None) -> Engine:
    return engine or get_engine()


def _state(state_dir: str | Path | None) -> Path:
    return Path(state_dir) if state_dir is not None else Path(get_settings().state_dir)


def start_gate(version_id: int, *, engine: Engine | None = None) -> tuple[GateInputs, int] | str:
    """Transaction 1: submitted -> evaluating, open a running gate run. A string: skipped (why)."""
    principal = Principal.for_system(GATE_ACTOR)
    with unit_of_work(_engine(engine)) as s:
        version = registry.get_version_or_raise(s, version_id=version_id)
        if version.state not in (VersionState.submitted.value, VersionState.evaluating.value):
            return f"version is {version.state}"
        if version.state == VersionState.submitted.value:
            registry.begin_gate(s, version_id=version_id, principal=principal)
        inputs = load_inputs(s, version_id=version_id)
        policy, policy_sha = parse_policy(inputs.policy_text)
        # keep the text a verdict was judged by, so its gate digest can always be recomputed
        store_policy(s, content=inputs.policy_text)
        return inputs, open_gate_run(s, version_id=version_id, policy_sha256=policy_sha,
                                     gate_digest=gate_digest(policy)).id


def record_gate(version_id: int, gate_run_id: int, report: GateReport, *, engine: Engine | None = None) -> None:
    """Transaction 3: the report's rows and evaluating -> gate_passed | gate_failed, together."""
    principal = Principal.for_system(GATE_ACTOR)
    with unit_of_work(_engine(engine)) as s:
        run = s.get(GateRun, gate_run_id)
        save_gate_run(s, version_id=version_id, report=report, policy_sha256=report.policy_sha256, gate_run=run)
        registry.finish_gate(s, version_id=version_id, passed=report.passed, evidence_digest=report.evidence_digest,
                             policy_sha256=report.policy_sha256, principal=principal,
                             waivers=report.waiver_names())


def record_error(gate_run_id: int, exc: BaseException, *, engine: Engine | None = None) -> None:
    with unit_of_work(_engine(engine)) as s:
        mark_gate_error(s, gate_run_id=gate_run_id, error=f"{type(exc).__name__}: {exc}")


def _outcome(version_id: int, gate_run_id: int, report: GateReport) -> dict[str, Any]:
    return {
        "version_id": version_id,
        "gate_run_id": gate_run_id,
        "verdict": report.verdict,
        "outcome": report.outcome,
        "waivers": report.waiver_names(),
        "evidence_digest": report.evidence_digest,
        "failing_suites": [r.suite for r in report.suites if not r.passed],
    }


def _judge(
    inputs: GateInputs, run_id: int, what: str, *, engine: Engine | None, state_dir: str | Path | None,
    generator: Any | None, progress: Progress | None, suites: Any,
) -> GateReport:
    """Transaction 2: generate and judge outside any transaction; an error marks the run and re-raises."""
    try:
        report, _ = evaluate_version(inputs, state_dir=_state(state_dir), generator=generator, progress=progress,
                                     suites=suites)
    except Exception as exc:
        log.exception("%s failed", what)
        record_error(run_id, exc, engine=engine)
        raise
    return report


def run_gate_for_version(
    version_id: int,
    *,
    engine: Engine | None = None,
    state_dir: str | Path | None = None,
    generator: Any | None = None,
    progress: Progress | None = None,
    suites: Any = DEFAULT_SUITES,
) -> dict[str, Any]:
    """Run the gate of one version end to end in this process; returns a small JSON-able summary."""
    started = start_gate(version_id, engine=engine)
    if isinstance(started, str):
        return {"version_id": version_id, "skipped": started}
    inputs, run_id = started
    report = _judge(inputs, run_id, f"gate of version {version_id}", engine=engine, state_dir=state_dir,
                    generator=generator, progress=progress, suites=suites)
    record_gate(version_id, run_id, report, engine=engine)
    return _outcome(version_id, run_id, report)


# --- re-gate: an existing version under a deployment's current gate policy -----------------


def start_regate(gate_run_id: int, *, engine: Engine | None = None) -> tuple[GateInputs, int] | str:
    """Transaction 1 of a re-gate: the queued run becomes running. A string: skipped (why)."""
    with unit_of_work(_engine(engine)) as s:
        run = gates.get_gate_run(s, gate_run_id=gate_run_id)
        if run is None or run.kind != "regate":
            return f"no re-gate run {gate_run_id}"
        if run.status != "queued":
            return f"gate run {gate_run_id} is {run.status}"
        policy_text = registry.policy_text_by_sha(s, sha256=run.policy_sha256)
        if policy_text is None or run.deployment_id is None:
            raise RuntimeError(f"gate run {gate_run_id}: the policy {run.policy_sha256[:12]}... is not stored")
        version = registry.get_version_or_raise(s, version_id=run.version_id)
        base = registry.get_base_model_by_id(s, base_model_id=version.base_model_id)
        dep = deployments.get_deployment_by_id(s, deployment_id=run.deployment_id)
        assert base is not None and dep is not None  # foreign keys
        active = deployments.active_version(s, deployment=dep)
        if active is not None and active.id == version.id:
            active = None
        run.status, run.started_at = "running", utcnow()
        return GateInputs(
            version_id=version.id, candidate_artifact=bytes(version.artifact), candidate_sha256=version.sha256,
            active_artifact=bytes(active.artifact) if active is not None else None,
            active_sha256=active.sha256 if active is not None else None,
            base_name=base.name, base_digest=base.weights_digest, policy_text=policy_text,
        ), run.id


def record_regate(gate_run_id: int, report: GateReport, *, engine: Engine | None = None) -> int:
    """Transaction 3 of a re-gate: the report's rows and the verdict's audit entry, together."""
    principal = Principal.for_system(GATE_ACTOR)
    with unit_of_work(_engine(engine)) as s:
        run = gates.get_gate_run(s, gate_run_id=gate_run_id)
        assert run is not None
        save_gate_run(s, version_id=run.version_id, report=report, policy_sha256=report.policy_sha256, gate_run=run)
        registry.finish_regate(s, version_id=run.version_id, gate_run_id=gate_run_id, passed=report.passed,
                               evidence_digest=report.evidence_digest, principal=principal,
                               waivers=report.waiver_names())
        return run.version_id


def run_regate(
    gate_run_id: int,
    *,
    engine: Engine | None = None,
    state_dir: str | Path | None = None,
    generator: Any | None = None,
    progress: Progress | None = None,
    suites: Any = DEFAULT_SUITES,
) -> dict[str, Any]:
    """Run a queued re-gate (`governance.registry.service.request_regate`) in this process.

    Base outputs come from the state folder's cache when the base model, the decoding and
    the cases are the ones an earlier gate generated them with.
    """
    started = start_regate(gate_run_id, engine=engine)
    if isinstance(started, str):
        return {"gate_run_id": gate_run_id, "skipped": started}
    inputs, run_id = started
    report = _judge(inputs, run_id, f"re-gate run {gate_run_id}", engine=engine, state_dir=state_dir,
                    generator=generator, progress=progress, suites=suites)
    record_regate(run_id, report, engine=engine)
    return _outcome(inputs.version_id, run_id, report)


# --- sharded gate (a Celery chord: shards in parallel, then one finisher) -------------------


def _plan(inputs: GateInputs, *, state_dir: Path, suites: Any, assume_cached: Sequence[str] | None) -> Any:
    policy, _ = parse_policy(inputs.policy_text)
    decoding = aligner_decoding(policy.gate.max_new_tokens, width=policy.gate.batch_size)
    return plan_gate(base_digest=inputs.base_digest, decoding=decoding,
                     policy=policy, has_active=inputs.active_artifact is not None, state_dir=state_dir,
                     suites=suites, assume_cached=assume_cached)


def plan_sharded_gate(
    version_id: int, *, engine: Engine | None = None, state_dir: str | Path | None = None, suites: Any = DEFAULT_SUITES
) -> dict[str, Any]:
    """Start a sharded gate: returns what every shard and the finisher need (JSON-able)."""
    started = start_gate(version_id, engine=engine)
    if isinstance(started, str):
        return {"version_id": version_id, "skipped": started}
    inputs, run_id = started
    plan = _plan(inputs, state_dir=_state(state_dir), suites=suites, assume_cached=None)
    return {"version_id": version_id, "gate_run_id": run_id, "cached_suites": plan.assumed_cached,
            "batches": len(plan.groups)}


def run_gate_shard(
    version_id: int,
    index: int,
    count: int,
    cached_suites: Sequence[str],
    *,
    engine: Engine | None = None,
    state_dir: str | Path | None = None,
    generator: Any | None = None,
    suites: Any = DEFAULT_SUITES,
) -> list[list[Any]]:
    """Generate one shard's groups (every ``count``-th from ``index``); returns its outputs as lists."""
    from aligner.artifact import AlignerToken  # defers torch

    with unit_of_work(_engine(engine)) as s:
        inputs = load_inputs(s, version_id=version_id)
    state = _state(state_dir)
    plan = _plan(inputs, state_dir=state, suites=suites, assume_cached=cached_suites)
    policy, _ = parse_policy(inputs.policy_text)
    gen = generator or _generator(inputs, state_dir=state, max_new_tokens=policy.gate.max_new_tokens,
                                       width=policy.gate.batch_size)
    tokens = {
        "candidate": AlignerToken.from_bytes(inputs.candidate_artifact),
        "active": AlignerToken.from_bytes(inputs.active_artifact) if inputs.active_artifact else None,
        "base": None,
    }
    return outputs_to_json(generate_rows(gen, plan.shard(index, count), plan.suite_cases, tokens))


def finish_sharded_gate(
    shard_outputs: Sequence[Sequence[Sequence[Any]]],
    version_id: int,
    gate_run_id: int,
    cached_suites: Sequence[str],
    *,
    engine: Engine | None = None,
    state_dir: str | Path | None = None,
    suites: Any = DEFAULT_SUITES,
) -> dict[str, Any]:
    """Merge the shards' outputs, judge, record (the chord's callback)."""
    try:
        with unit_of_work(_engine(engine)) as s:
            inputs = load_inputs(s, version_id=version_id)
        policy, policy_sha = parse_policy(inputs.policy_text)
        state = _state(state_dir)
        plan = _plan(inputs, state_dir=state, suites=suites, assume_cached=cached_suites)
        merged = {}
        for part in shard_outputs:
            merged.update(outputs_from_json(part))
        report = finish_gate(plan, merged, policy=policy, policy_sha256=policy_sha,
                             candidate_digest=inputs.candidate_sha256, active_digest=inputs.active_sha256,
                             state_dir=state)
    except Exception as exc:
        log.exception("sharded gate of version %s failed", version_id)
        record_error(gate_run_id, exc, engine=engine)
        raise
    record_gate(version_id, gate_run_id, report, engine=engine)
    return _outcome(version_id, gate_run_id, report)
