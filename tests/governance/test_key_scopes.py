"""Deployment-scoped service keys: every route a service key can reach, tried with its own
deployment and with another one.

A service key is bound to named deployments when it is created. On every route that names
a deployment (in the path, the body or the query, or through the version it reads) a key
bound elsewhere gets 403 with exactly one ``denied`` audit entry and changes nothing; a key
bound to no deployment (issued before scoping) is refused everywhere unless the operator
sets ``GOVERN_ALLOW_UNSCOPED_SERVICE_KEYS``, and the user and key listings say which keys
are unscoped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from governance.alerts.models import Alert
from governance.api.app import PUBLIC_PATHS, create_app
from governance.api.deps import RequireRole
from governance.auth.models import ApiKey, ApiKeyDeployment, User
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.outputs.models import Output
from governance.registry.models import TokenVersion
from governance.roles import Role
from governance.settings import get_settings
from tests.governance.conftest import Actor, World, audit_head, audit_since, make_actor, make_world, uid


@dataclass(frozen=True)
class Side:
    """One deployment as a request builder sees it: its name, its active version and that version's sha256."""

    deployment: str
    version: int
    sha: str


Build = Callable[[Side], tuple[str, dict[str, Any]]]


def _ingest(side: Side) -> tuple[str, dict[str, Any]]:
    row = {"request_id": uid("r"), "version_id": side.version, "generation": 1, "output": "hi"}
    return f"/v1/deployments/{side.deployment}/outputs", {"json": {"outputs": [row]}}


def _alert(side: Side) -> tuple[str, dict[str, Any]]:
    body = {"kind": "drift", "severity": "warning", "incident_key": uid("inc"), "message": "m",
            "deployment": side.deployment}
    return "/v1/alerts", {"json": body}


# every route a service key may call that names a deployment, with a request for a given side
SCOPED: dict[tuple[str, str], Build] = {
    ("GET", "/v1/deployments/{name}"): lambda s: (f"/v1/deployments/{s.deployment}", {}),
    ("GET", "/v1/deployments/{name}/active"): lambda s: (f"/v1/deployments/{s.deployment}/active", {}),
    ("GET", "/v1/deployments/{name}/promotions"): lambda s: (f"/v1/deployments/{s.deployment}/promotions", {}),
    ("GET", "/v1/deployments/{name}/policies"): lambda s: (f"/v1/deployments/{s.deployment}/policies", {}),
    ("POST", "/v1/versions/{version_id}/gate-runs"): lambda s: (
        f"/v1/versions/{s.version}/gate-runs", {"json": {"deployment": s.deployment}}),
    ("POST", "/v1/deployments/{name}/outputs"): _ingest,
    ("POST", "/v1/alerts"): _alert,
    ("GET", "/v1/versions"): lambda s: (f"/v1/versions?deployment={s.deployment}&state=active", {}),
    ("GET", "/v1/versions/{version_id}"): lambda s: (f"/v1/versions/{s.version}", {}),
    ("GET", "/v1/versions/{version_id}/artifact"): lambda s: (f"/v1/versions/{s.version}/artifact", {}),
    ("GET", "/v1/versions/by-sha/{sha256}/artifact"): lambda s: (f"/v1/versions/by-sha/{s.sha}/artifact", {}),
    ("GET", "/v1/deployments/{name}/rollouts"): lambda s: (f"/v1/deployments/{s.deployment}/rollouts", {}),
    ("GET", "/v1/deployments/{name}/rollouts/current"): lambda s: (
        f"/v1/deployments/{s.deployment}/rollouts/current", {}),
    ("POST", "/v1/deployments/{name}/rollouts/current/advance"): lambda s: (
        f"/v1/deployments/{s.deployment}/rollouts/current/advance", {"json": {"from_step": 0}}),
    ("POST", "/v1/deployments/{name}/rollouts/current/abort"): lambda s: (
        f"/v1/deployments/{s.deployment}/rollouts/current/abort", {"json": {"reason": "scope test"}}),
}
# routes about the running rollout: on its own side with none running, the honest answer is
# a 404 (nothing to read or abort) or a 409 (nothing to advance), never a 403
OWN_SIDE_NOTHING_RUNNING = {("GET", "/v1/deployments/{name}/rollouts/current"),
                            ("POST", "/v1/deployments/{name}/rollouts/current/advance"),
                            ("POST", "/v1/deployments/{name}/rollouts/current/abort")}
# routes whose own-side request passes the scope check and then meets the version's own
# state (its gate under this deployment's policy already passed): a 409 conflict, not a 403;
# tests/governance/test_policy_lifecycle.py re-gates through the route with a 202
OWN_SIDE_MAY_CONFLICT = {("POST", "/v1/versions/{version_id}/gate-runs")}
# the service routes that name no deployment: who am I, the base models, the (filtered) list
UNSCOPED = {("GET", "/v1/me"), ("GET", "/v1/base-models"), ("GET", "/v1/deployments")}


