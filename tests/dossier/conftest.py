"""A world for the dossier tests, built through the real services (PostgreSQL, Redis).

A deployment on the tiny random Llama (registered with its real digests) with two approved
versions: v1 (promoted first) and v2, whose gate is a real run of the evaluators' runner
(`evaluators.runner.generate_and_judge`: the reasoning suite's first 12 cases decoded by
the tiny model with v2's token, the bare base and v1's token side by side), stored by
`evaluators.store`, reviewed by a compliance officer and promoted; recorded outputs and the monitor's real drift checks
(`monitors.check.run_check`) until the policy-violation CUSUM fires twice, the monitor's
automatic rollback back to v1, and an officer acknowledging the alert.
"""

from __future__ import annotations

import functools
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from evaluators.store import save_gate_run
from governance.alerts import service as alerts
from governance.audit.signing import generate_keypair, load_private_key, load_public_key, public_path_for
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.gates.report import GateReport
from governance.policy import parse_policy
from governance.principal import Principal
from governance.registry import service as registry
from monitors.rollback import auto_rollback
from tests.monitors.conftest import World, make_world, token_bytes, uid

REVIEW_COMMENT = "Gate evidence reviewed; PII case accepted with monitoring."


@dataclass
class DossierWorld:
    monitors: World
    v1: int
    v2: int
    v2_sha: str
    evidence_digest: str
    reviewer: str
    key_path: Path

    @property
    def engine(self) -> Engine:
        return self.monitors.engine

    @property
    def deployment(self) -> str:
        return self.monitors.deployment

    def private_key(self):  # type: ignore[no-untyped-def]
        return load_private_key(self.key_path)

    def public_key(self):  # type: ignore[no-untyped-def]
        return load_public_key(public_path_for(self.key_path))


def tiny_gate(w: World, candidate: bytes, active: bytes, tmp_path: Path) -> GateReport:
    """The gate on the tiny random Llama: the reasoning suite's first 12 cases, 8 new tokens each."""
    from aligner.artifact import AlignerToken
    from evaluators.runner import AlignerGenerator, generate_and_judge
    from evaluators.suites.base import get_suite

    model, tokenizer, digests = _tiny()
    gen = AlignerGenerator(model, tokenizer, base_digest=digests.weights, max_new_tokens=8)
    policy, sha = parse_policy(w.policy_text)
    suite = get_suite("reasoning")
    cand, act = AlignerToken.from_bytes(candidate), AlignerToken.from_bytes(active)
    return generate_and_judge(gen, policy=policy, policy_sha256=sha, candidate=cand, candidate_digest=cand.sha256,
                              active=act, active_digest=act.sha256, state_dir=tmp_path / "gate",
                              suites=[suite], cases={"reasoning": suite.load_cases()[:12]})


def _gated_release(w: World, tmp_path: Path) -> tuple[int, str, str]:
    """submit -> a real gate run on the tiny model, stored -> gate passed -> approved -> promoted."""
    data = token_bytes(w.base_digest, uuid.uuid4().int % 2**31)
    with unit_of_work(w.engine) as s:
        sub = registry.submit_version(
            s, data=data, adapter=uid("house-style"),
            principal=w.people["ml_engineer"], max_bytes=1_000_000,
            deployment=deployments.submission_target(s, name=w.deployment))
        vid, sha = sub.version.id, sub.version.sha256
        active = registry.get_version_or_raise(s, version_id=w.versions[-1]).artifact
    gate = Principal.for_system("gate")
    report = tiny_gate(w, data, active, tmp_path)
    with unit_of_work(w.engine) as s:
        registry.begin_gate(s, version_id=vid, principal=gate)
    with unit_of_work(w.engine) as s:
        save_gate_run(s, version_id=vid, report=report, policy_sha256=report.policy_sha256)
        registry.finish_gate(s, version_id=vid, passed=True, evidence_digest=report.evidence_digest,
                             policy_sha256=report.policy_sha256, principal=gate)
    with unit_of_work(w.engine) as s:
        # the officer acknowledges what the tiny model's base itself breaks (waived bounds)
        registry.approve(s, version_id=vid, principal=w.people["compliance_officer"], comment=REVIEW_COMMENT,
                         acknowledged_waivers=[wv.name for wv in report.waivers])
    with unit_of_work(w.engine) as s:
        deployments.promote(s, deployment=w.deployment, version_id=vid, principal=w.people["ml_engineer"])
    w.versions.append(vid)
    return vid, sha, report.evidence_digest


