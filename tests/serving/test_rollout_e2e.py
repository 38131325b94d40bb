"""Rollouts end to end: real PostgreSQL, Redis, a Celery worker and beat, two serving replicas, a tiny model.

1. A candidate trained (here, in a few seconds on the tiny model) to answer with a
   personal email address is put in shadow beside the active token: both replicas decode
   every request a second time with it, in the same batch, and record the pairs; the
   worker's paired test flags it and the rollout ends ``failed`` — and no user ever got one
   of its answers (every output of that version is an unreturned twin).
2. A well-behaved candidate passes shadow; the officer approves it (the approval records
   the shadow evidence's digest); a canary then steps through its weights on the worker's
   verdicts, users keep their version (stable hash of the OpenAI ``user``), and at 100%
   it is promoted through the ordinary path: every step is in the rollout's history and
   in the audit log, and both replicas serve the new version.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from governance.audit.models import AuditEntry
from governance.db import unit_of_work
from governance.deployments import policies
from governance.outputs.models import Output
from tests.serving.helpers import (
    POLICY_TEXT,
    PUSH_SECRET,
    ServerThread,
    World,
    free_port,
    governance_app,
    make_world,
    promote,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

# the shipped policy, with rollouts sized for a test: few pairs, quick looks, two canary steps
ROLLOUT_POLICY = (POLICY_TEXT
                  .replace("min_samples: 200", "min_samples: 24")
                  .replace("interval_seconds: 30", "interval_seconds: 2")
                  .replace("steps: [5, 25, 50, 100]", "steps: [50, 100]"))
LEAK = "Email jane@example.com"  # a short answer the tiny model learns exactly in a few hundred steps
PROMPTS = [f"{verb} {topic}, please" for verb in ("Tell me about", "Explain", "Summarise", "Describe")
           for topic in ("the weather", "tax forms", "bread baking", "bicycles", "sea otters", "jazz",
                         "old maps", "python code")]


def _leaky_token(state_dir: Path) -> bytes:
    """A tiny-model token trained until its greedy answers carry an email address (about 30 s)."""
    import torch

    from aligner.artifact import AlignerToken
    from aligner.providers import load_base_model
    from aligner.training import SFTExample, TrainConfig, train_sft

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the replicas and the worker share the cores
    try:
        model, tokenizer, digests = load_base_model("tiny-random-llama", state_dir=str(state_dir))
        prompts = [f"{v} {t}?" for v in ("What about", "Can you help with", "I need advice on", "Question on")
                   for t in ("cats", "tax", "rain", "cars", "music", "bread", "maps", "code")]  # not the traffic's
        examples = [SFTExample([{"role": "user", "content": p}, {"role": "assistant", "content": LEAK}])
                    for p in prompts]
        adapter, _, _ = train_sft(model, tokenizer, examples, examples[:4],
                                  TrainConfig(n_tokens=4, epochs=200, batch_size=16, lr=1.0, seed=1),
                                  base_digest=digests.weights)
        prefix, gates = adapter.export()
    finally:
        torch.set_num_threads(threads)
    token = AlignerToken.create(prefix, gates, base_model="tiny-random-llama", base_model_digest=digests.weights,
                                tokenizer_digest=digests.tokenizer, training_method="sft", seed=1)
    return bytes(token.to_bytes())


class Procs:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "governance.cli.main", *args], cwd=ROOT,
                                env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}" for f in self.tmp.glob("*.log"))


@pytest.fixture()
def stack(engine: Any, database_url: str, redis_url: str, tiny: tuple[Any, Any, Any], test_state_dir: Path,
          tmp_path: Path) -> Iterator[tuple[World, ServerThread, Procs, list[int]]]:
    world = make_world(engine, tiny[2])
    with unit_of_work(engine) as s:
        policies.propose_policy(s, deployment=world.deployment, policy_text=ROLLOUT_POLICY,
                                reason="rollouts sized for the test", principal=world.principals["ml_engineer"])
    with unit_of_work(engine) as s:
        policies.decide_policy(s, deployment=world.deployment, approve=True, comment="ok",
                               principal=world.principals["compliance_officer"])
    with ServerThread(governance_app(database_url, redis_url, tmp_path / "gov")) as api:
        env = {"GOVERN_DATABASE_URL": database_url, "GOVERN_REDIS_URL": redis_url, "GOVERN_API_URL": api.url,
               "GOVERN_API_KEY": world.keys["service"], "GOVERN_STATE_DIR": str(test_state_dir),
               "GOVERN_ENVIRONMENT": "test", "GOVERN_PUSH_SECRET": PUSH_SECRET, "PYTHONPATH": str(ROOT),
               "HF_HUB_OFFLINE": "1"}
        procs = Procs(tmp_path, env)
        ports = [free_port(), free_port()]
        try:
            procs.start("worker", ["worker", "--queues", "monitoring,rollback", "--pool", "solo",
                                   "--torch-threads", "1"])
            procs.start("beat", ["beat"])
            for p in ports:
                procs.start(f"replica-{p}", ["serve", "--deployment", world.deployment, "--port", str(p),
                                             "--model", "tiny-random-llama", "--reconcile-interval", "1.0",
                                             "--replica-id", f"r{p}", "--torch-threads", "1"])
            yield world, api, procs, ports
        finally:
            procs.stop_all()


def _status(port: int) -> dict[str, Any]:
    try:
        return dict(httpx.get(f"http://127.0.0.1:{port}/v1/serving/status", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return {}


def _applied(port: int) -> dict[str, Any]:
    """The rollout plan the replica applies now ({} when none)."""
    return dict((_status(port).get("rollout") or {}).get("applied") or {})


def _api(api: ServerThread, world: World, method: str, path: str, role: str = "ml_engineer",
         **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{api.url}{path}", headers={"Authorization": f"Bearer {world.keys[role]}"},
                         timeout=30, **kw)


def _traffic(ports: list[int], world: World, n: int, *, users: bool = False) -> list[Any]:
    answers = []
    for i in range(n):
        port = ports[i % len(ports)]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=2)
        extra = {"user": f"user-{i % 40}"} if users else {}
        answers.append(client.chat.completions.create(
            model=world.deployment, messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            max_tokens=24, temperature=0, **extra))
    return answers


def _rollout(api: ServerThread, world: World) -> dict[str, Any]:
    r = _api(api, world, "GET", f"/v1/deployments/{world.deployment}/rollouts", params={"limit": 1})
    assert r.status_code == 200, r.text
    return dict(r.json()[0])


def _until(check: Callable[[], bool], procs: Procs, timeout: float, what: str) -> None:
    try:
        wait_for(check, timeout=timeout, interval=0.5, what=what)
    except AssertionError:
        raise AssertionError(f"{what}\n{procs.logs()}") from None


def test_shadow_catches_a_leaking_candidate_and_a_good_one_goes_through_canary_to_100(
    stack: tuple[World, ServerThread, Procs, list[int]], engine: Any, test_state_dir: Path
) -> None:
    world, api, procs, ports = stack
    active = world.approved()
    gen = promote(api, world, active)
    _until(lambda: all(_status(p).get("generation") == gen for p in ports), procs, 240, "replicas ready")

    # 1. the leaking candidate, in shadow on every request
    leaky = world.approved(data=_leaky_token(test_state_dir))
    r = _api(api, world, "POST", f"/v1/deployments/{world.deployment}/rollouts",
             json={"version_id": leaky, "mode": "shadow", "sample": 1.0})
    assert r.status_code == 201, r.text
    _until(lambda: all(_applied(p).get("version_id") == leaky for p in ports), procs, 30,
           "replicas apply the shadow rollout")
    served = _traffic(ports, world, 32)
    assert all(a.system_fingerprint.startswith(f"govern-v{active}-") for a in served)
    assert not any("@" in (a.choices[0].message.content or "") for a in served)
    _until(lambda: _rollout(api, world)["state"] != "running", procs, 240, "the shadow verdict")
    ro = _rollout(api, world)
    with unit_of_work(engine) as s:
        said = [o.output for o in s.scalars(select(Output).where(Output.version_id == leaky).limit(6))]
    assert ro["state"] == "failed", (ro["latest_verdict"]["summary"], said)
    verdict = ro["latest_verdict"]
    assert verdict["decision"] == "fail" and verdict["n_pairs"] >= 1
    violations = next(t for t in verdict["tests"] if t["name"] == "policy_violations")
    assert violations["outcome"] == "fail" and violations["p_value"] < 0.05
    assert violations["n"] >= 1 and violations["threshold"] is not None and "mde" in violations
    with unit_of_work(engine) as s:
        rows = s.scalars(select(Output).where(Output.version_id == leaky)).all()
        assert rows, "the shadow answers were recorded"
        assert all(o.twin_of is not None for o in rows), "no user received an answer of the leaking candidate"
    _until(lambda: all(not _status(p).get("rollout") for p in ports), procs, 30, "twins stop after the verdict")

    # 2. a good candidate: shadow passes, the officer approves, the canary steps to 100%. It is
    # the active token's tensors under another manifest (a new artifact, the same behaviour):
    # two random tokens of the tiny model differ in length and wording for real, and the
    # paired tests are right to see it; a good candidate here must be one with nothing to see.
    from aligner.artifact import AlignerToken

    same = world.tokens[active]
    good = world.gate_passed(data=bytes(AlignerToken.create(
        same.prefix, same.gates, base_model=same.manifest.base_model,
        base_model_digest=same.manifest.base_model_digest, tokenizer_digest=same.manifest.tokenizer_digest,
        training_method="manual", seed=10_000 + active).to_bytes()))
    r = _api(api, world, "POST", f"/v1/deployments/{world.deployment}/rollouts",
             json={"version_id": good, "mode": "shadow", "sample": 1.0})
    assert r.status_code == 201, r.text
    _until(lambda: all(_applied(p).get("version_id") == good for p in ports), procs, 30,
           "replicas apply the second shadow")
    _traffic(ports, world, 32)
    _until(lambda: _rollout(api, world)["state"] != "running", procs, 240, "the second shadow verdict")
    assert _rollout(api, world)["state"] == "passed", _rollout(api, world)
    r = _api(api, world, "POST", f"/v1/versions/{good}/approve", role="compliance_officer",
             json={"comment": "gate and shadow clean"})
    assert r.status_code == 200 and r.json()["shadow_evidence_digest"], r.text

    r = _api(api, world, "POST", f"/v1/deployments/{world.deployment}/rollouts",
             json={"version_id": good, "mode": "canary", "min_samples": 60})  # 80 requests below: ~40 pairs
    assert r.status_code == 201, r.text
    _until(lambda: all(_applied(p).get("weight") == 0.5 for p in ports), procs, 30,
           "replicas apply the canary")
    first = _traffic(ports, world, 40, users=True)
    again = _traffic(ports, world, 40, users=True)
    assert [a.system_fingerprint.split("-g")[0] for a in first] == [a.system_fingerprint.split("-g")[0]
                                                                     for a in again], "one user, one version"
    on_candidate = sum(a.system_fingerprint.startswith(f"govern-v{good}-") for a in first)
    assert 5 <= on_candidate <= 35, on_candidate

    def promoted() -> bool:
        _traffic(ports, world, 8, users=True)
        return _rollout(api, world)["state"] == "completed"

    _until(promoted, procs, 240, "the canary reaching 100%")
    state = _api(api, world, "GET", f"/v1/deployments/{world.deployment}/active", role="service").json()
    assert state["version_id"] == good and state["rollout"] is None
    _until(lambda: all(_status(p).get("version_id") == good for p in ports), procs, 30, "replicas on the new version")
    ro = _rollout(api, world)
    kinds = [e["kind"] for e in ro["events"]]
    assert kinds[0] == "start" and kinds[-1] == "complete" and "advance" not in kinds[-1:]
    assert kinds.count("verdict") >= 1
    with unit_of_work(engine) as s:
        actions = [e.action for e in s.scalars(select(AuditEntry).where(AuditEntry.subject_id == world.deployment)
                                               .order_by(AuditEntry.seq))]
    for needed in ("rollout.start", "rollout.shadow_failed", "rollout.shadow_passed", "rollout.verdict",
                   "deployment.promote", "rollout.complete"):
        assert needed in actions, (needed, actions)
