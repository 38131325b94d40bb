"""Upload validation, content addressing, four eyes, approval binding, rollback targets, freeze."""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import update

from governance.api.deps import role
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.errors import NoRollbackTarget
from governance.gates.models import GateRun
from governance.principal import Principal
from governance.registry.models import TokenVersion
from governance.roles import Role
from tests.governance.conftest import World, audit_head, audit_since, make_actor, token_bytes

OCTET = {"Content-Type": "application/octet-stream"}


def _upload(client: TestClient, world: World, data: bytes, adapter: str = "line-a") -> Any:
    return client.post(
        f"/v1/versions?adapter={adapter}-{world.deployment}",
        content=data,
        headers={**world.actor("ml_engineer").headers, **OCTET},
    )


def test_upload_refusals_say_what_is_wrong(client: TestClient, world: World, app: Any) -> None:
    r = _upload(client, world, b"not a token at all")
    assert r.status_code == 422 and "not a valid Aligner token" in r.json()["error"]["message"]
    r = _upload(client, world, token_bytes("f" * 64, 1))
    assert r.status_code == 422 and "not registered" in r.json()["error"]["message"]
    r = _upload(client, world, token_bytes(world.base_digest, 1, hidden=32))
    assert r.status_code == 422 and "hidden_size" in r.json()["error"]["message"]
    app.state.settings.max_artifact_bytes = 100
    try:
        r = _upload(client, world, world.artifact())
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    finally:
        app.state.settings.max_artifact_bytes = 1_000_000
    with unit_of_work(world.engine) as s:
        assert s.query(TokenVersion).filter(TokenVersion.deployment_id.is_(None)).count() >= 0  # nothing half-stored


def test_non_finite_values_are_refused(client: TestClient, world: World) -> None:
    data = bytearray(world.artifact())
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + hlen])
    start = 8 + hlen + header["prefix"]["data_offsets"][0]
    data[start : start + 4] = struct.pack("<f", float("nan"))
    r = _upload(client, world, bytes(data))
    assert r.status_code == 422 and "non-finite" in r.json()["error"]["message"]


def test_reupload_returns_the_existing_version(client: TestClient, world: World) -> None:
    data = world.artifact()
    first = _upload(client, world, data)
    assert first.status_code == 201 and first.json()["created"] is True
    again = _upload(client, world, data, adapter="another-line")
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["id"] == first.json()["id"]
    # multipart works too, and the served bytes are the uploaded ones
    r = client.post(
        "/v1/versions",
        files={"artifact": ("token.safetensors", data)},
        data={"adapter": "x"},
        headers=world.actor("ml_engineer").headers,
    )
    assert r.status_code == 200 and r.json()["id"] == first.json()["id"]
    # read back by a person: the version names no deployment, so a scoped service key may not fetch it
    body = client.get(f"/v1/versions/{first.json()['id']}/artifact", headers=world.actor("ml_engineer").headers)
    assert body.content == data and body.headers["x-artifact-sha256"] == hashlib.sha256(data).hexdigest()


