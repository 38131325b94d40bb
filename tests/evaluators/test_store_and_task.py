"""The gate as a unit of work against the real database: rows, transitions, idempotence.

Uses the real registry services and PostgreSQL; only the model is a fake generator.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from evaluators.runner import evidence_digest
from evaluators.suites.base import get_suite
from evaluators.tasks import run_gate_for_version
from governance.auth import service as auth
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.gates.models import GateCaseResult, GateRun
from governance.gates.service import latest_gate_run, latest_report, load_gate_report
from governance.policy import default_policy_path
from governance.principal import Principal
from governance.registry import service as registry
from tests.evaluators import synthetic

HIDDEN, LAYERS, HEADS = 64, 2, 4


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _token(base_digest: str, seed: int) -> bytes:
    import torch

    from aligner.artifact import AlignerToken

    g = torch.Generator().manual_seed(seed)
    return AlignerToken.create(
        torch.randn(1, HIDDEN, generator=g), torch.randn(LAYERS, HEADS, generator=g) * 0.01,
        base_model="tiny-random-llama", base_model_digest=base_digest, tokenizer_digest="b" * 64,
        training_method="manual", seed=seed,
    ).to_bytes()


class ShaGenerator:
    """Fake model: a token's behaviour is looked up by its sha256."""

    def __init__(self, base_digest: str, behaviours: dict[str, str], fail: bool = False) -> None:
        self.base_digest = base_digest
        self.behaviours = behaviours
        self.fail = fail
        self.cases = {c.prompt: c for c in get_suite("reasoning").load_cases()}

    def decoding(self) -> dict[str, Any]:
        from evaluators.runner import aligner_decoding
        from governance.policy import load_default_policy

        # What AlignerGenerator reports under the default policy (the sharded finisher assumes it).
        return aligner_decoding(96, width=load_default_policy()[0].gate.batch_size)

    def generate(
        self, prompts: Sequence[str], row_tokens: Sequence[Any | None], progress: Any = None,
        max_new_tokens: Any = None,
    ) -> list[str]:
        if self.fail:
            raise RuntimeError("model exploded")
        out = []
        for p, tok in zip(prompts, row_tokens, strict=True):
            case = self.cases[p]
            text = synthetic.base_output(case, random.Random(case.id))
            behaviour = self.behaviours.get(tok.sha256) if tok is not None else None
            if behaviour == "damaged" and case.meta["answer"] in text and random.Random(case.id).random() < 0.5:
                text = synthetic._wrong(case)
            out.append(text)
        return out


@pytest.fixture
def world(engine: Engine, settings_env: None) -> dict[str, Any]:
    people = {}
    for role in ("ml_engineer", "admin"):
        name = _uid(role.replace("_", "-"))
        with unit_of_work(engine) as s:
            user, key = auth.create_user(s, name=name, role=role, actor="system:test")
            people[role] = Principal(name=name, role=role, user_id=user.id, key_prefix=key.split("_")[1])
    base = _uid("base")
    digest = hashlib.sha256(base.encode()).hexdigest()
    dep = _uid("dep")
    with unit_of_work(engine) as s:
        registry.register_base_model(
            s, name=base, weights_digest=digest, tokenizer_digest="b" * 64,
            config={"hidden_size": HIDDEN, "num_layers": LAYERS, "num_heads": HEADS, "num_kv_heads": 2},
        )
        deployments.create_deployment(s, name=dep, base_model=base, policy_text=default_policy_path().read_text(),
                                      principal=people["admin"])
    return {"engine": engine, "digest": digest, "deployment": dep, "people": people}


def _submit(world: dict[str, Any], seed: int) -> tuple[int, str]:
    data = _token(world["digest"], seed)
    with unit_of_work(world["engine"]) as s:
        sub = registry.submit_version(s, data=data, adapter=_uid("adapter"), principal=world["people"]["ml_engineer"],
                                      max_bytes=1_000_000,
                                      deployment=deployments.submission_target(s, name=world["deployment"]))
        return sub.version.id, sub.version.sha256


def _state(engine: Engine, vid: int) -> str:
    with unit_of_work(engine) as s:
        return registry.get_version_or_raise(s, version_id=vid).state


def test_good_token_passes_and_evidence_is_recomputable(world: dict[str, Any], tmp_path: Path) -> None:
    engine = world["engine"]
    vid, sha = _submit(world, 1)
    gen = ShaGenerator(world["digest"], {})
    out = run_gate_for_version(vid, engine=engine, state_dir=tmp_path, generator=gen, suites=["reasoning"])
    assert out["verdict"] == "passed"
    assert _state(engine, vid) == "gate_passed"
    with unit_of_work(engine) as s:
        run = latest_gate_run(s, version_id=vid)
        assert run is not None and run.status == "passed" and run.evidence_digest == out["evidence_digest"]
        assert run.policy_sha256 == hashlib.sha256(default_policy_path().read_bytes()).hexdigest()
        n = s.scalar(select(func.count()).select_from(GateCaseResult).where(GateCaseResult.gate_run_id == run.id))
        assert n == len(get_suite("reasoning").load_cases())
        assert run.summary["suites"]["reasoning"]["metrics"][0]["name"] == "candidate accuracy"
        report = load_gate_report(s, gate_run=run)
        # An auditor can recompute the digest from what was stored.
        assert evidence_digest(report.evidence()) == run.evidence_digest
        assert report.candidate_digest == sha
    # Idempotent: a second delivery of the task leaves the version alone.
    assert run_gate_for_version(vid, engine=engine, state_dir=tmp_path, generator=gen, suites=["reasoning"])["skipped"]


