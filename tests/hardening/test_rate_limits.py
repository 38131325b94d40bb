"""Rate limits on writes and ingest (per key, per address, across processes) and the failed-auth throttle."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from governance.api.guard import Guard
from tests.governance.conftest import World, audit_count, make_actor


def _is_429(r: object, setting: str) -> None:
    assert r.status_code == 429, r.text  # type: ignore[attr-defined]
    retry = int(r.headers["Retry-After"])  # type: ignore[attr-defined]
    assert 1 <= retry <= 60
    err = r.json()["error"]  # type: ignore[attr-defined]
    assert err["code"] == "rate_limited" and setting in err["message"], err
    assert err["details"]["retry_after"] == retry


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_writes_are_limited_per_key(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app(RATE_LIMIT_WRITES_PER_MINUTE=3))
    officer = world.actor("compliance_officer")
    before = _metric("govern_throttled_total", scope="writes", by="key")
    for _ in range(3):  # refused by the domain (no such version) but still counted: a write was attempted
        assert c.post("/v1/versions/999999/approve", json={"comment": "x"}, headers=officer.headers).status_code == 404
    r = c.post(f"/v1/deployments/{world.deployment}/freeze", json={}, headers=officer.headers)
    _is_429(r, "GOVERN_RATE_LIMIT_WRITES_PER_MINUTE")
    assert _metric("govern_throttled_total", scope="writes", by="key") == before + 1
    # reads are not limited, and another key has its own budget
    assert c.get("/v1/me", headers=officer.headers).status_code == 200
    admin = world.actor("admin")
    assert c.post(f"/v1/deployments/{world.deployment}/freeze", json={}, headers=admin.headers).status_code == 200


def test_writes_are_limited_per_address(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    app = make_app(RATE_LIMIT_WRITES_PER_ADDRESS_PER_MINUTE=4)
    here, elsewhere = client_for(app, "10.1.1.1"), client_for(app, "10.2.2.2")
    officer, admin = world.actor("compliance_officer"), world.actor("admin")
    for who in (officer, admin, officer, admin):
        assert here.post("/v1/versions/999999/reject", json={"comment": "x"}, headers=who.headers).status_code in (
            403,
            404,
        )
    # the address's budget is spent, whoever's key it is, and even without one (checked before auth)
    _is_429(here.post("/v1/users", json={"name": "x", "role": "auditor"}, headers=admin.headers),
            "GOVERN_RATE_LIMIT_WRITES_PER_ADDRESS_PER_MINUTE")
    _is_429(here.post("/v1/versions/1/approve", json={"comment": "x"}),
            "GOVERN_RATE_LIMIT_WRITES_PER_ADDRESS_PER_MINUTE")
    r = elsewhere.post("/v1/users", json={"name": f"u-{world.deployment}", "role": "auditor"}, headers=admin.headers)
    assert r.status_code == 201, r.text


def test_ingest_has_its_own_budget(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app(RATE_LIMIT_INGEST_PER_MINUTE=2, RATE_LIMIT_WRITES_PER_MINUTE=1))
    svc = world.actor("service")
    url = f"/v1/deployments/{world.deployment}/outputs"
    for i in range(2):
        r = c.post(url, json={"outputs": [{"request_id": f"q{i}"}]}, headers=svc.headers)
        assert r.status_code == 200, r.text
    _is_429(c.post(url, json={"outputs": [{"request_id": "q9"}]}, headers=svc.headers),
            "GOVERN_RATE_LIMIT_INGEST_PER_MINUTE")
    # the service key's write budget is separate from its ingest budget
    body = {"kind": "test", "severity": "info", "incident_key": world.deployment, "message": "m",
            "deployment": world.deployment}
    assert c.post("/v1/alerts", json=body, headers=svc.headers).status_code == 201


def test_the_limit_holds_across_api_processes(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    """Two apps (as two API processes would) with their own Redis connections share one budget."""
    a = make_app(RATE_LIMIT_WRITES_PER_MINUTE=2)
    b = make_app(RATE_LIMIT_WRITES_PER_MINUTE=2)
    b.state.guard = Guard(b.state.settings, b.state.redis_url_fn(), prefix=a.state.guard.prefix)
    ca, cb = client_for(a), client_for(b)
    officer = world.actor("compliance_officer")
    assert ca.post("/v1/versions/999999/approve", json={"comment": "x"}, headers=officer.headers).status_code == 404
    assert cb.post("/v1/versions/999999/approve", json={"comment": "x"}, headers=officer.headers).status_code == 404
    _is_429(ca.post("/v1/versions/999999/approve", json={"comment": "x"}, headers=officer.headers),
            "GOVERN_RATE_LIMIT_WRITES_PER_MINUTE")
    _is_429(cb.post("/v1/versions/999999/approve", json={"comment": "x"}, headers=officer.headers),
            "GOVERN_RATE_LIMIT_WRITES_PER_MINUTE")


def test_failed_authentications_are_counted_throttled_and_audited_once(
    world: World, engine: object, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app(AUTH_FAILURES_PER_MINUTE=3), "10.3.3.3")
    victim = world.actor("auditor")
    forged = {"Authorization": f"Bearer gov_{victim.principal.key_prefix}_not-the-secret"}
    before = _metric("govern_auth_failures_total", via="api")
    audited_before = audit_count(engine, action="auth.failed", actor="anonymous:10.3.3.3")  # type: ignore[arg-type]
    statuses = [c.get("/v1/me", headers=forged).status_code for _ in range(5)]
    assert statuses[:3] == [401, 401, 401], statuses
    assert statuses[3:] == [429, 429], statuses
    r = c.get("/v1/me", headers=forged)
    _is_429(r, "GOVERN_AUTH_FAILURES_PER_MINUTE")
    assert "not-the-secret" not in r.text
    # every failure counted; from the 4th on the address is refused before the key is even looked up
    assert _metric("govern_auth_failures_total", via="api") == before + 3
    # one audit entry for the window, naming the address and the presented prefix, never the key
    assert audit_count(engine, action="auth.failed", actor="anonymous:10.3.3.3") == audited_before + 1  # type: ignore[arg-type]
    # the address is throttled: even a valid key from it waits (checked before the database)
    _is_429(c.get("/v1/me", headers=victim.headers), "GOVERN_AUTH_FAILURES_PER_MINUTE")


def test_someone_elses_failures_do_not_lock_out_a_valid_key(
    world: World, engine: object, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    app = make_app(AUTH_FAILURES_PER_MINUTE=2)
    victim = make_actor(engine, "auditor")  # type: ignore[arg-type]
    forged = {"Authorization": f"Bearer gov_{victim.principal.key_prefix}_guess"}
    # failures with the victim's public prefix from many addresses: the prefix is throttled...
    codes = [client_for(app, f"10.4.0.{i}").get("/v1/me", headers=forged).status_code for i in range(4)]
    assert codes[:2] == [401, 401] and codes[2:] == [429, 429], codes
    # ...but the real key still works, from a clean address
    assert client_for(app, "10.5.0.1").get("/v1/me", headers=victim.headers).status_code == 200


def test_missing_keys_are_401_without_counting_as_failed_sign_ins(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app(AUTH_FAILURES_PER_MINUTE=1), "10.6.0.1")
    for _ in range(3):
        r = c.get("/v1/me")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"


def test_denied_actions_are_audited_and_counted(
    world: World, engine: object, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app())
    eng = world.actor("ml_engineer")
    label = "POST /v1/deployments/{name}/freeze"
    before = _metric("govern_denied_actions_total", action=label, status="403")
    denied = audit_count(engine, action="denied", actor=eng.principal.actor)  # type: ignore[arg-type]
    r = c.post(f"/v1/deployments/{world.deployment}/freeze", json={}, headers=eng.headers)
    assert r.status_code == 403
    assert _metric("govern_denied_actions_total", action=label, status="403") == before + 1
    assert audit_count(engine, action="denied", actor=eng.principal.actor) == denied + 1  # type: ignore[arg-type]


def test_without_redis_the_api_stays_up_unthrottled(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    app = make_app(RATE_LIMIT_WRITES_PER_MINUTE=1)
    app.state.guard = Guard(app.state.settings, "redis://127.0.0.1:1/0")
    c = client_for(app)
    officer = world.actor("compliance_officer")
    before = _metric("govern_ratelimit_unavailable_total")
    for _ in range(3):
        assert c.post("/v1/versions/999999/approve", json={"comment": "x"}, headers=officer.headers).status_code == 404
    assert _metric("govern_ratelimit_unavailable_total") > before


def test_dashboard_sign_in_failures_are_throttled(
    world: World, engine: object, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    import re

    import dashboards.app

    app = make_app(AUTH_FAILURES_PER_MINUTE=2)
    dashboards.app.install(app)
    c = client_for(app, "10.7.0.1")

    def attempt(key: str) -> int:
        page = c.get("/ui/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, page.text[:500]
        r = c.post("/ui/login", data={"api_key": key, "csrf_token": token.group(1), "next": ""},
                   follow_redirects=False)
        return r.status_code

    before = _metric("govern_auth_failures_total", via="dashboard")
    assert [attempt("gov_aaaaaaaa_wrong"), attempt("gov_aaaaaaaa_wrong")] == [401, 401]
    assert attempt(world.actor("auditor").key) == 429  # the address waits, whatever it sends
    assert _metric("govern_auth_failures_total", via="dashboard") == before + 2
    assert audit_count(engine, action="auth.failed", actor="anonymous:10.7.0.1") == 1  # type: ignore[arg-type]
