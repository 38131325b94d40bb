"""Offboarding and key rotation, through the API and through the CLI (against a real uvicorn server).

Disabling a user stops every key of theirs at once and enabling them gives back the keys
that were neither revoked nor expired; rotating a key issues a new one with the same user
and deployments while the old one works until the expiry the caller set (at most 7 days),
and not after. Every action leaves its audit entry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from governance.auth.models import ApiKey
from governance.db import unit_of_work, utcnow
from tests.governance.conftest import World, audit_head, audit_since, make_actor, uid
from tests.governance.test_cli import _govern, server  # noqa: F401  (the uvicorn server fixture)


def _expire_now(engine: Any, prefix: str) -> None:
    with unit_of_work(engine) as s:
        s.execute(update(ApiKey).where(ApiKey.prefix == prefix).values(expires_at=utcnow() - timedelta(seconds=1)))


def _expiry(engine: Any, prefix: str) -> Any:
    with unit_of_work(engine) as s:
        return s.scalar(select(ApiKey.expires_at).where(ApiKey.prefix == prefix))


def test_disable_stops_every_key_and_enable_gives_them_back(client: TestClient, world: World, engine: Any) -> None:
    admin = world.actor("admin").headers
    eng = make_actor(engine, "ml_engineer")
    second = client.post(f"/v1/users/{eng.name}/keys", json={}, headers=admin).json()["api_key"]
    revoked = client.post(f"/v1/users/{eng.name}/keys", json={}, headers=admin).json()
    assert client.post(f"/v1/keys/{revoked['key_prefix']}/revoke", headers=admin).status_code == 200
    keys = {"first": eng.key, "second": second, "revoked": revoked["api_key"]}

    before = audit_head(engine)
    r = client.post(f"/v1/users/{eng.name}/disable", headers=admin)
    assert r.status_code == 200 and r.json()["disabled_at"] is not None
    for k in keys.values():
        assert client.get("/v1/me", headers={"Authorization": f"Bearer {k}"}).status_code == 401
    assert client.post(f"/v1/users/{eng.name}/disable", headers=admin).status_code == 409
    assert client.post(f"/v1/users/{eng.name}/keys", json={}, headers=admin).status_code == 409

    r = client.post(f"/v1/users/{eng.name}/enable", headers=admin)
    assert r.status_code == 200 and r.json()["disabled_at"] is None
    answers = {n: client.get("/v1/me", headers={"Authorization": f"Bearer {k}"}).status_code for n, k in keys.items()}
    assert answers == {"first": 200, "second": 200, "revoked": 401}
    assert client.post(f"/v1/users/{eng.name}/enable", headers=admin).status_code == 409

    entries = [(e.action, e.subject_id) for e in audit_since(engine, before) if e.action.startswith("user.")]
    assert entries == [("user.disable", eng.name), ("user.enable", eng.name)]
    # an admin cannot lock themselves out; and nobody else may offboard
    me = world.actor("admin").name
    assert client.post(f"/v1/users/{me}/disable", headers=admin).status_code == 409
    r = client.post(f"/v1/users/{eng.name}/disable", headers=world.actor("compliance_officer").headers)
    assert r.status_code == 403


def test_a_users_keys_are_listed(client: TestClient, world: World, engine: Any) -> None:
    admin = world.actor("admin").headers
    aud = make_actor(engine, "auditor")
    extra = client.post(f"/v1/users/{aud.name}/keys", json={}, headers=admin).json()
    listed = client.get(f"/v1/users/{aud.name}/keys", headers=world.actor("auditor").headers).json()
    assert [k["prefix"] for k in listed] == [aud.principal.key_prefix, extra["key_prefix"]]
    assert all(k["user"] == aud.name and k["deployments"] is None and not k["unscoped"] for k in listed)
    assert client.get("/v1/users/nobody-here/keys", headers=admin).status_code == 404


def test_a_rotated_key_works_during_the_overlap_and_not_after(
    client: TestClient, world: World, engine: Any
) -> None:
    admin = world.actor("admin").headers
    svc = make_actor(engine, "service", deployments=(world.deployment,))
    old = svc.principal.key_prefix
    assert old is not None
    before = audit_head(engine)
    r = client.post(f"/v1/keys/{old}/rotate", json={"overlap_seconds": 3600}, headers=admin)
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["old_key_prefix"] == old and new["key_prefix"] != old and new["deployments"] == [world.deployment]
    assert timedelta(minutes=59) < _expiry(engine, old) - utcnow() <= timedelta(hours=1)
    new_headers = {"Authorization": f"Bearer {new['api_key']}"}
    active = f"/v1/deployments/{world.deployment}/active"
    # the overlap: both keys work, with the same scope
    assert client.get(active, headers=svc.headers).status_code == 200
    assert client.get(active, headers=new_headers).status_code == 200
    assert client.get("/v1/me", headers=new_headers).json()["deployments"] == [world.deployment]
    # after the expiry the old key is refused like any expired key; the new one goes on
    _expire_now(engine, old)
    assert client.get(active, headers=svc.headers).status_code == 401
    assert client.get(active, headers=new_headers).status_code == 200
    assert client.post(f"/v1/keys/{old}/rotate", json={"overlap_seconds": 60}, headers=admin).status_code == 409
    [entry] = [e for e in audit_since(engine, before) if e.action == "key.rotate"]
    assert entry.subject_id == svc.name and f'"old_key_prefix":"{old}"' in entry.payload.replace(" ", "")


def test_rotation_overlap_is_at_most_seven_days_and_zero_stops_the_old_key(
    client: TestClient, world: World, engine: Any
) -> None:
    admin = world.actor("admin").headers
    aud = make_actor(engine, "auditor")
    prefix = aud.principal.key_prefix
    r = client.post(f"/v1/keys/{prefix}/rotate", json={"overlap_seconds": 7 * 86400 + 1}, headers=admin)
    assert r.status_code == 422
    assert client.post("/v1/keys/zzzzzzzz/rotate", json={"overlap_seconds": 0}, headers=admin).status_code == 404
    r = client.post(f"/v1/keys/{prefix}/rotate", json={"overlap_seconds": 0}, headers=admin)
    assert r.status_code == 200
    assert client.get("/v1/me", headers=aud.headers).status_code == 401
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {r.json()['api_key']}"}).status_code == 200


def test_disable_enable_list_and_rotate_with_the_cli(server: str, world: World, engine: Any) -> None:  # noqa: F811
    admin = world.actor("admin").key
    svc = make_actor(engine, "service", deployments=(world.deployment,))
    r = _govern(server, admin, "users", "keys", "list", svc.name)
    assert r.exit_code == 0, r.output
    assert svc.principal.key_prefix in r.output and world.deployment in r.output

    r = _govern(server, admin, "users", "disable", svc.name)
    assert r.exit_code == 0 and "disabled" in r.output, r.output
    assert _govern(server, svc.key, "deployments", "show", world.deployment).exit_code != 0
    r = _govern(server, admin, "users", "list")
    assert r.exit_code == 0 and svc.name in r.output, r.output
    r = _govern(server, admin, "users", "enable", svc.name)
    assert r.exit_code == 0 and "enabled" in r.output, r.output

    r = _govern(server, admin, "users", "rotate-key", svc.principal.key_prefix or "", "--overlap", "2h")
    assert r.exit_code == 0, r.output
    new_key = r.output.strip().splitlines()[-1]
    assert new_key.startswith("gov_") and new_key != svc.key
    left = _expiry(engine, svc.principal.key_prefix or "") - utcnow()
    assert timedelta(hours=1, minutes=59) < left <= timedelta(hours=2)

    r = _govern(server, admin, "users", "rotate-key", svc.principal.key_prefix or "", "--overlap", "8d")
    assert r.exit_code != 0 and "at most 7 days" in r.output
    r = _govern(server, world.actor("auditor").key, "users", "disable", svc.name)
    assert r.exit_code != 0 and "admin" in r.output


def test_users_create_binds_a_service_key_with_the_cli(server: str, world: World, client: TestClient) -> None:  # noqa: F811
    r = _govern(server, None, "users", "create", uid("svc"), "--role", "service")
    assert r.exit_code != 0 and "--deployment" in r.output
    r = _govern(server, None, "users", "create", uid("svc"), "--role", "service", "--deployment", world.deployment)
    assert r.exit_code == 0 and world.deployment in r.output, r.output
    key = {"Authorization": f"Bearer {r.output.strip().splitlines()[-1]}"}
    assert client.get("/v1/me", headers=key).json()["deployments"] == [world.deployment]
