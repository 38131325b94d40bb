"""The gate through real Celery worker processes: one worker, and sharded over two (a chord).

A version of the tiny random Llama is submitted through the real registry; the gate task
is sent to the ``gates`` queue and real ``govern worker`` processes run it with the real
model. With ``GOVERN_GATE_SHARDS=2`` the task opens the run and fans its batches out as
``evaluators.gate_shard`` tasks, and the ``evaluators.gate_finish`` callback judges and
records. Both must reach the same verdict and the same evidence digest as the gate run in
this process on the same inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from sqlalchemy import select

from evaluators.tasks import evaluate_version, load_inputs
from governance.auth import service as auth
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.gates.models import GateRun
from governance.policy import default_policy_path
from governance.principal import Principal
from governance.registry import service as registry
from tests.monitors.test_workers_e2e import Procs, _wait
from tests.serving.helpers import make_token, uid

pytestmark = pytest.mark.e2e
TERMINAL = ("gate_passed", "gate_failed")


@pytest.fixture()
def procs(tmp_path: Path, settings_env: None) -> Iterator[Procs]:
    env = {k: os.environ[k] for k in ("GOVERN_DATABASE_URL", "GOVERN_REDIS_URL", "GOVERN_STATE_DIR",
                                      "GOVERN_ENVIRONMENT")}
    env["HF_HUB_OFFLINE"] = "1"
    p = Procs(tmp_path, env)
    yield p
    p.stop_all()


@pytest.fixture()
def celery_client(redis_url: str) -> Any:
    from monitors.celery_app import app, configure

    return configure(app, redis_url)


def _small_policy() -> str:
    """The default policy with a small, fast gate (a fixed stratified subset, short answers)."""
    policy = yaml.safe_load(default_policy_path().read_text())
    policy["name"] = "gate-workers-test"
    policy["gate"].update({"max_new_tokens": 8, "batch_size": 4,
                           "max_cases": {"policy_compliance": 6, "bias": 8, "reasoning": 6}})
    return yaml.safe_dump(policy, sort_keys=False)


@pytest.fixture()
def gate_world(engine: Any, settings_env: None, test_state_dir: Path) -> dict[str, Any]:
    from aligner.providers import load_base_model

    _, _, digests = load_base_model("tiny-random-llama", state_dir=test_state_dir)
    people = {}
    for role in ("ml_engineer", "admin"):
        name = uid(role.replace("_", "-"))
        with unit_of_work(engine) as s:
            user, key = auth.create_user(s, name=name, role=role, actor="system:test")
            people[role] = Principal(name=name, role=role, user_id=user.id, key_prefix=key.split("_")[1])
    shape = digests.shape
    with unit_of_work(engine) as s:
        base = registry.register_base_model(
            s, name="tiny-random-llama", weights_digest=digests.weights, tokenizer_digest=digests.tokenizer,
            config={"hidden_size": shape.hidden_size, "num_layers": shape.num_layers, "num_heads": shape.num_heads,
                    "num_kv_heads": shape.num_kv_heads})
        base_name = base.name
    dep = uid("gate-dep")
    with unit_of_work(engine) as s:
        deployments.create_deployment(s, name=dep, base_model=base_name, policy_text=_small_policy(),
                                      principal=people["admin"])
    return {"engine": engine, "digests": digests, "deployment": dep, "people": people}


def _submit(world: dict[str, Any], seed: int) -> int:
    token = make_token(world["digests"], seed, gate=0.5)
    with unit_of_work(world["engine"]) as s:
        target = deployments.submission_target(s, name=world["deployment"])
        return registry.submit_version(s, data=token.to_bytes(), adapter=uid("adapter"),
                                       principal=world["people"]["ml_engineer"], max_bytes=1_000_000,
                                       deployment=target).version.id


def _run(world: dict[str, Any], vid: int) -> tuple[str, GateRun]:
    with unit_of_work(world["engine"]) as s:
        state = registry.get_version_or_raise(s, version_id=vid).state
        run = s.scalars(select(GateRun).where(GateRun.version_id == vid).order_by(GateRun.id.desc())).first()
        if run is not None:
            s.expunge(run)
    assert run is not None
    return state, run


def _state(world: dict[str, Any], vid: int) -> str:
    with unit_of_work(world["engine"]) as s:
        return registry.get_version_or_raise(s, version_id=vid).state


@pytest.mark.parametrize("shards", [1, 2])
def test_gate_runs_on_real_workers_single_and_sharded(
    gate_world: dict[str, Any], procs: Procs, celery_client: Any, test_state_dir: Path, shards: int
) -> None:
    from governance.outbox.names import GATE_TASK, GATES_QUEUE

    extra = {"GOVERN_GATE_SHARDS": str(shards)}
    for i in range(2):  # two gate workers, one process each, as two machines would run them
        procs.start(f"gate{i}", ["worker", "--queues", GATES_QUEUE, "--concurrency", "1", "--torch-threads", "1"],
                    extra=extra)
    vid = _submit(gate_world, seed=1000 + shards)
    celery_client.send_task(GATE_TASK, args=[vid], queue=GATES_QUEUE)
    _wait(lambda: _state(gate_world, vid) in TERMINAL, 240, f"the gate of version {vid}", procs, "gate0")
    state, run = _run(gate_world, vid)
    assert run.status in ("passed", "failed") and run.evidence_digest

    logs = procs.log("gate0") + procs.log("gate1")
    if shards > 1:
        assert logs.count("evaluators.gate_shard[") >= 2 * shards, logs[-3000:]  # received + succeeded per shard
        assert "evaluators.gate_finish[" in logs

    # The same gate in this process on the same inputs: same verdict, same evidence.
    with unit_of_work(gate_world["engine"]) as s:
        inputs = load_inputs(s, version_id=vid)
    # The same numeric environment as the workers (--torch-threads 1): float results may
    # differ in their last bits with the thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report, _ = evaluate_version(inputs, state_dir=test_state_dir / f"inproc-{shards}")
    finally:
        torch.set_num_threads(threads)
    assert report.evidence_digest == run.evidence_digest
    assert state == ("gate_passed" if report.verdict == "passed" else "gate_failed")


def test_a_regate_runs_on_a_real_worker_under_the_deployments_new_gate_policy(
    gate_world: dict[str, Any], procs: Procs, celery_client: Any
) -> None:
    """The re-gate task (`evaluators.run_regate`) on a real worker: a new gate run beside the
    first, judged under the deployment's changed gate policy, with its audit entry."""
    from governance.audit.models import AuditEntry
    from governance.deployments import policies
    from governance.outbox.names import GATE_TASK, GATES_QUEUE, REGATE_TASK

    engine = gate_world["engine"]
    procs.start("gate0", ["worker", "--queues", GATES_QUEUE, "--concurrency", "1", "--torch-threads", "1"])
    token = make_token(gate_world["digests"], 77, gate=0.0)  # behaves as the base model: passes its gate
    with unit_of_work(engine) as s:
        vid = registry.submit_version(s, data=token.to_bytes(), adapter=uid("adapter"),
                                      principal=gate_world["people"]["ml_engineer"], max_bytes=1_000_000,
                                      deployment=deployments.submission_target(s, name=gate_world["deployment"])
                                      ).version.id
    celery_client.send_task(GATE_TASK, args=[vid], queue=GATES_QUEUE)
    _wait(lambda: _state(gate_world, vid) in TERMINAL, 240, f"the gate of version {vid}", procs, "gate0")
    assert _state(gate_world, vid) == "gate_passed"
    stricter = yaml.safe_load(_small_policy())
    stricter["gate"]["reasoning"] = {"max_accuracy_drop": 0.01}
    with unit_of_work(engine) as s:
        officer, _ = auth.create_user(s, name=uid("officer"), role="compliance_officer", actor="system:test")
        co = Principal(name=officer.name, role="compliance_officer", user_id=officer.id, key_prefix="co")
        policies.propose_policy(s, deployment=gate_world["deployment"], policy_text=yaml.safe_dump(stricter),
                                reason="stricter reasoning", principal=gate_world["people"]["ml_engineer"])
    with unit_of_work(engine) as s:
        policies.decide_policy(s, deployment=gate_world["deployment"], approve=True, comment="ok", principal=co)
    with unit_of_work(engine) as s:
        run = registry.request_regate(s, version_id=vid, principal=gate_world["people"]["ml_engineer"],
                                      target=deployments.regate_target(s, name=gate_world["deployment"]))
        run_id, digest = run.id, run.gate_digest
    celery_client.send_task(REGATE_TASK, args=[run_id], queue=GATES_QUEUE)

    def finished() -> bool:
        with unit_of_work(engine) as s:
            row = s.get(GateRun, run_id)
            return row is not None and row.status in ("passed", "failed", "error")

    _wait(finished, 240, f"the re-gate run {run_id}", procs, "gate0")
    with unit_of_work(engine) as s:
        runs = list(s.scalars(select(GateRun).where(GateRun.version_id == vid).order_by(GateRun.id)))
        assert [(r.kind, r.status) for r in runs] == [("first", "passed"), ("regate", "passed")], runs[-1].error
        assert runs[1].gate_digest == digest != runs[0].gate_digest and runs[1].evidence_digest
        assert s.scalars(select(AuditEntry).where(AuditEntry.action == "version.regate_result",
                                                  AuditEntry.subject_id == str(vid))).one()
        assert registry.get_version_or_raise(s, version_id=vid).state == "gate_passed"
    assert "evaluators.run_regate[" in procs.log("gate0")
