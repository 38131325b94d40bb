"""The admins' users page: list users and keys, disable and enable a user, rotate a key.

Forms carry the session's CSRF token; only admins see the page and its link; a disabled
user's open web session ends at their next request; every action is audited.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from governance.audit.models import AuditEntry
from governance.db import unit_of_work
from tests.dashboards.conftest import World, csrf_of, make_person, sign_in


def _actions(world: World, subject: str) -> list[str]:
    with unit_of_work(world.engine) as s:
        rows = s.scalars(select(AuditEntry.action).where(AuditEntry.subject_id == subject).order_by(AuditEntry.seq))
        return [a for a in rows if a.startswith(("user.", "key."))]


def test_only_admins_see_the_page_and_its_link(client: TestClient, world: World) -> None:
    sign_in(client, world.people["admin"].key)
    page = client.get("/ui/users")
    assert page.status_code == 200
    assert world.people["auditor"].name in page.text and world.people["service"].principal.key_prefix in page.text
    assert world.deployment in page.text  # the service key's scope
    assert 'href="/ui/users"' in client.get("/ui/releases").text
    client.cookies.clear()
    sign_in(client, world.people["compliance_officer"].key)
    assert 'href="/ui/users"' not in client.get("/ui/releases").text
    assert client.get("/ui/users").status_code == 403


def test_disabling_a_user_ends_their_session_at_the_next_request(ui_app: FastAPI, world: World) -> None:
    victim = make_person(world.engine, "compliance_officer")
    with TestClient(ui_app, follow_redirects=False) as admin, TestClient(ui_app, follow_redirects=False) as them:
        sign_in(them, victim.key)
        assert them.get("/ui/alerts").status_code == 200
        csrf = sign_in(admin, world.people["admin"].key)
        assert admin.post(f"/ui/users/{victim.name}/disable", data={}).status_code == 403  # no CSRF token
        r = admin.post(f"/ui/users/{victim.name}/disable", data={"csrf_token": csrf})
        assert r.status_code == 303 and "done=user_disabled" in r.headers["location"]
        assert them.get("/ui/alerts").status_code == 303  # signed out: back to the sign-in page
        assert them.get("/v1/me", headers={"Authorization": f"Bearer {victim.key}"}).status_code == 401

        r = admin.post(f"/ui/users/{victim.name}/enable", data={"csrf_token": csrf})
        assert r.status_code == 303
        them.cookies.clear()
        sign_in(them, victim.key)  # the key works again
    assert _actions(world, victim.name) == ["user.create", "user.disable", "user.enable"]


def test_rotating_a_key_shows_the_new_one_once_and_keeps_the_old_for_the_overlap(
    client: TestClient, world: World
) -> None:
    svc = world.people["service"]
    csrf = sign_in(client, world.people["admin"].key)
    r = client.post(f"/ui/keys/{svc.principal.key_prefix}/rotate", data={"csrf_token": csrf, "overlap": "3600"})
    assert r.status_code == 200, r.text
    m = re.search(r'data-testid="new-key-value">(gov_[^<]+)<', r.text)
    assert m, r.text
    new_key = m.group(1)
    assert client.get("/ui/users").text.count(new_key) == 0  # shown once
    for key in (svc.key, new_key):  # the overlap: both work, bound to the same deployment
        me: Any = client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).json()
        assert me["deployments"] == [world.deployment]
    assert _actions(world, svc.name)[-1] == "key.rotate"
    r = client.post(f"/ui/keys/{svc.principal.key_prefix}/rotate", data={"csrf_token": csrf, "overlap": "999999999"})
    assert r.status_code == 422
    assert csrf_of(client.get("/ui/users").text) == csrf
