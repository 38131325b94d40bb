"""The one HTTP client of the governance API, for the CLI, the serving replicas and workers.

Base URL and API key come from the settings (``GOVERN_API_URL``, ``GOVERN_API_KEY``)
unless given. Every failure raises `ApiError`: a non-2xx answer carries the server's
status, code and message (the error envelope), so callers can show the server's own
words; a server that cannot be reached (refused, timed out, garbled) raises it with
status 0 and a message saying where it looked. A replica therefore catches one type and
treats every `ApiError` as "the API is unavailable for now, keep serving what you have".
Each thread gets its own connection pool, so a replica's slow call on one thread (the
watcher's) never queues behind another's (the model thread's per-batch fence), and
`with_timeout` gives the fence a client with a shorter deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from governance.settings import Settings


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status} {self.code})" if self.status else self.message


@dataclass(frozen=True)
class RolloutPlan:
    """A running rollout as replicas apply it: the candidate beside the active token.

    ``mode`` "shadow": a request whose ``sample`` draw falls below ``sample`` is decoded a
    second time with the candidate in the same batch; only the active answer is returned.
    ``mode`` "canary": a caller whose stable key hashes below ``weight`` gets the candidate's
    answer, and the active answer is decoded beside it (unreturned) for the paired analysis.
    """

    rollout_id: int
    mode: str  # "shadow" | "canary"
    version_id: int
    sha256: str
    sample: float  # shadow: share of requests decoded twice (0..1)
    weight: float  # canary: share of callers served by the candidate (0..1); 0 in shadow mode
    step: int = 0  # index into the canary steps

    @classmethod
    def from_json(cls, data: Any) -> RolloutPlan | None:
        if not isinstance(data, dict) or data.get("rollout_id") is None:
            return None
        return cls(
            rollout_id=int(data["rollout_id"]),
            mode=str(data.get("mode") or "shadow"),
            version_id=int(data["version_id"]),
            sha256=str(data["sha256"]),
            sample=float(data.get("sample") or 0.0),
            weight=float(data.get("weight") or 0.0),
            step=int(data.get("step") or 0),
        )

    def as_json(self) -> dict[str, Any]:
        return {"rollout_id": self.rollout_id, "mode": self.mode, "version_id": self.version_id,
                "sha256": self.sha256, "sample": self.sample, "weight": self.weight, "step": self.step}


@dataclass(frozen=True)
class ActiveState:
    """What the API says a deployment should serve: a version (or none = base model), its
    generation, and the running rollout's candidate if there is one.

    The same fields travel in ``GET /v1/deployments/{name}/active`` and in the Redis
    message published after a promotion, a rollback or a rollout change, so both are
    parsed here.
    """

    version_id: int | None
    sha256: str | None
    generation: int
    rollout: RolloutPlan | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActiveState:
        version = data.get("version_id")
        sha = data.get("sha256")
        return cls(
            version_id=int(version) if version is not None else None,
            sha256=str(sha) if sha else None,
            generation=int(data.get("generation") or 0),
            rollout=RolloutPlan.from_json(data.get("rollout")),
        )


class GovernClient:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if base_url is None or api_key is None:
            settings = Settings()
            base_url = base_url or settings.api_url
            if api_key is None and settings.api_key is not None:
                api_key = settings.api_key.get_secret_value()
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._transport = transport
        self._local = threading.local()
        self._pools: list[httpx.Client] = []
        self._pools_lock = threading.Lock()

    def with_timeout(self, timeout: float) -> GovernClient:
        """The same API and key with another deadline per call (the replica's fence uses a short one)."""
        return GovernClient(self.base_url, self.api_key or "", timeout=timeout, transport=self._transport)

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = self._pools, []
        for pool in pools:
            pool.close()

    def __enter__(self) -> GovernClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _http(self) -> httpx.Client:
        pool: httpx.Client | None = getattr(self._local, "pool", None)
        if pool is None or pool.is_closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            pool = httpx.Client(
                base_url=self.base_url, headers=headers, timeout=self.timeout, transport=self._transport
            )
            self._local.pool = pool
            with self._pools_lock:
                self._pools.append(pool)
        return pool

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if not self.api_key:
            raise ApiError(
                0, "no_api_key", "no API key: set GOVERN_API_KEY (an admin creates one: govern users create)"
            )
        try:
            resp = self._http().request(method, path, **kwargs)
        except httpx.RequestError as exc:
            raise ApiError(
                0,
                "unreachable",
                f"cannot reach the governance API at {self.base_url} ({method} {path}: {type(exc).__name__}); "
                "start it with `govern api` or set GOVERN_API_URL",
            ) from None
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                raise ApiError(resp.status_code, err.get("code", "error"), err.get("message", ""), err.get("details"))
            except (ValueError, KeyError, TypeError):
                raise ApiError(resp.status_code, "http_error", resp.text[:300] or resp.reason_phrase) from None
        return resp

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._send(method, path, **kwargs)
        return resp.json() if resp.content else None

    # ------------------------------------------------------------------ who am I

    # ------------------------------------------------------------------ registry

    def submit(
        self, data: bytes, *, adapter: str, deployment: str | None = None, parent_id: int | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"adapter": adapter}
        if deployment:
            params["deployment"] = deployment
        if parent_id is not None:
            params["parent_id"] = parent_id
        return dict(
            self.request(
                "POST",
                "/v1/versions",
                params=params,
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        )

    def version(self, version_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/versions/{version_id}"))

    def artifact(self, version_id: int) -> bytes:
        return self._send("GET", f"/v1/versions/{version_id}/artifact").content

    def artifact_by_sha(self, sha256: str) -> bytes:
        return self._send("GET", f"/v1/versions/by-sha/{sha256}/artifact").content

    def versions(self, *, deployment: str, state: str, limit: int = 20) -> list[dict[str, Any]]:
        """Versions of a deployment in one state, newest first (a replica prefetches promotable tokens)."""
        params: dict[str, str | int] = {"deployment": deployment, "state": state, "limit": limit}
        data = self.request("GET", "/v1/versions", params=params)
        return list(data) if isinstance(data, list) else []

    def approve(self, version_id: int, comment: str, acknowledge: Sequence[str] = ()) -> dict[str, Any]:
        body: dict[str, Any] = {"comment": comment}
        if acknowledge:
            body["acknowledged_waivers"] = list(acknowledge)
        return dict(self.request("POST", f"/v1/versions/{version_id}/approve", json=body))

    def reject(self, version_id: int, comment: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/versions/{version_id}/reject", json={"comment": comment}))

    def gate(self, version_id: int) -> dict[str, Any]:
        """The version's gate runs (newest first, each with its ``outcome`` and ``waivers``) and reviews."""
        return dict(self.request("GET", f"/v1/versions/{version_id}/gate"))

    def pending_waivers(self, version_id: int) -> list[str]:
        """The waiver names of the version's newest passed gate run (what an approval must acknowledge)."""
        runs = [r for r in self.gate(version_id)["runs"] if r["status"] == "passed"]
        newest = max(runs, key=lambda r: r["id"], default=None)
        return [str(w["name"]) for w in newest["waivers"]] if newest else []

    def regate(self, version_id: int, deployment: str) -> dict[str, Any]:
        """Queue a gate run of an existing version under the deployment's current gate policy."""
        return dict(self.request("POST", f"/v1/versions/{version_id}/gate-runs", json={"deployment": deployment}))

    # ------------------------------------------------------------------ deployments

    def create_deployment(self, name: str, *, base_model: str, policy: str) -> dict[str, Any]:
        body = {"name": name, "base_model": base_model, "policy": policy}
        return dict(self.request("POST", "/v1/deployments", json=body))

    def deployment(self, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/deployments/{name}"))

    def policy_history(self, name: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/v1/deployments/{name}/policies"))

    def propose_policy(self, name: str, *, policy: str, reason: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/deployments/{name}/policies", json={"policy": policy, "reason": reason}))

    def decide_policy(self, name: str, seq: int, *, approve: bool, comment: str) -> dict[str, Any]:
        verb = "approve" if approve else "reject"
        return dict(self.request("POST", f"/v1/deployments/{name}/policies/{seq}/{verb}", json={"comment": comment}))

    def promotions(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/v1/deployments/{name}/promotions", params={"limit": limit}))

    def active(self, deployment: str) -> ActiveState:
        """What the deployment serves now (version_id None: the bare base model) and its generation."""
        return ActiveState.from_json(self.request("GET", f"/v1/deployments/{deployment}/active"))

    def promote(self, deployment: str, version_id: int) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/deployments/{deployment}/promote", json={"version_id": version_id}))

    def rollback(self, deployment: str, *, reason: str, to_version_id: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason}
        if to_version_id is not None:
            body["to_version_id"] = to_version_id
        return dict(self.request("POST", f"/v1/deployments/{deployment}/rollback", json=body))

    def freeze(self, deployment: str, *, until: datetime | None = None, reason: str | None = None) -> dict[str, Any]:
        body = {"until": until.isoformat() if until else None, "reason": reason}
        return dict(self.request("POST", f"/v1/deployments/{deployment}/freeze", json=body))

    def unfreeze(self, deployment: str, *, reason: str | None = None) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/deployments/{deployment}/unfreeze", json={"reason": reason}))

    # ------------------------------------------------------------------ rollouts

    def start_rollout(self, deployment: str, version_id: int, *, mode: str, sample: float | None = None,
                      steps: Sequence[int] | None = None, min_samples: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"version_id": version_id, "mode": mode}
        if sample is not None:
            body["sample"] = sample
        if steps is not None:
            body["steps"] = list(steps)
        if min_samples is not None:
            body["min_samples"] = min_samples
        return dict(self.request("POST", f"/v1/deployments/{deployment}/rollouts", json=body))

    def rollouts(self, deployment: str, *, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/v1/deployments/{deployment}/rollouts", params={"limit": limit}))

    def current_rollout(self, deployment: str) -> dict[str, Any] | None:
        """The running rollout, or None when none runs."""
        try:
            return dict(self.request("GET", f"/v1/deployments/{deployment}/rollouts/current"))
        except ApiError as exc:
            if exc.status == 404 and "runs no rollout" in exc.message:
                return None
            raise

    def advance_rollout(self, deployment: str, *, from_step: int | None = None,
                        reason: str | None = None) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/deployments/{deployment}/rollouts/current/advance",
                                 json={"from_step": from_step, "reason": reason}))

    def abort_rollout(self, deployment: str, *, reason: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/deployments/{deployment}/rollouts/current/abort",
                                 json={"reason": reason}))

    # ------------------------------------------------------------------ outputs and alerts (service keys)

    def ingest_outputs(self, deployment: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/deployments/{deployment}/outputs", json={"outputs": outputs}))

    def raise_alert(
        self,
        *,
        kind: str,
        severity: str,
        incident_key: str,
        message: str,
        details: dict[str, Any] | None = None,
        deployment: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "kind": kind,
            "severity": severity,
            "incident_key": incident_key,
            "message": message,
            "details": details or {},
            "deployment": deployment,
        }
        return dict(self.request("POST", "/v1/alerts", json=body))

    def ack_alert(self, alert_id: int, comment: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/alerts/{alert_id}/ack", json={"comment": comment}))

    # ------------------------------------------------------------------ users and keys (admins)

    def create_user(self, name: str, role: str) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/users", json={"name": name, "role": role}))

    def create_key(
        self, user: str, *, expires_at: datetime | None = None, deployments: Sequence[str] = ()
    ) -> dict[str, Any]:
        body = {"expires_at": expires_at.isoformat() if expires_at else None, "deployments": list(deployments)}
        return dict(self.request("POST", f"/v1/users/{user}/keys", json=body))

    def revoke_key(self, prefix: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/keys/{prefix}/revoke"))