def test_server_owned_fields_cannot_be_set(client: TestClient, world: World) -> None:
    vid = world.approved()
    r = client.post(
        f"/v1/deployments/{world.deployment}/promote",
        json={"version_id": vid, "generation": 99},
        headers=world.actor("ml_engineer").headers,
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    r = client.post(
        f"/v1/versions/{vid}/approve",
        json={"comment": "x", "state": "active", "approved_by": 1},
        headers=world.actor("compliance_officer").headers,
    )
    assert r.status_code == 422


def test_submitter_cannot_approve_own_version_even_as_admin(client: TestClient, world: World, engine: Any) -> None:
    admin = world.actor("admin")
    r = client.post(
        f"/v1/versions?adapter=own-{world.deployment}&deployment={world.deployment}",
        content=world.artifact(),
        headers={**admin.headers, **OCTET},
    )
    assert r.status_code == 201, r.text
    vid = r.json()["id"]
    world.gate(vid)
    before = audit_head(engine)
    r = client.post(f"/v1/versions/{vid}/approve", json={"comment": "mine"}, headers=admin.headers)
    assert r.status_code == 403 and "four eyes" in r.json()["error"]["message"]
    entries = audit_since(engine, before)
    assert [(e.action, e.actor, e.subject_id) for e in entries] == [("denied", f"user:{admin.name}", str(vid))]
    assert '"attempted":"version.approve"' in entries[0].payload
    with unit_of_work(engine) as s:
        assert s.get(TokenVersion, vid).state == "gate_passed"  # type: ignore[union-attr]
    # another person may
    r = client.post(
        f"/v1/versions/{vid}/approve",
        json={"comment": "checked the evidence"},
        headers=world.actor("compliance_officer").headers,
    )
    assert r.status_code == 200 and r.json()["evidence_digest"] and r.json()["policy_sha256"]


def test_promotion_rechecks_the_approval_binding(client: TestClient, world: World, engine: Any) -> None:
    vid = world.approved()
    # the approval binds one gate run: a later run under another gate policy leaves it standing ...
    with unit_of_work(engine) as s:
        s.add(GateRun(version_id=vid, policy_sha256="0" * 64, status="passed", evidence_digest="1" * 64))
    with unit_of_work(engine) as s:
        dep = deployments.get_deployment_or_raise(s, name=world.deployment)
        version = s.get(TokenVersion, vid)
        deployments.check_approval_binding(s, version=version, deployment=dep,  # type: ignore[arg-type]
                                           principal=world.actor("ml_engineer").principal, attempted="test")
    # ... but the evidence of the run it binds changing afterwards is caught
    with unit_of_work(engine) as s:
        s.execute(update(GateRun).where(GateRun.version_id == vid, GateRun.policy_sha256 != "0" * 64)
                  .values(evidence_digest="2" * 64))
    before = audit_head(engine)
    r = client.post(
        f"/v1/deployments/{world.deployment}/promote",
        json={"version_id": vid},
        headers=world.actor("ml_engineer").headers,
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "approval_binding_mismatch"
    assert [e.action for e in audit_since(engine, before)] == ["denied"]
    # the stored bytes changing is caught too
    vid2 = world.approved()
    with unit_of_work(engine) as s:
        s.execute(update(TokenVersion).where(TokenVersion.id == vid2).values(artifact=b"tampered"))
    r = client.post(
        f"/v1/deployments/{world.deployment}/promote",
        json={"version_id": vid2},
        headers=world.actor("ml_engineer").headers,
    )
    assert r.status_code == 409 and "artifact digest" in r.json()["error"]["message"]


def test_rollback_goes_to_the_last_approved_token_and_never_to_a_rolled_back_one(
    client: TestClient, world: World, engine: Any
) -> None:
    officer = world.actor("compliance_officer")
    a, b, c = world.approved(), world.approved(), world.approved()
    for v in (a, b, c):
        world.promote(v)

    def rollback(**body: Any) -> Any:
        return client.post(
            f"/v1/deployments/{world.deployment}/rollback", json={"reason": "drift", **body}, headers=officer.headers
        )

    r = rollback()
    assert r.status_code == 200 and (r.json()["previous_version_id"], r.json()["version_id"]) == (c, b)
    r = rollback()
    assert r.status_code == 200 and r.json()["version_id"] == a
    r = rollback()  # b and c are rolled back; nothing valid is left
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_rollback_target"
    r = rollback(to_version_id=c)
    assert r.status_code == 409 and "rolled_back" in r.json()["error"]["message"]
    # a new review makes the rolled-back version a candidate again (promote it explicitly)
    r = client.post(f"/v1/versions/{c}/approve", json={"comment": "fixed upstream"}, headers=officer.headers)
    assert r.status_code == 200, r.text
    r = rollback(to_version_id=c)
    assert r.status_code == 200 and r.json()["version_id"] == c
    hist = client.get(f"/v1/deployments/{world.deployment}/promotions", headers=officer.headers).json()
    assert [h["generation"] for h in hist] == [6, 5, 4, 3, 2, 1]


def test_monitor_rollback_outcomes(world: World, engine: Any) -> None:
    monitor = Principal.for_system("monitor")
    a, b = world.approved(), world.approved()
    with unit_of_work(engine) as s:
        out = deployments.rollback(s, deployment=world.deployment, principal=monitor, reason="x", automatic=True)
    assert out.status == "no_active"
    world.promote(a)
    with unit_of_work(engine) as s:
        out = deployments.rollback(
            s,
            deployment=world.deployment,
            principal=monitor,
            reason="cusum",
            automatic=True,
            expected_active_version_id=a,
        )
    assert out.status == "no_target" and "no earlier approved version" in out.message
    world.promote(b)
    with unit_of_work(engine) as s:
        out = deployments.rollback(
            s,
            deployment=world.deployment,
            principal=monitor,
            reason="cusum",
            automatic=True,
            expected_active_version_id=a,
        )
    assert out.status == "stale"
    with unit_of_work(engine) as s:
        deployments.freeze(s, deployment=world.deployment, principal=world.actor("compliance_officer").principal)
    with unit_of_work(engine) as s:
        out = deployments.rollback(
            s,
            deployment=world.deployment,
            principal=monitor,
            reason="cusum",
            automatic=True,
            expected_active_version_id=b,
        )
    assert out.status == "frozen"
    with unit_of_work(engine) as s:
        deployments.unfreeze(s, deployment=world.deployment, principal=world.actor("admin").principal)
    before = audit_head(engine)
    with unit_of_work(engine) as s:
        out = deployments.rollback(
            s,
            deployment=world.deployment,
            principal=monitor,
            reason="cusum",
            automatic=True,
            expected_active_version_id=b,
        )
    assert (out.status, out.from_version_id, out.to_version_id, out.generation) == ("rolled_back", b, a, 3)
    entries = audit_since(engine, before)
    assert [(e.action, e.actor) for e in entries] == [("deployment.auto_rollback", "system:monitor")]
    # manual path raises instead
    try:
        with unit_of_work(engine) as s:
            deployments.rollback(s, deployment=world.deployment, principal=world.actor("admin").principal, reason="x")
        raise AssertionError("expected NoRollbackTarget")
    except NoRollbackTarget:
        pass


def test_freeze_with_expiry(client: TestClient, world: World) -> None:
    officer = world.actor("compliance_officer")
    r = client.post(
        f"/v1/deployments/{world.deployment}/freeze", json={"until": "2999-01-01T00:00:00Z"}, headers=officer.headers
    )
    assert r.status_code == 200 and r.json()["frozen"] is True and r.json()["frozen_until"].startswith("2999")
    r = client.post(
        f"/v1/deployments/{world.deployment}/freeze", json={"until": "2000-01-01T00:00:00Z"}, headers=officer.headers
    )
    assert r.status_code == 422
    assert (
        client.post(f"/v1/deployments/{world.deployment}/unfreeze", json={}, headers=officer.headers).json()["frozen"]
        is False
    )


def test_alerts_dedupe_escalate_and_ack(client: TestClient, world: World, engine: Any) -> None:
    svc, officer = world.actor("service"), world.actor("compliance_officer")
    body = {
        "kind": "drift",
        "severity": "warning",
        "incident_key": f"inc-{world.deployment}",
        "message": "m",
        "deployment": world.deployment,
    }
    first = client.post("/v1/alerts", json=body, headers=svc.headers).json()
    second = client.post("/v1/alerts", json={**body, "severity": "critical"}, headers=svc.headers).json()
    third = client.post("/v1/alerts", json={**body, "severity": "info"}, headers=svc.headers).json()
    assert first["opened"] and not second["opened"] and first["id"] == second["id"] == third["id"]
    assert (third["occurrences"], third["severity"]) == (3, "critical")
    r = client.post(f"/v1/alerts/{first['id']}/ack", json={"comment": "on it"}, headers=officer.headers)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    assert (
        client.post(f"/v1/alerts/{first['id']}/ack", json={"comment": "again"}, headers=officer.headers).status_code
        == 409
    )
    reopened = client.post("/v1/alerts", json=body, headers=svc.headers).json()
    assert reopened["opened"] and reopened["id"] != first["id"]
    listed = client.get(f"/v1/alerts?deployment={world.deployment}&status=open", headers=officer.headers).json()
    assert [a["id"] for a in listed] == [reopened["id"]]


def test_outputs_ingest_is_idempotent(client: TestClient, world: World) -> None:
    vid = world.approved()
    world.promote(vid)
    svc = world.actor("service")
    with unit_of_work(world.engine) as s:
        sha = s.get(TokenVersion, vid).sha256  # type: ignore[union-attr]
    rows = [
        {
            "request_id": f"req-{i}",
            "sha256": sha,
            "generation": 1,
            "messages": [{"role": "user", "content": "hi"}],
            "output": "hello",
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "latency_ms": 12.5,
        }
        for i in range(50)
    ]
    r = client.post(f"/v1/deployments/{world.deployment}/outputs", json={"outputs": rows}, headers=svc.headers)
    assert r.json() == {"accepted": 50, "duplicates": 0}
    r = client.post(
        f"/v1/deployments/{world.deployment}/outputs",
        json={"outputs": [*rows[40:], {**rows[0], "request_id": "req-new"}]},
        headers=svc.headers,
    )
    assert r.json() == {"accepted": 1, "duplicates": 10}
    r = client.post(
        f"/v1/deployments/{world.deployment}/outputs",
        json={"outputs": [{**rows[0], "sha256": "0" * 64}]},
        headers=svc.headers,
    )
    assert r.status_code == 422 and "unknown version" in r.json()["error"]["message"]


def test_revoked_key_stops_working_on_the_next_request(client: TestClient, world: World, engine: Any) -> None:
    victim = make_actor(engine, "ml_engineer")
    assert client.get("/v1/me", headers=victim.headers).status_code == 200
    r = client.post(f"/v1/keys/{victim.principal.key_prefix}/revoke", headers=world.actor("admin").headers)
    assert r.status_code == 200
    assert client.get("/v1/me", headers=victim.headers).status_code == 401


def test_unexpected_errors_are_a_generic_500(client: TestClient, world: World, app: Any) -> None:
    router = APIRouter()

    @router.get("/v1/boom")
    def boom(_: Any = role(Role.admin)) -> None:
        raise RuntimeError("select secret from users -- stack details")

    app.include_router(router)
    r = client.get("/v1/boom", headers=world.actor("admin").headers)
    assert r.status_code == 500
    assert r.json() == {
        "error": {
            "code": "internal_error",
            "message": "internal error; the server log has the details",
            "details": None,
        }
    }