def _service_routes(app: Any) -> set[tuple[str, str]]:
    out = set()
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        if not isinstance(route, APIRoute) or (ctx.path or route.path) in PUBLIC_PATHS:
            continue
        stack = list(route.dependant.dependencies)
        while stack:
            dep = stack.pop()
            if isinstance(dep.call, RequireRole) and Role.service in dep.call.roles:
                out.update((m, ctx.path or route.path) for m in route.methods)
            stack.extend(dep.dependencies)
    return out


@dataclass
class Scene:
    mine: Side
    theirs: Side
    other_world: World


@pytest.fixture()
def scene(world: World, engine: Any) -> Scene:
    other = make_world(engine)

    def side(w: World) -> Side:
        vid = w.approved()
        w.promote(vid)
        with unit_of_work(engine) as s:
            sha = s.get(TokenVersion, vid).sha256  # type: ignore[union-attr]
        return Side(w.deployment, vid, sha)

    return Scene(side(world), side(other), other)


def _counts(engine: Any) -> tuple[int, int]:
    with unit_of_work(engine) as s:
        return int(s.scalar(select(func.count()).select_from(Output)) or 0), int(
            s.scalar(select(func.count()).select_from(Alert)) or 0
        )


def test_every_service_route_is_classified(app: Any) -> None:
    """A new route a service key can reach must be added here, scoped or not."""
    assert _service_routes(app) == set(SCOPED) | UNSCOPED


@pytest.mark.parametrize("route", sorted(SCOPED), ids=lambda r: f"{r[0]} {r[1]}")
def test_a_scoped_key_acts_on_its_deployment_only(
    route: tuple[str, str], client: TestClient, world: World, engine: Any, scene: Scene
) -> None:
    method, build = route[0], SCOPED[route]
    svc = world.actor("service")
    path, kwargs = build(scene.mine)
    r = client.request(method, path, headers=svc.headers, **kwargs)
    own_ok = r.status_code < 300 or (route in OWN_SIDE_MAY_CONFLICT and r.status_code == 409
                                     and r.json()["error"]["code"] == "conflict") or (
        route in OWN_SIDE_NOTHING_RUNNING and r.status_code in (404, 409))
    assert own_ok, f"{method} {path} on its own deployment: {r.status_code} {r.text[:200]}"

    before, counts = audit_head(engine), _counts(engine)
    path, kwargs = build(scene.theirs)
    r = client.request(method, path, headers=svc.headers, **kwargs)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    assert scene.theirs.deployment in r.json()["error"]["message"] or route[1].startswith("/v1/versions/")
    entries = audit_since(engine, before)
    assert [(e.action, e.actor) for e in entries] == [("denied", f"user:{svc.name}")]
    assert _counts(engine) == counts  # nothing stored

    # and the other deployment's own service key is refused on this one
    theirs = scene.other_world.actor("service")
    path, kwargs = build(scene.mine)
    assert client.request(method, path, headers=theirs.headers, **kwargs).status_code == 403


def test_ingest_into_another_deployment_is_403_and_stores_nothing(
    client: TestClient, world: World, engine: Any, scene: Scene
) -> None:
    svc = world.actor("service")
    rows = [{"request_id": uid("r"), "version_id": scene.theirs.version, "generation": 1, "output": "poison"}
            for _ in range(3)]
    before = audit_head(engine)
    r = client.post(f"/v1/deployments/{scene.theirs.deployment}/outputs", json={"outputs": rows},
                    headers=svc.headers)
    assert r.status_code == 403, r.text
    with unit_of_work(engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=scene.theirs.deployment)
        stored = s.scalar(select(func.count()).select_from(Output).where(Output.deployment_id == dep.id))
    assert stored == 0
    denied = audit_since(engine, before)
    assert [(e.action, e.subject_type, e.subject_id) for e in denied] == [
        ("denied", "deployment", scene.theirs.deployment)
    ]
    # the same key ingests into its own deployment
    mine = [{**rows[0], "version_id": scene.mine.version}]
    r = client.post(f"/v1/deployments/{scene.mine.deployment}/outputs", json={"outputs": mine}, headers=svc.headers)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text


def test_a_scoped_key_sees_its_deployments_and_must_name_one(
    client: TestClient, world: World, engine: Any, scene: Scene
) -> None:
    svc = world.actor("service")
    me = client.get("/v1/me", headers=svc.headers).json()
    assert me["deployments"] == [world.deployment]
    listed = [d["name"] for d in client.get("/v1/deployments", headers=svc.headers).json()]
    assert listed == [world.deployment]
    assert client.get("/v1/base-models", headers=svc.headers).status_code == 200
    # listing versions or raising an alert without naming a deployment is outside the key's scope
    assert client.get("/v1/versions", headers=svc.headers).status_code == 403
    body = {"kind": "drift", "severity": "warning", "incident_key": uid("inc"), "message": "m"}
    assert client.post("/v1/alerts", json=body, headers=svc.headers).status_code == 403
    # people are not bound: an engineer still sees both deployments
    names = {d["name"] for d in client.get("/v1/deployments", headers=world.actor("ml_engineer").headers).json()}
    assert {world.deployment, scene.theirs.deployment} <= names


