"""The API's one ASGI middleware: body-size limits, NUL-free URLs, per-address budgets, headers, metrics.

It runs in front of every route of the process (the JSON API and the dashboard mounted
under it), before routing and authentication, so a request over a limit costs no
database work:

- body size: a declared ``Content-Length`` over the route's limit is answered 413 at
  once; a body sent without one (chunked) is counted while the route reads it and
  stopped at the limit with the same 413 (an ``HTTPException`` raised from ``receive``,
  which FastAPI passes through to the error envelope). Limits: token uploads
  ``max_artifact_bytes`` (+64 kB of multipart framing), output batches
  ``max_ingest_bytes``, anything else ``max_request_bytes``;
- a NUL character in the path or query is refused with 422 (PostgreSQL text cannot
  hold one, and no name of ours contains one);
- per-address write and ingest budgets and the failed sign-in throttle of the
  dashboard (`governance.api.guard`), 429 with ``Retry-After``;
- security headers on the API's own responses (the dashboard sets its own);
- request counts and latency per route template (Prometheus).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from governance import metrics
from governance.api.guard import WRITE_METHODS, Guard, is_ingest
from governance.errors import TooManyRequests
from governance.settings import Settings

log = logging.getLogger("governance.api")
ARTIFACT_OVERHEAD = 64_000  # multipart boundaries and form fields around a token upload
API_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
# the interactive docs load their own scripts; the dashboard sends its own policy
_NO_API_HEADERS = ("/docs", "/redoc", "/ui")
SIGN_IN_SUFFIX = "/login"


def body_limit(settings: Settings, method: str, path: str) -> tuple[int, str]:
    """The largest body accepted on ``path`` and the setting that sets it."""
    if method == "POST" and path == "/v1/versions":
        return settings.max_artifact_bytes + ARTIFACT_OVERHEAD, "GOVERN_MAX_ARTIFACT_BYTES"
    if is_ingest(method, path):
        return settings.max_ingest_bytes, "GOVERN_MAX_INGEST_BYTES"
    return settings.max_request_bytes, "GOVERN_MAX_REQUEST_BYTES"


def envelope(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)


def throttled_response(exc: TooManyRequests) -> JSONResponse:
    resp = envelope(429, exc.code, exc.message, exc.details)
    resp.headers["Retry-After"] = str(exc.retry_after)
    return resp


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class ApiMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings, guard: Callable[[], Guard], engine: Callable[[], Any]):
        self.app = app
        self.settings = settings
        self.guard = guard
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        started = time.perf_counter()
        status_box = [500]
        early = await self._refuse_early(scope, method, path)
        if early is not None:
            await early(scope, receive, self._sending(send, status_box, path))
            self._observe(scope, method, status_box[0], started)
            return

        limit, setting = body_limit(self.settings, method, path)
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"the request body is over the limit of {limit} bytes ({setting})")
            return message

        started_box = [False]
        sending = self._sending(send, status_box, path)

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                started_box[0] = True
            await sending(message)

        try:
            await self.app(scope, limited_receive, tracked)
        except Exception:
            # logged here, never echoed: no stack trace or SQL reaches a client
            log.exception("unhandled error on %s %s", method, path)
            if started_box[0]:
                raise
            status_box[0] = 500
            await envelope(500, "internal_error", "internal error; the server log has the details")(
                scope, receive, sending
            )
        finally:
            self._observe(scope, method, status_box[0], started)
        if method == "POST" and path.endswith(SIGN_IN_SUFFIX) and status_box[0] == 401:
            await self._sign_in_failed(scope)

    async def _refuse_early(self, scope: Scope, method: str, path: str) -> JSONResponse | None:
        query = scope.get("query_string", b"")
        if "\x00" in path or b"%00" in query or b"\x00" in query:
            return envelope(422, "invalid_input", "NUL characters are not allowed in the URL")
        limit, setting = body_limit(self.settings, method, path)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return envelope(400, "bad_request", "the Content-Length header is not a number")
            if int(declared) > limit:
                return envelope(
                    413,
                    "payload_too_large",
                    f"the request body is {declared} bytes; the limit is {limit} bytes ({setting})",
                    {"limit": limit, "setting": setting},
                )
        if method in WRITE_METHODS:
            address = client_address(scope)
            sign_in = method == "POST" and path.endswith(SIGN_IN_SUFFIX)
            guard = self.guard()

            def check() -> None:
                if sign_in:
                    guard.check_address_failures(address)
                guard.limit_address(method, path, address)

            try:
                await anyio.to_thread.run_sync(check)
            except TooManyRequests as exc:
                return throttled_response(exc)
        return None

    async def _sign_in_failed(self, scope: Scope) -> None:
        guard, engine, address = self.guard(), self.engine(), client_address(scope)

        def record() -> None:
            # past the limit, the next attempt from this address is refused up front
            with contextlib.suppress(TooManyRequests):
                guard.record_failure(engine, address=address, raw_key=None, via="dashboard")

        await anyio.to_thread.run_sync(record)

    @staticmethod
    def _sending(send: Send, status_box: list[int], path: str) -> Send:
        api = not path.startswith(_NO_API_HEADERS)

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = int(message["status"])
                if api:
                    present = {k.lower() for k, _ in message.get("headers", [])}
                    extra = [(k, v) for k, v in API_HEADERS if k not in present]
                    if extra:
                        message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return wrapped

    @staticmethod
    def _observe(scope: Scope, method: str, status: int, started: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.REQUESTS.labels(method=method, route=template, status=str(status)).inc()
        metrics.LATENCY.labels(method=method, route=template).observe(time.perf_counter() - started)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None
