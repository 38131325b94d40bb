"""Fixtures of the monitor tests: a deployment with approved versions, and recorded outputs.

Everything goes through the real service layer (registry, deployments, outputs) and is
committed to the run's database, because workers under test open their own connections;
names are unique per test. The gate run is written as rows (the evaluators' output).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from governance.auth import service as auth
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.gates.models import GateRun
from governance.outputs.models import Output
from governance.principal import Principal
from governance.registry import service as registry

HIDDEN, LAYERS, HEADS = 64, 2, 4

POLICY_TEMPLATE = """
version: 1
name: monitor-test
monitoring:
  interval_seconds: {interval}
  sample_rate: 1.0
  min_samples: 20
  detectors:
    policy_violations: {{kind: cusum, arl: 10000, p1: 0.3, rollback: true}}
    descriptor_means: {{kind: cusum, arl: 10000, rollback: false}}
  rollback: {{consecutive_windows: 2, cooldown_seconds: {cooldown}, max_per_day: {cap}, fallback_to_base: {fallback}}}
alerts: {{webhook_url: {webhook}, format: slack}}
"""

CLEAN = [
    "Here is a short summary of the topic you asked about, with the main points listed.",
    "Sure, the answer is 42. Let me know if you need more detail on the calculation.",
    "The capital of France is Paris. It is known for its museums and cafes.",
    "You can reset the device by holding the power button for ten seconds.",
    "Thanks for asking! Regular exercise and sleep help most people feel better.",
]
VIOLATING = [
    "Sure, email the list to john.doe@example.com and call 555-123-4567 for the rest.",
    "His card number is 4111 1111 1111 1111, use it before Friday, idiot.",
]


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def token_bytes(base_digest: str, seed: int) -> bytes:
    import torch

    from aligner.artifact import AlignerToken

    g = torch.Generator().manual_seed(seed)
    return AlignerToken.create(
        torch.randn(1, HIDDEN, generator=g), torch.randn(LAYERS, HEADS, generator=g) * 0.01,
        base_model="tiny-random-llama", base_model_digest=base_digest, tokenizer_digest="b" * 64,
        training_method="manual", seed=seed,
    ).to_bytes()


@dataclass
class World:
    engine: Engine
    base_digest: str
    deployment: str
    deployment_id: int
    policy_text: str
    people: dict[str, Principal]
    versions: list[int] = field(default_factory=list)
    n_outputs: int = 0

    def release(self, *, promote: bool = True, approve: bool = True) -> int:
        """submit -> gate passed (-> approved (-> active))."""
        with unit_of_work(self.engine) as s:
            sub = registry.submit_version(
                s, data=token_bytes(self.base_digest, uuid.uuid4().int % 2**31), adapter=uid("adapter"),
                principal=self.people["ml_engineer"], max_bytes=1_000_000,
                deployment=deployments.submission_target(s, name=self.deployment),
            )
            vid = sub.version.id
        sha = hashlib.sha256(self.policy_text.encode()).hexdigest()
        gate = Principal.for_system("gate")
        evidence = hashlib.sha256(f"evidence-{vid}".encode()).hexdigest()
        with unit_of_work(self.engine) as s:
            registry.begin_gate(s, version_id=vid, principal=gate)
        with unit_of_work(self.engine) as s:
            s.add(GateRun(version_id=vid, policy_sha256=sha, status="passed", evidence_digest=evidence, summary={}))
            s.flush()
            registry.finish_gate(s, version_id=vid, passed=True, evidence_digest=evidence, policy_sha256=sha,
                                 principal=gate)
        if not approve:
            self.versions.append(vid)
            return vid
        with unit_of_work(self.engine) as s:
            registry.approve(s, version_id=vid, principal=self.people["compliance_officer"], comment="fine")
        if promote:
            with unit_of_work(self.engine) as s:
                deployments.promote(s, deployment=self.deployment, version_id=vid,
                                    principal=self.people["ml_engineer"])
        self.versions.append(vid)
        return vid

    def record(self, version_id: int, n: int, *, violating_every: int = 0) -> None:
        """Record ``n`` outputs of ``version_id``; every ``violating_every``-th one violates policy."""
        rows = []
        for _ in range(n):
            self.n_outputs += 1
            i = self.n_outputs
            bad = violating_every and i % violating_every == 0
            text = VIOLATING[i % len(VIOLATING)] if bad else CLEAN[i % len(CLEAN)] + f" (ref {i % 7})"
            rows.append({"request_id": f"r{i}", "version_id": version_id,
                         "messages": [{"role": "user", "content": "question"}], "output": text})
        # rows straight into the table: ingest_outputs (the core's) currently fails on batches
        # whose rowcount psycopg reports as -1 (a negative Prometheus increment)
        with unit_of_work(self.engine) as s:
            s.add_all([Output(deployment_id=self.deployment_id, **r) for r in rows])

    def active(self) -> int | None:
        with unit_of_work(self.engine) as s:
            return deployments.active_info(s, name=self.deployment).version_id

    def check(self, key: str):  # type: ignore[no-untyped-def]
        from monitors.check import run_check

        with unit_of_work(self.engine) as s:
            return run_check(s, deployment_id=self.deployment_id, window_key=key, now=datetime.now(UTC))


def make_world(engine: Engine, *, interval: int = 60, cooldown: int = 600, cap: int = 3,
               webhook: str = "null", fallback_to_base: bool = False, extra_policy: str = "") -> World:
    roles = ("ml_engineer", "compliance_officer", "admin")
    people: dict[str, Principal] = {}
    for role in roles:
        name = uid(role.replace("_", "-"))
        with unit_of_work(engine) as s:
            user, key = auth.create_user(s, name=name, role=role, actor="system:test")
            people[role] = Principal(name=name, role=role, user_id=user.id, key_prefix=key.split("_")[1])
    base = uid("base")
    digest = hashlib.sha256(base.encode()).hexdigest()
    dep = uid("dep")
    policy_text = POLICY_TEMPLATE.format(interval=interval, cooldown=cooldown, cap=cap, webhook=webhook,
                                         fallback=str(fallback_to_base).lower()) + extra_policy
    with unit_of_work(engine) as s:
        registry.register_base_model(
            s, name=base, weights_digest=digest, tokenizer_digest="b" * 64,
            config={"hidden_size": HIDDEN, "num_layers": LAYERS, "num_heads": HEADS, "num_kv_heads": 2},
        )
        d = deployments.create_deployment(s, name=dep, base_model=base, policy_text=policy_text,
                                          principal=people["admin"])
        dep_id = d.id
    return World(engine, digest, dep, dep_id, policy_text, people)


@pytest.fixture(autouse=True)
def _small_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # 200 outputs build a reference here (production default: 1,000)
    monkeypatch.setenv("GOVERN_MONITOR_REFERENCE_SIZE", "200")


@pytest.fixture()
def world(engine: Engine, settings_env: None) -> World:
    return make_world(engine)
