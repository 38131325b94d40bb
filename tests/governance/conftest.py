"""Fixtures and helpers for the governance core: users, keys, base models, tokens, gated versions.

Everything is created through the real service layer and committed to the run's
database (`engine`), because the API under test opens its own connections; names are
unique per test (uuid) so tests never collide.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from governance.audit.models import AuditEntry
from governance.auth import service as auth
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.gates.models import GateRun
from governance.policy import gate_digest, parse_policy
from governance.principal import Principal
from governance.registry import service as registry

HIDDEN, LAYERS, HEADS = 64, 2, 4  # the tiny-random-llama shapes
POLICY_TEXT = (Path(__file__).resolve().parents[2] / "policies" / "default.yaml").read_text()
POLICY_SHA = hashlib.sha256(POLICY_TEXT.encode()).hexdigest()
GATE_DIGEST = gate_digest(parse_policy(POLICY_TEXT)[0])
ADMIN_SYSTEM = "system:test"


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def token_bytes(
    base_digest: str, seed: int, *, hidden: int = HIDDEN, layers: int = LAYERS, heads: int = HEADS
) -> bytes:
    import torch

    from aligner.artifact import AlignerToken

    g = torch.Generator().manual_seed(seed)
    token = AlignerToken.create(
        torch.randn(1, hidden, generator=g),
        torch.randn(layers, heads, generator=g) * 0.01,
        base_model="tiny-random-llama",
        base_model_digest=base_digest,
        tokenizer_digest="b" * 64,
        training_method="manual",
        seed=seed,
    )
    return token.to_bytes()


@dataclass
class Actor:
    name: str
    role: str
    key: str
    principal: Principal

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class World:
    engine: Engine
    base_name: str
    base_digest: str
    deployment: str
    actors: dict[str, Actor]
    seed: int = 0

    def actor(self, role: str) -> Actor:
        return self.actors[role]

    def artifact(self) -> bytes:
        self.seed += 1
        return token_bytes(self.base_digest, int(uuid.uuid4().int % 2**31) + self.seed)

    def submit(self, *, deployment: str | None = None, by: str = "ml_engineer") -> int:
        with unit_of_work(self.engine) as s:
            sub = registry.submit_version(
                s,
                data=self.artifact(),
                adapter=uid("adapter"),
                principal=self.actors[by].principal,
                max_bytes=1_000_000,
                deployment=deployments.submission_target(
                    s, name=deployment if deployment is not None else self.deployment
                ),
            )
            return sub.version.id

    def gate(self, version_id: int, *, passed: bool = True, waivers: list[dict[str, Any]] | None = None) -> None:
        """Gate the version (no model): ``waivers`` (WaiverReport dicts) make a pass "passed with waivers"."""
        gate = Principal.for_system("gate")
        with unit_of_work(self.engine) as s:
            registry.begin_gate(s, version_id=version_id, principal=gate)
        evidence = hashlib.sha256(f"evidence-{version_id}".encode()).hexdigest()
        with unit_of_work(self.engine) as s:
            s.add(
                GateRun(
                    version_id=version_id,
                    policy_sha256=POLICY_SHA,
                    gate_digest=GATE_DIGEST,
                    status="passed" if passed else "failed",
                    evidence_digest=evidence,
                    **({"summary": {"verdict": "passed" if passed else "failed", "waivers": waivers}}
                       if waivers is not None else {}),
                )
            )
            registry.finish_gate(
                s,
                version_id=version_id,
                passed=passed,
                evidence_digest=evidence,
                policy_sha256=POLICY_SHA,
                principal=gate,
                waivers=[w["name"] for w in waivers or []],
            )

    def approved(self, *, deployment: str | None = None) -> int:
        vid = self.submit(deployment=deployment)
        self.gate(vid)
        with unit_of_work(self.engine) as s:
            registry.approve(s, version_id=vid, principal=self.actors["compliance_officer"].principal, comment="ok")
        return vid

    def promote(self, vid: int, *, deployment: str | None = None) -> None:
        with unit_of_work(self.engine) as s:
            deployments.promote(
                s,
                deployment=deployment or self.deployment,
                version_id=vid,
                principal=self.actors["ml_engineer"].principal,
            )


def make_actor(engine: Engine, role: str, name: str | None = None, *, deployments: tuple[str, ...] = ()) -> Actor:
    """A user with one key; a service user's key is bound to ``deployments`` (at least one)."""
    name = name or uid(role)
    with unit_of_work(engine) as s:
        user, key = auth.create_user(s, name=name, role=role, actor=ADMIN_SYSTEM, deployments=deployments)
        principal = Principal(name=name, role=role, user_id=user.id, key_prefix=key.split("_")[1],
                              deployments=frozenset(deployments) or None)
    return Actor(name, role, key, principal)


def make_world(engine: Engine) -> World:
    actors = {r: make_actor(engine, r) for r in ("ml_engineer", "compliance_officer", "auditor", "admin")}
    base_name = uid("base")
    digest = hashlib.sha256(base_name.encode()).hexdigest()
    dep = uid("dep")
    with unit_of_work(engine) as s:
        registry.register_base_model(
            s,
            name=base_name,
            weights_digest=digest,
            tokenizer_digest="b" * 64,
            config={"hidden_size": HIDDEN, "num_layers": LAYERS, "num_heads": HEADS, "num_kv_heads": 2},
        )
        deployments.create_deployment(
            s, name=dep, base_model=base_name, policy_text=POLICY_TEXT, principal=actors["admin"].principal
        )
    actors["service"] = make_actor(engine, "service", deployments=(dep,))  # the replicas' key, bound to dep
    return World(engine, base_name, digest, dep, actors)


def audit_count(engine: Engine, **where: str) -> int:
    with unit_of_work(engine) as s:
        stmt = select(func.count()).select_from(AuditEntry)
        for k, v in where.items():
            stmt = stmt.where(getattr(AuditEntry, k) == v)
        return int(s.scalar(stmt) or 0)


def audit_head(engine: Engine) -> int:
    with unit_of_work(engine) as s:
        return int(s.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0))) or 0)


def audit_since(engine: Engine, seq: int) -> list[AuditEntry]:
    with unit_of_work(engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.seq > seq).order_by(AuditEntry.seq)))


@pytest.fixture()
def world(engine: Engine) -> World:
    return make_world(engine)


@pytest.fixture()
def app(settings_env: None) -> object:
    from governance.api.app import create_app
    from governance.settings import get_settings

    return create_app(get_settings())


@pytest.fixture()
def client(app: object) -> Iterator[TestClient]:
    # an address of its own per test: the failed-authentication throttle (per address, per
    # minute, in Redis) must not carry one test's deliberate 401s into the next test
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    with TestClient(app, client=(address, 50_000)) as c:  # type: ignore[arg-type]
        yield c
