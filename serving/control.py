"""The replica's view of the governance API: the active token, artifact bytes, alerts.

Three calls, with the service key, through httpx with short timeouts: a replica must
notice an unreachable API quickly and keep serving what it has. Each thread gets its
own connection (the model thread calls `get_active` for the per-batch fence, the watcher
threads call everything), so a slow call on one never queues behind another.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import httpx


class ControlPlaneError(RuntimeError):
    """The API could not be reached or answered with an error; the message says which."""


class DeploymentNotFound(ControlPlaneError):
    """The API does not know the deployment this replica was started for."""


@dataclass(frozen=True)
class ActiveState:
    """What the API says a deployment should serve: a version (or none = base model) and its generation."""

    version_id: int | None
    sha256: str | None
    generation: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActiveState:
        version = data.get("version_id")
        sha = data.get("sha256")
        return cls(
            version_id=int(version) if version is not None else None,
            sha256=str(sha) if sha else None,
            generation=int(data.get("generation") or 0),
        )


class ControlPlane:
    """A small client for the routes a replica needs (see DESIGN.md, "HTTP API")."""

    def __init__(self, api_url: str, api_key: str | None, *, timeout: float = 2.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._local = threading.local()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            client = httpx.Client(base_url=self.api_url, headers=headers, timeout=self.timeout)
            self._local.client = client
        return client

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._client().request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"{method} {self.api_url}{path} failed: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            detail = resp.text[:300]
            if resp.status_code == 404 and "/deployments/" in path:
                raise DeploymentNotFound(f"{method} {path}: 404 {detail}")
            raise ControlPlaneError(f"{method} {path}: HTTP {resp.status_code} {detail}")
        return resp

    def get_active(self, deployment: str) -> ActiveState:
        return ActiveState.from_json(self._request("GET", f"/v1/deployments/{deployment}/active").json())

    def get_artifact(self, sha256: str) -> bytes:
        return self._request("GET", f"/v1/versions/by-sha/{sha256}/artifact").content

    def list_versions(self, *, deployment: str, state: str, limit: int = 20) -> list[dict[str, Any]]:
        """Versions of a deployment in one state, newest first (for prefetching promotable tokens)."""
        params: dict[str, str | int] = {"deployment": deployment, "state": state, "limit": limit}
        data = self._request("GET", "/v1/versions", params=params).json()
        return list(data) if isinstance(data, list) else []

    def post_alert(
        self,
        *,
        deployment: str,
        kind: str,
        severity: str,
        message: str,
        incident_key: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        body = {
            "deployment": deployment,
            "kind": kind,
            "severity": severity,
            "message": message,
            "incident_key": incident_key,
            "details": details or {},
        }
        self._request("POST", "/v1/alerts", json=body)

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None
