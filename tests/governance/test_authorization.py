"""Authorization: every route declares its roles; every route x role answers as specified.

A refused role gets 403 in the error envelope and leaves one ``denied`` audit entry;
no key (or a bad one) gets the same 401 everywhere. Routes that address an object are
also tried with another deployment's or version's id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import update

from governance.api.app import PUBLIC_PATHS
from governance.api.deps import RequireRole
from governance.audit.signing import default_private_key_path, generate_keypair
from governance.auth.models import ApiKey
from governance.auth.service import hash_key
from governance.db import unit_of_work, utcnow
from governance.registry.models import TokenVersion
from governance.settings import get_settings
from tests.governance.conftest import POLICY_TEXT, World, audit_head, audit_since, make_actor, make_world, uid

ALL = {"ml_engineer", "compliance_officer", "auditor", "admin", "service"}
HUMANS = ALL - {"service"}

Req = Callable[[World, dict[str, Any]], tuple[str, dict[str, Any]]]

# (method, route template) -> (roles allowed, request builder: path + kwargs)
SPEC: dict[tuple[str, str], tuple[set[str], Req]] = {
    ("GET", "/v1/me"): (ALL, lambda w, o: ("/v1/me", {})),
    ("POST", "/v1/users"): ({"admin"}, lambda w, o: ("/v1/users", {"json": {"name": uid("u"), "role": "auditor"}})),
    ("GET", "/v1/users"): ({"admin", "auditor"}, lambda w, o: ("/v1/users", {})),
    ("POST", "/v1/users/{name}/keys"): (
        {"admin"},
        lambda w, o: (f"/v1/users/{w.actor('auditor').name}/keys", {"json": {}}),
    ),
    ("GET", "/v1/users/{name}/keys"): (
        {"admin", "auditor"},
        lambda w, o: (f"/v1/users/{w.actor('auditor').name}/keys", {}),
    ),
    ("POST", "/v1/users/{name}/disable"): ({"admin"}, lambda w, o: (f"/v1/users/{o['offboarded']}/disable", {})),
    ("POST", "/v1/users/{name}/enable"): ({"admin"}, lambda w, o: (f"/v1/users/{o['offboarded']}/enable", {})),
    ("GET", "/v1/keys"): ({"admin", "auditor"}, lambda w, o: ("/v1/keys", {})),
    ("POST", "/v1/keys/{prefix}/revoke"): ({"admin"}, lambda w, o: (f"/v1/keys/{o['spare_prefix']}/revoke", {})),
    ("POST", "/v1/keys/{prefix}/rotate"): (
        {"admin"},
        lambda w, o: (f"/v1/keys/{o['rotated_prefix']}/rotate", {"json": {"overlap_seconds": 60}}),
    ),
    ("POST", "/v1/base-models"): (
        {"admin"},
        lambda w, o: (
            "/v1/base-models",
            {
                "json": {
                    "name": uid("bm"),
                    "weights_digest": hashlib.sha256(uid().encode()).hexdigest(),
                    "tokenizer_digest": "c" * 64,
                    "config": {"hidden_size": 64, "num_layers": 2, "num_heads": 4},
                }
            },
        ),
    ),
    ("GET", "/v1/base-models"): (ALL, lambda w, o: ("/v1/base-models", {})),
    ("POST", "/v1/versions"): (
        {"ml_engineer", "admin"},
        lambda w, o: (
            f"/v1/versions?adapter={uid('line')}",
            {"content": w.artifact(), "headers": {"Content-Type": "application/octet-stream"}},
        ),
    ),
    ("GET", "/v1/versions"): (ALL, lambda w, o: (f"/v1/versions?deployment={w.deployment}", {})),
    ("GET", "/v1/versions/by-sha/{sha256}/artifact"): (
        ALL,
        lambda w, o: (f"/v1/versions/by-sha/{o['sha']}/artifact", {}),
    ),
    ("GET", "/v1/versions/{version_id}"): (ALL, lambda w, o: (f"/v1/versions/{o['version']}", {})),
    ("GET", "/v1/versions/{version_id}/artifact"): (ALL, lambda w, o: (f"/v1/versions/{o['version']}/artifact", {})),
    ("GET", "/v1/versions/{version_id}/gate"): (HUMANS, lambda w, o: (f"/v1/versions/{o['version']}/gate", {})),
    ("POST", "/v1/versions/{version_id}/approve"): (
        {"compliance_officer", "admin"},
        lambda w, o: (f"/v1/versions/{o['gated']}/approve", {"json": {"comment": "ok"}}),
    ),
    ("POST", "/v1/versions/{version_id}/reject"): (
        {"compliance_officer", "admin"},
        lambda w, o: (f"/v1/versions/{o['other_version']}/reject", {"json": {"comment": "no"}}),
    ),
    ("POST", "/v1/versions/{version_id}/gate-runs"): (
        {"ml_engineer", "compliance_officer", "admin", "service"},
        lambda w, o: (f"/v1/versions/{o['active']}/gate-runs", {"json": {"deployment": w.deployment}}),
    ),
    ("GET", "/v1/deployments/{name}/policies"): (ALL, lambda w, o: (f"/v1/deployments/{w.deployment}/policies", {})),
    ("POST", "/v1/deployments/{name}/policies"): (
        {"ml_engineer", "admin"},
        lambda w, o: (f"/v1/deployments/{w.deployment}/policies",
                      {"json": {"policy": o["policy"] + f"\n# {uid()}\n", "reason": "matrix"}}),
    ),
    ("POST", "/v1/deployments/{name}/policies/{seq}/approve"): (
        {"compliance_officer"},
        lambda w, o: (f"/v1/deployments/{w.deployment}/policies/2/approve", {"json": {"comment": "ok"}}),
    ),
    ("POST", "/v1/deployments/{name}/policies/{seq}/reject"): (
        {"compliance_officer"},
        lambda w, o: (f"/v1/deployments/{w.deployment}/policies/2/reject", {"json": {"comment": "no"}}),
    ),
    ("POST", "/v1/deployments"): (
        {"admin"},
        lambda w, o: (
            "/v1/deployments",
            {"json": {"name": uid("d"), "base_model": w.base_name, "policy": o["policy"]}},
        ),
    ),
    ("GET", "/v1/deployments"): (ALL, lambda w, o: ("/v1/deployments", {})),
    ("GET", "/v1/deployments/{name}"): (ALL, lambda w, o: (f"/v1/deployments/{w.deployment}", {})),
    ("GET", "/v1/deployments/{name}/active"): (ALL, lambda w, o: (f"/v1/deployments/{w.deployment}/active", {})),
    ("GET", "/v1/deployments/{name}/promotions"): (
        ALL,
        lambda w, o: (f"/v1/deployments/{w.deployment}/promotions", {}),
    ),
    ("POST", "/v1/deployments/{name}/promote"): (
        {"ml_engineer", "admin"},
        lambda w, o: (f"/v1/deployments/{w.deployment}/promote", {"json": {"version_id": o["other_version"]}}),
    ),
    ("POST", "/v1/deployments/{name}/rollback"): (
        {"compliance_officer", "admin"},
        lambda w, o: (
            f"/v1/deployments/{w.deployment}/rollback",
            {"json": {"reason": "matrix", "to_version_id": o["other_version"]}},
        ),
    ),
    ("POST", "/v1/deployments/{name}/freeze"): (
        {"compliance_officer", "admin"},
        lambda w, o: (f"/v1/deployments/{w.deployment}/freeze", {"json": {"reason": "matrix"}}),
    ),
    ("POST", "/v1/deployments/{name}/unfreeze"): (
        {"compliance_officer", "admin"},
        lambda w, o: (f"/v1/deployments/{w.deployment}/unfreeze", {"json": {}}),
    ),
    ("POST", "/v1/deployments/{name}/outputs"): (
        {"service"},
        lambda w, o: (
            f"/v1/deployments/{w.deployment}/outputs",
            {
                "json": {
                    "outputs": [{"request_id": uid("r"), "version_id": o["active"], "generation": 1, "output": "hi"}]
                }
            },
        ),
    ),
    ("GET", "/v1/alerts"): (HUMANS, lambda w, o: ("/v1/alerts", {})),
    ("POST", "/v1/alerts"): (
        {"service"},
        lambda w, o: (
            "/v1/alerts",
            {"json": {"kind": "drift", "severity": "warning", "incident_key": uid("inc"), "message": "m",
                      "deployment": w.deployment}},
        ),
    ),
    ("POST", "/v1/alerts/{alert_id}/ack"): (
        {"compliance_officer"},
        lambda w, o: (f"/v1/alerts/{o['alert']}/ack", {"json": {"comment": "seen"}}),
    ),
    ("GET", "/v1/audit"): ({"auditor", "admin", "compliance_officer"}, lambda w, o: ("/v1/audit?limit=5", {})),
    ("GET", "/v1/audit/export"): (
        {"auditor"},
        lambda w, o: ("/v1/audit/export?fmt=jsonl&since=2999-01-01T00:00:00Z", {}),
    ),
    ("GET", "/v1/versions/{version_id}/dossier"): (
        {"auditor", "admin", "compliance_officer"},
        lambda w, o: (f"/v1/versions/{o['version']}/dossier?format=html", {}),
    ),
    ("GET", "/v1/deployments/{name}/dossier"): (
        {"auditor", "admin", "compliance_officer"},
        lambda w, o: (f"/v1/deployments/{w.deployment}/dossier?format=html", {}),
    ),
    ("POST", "/v1/deployments/{name}/rollouts"): (
        {"ml_engineer", "admin"},
        lambda w, o: (f"/v1/deployments/{w.deployment}/rollouts", {"json": {"version_id": o["gated"],
                                                                            "mode": "shadow"}}),
    ),
    ("GET", "/v1/deployments/{name}/rollouts"): (ALL, lambda w, o: (f"/v1/deployments/{w.deployment}/rollouts", {})),
    ("GET", "/v1/deployments/{name}/rollouts/current"): (
        ALL, lambda w, o: (f"/v1/deployments/{w.deployment}/rollouts/current", {})),
    ("POST", "/v1/deployments/{name}/rollouts/current/advance"): (
        {"ml_engineer", "admin", "service"},
        lambda w, o: (f"/v1/deployments/{w.deployment}/rollouts/current/advance", {"json": {"from_step": 0}}),
    ),
    ("POST", "/v1/deployments/{name}/rollouts/current/abort"): (
        {"ml_engineer", "compliance_officer", "admin", "service"},
        lambda w, o: (f"/v1/deployments/{w.deployment}/rollouts/current/abort", {"json": {"reason": "test"}}),
    ),
}
# routes that sign with the installation's audit key (absent here: a 503 is their honest answer)
SIGNING_ROUTES = {"/v1/audit/export", "/v1/versions/{version_id}/dossier", "/v1/deployments/{name}/dossier"}


def _api_routes(app: Any) -> list[tuple[str, str, APIRoute]]:
    out = []
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        if isinstance(route, APIRoute):
            for method in sorted(route.methods):
                out.append((method, ctx.path or route.path, route))
    return out


def _requires_role(route: APIRoute) -> bool:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, RequireRole):
            return True
        stack.extend(dep.dependencies)
    return False


def test_every_route_declares_a_role(app: Any) -> None:
    missing = [f"{m} {p}" for m, p, r in _api_routes(app) if p not in PUBLIC_PATHS and not _requires_role(r)]
    assert not missing, f"routes without RequireRole: {missing}"


def test_the_matrix_covers_every_route(app: Any) -> None:
    routes = {(m, p) for m, p, _ in _api_routes(app) if p not in PUBLIC_PATHS}
    assert routes == set(SPEC), f"unspecified: {routes - set(SPEC)}; stale: {set(SPEC) - routes}"


@pytest.fixture()
def objects(client: TestClient, world: World, engine: Any, settings_env: None) -> dict[str, Any]:
    generate_keypair(default_private_key_path(get_settings()), force=True)
    other = make_world(engine)  # another deployment, its own versions
    active = world.approved()
    world.promote(active)
    other_version = other.approved()
    with unit_of_work(engine) as s:
        sha = s.get(TokenVersion, active).sha256  # type: ignore[union-attr]
    gated = world.submit()
    world.gate(gated)
    r = client.post(
        "/v1/alerts",
        headers=world.actor("service").headers,
        json={"kind": "drift", "severity": "critical", "incident_key": uid("inc"), "message": "m",
              "deployment": world.deployment},
    )
    spare, rotated, offboarded = (make_actor(engine, "auditor") for _ in range(3))
    return {
        "version": active,
        "active": active,
        "sha": sha,
        "other_version": other_version,
        "gated": gated,
        "alert": r.json()["id"],
        "policy": POLICY_TEXT,
        "spare_prefix": spare.principal.key_prefix,
        "rotated_prefix": rotated.principal.key_prefix,
        "offboarded": offboarded.name,
    }


def test_route_by_role_matrix(client: TestClient, world: World, engine: Any, objects: dict[str, Any]) -> None:
    problems: list[str] = []
    for (method, template), (allowed, build) in SPEC.items():
        for role in sorted(ALL):
            actor = world.actor(role)
            path, kwargs = build(world, objects)
            headers = {**kwargs.pop("headers", {}), **actor.headers}
            before = audit_head(engine)
            r = client.request(method, path, headers=headers, **kwargs)
            cell = f"{method} {template} as {role}: {r.status_code}"
            if role in allowed:
                if r.status_code in (401, 403):
                    problems.append(f"{cell} refused ({r.text[:200]})")
                if r.status_code >= 500 and template not in SIGNING_ROUTES:
                    problems.append(f"{cell} server error {r.text[:200]}")
            else:
                if r.status_code != 403 or r.json()["error"]["code"] != "forbidden":
                    problems.append(f"{cell}, expected 403 ({r.text[:200]})")
                    continue
                entries = audit_since(engine, before)
                if [(e.action, e.actor) for e in entries] != [("denied", f"user:{actor.name}")]:
                    problems.append(f"{cell}: audit {[(e.action, e.actor) for e in entries]}, expected one denial")
    assert not problems, "\n".join(problems)


def test_no_key_bad_key_revoked_key_expired_key_all_get_the_same_401(
    client: TestClient, world: World, engine: Any
) -> None:

    revoked, expired = make_actor(engine, "admin"), make_actor(engine, "admin")
    assert client.get("/v1/me", headers=revoked.headers).status_code == 200
    r = client.post(f"/v1/keys/{revoked.principal.key_prefix}/revoke", headers=world.actor("admin").headers)
    assert r.status_code == 200, r.text
    with unit_of_work(engine) as s:
        s.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == hash_key(expired.key))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    variants = {
        "none": {},
        "garbage": {"Authorization": "Bearer nonsense"},
        "unknown": {"Authorization": f"Bearer gov_abcdefgh_{'x' * 43}"},
        "revoked": revoked.headers,
        "expired": expired.headers,
    }
    answers = {k: client.get("/v1/deployments", headers=h) for k, h in variants.items()}
    bodies = {(r.status_code, r.text) for r in answers.values()}
    assert len(bodies) == 1, answers
    assert next(iter(bodies))[0] == 401


def test_objects_of_another_deployment_are_refused(client: TestClient, world: World, engine: Any) -> None:
    other = make_world(engine)
    theirs = other.approved()
    mine = world.approved()
    world.promote(mine)
    eng, officer = world.actor("ml_engineer"), world.actor("compliance_officer")
    r = client.post(f"/v1/deployments/{world.deployment}/promote", json={"version_id": theirs}, headers=eng.headers)
    assert r.status_code == 409 and "another" in r.json()["error"]["message"]
    r = client.post(
        f"/v1/deployments/{world.deployment}/rollback",
        json={"reason": "x", "to_version_id": theirs},
        headers=officer.headers,
    )
    assert r.status_code == 409
    r = client.post(
        f"/v1/deployments/{world.deployment}/outputs",
        headers=world.actor("service").headers,
        json={"outputs": [{"request_id": "r1", "version_id": theirs, "output": "x"}]},
    )
    assert r.status_code == 422 and "not served" in r.json()["error"]["message"]
    assert (
        client.post("/v1/versions/999999999/approve", json={"comment": "x"}, headers=officer.headers).status_code == 404
    )
    assert client.get(f"/v1/deployments/{world.deployment}/active", headers=eng.headers).json()["version_id"] == mine
