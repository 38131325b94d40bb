"""The FastAPI application factory: routes, the error envelope, health, readiness and metrics.

`create_app(settings)` builds one app bound to the settings' database and Redis (the
embedded ones when the URLs are unset). Every error leaves as
``{"error": {"code", "message", "details"}}``: domain errors with their status and
message, request validation as 422 with the offending fields, anything unexpected as a
generic 500 (logged here, never echoed: no stack traces or SQL reach a client).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis as redis_lib
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DataError as SQLAlchemyDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

import dashboards.app
from governance.alerts.views import router as alerts_router
from governance.api.audit_routes import router as audit_router
from governance.api.guard import Guard
from governance.api.middleware import ApiMiddleware
from governance.api.openapi import install_openapi
from governance.auth.views import router as auth_router
from governance.db import engine_for
from governance.deployments.views import router as deployments_router
from governance.dossier.views import router as dossier_router
from governance.embedded import resolve_database_url, resolve_push_secret, resolve_redis_url
from governance.errors import DomainError, TooManyRequests
from governance.outbox.service import Outgoing, publish_committed, publish_pending
from governance.outputs.views import router as outputs_router
from governance.registry.views import router as registry_router
from governance.settings import Settings, get_settings

log = logging.getLogger("governance.api")

PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)


def _envelope(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Aligner governance API",
        version="1",
        description="Registry, gate, four-eyes review, deployments, alerts and the audit log.",
    )
    app.state.settings = settings
    app.state.engine = engine_for(resolve_database_url(settings))
    app.state.redis_url = None

    def redis_url() -> str:
        if app.state.redis_url is None:
            app.state.redis_url = resolve_redis_url(settings)
        return str(app.state.redis_url)

    def guard() -> Guard:
        if app.state.guard is None:
            app.state.guard = Guard(settings, redis_url())
        return app.state.guard  # type: ignore[no-any-return]

    app.state.redis_url_fn = redis_url
    app.state.publish_outbox = _outbox_publisher(app, redis_url, lambda: resolve_push_secret(settings))
    app.state.guard = None
    app.state.guard_fn = guard
    _install_error_handlers(app)
    app.add_middleware(ApiMiddleware, settings=settings, guard=guard, engine=lambda: app.state.engine)
    _install_probes(app, redis_url)
    for router in (auth_router, registry_router, deployments_router, outputs_router, alerts_router, audit_router,
                   dossier_router):
        app.include_router(router)
    install_openapi(app)
    # The compliance officers' web UI, served by this process (the app factory is a
    # composition root: the one place in governance allowed to know the dashboards).
    dashboards.app.install(app)
    return app


def _outbox_publisher(
    app: FastAPI, redis_url: Callable[[], str], push_secret: Callable[[], str]
) -> Callable[..., None]:
    def publish_outbox(outgoing: Outgoing | None = None) -> None:
        """After a commit: send what it enqueued from memory (`outgoing`), or sweep the table."""
        try:
            if outgoing is None:
                publish_pending(app.state.engine, redis_url(), push_secret=push_secret())
            else:
                publish_committed(app.state.engine, redis_url(), outgoing, push_secret=push_secret())
        except Exception:  # the periodic sweep sends what is left
            log.exception("outbox publish after commit failed; the sweep will retry")

    return publish_outbox


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in the envelope; see the module docstring."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        resp = _envelope(exc.status, exc.code, exc.message, exc.details)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, TooManyRequests):
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp

    @app.exception_handler(SQLAlchemyDataError)
    async def _data_error(request: Request, exc: SQLAlchemyDataError) -> JSONResponse:
        # a value PostgreSQL cannot hold (out of range, bad text): the client's input, not our bug;
        # the database's own words stay in the log (they can quote SQL)
        log.warning("database refused a value on %s %s: %s", request.method, request.url.path, exc.orig)
        return _envelope(422, "invalid_input", "a value in the request is out of range or not storable")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        fields = ", ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        return _envelope(422, "invalid_input", f"the request is invalid ({fields})", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(exc.status_code, "http_error")
        return _envelope(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _envelope(500, "internal_error", "internal error; the server log has the details")


def _install_probes(app: FastAPI, redis_url: Callable[[], str]) -> None:
    """/healthz (the process answers), /readyz (database and Redis reachable), /metrics."""

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            with app.state.engine.connect() as conn:
                conn.execute(text("select 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable ({type(exc).__name__})"
        try:
            client = redis_lib.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
            client.ping()
            client.close()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unreachable ({type(exc).__name__})"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