def test_a_key_bound_to_two_deployments_acts_on_both(client: TestClient, world: World, engine: Any,
                                                     scene: Scene) -> None:
    both = make_actor(engine, "service", deployments=(scene.mine.deployment, scene.theirs.deployment))
    for side in (scene.mine, scene.theirs):
        assert client.get(f"/v1/deployments/{side.deployment}/active", headers=both.headers).status_code == 200
    assert client.get("/v1/me", headers=both.headers).json()["deployments"] == sorted(
        [scene.mine.deployment, scene.theirs.deployment]
    )


def _unscope(engine: Any, actor: Actor) -> None:
    """Make the actor's key look like one issued before scoping: bound to nothing."""
    with unit_of_work(engine) as s:
        key_id = s.scalar(select(ApiKey.id).where(ApiKey.prefix == actor.principal.key_prefix))
        s.execute(delete(ApiKeyDeployment).where(ApiKeyDeployment.key_id == key_id))


@pytest.fixture()
def opted_in(settings_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from governance.settings import reset_settings_cache

    monkeypatch.setenv("GOVERN_ALLOW_UNSCOPED_SERVICE_KEYS", "true")
    reset_settings_cache()
    with TestClient(create_app(get_settings())) as c:
        yield c


def test_an_unscoped_service_key_works_only_when_the_operator_opts_in(
    client: TestClient, opted_in: TestClient, world: World, engine: Any, scene: Scene
) -> None:
    legacy = make_actor(engine, "service", deployments=(world.deployment,))
    _unscope(engine, legacy)
    before = audit_head(engine)
    r = client.get(f"/v1/deployments/{world.deployment}/active", headers=legacy.headers)
    assert r.status_code == 403 and "GOVERN_ALLOW_UNSCOPED_SERVICE_KEYS" in r.json()["error"]["message"]
    assert [(e.action, e.actor) for e in audit_since(engine, before)] == [("denied", f"user:{legacy.name}")]
    # opted in, the old key works on every deployment, as it did before scoping
    for side in (scene.mine, scene.theirs):
        assert opted_in.get(f"/v1/deployments/{side.deployment}/active", headers=legacy.headers).status_code == 200
    # the listings say which keys are unscoped
    admin = world.actor("admin").headers
    users = {u["name"]: u for u in client.get("/v1/users", headers=admin).json()}
    assert users[legacy.name]["unscoped_keys"] == [legacy.principal.key_prefix]
    assert users[world.actor("service").name]["unscoped_keys"] == []
    keys = client.get(f"/v1/users/{legacy.name}/keys", headers=admin).json()
    assert [(k["prefix"], k["unscoped"], k["deployments"]) for k in keys] == [
        (legacy.principal.key_prefix, True, None)
    ]
    scoped = client.get(f"/v1/users/{world.actor('service').name}/keys", headers=admin).json()
    assert [(k["unscoped"], k["deployments"]) for k in scoped] == [(False, [world.deployment])]


def test_service_keys_must_name_existing_deployments_and_only_service_keys_may(
    client: TestClient, world: World
) -> None:
    admin = world.actor("admin").headers
    r = client.post("/v1/users", json={"name": uid("svc"), "role": "service"}, headers=admin)
    assert r.status_code == 422 and "--deployment" in r.json()["error"]["message"]
    r = client.post("/v1/users", json={"name": uid("svc"), "role": "service", "deployments": ["nope"]}, headers=admin)
    assert r.status_code == 404
    r = client.post("/v1/users", json={"name": uid("eng"), "role": "ml_engineer", "deployments": [world.deployment]},
                    headers=admin)
    assert r.status_code == 422 and "only service keys" in r.json()["error"]["message"]
    name = uid("svc")
    r = client.post("/v1/users", json={"name": name, "role": "service", "deployments": [world.deployment]},
                    headers=admin)
    assert r.status_code == 201 and r.json()["deployments"] == [world.deployment]
    r = client.post(f"/v1/users/{name}/keys", json={"deployments": [world.deployment]}, headers=admin)
    assert r.status_code == 201 and r.json()["deployments"] == [world.deployment]
    assert client.post(f"/v1/users/{name}/keys", json={}, headers=admin).status_code == 422


def test_the_database_refuses_a_scope_on_an_unknown_deployment(session: Session) -> None:
    """Migration 0002: a key's scope rows name existing deployments."""
    user = User(name=uid("svc"), role="service")
    session.add(user)
    session.flush()
    key = ApiKey(user_id=user.id, prefix=uid("")[-8:], key_hash="a" * 64)
    session.add(key)
    session.flush()
    with pytest.raises(IntegrityError, match="fk_api_key_deployments_deployment_deployments"), session.begin_nested():
        session.add(ApiKeyDeployment(key_id=key.id, deployment="no-such-deployment"))
        session.flush()
