"""Every documented limit (docs/limits.md) gives its documented answer: 413 or 422, the limit named."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.governance.conftest import World


def _error(r: object) -> dict[str, object]:
    body = r.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def test_request_body_over_the_limit_is_413_by_declared_length(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app(MAX_REQUEST_BYTES=1_000))
    officer = world.actor("compliance_officer")
    r = c.post("/v1/versions/1/approve", json={"comment": "x" * 2_000}, headers=officer.headers)
    assert r.status_code == 413, r.text
    err = _error(r)
    assert err["code"] == "payload_too_large"
    assert "1000" in str(err["message"]) and "GOVERN_MAX_REQUEST_BYTES" in str(err["message"])


def test_request_body_over_the_limit_is_413_when_streamed_without_a_length(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app(MAX_REQUEST_BYTES=1_000))
    officer = world.actor("compliance_officer")

    def chunks() -> Iterator[bytes]:
        yield b'{"comment": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    r = c.post(
        "/v1/versions/1/approve",
        content=chunks(),
        headers={**officer.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert "GOVERN_MAX_REQUEST_BYTES" in str(_error(r)["message"])


def test_token_upload_has_its_own_limit(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app(MAX_ARTIFACT_BYTES=2_000, MAX_REQUEST_BYTES=1_000))
    eng = world.actor("ml_engineer")
    headers = {**eng.headers, "Content-Type": "application/octet-stream"}
    # over the artifact limit (but under its framing allowance): refused by the registry
    r = c.post(f"/v1/versions?adapter=a-{world.deployment}", content=b"\1" * 5_000, headers=headers)
    assert r.status_code == 413, r.text
    assert "GOVERN_MAX_ARTIFACT_BYTES" in str(_error(r)["message"])
    # far over: refused by the middleware before anything is read
    r = c.post(f"/v1/versions?adapter=a-{world.deployment}", content=b"\1" * 80_000, headers=headers)
    assert r.status_code == 413, r.text
    assert "GOVERN_MAX_ARTIFACT_BYTES" in str(_error(r)["message"])
    # a real token (~1.5 kB) is over the ordinary request limit yet accepted: uploads have their own size
    r = c.post(f"/v1/versions?adapter=a-{world.deployment}", content=world.artifact(), headers=headers)
    assert r.status_code == 201, r.text


def test_output_batches_have_their_own_size_and_length(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app(MAX_INGEST_BATCH=3, MAX_INGEST_BYTES=5_000, MAX_REQUEST_BYTES=1_000))
    svc = world.actor("service")
    url = f"/v1/deployments/{world.deployment}/outputs"
    rows = [{"request_id": f"r{i}", "output": "ok"} for i in range(4)]
    r = c.post(url, json={"outputs": rows}, headers=svc.headers)
    assert r.status_code == 413, r.text
    assert "GOVERN_MAX_INGEST_BATCH" in str(_error(r)["message"]) and "3" in str(_error(r)["message"])
    # 3 rows of 400 bytes: over the ordinary limit, under the ingest one
    r = c.post(url, json={"outputs": [{"request_id": f"s{i}", "output": "z" * 400} for i in range(3)]},
               headers=svc.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3, "duplicates": 0}
    r = c.post(url, json={"outputs": [{"request_id": "big", "output": "z" * 6_000}]}, headers=svc.headers)
    assert r.status_code == 413, r.text
    assert "GOVERN_MAX_INGEST_BYTES" in str(_error(r)["message"])


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/versions/1/approve", {"comment": "c" * 10_001}, "comment"),
        ("/v1/deployments/{dep}/rollback", {"reason": "r" * 2_001}, "reason"),
        ("/v1/deployments/{dep}/freeze", {"reason": "r" * 2_001}, "reason"),
        ("/v1/users", {"name": "n" * 101, "role": "auditor"}, "name"),
        ("/v1/deployments/{dep}/outputs", {"outputs": [{"request_id": "i" * 101}]}, "outputs.0.request_id"),
        ("/v1/deployments/{dep}/outputs", {"outputs": [{"request_id": "a", "output": "o" * 200_001}]},
         "outputs.0.output"),
    ],
)
def test_string_lengths_are_422_naming_the_field_and_limit(
    path: str, body: dict[str, object], field: str, world: World,
    make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient],
) -> None:
    c = client_for(make_app(MAX_REQUEST_BYTES=1_000_000))
    who = {"approve": "compliance_officer", "rollback": "compliance_officer", "freeze": "compliance_officer",
           "users": "admin", "outputs": "service"}[path.rstrip("/").rsplit("/", 1)[-1]]
    r = c.post(path.format(dep=world.deployment), json=body, headers=world.actor(who).headers)
    assert r.status_code == 422, r.text
    err = _error(r)
    assert err["code"] == "invalid_input"
    assert field in str(err["message"]) and "at most" in str(err["message"]), err


@pytest.mark.parametrize(
    ("query", "name", "limit"),
    [("limit=501", "limit", "500"), ("offset=100001", "offset", "100000"), ("limit=0", "limit", "1")],
)
def test_pagination_caps(
    query: str, name: str, limit: str, world: World,
    make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient],
) -> None:
    c = client_for(make_app())
    r = c.get(f"/v1/versions?{query}", headers=world.actor("auditor").headers)
    assert r.status_code == 422, r.text
    assert name in str(_error(r)["message"]) and limit in str(_error(r)["message"])
    r = c.get("/v1/audit?limit=501", headers=world.actor("auditor").headers)
    assert r.status_code == 422 and "500" in str(_error(r)["message"])
    r = c.get("/v1/versions?limit=500&offset=100000", headers=world.actor("auditor").headers)
    assert r.status_code == 200, r.text


def test_nul_characters_are_refused_as_input(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app())
    officer = world.actor("compliance_officer")
    r = c.post(f"/v1/deployments/{world.deployment}/freeze", json={"reason": "a\x00b"}, headers=officer.headers)
    assert r.status_code == 422, r.text
    assert "NUL" in str(_error(r)["message"])
    r = c.get("/v1/deployments/a%00b", headers=officer.headers)
    assert r.status_code == 422, r.text
    r = c.get("/v1/versions?adapter=a%00b", headers=officer.headers)
    assert r.status_code == 422, r.text
    svc = world.actor("service")
    r = c.post(f"/v1/deployments/{world.deployment}/outputs",
               json={"outputs": [{"request_id": "n1", "messages": [{"role": "user", "content": "\x00"}]}]},
               headers=svc.headers)
    assert r.status_code == 422, r.text
    assert "outputs[0].messages[0].content" in str(_error(r)["message"])


def test_ids_out_of_range_are_422_not_a_database_error(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app())
    r = c.get(f"/v1/versions/{2**70}", headers=world.actor("auditor").headers)
    assert r.status_code == 422, r.text
    assert "bigint" not in r.text and "psycopg" not in r.text


def test_every_error_response_is_documented_with_the_envelope(make_app: Callable[..., FastAPI]) -> None:
    doc = make_app().openapi()
    assert "HTTPValidationError" not in str(doc)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status in ("401", "403", "404", "409", "413", "422", "429"):
                content = op["responses"][status]["content"]["application/json"]["schema"]
                assert content == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path, status)
            assert "Retry-After" in op["responses"]["429"]["headers"]


def test_api_responses_carry_security_headers(
    world: World, make_app: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    c = client_for(make_app())
    for r in (c.get("/v1/me", headers=world.actor("auditor").headers), c.get("/v1/me")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
