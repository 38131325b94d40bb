"""The API answers: health, auth, the error envelope, a full happy path."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.governance.conftest import World


def test_health_and_auth(client: TestClient, world: World) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    r = client.get("/v1/me")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    r = client.get("/v1/me", headers=world.actor("auditor").headers)
    assert r.status_code == 200 and r.json()["role"] == "auditor"


def test_happy_path(client: TestClient, world: World) -> None:
    eng, officer = world.actor("ml_engineer"), world.actor("compliance_officer")
    r = client.post(
        f"/v1/versions?adapter=a-{world.deployment}&deployment={world.deployment}",
        content=world.artifact(),
        headers={**eng.headers, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    vid = r.json()["id"]
    world.gate(vid)
    r = client.post(f"/v1/versions/{vid}/approve", json={"comment": "fine"}, headers=officer.headers)
    assert r.status_code == 200, r.text
    r = client.post(f"/v1/deployments/{world.deployment}/promote", json={"version_id": vid}, headers=eng.headers)
    assert r.status_code == 200, r.text
    r = client.get(f"/v1/deployments/{world.deployment}/active", headers=world.actor("service").headers)
    assert r.json()["version_id"] == vid and r.json()["generation"] == 1
    print(client.get("/metrics").text[:300])
