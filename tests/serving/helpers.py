"""Helpers for the serving tests: tiny models with an adapter attached, token artifacts."""

from __future__ import annotations

import copy
from typing import Any

import torch

from governance.client import ActiveState, ApiError
from serving.engine import Event, Failed, Finished


def attached_copy(loaded: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
    """A private copy of the tiny model with an Aligner adapter (one per engine: adapters are per model)."""
    from aligner import attach

    model, tokenizer, digests = loaded
    mine = copy.deepcopy(model)
    adapter = attach(mine, base_digest=digests.weights)
    adapter.set_token(None)
    return mine, tokenizer, digests


def make_token(digests: Any, seed: int, *, n_tokens: int = 2, gate: float = 2.0, base_digest: str | None = None) -> Any:
    """A token that visibly changes the tiny model's output (large gates), bound to `digests`."""
    from aligner.artifact import AlignerToken

    g = torch.Generator().manual_seed(seed)
    shape = digests.shape
    prefix = torch.randn(n_tokens, shape.hidden_size, generator=g) * 3.0
    gates = torch.full((shape.num_layers, shape.num_heads), gate) + torch.randn(
        shape.num_layers, shape.num_heads, generator=g
    )
    return AlignerToken.create(
        prefix,
        gates,
        base_model=digests.name,
        base_model_digest=base_digest or digests.weights,
        tokenizer_digest=digests.tokenizer,
        training_method="manual",
        seed=seed,
    )


# ---------------------------------------------------------------- real servers in threads and processes

import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402

POLICY_TEXT = (Path(__file__).resolve().parents[2] / "policies" / "default.yaml").read_text()
# The push secret the test control planes sign with and the test replicas accept (GOVERN_PUSH_SECRET).
PUSH_SECRET = "test-push-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real uvicorn server for an ASGI app on a free loopback port, in a daemon thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server thread did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class World:
    """Users, a registered base model and a deployment, created through the service layer."""

    engine: Any
    digests: Any
    deployment: str
    keys: dict[str, str]
    principals: dict[str, Any]
    # distinct per world: two worlds of one run must never build byte-identical tokens
    # (a resubmitted artifact is the same version, possibly active elsewhere already)
    seed: int = field(default_factory=lambda: uuid.uuid4().int % 1_000_000_000)
    tokens: dict[int, Any] = field(default_factory=dict)

    def gate_passed(self, *, data: bytes | None = None) -> int:
        """Submit a token of the tiny model and pass its gate (not approved); returns the version id."""
        import hashlib

        from governance.db import unit_of_work
        from governance.deployments import service as deployments
        from governance.gates.models import GateRun
        from governance.principal import Principal
        from governance.registry import service as registry

        self.seed += 1
        token = make_token(self.digests, self.seed)
        with unit_of_work(self.engine) as s:
            vid = registry.submit_version(
                s,
                data=data or token.to_bytes(),
                adapter=uid("adapter"),
                principal=self.principals["ml_engineer"],
                max_bytes=1_000_000,
                deployment=deployments.submission_target(s, name=self.deployment),
            ).version.id
        gate = Principal.for_system("gate")
        with unit_of_work(self.engine) as s:
            registry.begin_gate(s, version_id=vid, principal=gate)
        policy_sha = hashlib.sha256(POLICY_TEXT.encode()).hexdigest()
        evidence = hashlib.sha256(f"evidence-{vid}".encode()).hexdigest()
        with unit_of_work(self.engine) as s:
            s.add(GateRun(version_id=vid, policy_sha256=policy_sha, status="passed", evidence_digest=evidence))
            registry.finish_gate(
                s, version_id=vid, passed=True, evidence_digest=evidence, policy_sha256=policy_sha, principal=gate
            )
        self.tokens[vid] = token
        return vid

    def approved(self, *, data: bytes | None = None) -> int:
        """Submit a token of the tiny model, pass its gate, approve it; returns the version id."""
        from governance.db import unit_of_work
        from governance.registry import service as registry

        vid = self.gate_passed(data=data)
        with unit_of_work(self.engine) as s:
            registry.approve(s, version_id=vid, principal=self.principals["compliance_officer"], comment="ok")
        return vid


def make_world(engine: Any, digests: Any, base_name: str = "tiny-random-llama") -> World:
    from governance.auth import service as auth
    from governance.db import unit_of_work
    from governance.deployments import service as deployments
    from governance.errors import Conflict
    from governance.principal import Principal
    from governance.registry import service as registry

    keys, principals = {}, {}

    def person(role: str, scope: tuple[str, ...] = ()) -> None:  # a service key is bound to its deployment
        name = uid(role)
        with unit_of_work(engine) as s:
            user, key = auth.create_user(s, name=name, role=role, actor="system:test", deployments=scope)
            principals[role] = Principal(name=name, role=role, user_id=user.id, key_prefix=key.split("_")[1],
                                         deployments=frozenset(scope) or None)
        keys[role] = key

    for role in ("ml_engineer", "compliance_officer", "admin"):
        person(role)
    config = {
        "hidden_size": digests.shape.hidden_size,
        "num_layers": digests.shape.num_layers,
        "num_heads": digests.shape.num_heads,
        "num_kv_heads": digests.shape.num_kv_heads,
    }
    try:
        with unit_of_work(engine) as s:
            registry.register_base_model(
                s, name=base_name, weights_digest=digests.weights, tokenizer_digest=digests.tokenizer, config=config
            )
    except Conflict:
        from sqlalchemy import select

        from governance.registry.models import BaseModel_

        with unit_of_work(engine) as s:  # registered under another name by another test folder
            base_name = s.scalars(select(BaseModel_.name).where(BaseModel_.weights_digest == digests.weights)).one()
    dep = uid("dep")
    with unit_of_work(engine) as s:
        deployments.create_deployment(
            s, name=dep, base_model=base_name, policy_text=POLICY_TEXT, principal=principals["admin"]
        )
    person("service", (dep,))
    return World(engine, digests, dep, keys, principals)


def governance_app(database_url: str, redis_url: str, state_dir: Path, push_secret: str = PUSH_SECRET) -> Any:
    from governance.api.app import create_app
    from governance.settings import Settings

    return create_app(
        Settings(
            database_url=database_url,
            redis_url=redis_url,
            state_dir=state_dir,
            push_secret=push_secret,
            environment="test",
            rate_limit_writes_per_minute=100_000,
            rate_limit_ingest_per_minute=1_000_000,
        )
    )


def promote(api: ServerThread, world: World, vid: int) -> int:
    """Promote `vid` through the API as the world's ML engineer; returns the new generation."""
    r = httpx.post(
        f"{api.url}/v1/deployments/{world.deployment}/promote",
        json={"version_id": vid},
        headers={"Authorization": f"Bearer {world.keys['ml_engineer']}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return int(r.json()["generation"])


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.02, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Stack:
    """A governance API and a serving replica of one world's deployment (the `stack` fixture)."""

    world: World
    api: ServerThread
    serving: ServerThread
    app: Any

    @property
    def client(self) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.serving.url}/v1", api_key="unused", max_retries=0, timeout=60)

    def gov(self, role: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.api.url, headers={"Authorization": f"Bearer {self.world.keys[role]}"}, timeout=30
        )

    def promote(self, vid: int) -> int:
        with self.gov("ml_engineer") as c:
            r = c.post(f"/v1/deployments/{self.world.deployment}/promote", json={"version_id": vid})
        assert r.status_code == 200, r.text
        return int(r.json()["generation"])

    def rollback(self, to: int | None = None) -> int:
        with self.gov("compliance_officer") as c:
            r = c.post(
                f"/v1/deployments/{self.world.deployment}/rollback",
                json={"reason": "test", **({"to_version_id": to} if to else {})},
            )
        assert r.status_code == 200, r.text
        return int(r.json()["generation"])


class Collector:
    """A caller's view of one request: every event the engine emitted to it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Finished | Failed):
            self.done.set()

    @property
    def finished(self) -> Finished:
        assert self.done.wait(60)
        last = self.events[-1]
        assert isinstance(last, Finished), last
        return last


class FakeControl:
    """What a watcher asks the API, answered from memory; `unreachable` sha256s raise ApiError."""

    def __init__(self, artifacts: dict[str, bytes], answer: ActiveState) -> None:
        self.artifacts = artifacts
        self.answer = answer
        self.unreachable: set[str] = set()
        self.alerts: list[dict[str, Any]] = []
        self.active_calls = 0

    def with_timeout(self, timeout: float) -> FakeControl:
        return self

    def active(self, deployment: str) -> ActiveState:
        self.active_calls += 1
        return self.answer

    def artifact_by_sha(self, sha256: str) -> bytes:
        if sha256 in self.unreachable:
            raise ApiError(0, "unreachable", "the API is down (test)")
        return self.artifacts[sha256]

    def versions(self, **_: Any) -> list[dict[str, Any]]:
        return []

    def raise_alert(self, **body: Any) -> None:
        self.alerts.append(body)