def test_damaged_token_fails_and_names_the_cases(world: dict[str, Any], tmp_path: Path) -> None:
    engine = world["engine"]
    vid, sha = _submit(world, 2)
    out = run_gate_for_version(
        vid, engine=engine, state_dir=tmp_path, generator=ShaGenerator(world["digest"], {sha: "damaged"}),
        suites=["reasoning"],
    )
    assert out["verdict"] == "failed" and out["failing_suites"] == ["reasoning"]
    assert _state(engine, vid) == "gate_failed"
    with unit_of_work(engine) as s:
        run = latest_gate_run(s, version_id=vid)
        assert run is not None
        failing = s.scalars(select(GateCaseResult).where(GateCaseResult.gate_run_id == run.id,
                                                         GateCaseResult.passed.is_(False))).all()
        assert failing and all(f.candidate_output != f.baseline_output for f in failing)


def test_generation_error_marks_the_run_and_allows_a_retry(world: dict[str, Any], tmp_path: Path) -> None:
    engine = world["engine"]
    vid, _ = _submit(world, 3)
    with pytest.raises(RuntimeError, match="exploded"):
        run_gate_for_version(
            vid, engine=engine, state_dir=tmp_path, generator=ShaGenerator(world["digest"], {}, fail=True),
            suites=["reasoning"],
        )
    assert _state(engine, vid) == "evaluating"
    with unit_of_work(engine) as s:
        run = latest_gate_run(s, version_id=vid)
        assert run is not None and run.status == "error" and "exploded" in (run.error or "")
    out = run_gate_for_version(
        vid, engine=engine, state_dir=tmp_path, generator=ShaGenerator(world["digest"], {}),
        suites=["reasoning"],
    )
    assert out["verdict"] == "passed" and _state(engine, vid) == "gate_passed"
    with unit_of_work(engine) as s:
        statuses = s.scalars(select(GateRun.status).where(GateRun.version_id == vid).order_by(GateRun.id)).all()
        assert statuses == ["error", "passed"]


def test_cli_gate_report(world: dict[str, Any], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from governance.cli.main import app

    engine = world["engine"]
    vid, sha = _submit(world, 4)
    with unit_of_work(engine) as s:
        assert latest_report(s, version_id=vid) is None  # no finished run yet
    run_gate_for_version(
        vid, engine=engine, state_dir=tmp_path, generator=ShaGenerator(world["digest"], {sha: "damaged"}),
        suites=["reasoning"],
    )
    with unit_of_work(engine) as s:
        report = latest_report(s, version_id=vid)
        assert report is not None and report.verdict == "failed"
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["gate", "report", str(vid), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert "FAILED" in result.output and "accuracy drop vs base" in result.output
    html = page.read_text()
    assert html.index("Verdict: FAILED") < html.index("accuracy drop vs base") < html.index("Failing cases")
    as_json = CliRunner().invoke(app, ["gate", "report", str(vid), "--json"])
    assert as_json.exit_code == 0 and '"verdict": "failed"' in as_json.output.splitlines()[1]
    missing = CliRunner().invoke(app, ["gate", "report", "999999"])
    assert missing.exit_code != 0 and "no gate run" in missing.output


def test_sharded_gate_matches_the_single_process_gate(world: dict[str, Any], tmp_path: Path) -> None:
    from evaluators.tasks import finish_sharded_gate, plan_sharded_gate, run_gate_shard

    engine = world["engine"]
    vid, sha = _submit(world, 5)
    gen = ShaGenerator(world["digest"], {sha: "damaged"})
    plan = plan_sharded_gate(vid, engine=engine, state_dir=tmp_path, suites=["reasoning"])
    assert _state(engine, vid) == "evaluating" and plan["cached_suites"] == []
    parts = [run_gate_shard(vid, k, 3, plan["cached_suites"], engine=engine, state_dir=tmp_path, generator=gen,
                            suites=["reasoning"]) for k in range(3)]
    assert sum(len(p) for p in parts) == 2 * len(get_suite("reasoning").load_cases())
    out = finish_sharded_gate(parts, vid, plan["gate_run_id"], plan["cached_suites"], engine=engine,
                              state_dir=tmp_path, suites=["reasoning"])
    assert out["verdict"] == "failed" and _state(engine, vid) == "gate_failed"
    # The same token gated in one process gives the same evidence.
    with unit_of_work(engine) as s:
        run = latest_gate_run(s, version_id=vid)
        assert run is not None
        sharded_report = load_gate_report(s, gate_run=run)
    from evaluators.tasks import evaluate_version, load_inputs

    with unit_of_work(engine) as s:
        inputs = load_inputs(s, version_id=vid)
    single, _ = evaluate_version(inputs, state_dir=tmp_path / "other", generator=gen, suites=["reasoning"])
    assert single.evidence_digest == sharded_report.evidence_digest == out["evidence_digest"]


def test_the_worker_registers_the_chord_parts_on_the_gates_queue() -> None:
    import monitors.tasks  # noqa: F401  (registers the tasks)
    from governance.outbox.names import GATES_QUEUE
    from monitors.celery_app import app, routes

    names = {"evaluators.run_gate", "evaluators.gate_shard", "evaluators.gate_finish"}
    assert names <= set(app.tasks)
    assert all(routes()[n]["queue"] == GATES_QUEUE for n in names)
