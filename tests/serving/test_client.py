"""The replica's side of `GovernClient`: what the watcher relies on (one error type, short deadlines, parsing).

The replicas use the CLI's client (there is no second client of the API): these tests pin
what a replica needs from it, against an in-memory transport.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from governance.client import ActiveState, ApiError, GovernClient


def _client(handler: Any, *, timeout: float = 2.0) -> GovernClient:
    return GovernClient("http://api.test/", "key", timeout=timeout, transport=httpx.MockTransport(handler))


def test_active_parses_the_route_and_the_bare_base_model() -> None:
    answers = {
        "/v1/deployments/d/active": {"deployment": "d", "version_id": 7, "sha256": "ab" * 32, "generation": 3},
        "/v1/deployments/base/active": {"deployment": "base", "version_id": None, "sha256": None, "generation": 0},
    }
    with _client(lambda req: httpx.Response(200, json=answers[req.url.path])) as client:
        assert client.active("d") == ActiveState(7, "ab" * 32, 3)
        assert client.active("base") == ActiveState(None, None, 0)


def test_every_failure_is_an_api_error() -> None:
    def refused(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    def timed_out(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    envelope = {"error": {"code": "not_found", "message": "no deployment 'd'"}}
    cases: list[tuple[Any, int, str]] = [
        (refused, 0, "unreachable"),
        (timed_out, 0, "unreachable"),
        (lambda req: httpx.Response(404, json=envelope), 404, "not_found"),
        (lambda req: httpx.Response(502, text="bad gateway"), 502, "http_error"),
    ]
    for handler, status, code in cases:
        with _client(handler) as client, pytest.raises(ApiError) as err:
            client.active("d")
        assert (err.value.status, err.value.code) == (status, code)
    with pytest.raises(ApiError) as err:
        GovernClient("http://api.test", "").active("d")
    assert err.value.code == "no_api_key"


def test_with_timeout_keeps_the_api_and_key() -> None:
    seen: list[tuple[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append((req.headers["authorization"], req.extensions["timeout"]["read"]))
        return httpx.Response(200, json={"version_id": None, "sha256": None, "generation": 1})

    client = _client(handler)
    fence = client.with_timeout(0.25)
    assert (fence.base_url, fence.api_key, fence.timeout) == ("http://api.test", "key", 0.25)
    client.active("d")
    fence.active("d")
    assert seen == [("Bearer key", 2.0), ("Bearer key", 0.25)]
    client.close()
    fence.close()


def test_each_thread_has_its_own_connection_pool() -> None:
    client = _client(lambda req: httpx.Response(200, json=[{"id": 1, "sha256": "x"}]))
    pools: list[httpx.Client] = [client._http()]
    thread = threading.Thread(target=lambda: pools.append(client._http()))
    thread.start()
    thread.join()
    assert pools[0] is client._http() and pools[0] is not pools[1]
    assert client.versions(deployment="d", state="approved") == [{"id": 1, "sha256": "x"}]
    client.close()
    assert all(p.is_closed for p in pools)


def test_versions_of_an_unexpected_shape_are_none() -> None:
    with _client(lambda req: httpx.Response(200, json={"items": []})) as client:
        assert client.versions(deployment="d", state="approved", limit=5) == []
