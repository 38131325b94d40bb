"""The owning rooms' reads the workers use instead of querying other rooms' tables.

Against the real PostgreSQL: the output windows (``governance.outputs.service``), the gate
rows a reference summarises (``governance.gates.service``), the deployment row lock the
guarded rollback takes (``governance.deployments.service``) and the gate's inputs
(``evaluators.tasks.load_inputs``: the deployment's policy and its other active version).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from evaluators.tasks import load_inputs
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.deployments.models import Deployment
from governance.gates import service as gates
from governance.gates.models import GateCaseResult
from governance.outputs import service as outputs
from governance.registry import service as registry
from monitors import reference, sampling
from tests.monitors.conftest import World


def test_output_windows_are_read_by_id_range_and_version(world: World) -> None:
    v1 = world.release()
    world.record(v1, 3)
    v2 = world.release()
    world.record(v2, 2)
    with unit_of_work(world.engine) as s:
        every = outputs.output_ids(s, deployment_id=world.deployment_id, version_id=None, after_id=0,
                                   upto_id=10**12)
        assert len(every) == 5 and every == sorted(every)
        assert outputs.last_output_id(s, deployment_id=world.deployment_id) == every[-1]
        assert outputs.output_ids(s, deployment_id=world.deployment_id, version_id=v2, after_id=0,
                                  upto_id=10**12) == every[3:]
        assert outputs.output_ids(s, deployment_id=world.deployment_id, version_id=None, after_id=every[0],
                                  upto_id=every[2]) == every[1:3]
        texts = outputs.output_texts(s, ids=[every[4], every[0]])
        assert [t[0] for t in texts] == [every[0], every[4]]
        records = sampling.load_records(s, [every[0]])
        assert records[0].id == every[0] and records[0].prompt == "question"
        assert records[0].output == texts[0][2]
        assert outputs.output_texts(s, ids=[]) == []
        assert sampling.window_range(s, deployment_id=world.deployment_id) == (0, every[-1])


def test_no_outputs_yet_is_id_zero(world: World) -> None:
    with unit_of_work(world.engine) as s:
        assert outputs.last_output_id(s, deployment_id=world.deployment_id) == 0


def test_the_reference_summarises_the_latest_gate_runs_outputs(world: World) -> None:
    vid = world.release()
    with unit_of_work(world.engine) as s:
        run = gates.latest_gate_run(s, version_id=vid)
        assert run is not None
        s.add_all([GateCaseResult(gate_run_id=run.id, suite="s", case_id=f"c{i}", category="x", prompt=f"p{i}",
                                  candidate_output="A fine answer with no personal data.", passed=True)
                   for i in range(3)])
        run_id = run.id
    with unit_of_work(world.engine) as s:
        rows = gates.case_outputs(s, gate_run_id=run_id)
        assert sorted(r[1] for r in rows) == ["p0", "p1", "p2"]
        assert len(gates.case_outputs(s, gate_run_id=run_id, limit=2)) == 2
        summary = reference.gate_summary(s, version_id=vid)
        assert summary is not None and summary["gate_run_id"] == run_id and summary["n"] == 3
        assert reference.gate_summary(s, version_id=None) is None


def test_the_rollback_lock_holds_the_row_and_rereads_it(world: World) -> None:
    with unit_of_work(world.engine) as a:
        stale = a.get(Deployment, world.deployment_id)
        assert stale is not None and not stale.frozen
        with unit_of_work(world.engine) as b:
            row = b.get(Deployment, world.deployment_id)
            assert row is not None
            row.frozen = True
        locked = deployments.lock_deployment_by_id(a, deployment_id=world.deployment_id)
        assert locked is stale and locked.frozen  # populate_existing: the identity map does not hide the change
        with world.engine.connect() as c, pytest.raises(OperationalError):
            c.execute(select(Deployment.id).where(Deployment.id == world.deployment_id).with_for_update(nowait=True))
    with unit_of_work(world.engine) as s:
        assert deployments.lock_deployment_by_id(s, deployment_id=-1) is None


def test_the_gate_compares_with_the_deployments_other_active_version(world: World) -> None:
    active = world.release()
    candidate = world.release(promote=False)
    with unit_of_work(world.engine) as s:
        inputs = load_inputs(s, version_id=candidate)
        served = registry.get_version_or_raise(s, version_id=active)
        assert inputs.policy_text == world.policy_text and inputs.base_digest == world.base_digest
        assert inputs.active_sha256 == served.sha256 and inputs.active_artifact == bytes(served.artifact)
        itself = load_inputs(s, version_id=active)  # the active version is never its own baseline
        assert itself.active_sha256 is None and itself.active_artifact is None
