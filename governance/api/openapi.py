"""The published OpenAPI document: every error response declared with the one error envelope.

FastAPI documents only a 422 of its own shape (``HTTPValidationError``), which this API
never sends. `install_openapi` replaces it and declares, on every operation, the
envelope for 401/403/404/409/413/422/429 (the ones the route can answer: public
operations have no 401/403), the ``Retry-After`` header of a 429, and the media types
of the binary and streaming routes, so a client (or a fuzzer) can check every answer
against the document. Links between operations let a stateful fuzzer chain a create
with the reads and actions on what it created.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(BaseModel):
    """Every error: a stable code, a human message, optional details (fields, limits)."""

    error: ErrorBody


ERROR_STATUSES = {
    "400": "Malformed request (e.g. a body that is not JSON where JSON is expected)",
    "401": "Missing, unknown, revoked or expired API key",
    "403": "The key's role may not do this (audited as `denied`)",
    "404": "No such resource",
    "405": "Method not allowed",
    "409": "Conflict with the current state (audited as `denied` for governed actions)",
    "413": "Body or batch over its limit (the message names the limit and its setting)",
    "422": "Invalid input (the details name each field)",
    "429": "Rate limit or failed-authentication throttle; retry after `Retry-After` seconds",
    "503": "A dependency is not ready (e.g. no audit signing key for an export)",
}
_BINARY = {
    ("get", "/v1/versions/{version_id}/artifact"): {"application/octet-stream": {"schema": {}}},
    ("get", "/v1/versions/by-sha/{sha256}/artifact"): {"application/octet-stream": {"schema": {}}},
    ("get", "/v1/audit/export"): {
        "application/x-ndjson": {"schema": {"type": "string"}},
        "text/csv": {"schema": {"type": "string"}},
    },
    ("get", "/v1/versions/{version_id}/dossier"): {
        "application/pdf": {"schema": {}}, "text/html": {"schema": {"type": "string"}},
    },
    ("get", "/v1/deployments/{name}/dossier"): {
        "application/pdf": {"schema": {}}, "text/html": {"schema": {"type": "string"}},
    },
}
_LINKS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("post", "/v1/deployments", "201"): {
        "GetDeployment": {
            "operationId": "show_v1_deployments__name__get",
            "parameters": {"name": "$response.body#/name"},
        },
        "GetActive": {
            "operationId": "active_v1_deployments__name__active_get",
            "parameters": {"name": "$response.body#/name"},
        },
        "Freeze": {
            "operationId": "freeze_v1_deployments__name__freeze_post",
            "parameters": {"name": "$response.body#/name"},
        },
        "Rollback": {
            "operationId": "rollback_v1_deployments__name__rollback_post",
            "parameters": {"name": "$response.body#/name"},
        },
    },
    ("post", "/v1/users", "201"): {
        "CreateKey": {
            "operationId": "create_key_v1_users__name__keys_post",
            "parameters": {"name": "$response.body#/user"},
        },
        "RevokeKey": {
            "operationId": "revoke_key_v1_keys__prefix__revoke_post",
            "parameters": {"prefix": "$response.body#/key_prefix"},
        },
    },
    ("post", "/v1/alerts", "201"): {
        "Ack": {"operationId": "ack_v1_alerts__alert_id__ack_post", "parameters": {"alert_id": "$response.body#/id"}},
    },
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ErrorBody.model_json_schema()
    components["ErrorEnvelope"] = {
        "title": "ErrorEnvelope",
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"$ref": "#/components/schemas/ErrorBody"}},
        "description": ErrorEnvelope.__doc__,
    }
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    security_schemes = schema["components"].setdefault("securitySchemes", {})
    security_schemes["ApiKey"] = {"type": "http", "scheme": "bearer", "description": "gov_<prefix>_<secret>"}
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = op.setdefault("responses", {})
            for status, description in ERROR_STATUSES.items():
                entry: dict[str, Any] = {"description": description, "content": ref}
                if status == "429":
                    entry["headers"] = {
                        "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
                    }
                responses[status] = entry
            op["security"] = [{"ApiKey": []}]
            binary = _BINARY.get((method, path))
            if binary is not None:
                ok = next(s for s in ("200", "201") if s in responses)
                responses[ok]["content"] = binary
            for (lmethod, lpath, status), links in _LINKS.items():
                if lmethod == method and lpath == path and status in responses:
                    responses[status]["links"] = links
    return schema


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
