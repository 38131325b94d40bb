"""The seam between the registry and the deployments room: the deployment a submission names, the
versions listed by deployment, and the last approved rollback target, each read through a service."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.registry import service as registry
from governance.registry.models import VersionState
from tests.governance.conftest import World, audit_head, audit_since, make_world, uid

OCTET = {"Content-Type": "application/octet-stream"}


def _upload(client: TestClient, world: World, data: bytes, deployment: str) -> Any:
    return client.post(
        f"/v1/versions?adapter={uid('line')}&deployment={deployment}",
        content=data,
        headers={**world.actor("ml_engineer").headers, **OCTET},
    )


def test_a_submission_names_a_deployment_that_exists_and_serves_its_base_model(
    client: TestClient, world: World, engine: Any
) -> None:
    other = make_world(engine)  # another base model with its own deployment
    data = world.artifact()
    r = _upload(client, world, data, "no-such-deployment")
    assert r.status_code == 404 and r.json()["error"]["message"] == "no deployment named 'no-such-deployment'"
    r = _upload(client, world, data, other.deployment)
    assert r.status_code == 422
    assert r.json()["error"]["message"] == (
        f"deployment {other.deployment!r} serves another base model than this artifact's ({world.base_name})"
    )
    head = audit_head(engine)
    r = _upload(client, world, data, world.deployment)
    assert r.status_code == 201, r.text
    with unit_of_work(engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        assert r.json()["deployment_id"] == dep.id
    submitted = [e for e in audit_since(engine, head) if e.action == "version.submit"]
    assert [json.loads(e.payload)["deployment"] for e in submitted] == [world.deployment]
    # a known artifact is the stored version: the name it gives now is not looked at
    r = _upload(client, world, data, "no-such-deployment")
    assert r.status_code == 200 and r.json()["created"] is False


def test_versions_are_listed_by_the_deployment_they_name(client: TestClient, world: World, engine: Any) -> None:
    vid = world.submit()
    other = make_world(engine)
    headers = world.actor("auditor").headers
    listed = client.get(f"/v1/versions?deployment={world.deployment}", headers=headers).json()
    assert [v["id"] for v in listed] == [vid]
    assert client.get(f"/v1/versions?deployment={other.deployment}", headers=headers).json() == []
    assert client.get("/v1/versions?deployment=no-such-deployment", headers=headers).json() == []
    r = client.get("/v1/versions?deployment=no-such-deployment&state=bogus", headers=headers)
    assert r.status_code == 422 and "unknown state 'bogus'" in r.json()["error"]["message"]
    with unit_of_work(engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        assert [v.id for v in registry.list_versions(s, deployment_id=dep.id)] == [vid]


def test_the_last_approved_target_is_the_superseded_version_active_most_recently(world: World, engine: Any) -> None:
    a, b, c, d = world.approved(), world.approved(), world.approved(), world.approved()
    for v in (a, b, c):
        world.promote(v)
    with unit_of_work(engine) as s:
        deployments.rollback(s, deployment=world.deployment, principal=world.actor("compliance_officer").principal,
                             reason="drift", to_version_id=a)  # a active again; c rolled back
    world.promote(d)  # a superseded after b: a was active more recently
    with unit_of_work(engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        targets = [deployments.last_approved_target(s, deployment=dep, exclude_version_id=x) for x in (d, a)]
        assert [t.id if t else None for t in targets] == [a, b]

        def first(ids: list[int]) -> int | None:
            found = registry.first_in_state(s, version_ids=ids, deployment_id=dep.id, state=VersionState.superseded)
            return found.id if found else None

        assert (first([b, a]), first([a, b]), first([c, d]), first([])) == (b, a, None, None)