@functools.cache
def _tiny() -> tuple[Any, Any, Any]:
    """The tiny random Llama (built from its config with a fixed seed: nothing is downloaded), adapter attached."""
    import torch

    from aligner import attach
    from aligner.providers import load_base_model

    torch.set_num_threads(1)
    model, tokenizer, digests = load_base_model("tiny-random-llama", state_dir=tempfile.mkdtemp(), dtype="float32")
    attach(model, base_digest=digests.weights).set_token(None)
    return model, tokenizer, digests


def _tiny_world(engine: Engine) -> World:
    """`tests.monitors.conftest.make_world`'s people and policy, on a base model with the tiny Llama's digests."""
    w = make_world(engine)
    digests = _tiny()[2]
    weights = digests.weights
    with unit_of_work(engine) as s:
        # one base model per set of weights: a run's earlier world may have registered it already
        known = [b.name for b in registry.list_base_models(s) if b.weights_digest == weights]
        # the name `govern model prepare` registers it under, so a later prepare in the same run is idempotent
        base = known[0] if known else "tiny-random-llama"
        if not known:
            registry.register_base_model(s, name=base, weights_digest=weights, tokenizer_digest=digests.tokenizer,
                                         config={"hidden_size": 64, "num_layers": 2, "num_heads": 4,
                                                 "num_kv_heads": 2})
        dep = uid("dep")
        d = deployments.create_deployment(s, name=dep, base_model=base, policy_text=w.policy_text,
                                          principal=w.people["admin"])
        w.deployment, w.deployment_id, w.base_digest = dep, d.id, weights
    return w


def build_world(engine: Engine, tmp_path: Path) -> DossierWorld:
    w = _tiny_world(engine)
    v1 = w.release()
    v2, sha, digest = _gated_release(w, tmp_path)
    w.record(v2, 210)
    w.check("w1")
    w.record(v2, 40)
    w.check("w2")
    w.record(v2, 40, violating_every=2)
    w.check("w3")
    w.record(v2, 40, violating_every=2)
    fired = w.check("w4")
    assert fired.verdict == "drift" and fired.rollback is not None, fired.detectors
    with unit_of_work(engine) as s:
        out = auto_rollback(s, deployment_id=w.deployment_id, expected_version_id=v2, check_id=fired.check_id,
                            detector="policy_violations", now=datetime.now(UTC))
    assert out.status == "rolled_back", out
    with unit_of_work(engine) as s:
        from governance.alerts.models import Alert

        ids = s.scalars(select(Alert.id).where(Alert.deployment_id == w.deployment_id, Alert.kind == "drift")).all()
        for aid in ids:
            alerts.ack_alert(s, alert_id=aid, principal=w.people["compliance_officer"], comment="investigating")
    key = tmp_path / "keys" / "ed25519.key"
    key.parent.mkdir(parents=True, exist_ok=True)
    generate_keypair(key)
    return DossierWorld(w, v1, v2, sha, digest, w.people["compliance_officer"].name, key)


@pytest.fixture()
def dossier_world(engine: Engine, settings_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DossierWorld:
    from governance.settings import reset_settings_cache

    world = build_world(engine, tmp_path)
    monkeypatch.setenv("GOVERN_SIGNING_KEY_PATH", str(world.key_path))
    reset_settings_cache()
    return world


@pytest.fixture(autouse=True)
def _small_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVERN_MONITOR_REFERENCE_SIZE", "200")
