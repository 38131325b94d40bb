"""Schemathesis against the governance API's own OpenAPI document, once per role and once without a key.

Every answer must be a non-5xx status the document declares for the operation, with a
body that matches its declared schema and media type, and no body (or header) may
carry a stack trace, database error text, a test API key or a test key's hash. Rate
limits are raised out of the way here (they have their own tests) so the fuzzer
reaches the routes themselves. Path parameters are half random, half the world's real
deployment, version and user, so the cases also reach real resources and actions.

The quick run (a few examples per operation, every identity) is part of the ordinary
test run; the heavier one (more examples, negative data, stateful chains through the
OpenAPI links) is marked slow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from schemathesis import GenerationMode

from tests.governance.conftest import World
from tests.hardening.fuzzing import CHECKS, Secrets, fuzz_operations, make_leak_check, strip_auth

IDENTITIES = ["ml_engineer", "compliance_officer", "auditor", "admin", "service", None]
def fuzz_app(make_app: Callable[..., FastAPI]) -> FastAPI:
    """An app with the rate limits out of the way and an audit signing key (so exports work)."""
    from governance.audit.signing import default_private_key_path, generate_keypair

    app = make_app(**NO_LIMITS)
    generate_keypair(default_private_key_path(app.state.settings))
    return app


NO_LIMITS = {
    "RATE_LIMIT_WRITES_PER_MINUTE": 1_000_000,
    "RATE_LIMIT_WRITES_PER_ADDRESS_PER_MINUTE": 1_000_000,
    "RATE_LIMIT_INGEST_PER_MINUTE": 1_000_000,
    "RATE_LIMIT_INGEST_PER_ADDRESS_PER_MINUTE": 1_000_000,
    "AUTH_FAILURES_PER_MINUTE": 1_000_000,
}


def _setup(world: World) -> dict[str, Any]:
    vid = world.approved()
    world.promote(vid)
    return {
        "name": world.deployment,
        "version_id": vid,
        "sha256": _sha_of(world, vid),
        "prefix": world.actor("auditor").principal.key_prefix,
    }


def _sha_of(world: World, vid: int) -> str:
    from governance.db import unit_of_work
    from governance.registry.models import TokenVersion

    with unit_of_work(world.engine) as s:
        v = s.get(TokenVersion, vid)
        assert v is not None
        return v.sha256


def _secrets(world: World) -> Secrets:
    return Secrets([a.key for a in world.actors.values()])


def _headers(world: World, identity: str | None) -> dict[str, str]:
    return world.actor(identity).headers if identity else {}


@pytest.mark.parametrize("identity", IDENTITIES, ids=lambda i: i or "no-key")
def test_fuzz_every_operation(identity: str | None, world: World, make_app: Callable[..., FastAPI]) -> None:
    app = fuzz_app(make_app)
    params = _setup(world)
    seen: dict[int, int] = {}
    failures = fuzz_operations(
        app,
        headers=_headers(world, identity),
        secrets=_secrets(world),
        examples=3,
        path_parameters=params,
        seen=seen,
        random_paths=False,
    )
    print(identity, "statuses:", dict(sorted(seen.items())))
    assert not failures, "\n\n".join(failures)
    assert not any(s >= 500 for s in seen), seen
    if identity is None:
        assert set(seen) <= {401, 404, 405, 413, 422}, seen


@pytest.mark.slow
@pytest.mark.parametrize("identity", IDENTITIES, ids=lambda i: i or "no-key")
def test_fuzz_every_operation_deeper(identity: str | None, world: World, make_app: Callable[..., FastAPI]) -> None:
    app = fuzz_app(make_app)
    params = _setup(world)
    failures = fuzz_operations(
        app,
        headers=_headers(world, identity),
        secrets=_secrets(world),
        examples=2,
        modes=(GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
        path_parameters=params,
    )
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("identity", ["admin", "compliance_officer", "service"])
def test_fuzz_stateful(identity: str, world: World, make_app: Callable[..., FastAPI]) -> None:
    """Chains of calls along the document's links (create a deployment, then read, freeze, roll it back...)."""
    from hypothesis import HealthCheck, Phase
    from hypothesis import settings as hsettings

    from tests.hardening.fuzzing import load_schema

    app = fuzz_app(make_app)
    headers = _headers(world, identity)
    checks = [*CHECKS, make_leak_check(_secrets(world))]
    base = load_schema(app).as_state_machine()

    class Machine(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            strip_auth(case)
            return {"headers": headers}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kw: Any) -> None:
            case.validate_response(response, checks=checks, headers=headers)

    Machine.run(
        settings=hsettings(
            max_examples=8,
            stateful_step_count=5,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
