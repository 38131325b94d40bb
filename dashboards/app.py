"""The dashboard as a sub-application of the API: factory, error pages, static files, sign-in.

`create_ui_app(parent)` builds a small FastAPI app (no OpenAPI: these are pages, not an
API) that `dashboards.app.install` mounts under ``/ui`` of the API app, wrapped in
`SecurityHeaders` so that every response, error pages included, carries the CSP and
friends. Errors become HTML pages with the domain error's message and never a stack
trace; an unexpected error is logged with its traceback and shown as a plain 500 page.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlparse

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from dashboards import deps
from dashboards.deps import CsrfDep, CsrfRejected, LoginRequired, SessionDep, ViewerDep, render
from dashboards.pages import alerts, audit_log, deployments, dossiers, drift, releases, rollouts, users
from dashboards.security import (
    LOGIN_COOKIE,
    LOGIN_TTL_SECONDS,
    SESSION_COOKIE,
    SESSION_TTL_SECONDS,
    SecurityHeaders,
    UiSession,
    login_token_from_cookie,
    new_login_token,
    tokens_match,
)
from governance.audit import service as audit
from governance.auth.service import authenticate
from governance.errors import DomainError
from governance.settings import get_settings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_TITLES = {400: "Bad request", 401: "Sign-in required", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
           409: "Conflict", 413: "Too large", 422: "Invalid input", 429: "Too many requests", 500: "Server error",
           503: "Unavailable"}


def plotly_js_path() -> Path | None:
    """plotly.min.js as shipped inside the installed Python ``plotly`` package (not committed here)."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def _static_file(name: str) -> Path | None:
    if name == "plotly.min.js":
        return plotly_js_path()
    if name in {"app.css", "ui.js"}:
        return STATIC_DIR / name
    return None


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https" or get_settings().environment == "production"


def _safe_next(request: Request, target: str | None) -> str:
    base = str(request.scope.get("root_path", "")).rstrip("/")
    default = f"{base}/releases"
    if not target:
        return default
    parsed = urlparse(target)
    # only a path inside the dashboard: no scheme, no host, no protocol-relative //evil
    if parsed.scheme or parsed.netloc or not target.startswith(f"{base}/") or target.startswith("//"):
        return default
    return target


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    viewer = None
    try:
        principal = getattr(request.state, "principal", None)
        ui = deps.read_ui_session(request)
        if principal is not None and ui is not None:
            viewer = deps.Viewer(principal, ui)
    except Exception:  # an error page must render whatever went wrong before
        viewer = None
    return render(request, "error.html", viewer, http_status=status, status_code=status,
                  title=_TITLES.get(status, "Error"), message=message)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        if request.method in ("GET", "HEAD"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{base}/login?next={quote(target)}", status_code=303)
        return error_page(request, 401, "Your session has ended or you are not signed in. Sign in and try again.")

    @app.exception_handler(CsrfRejected)
    async def _csrf(request: Request, exc: CsrfRejected) -> Response:
        return error_page(
            request, 403,
            "This form was refused: its security token (CSRF) is missing or does not match your session. "
            "Reload the page and submit it again.",
        )

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        return error_page(request, exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: "There is no such page.", 405: "This page does not accept that method."}.get(
            exc.status_code, str(exc.detail)
        )
        return error_page(request, exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ())[1:]) or "input"
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        return error_page(request, 422, "Invalid input — " + "; ".join(parts))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.exception("dashboard page %s %s failed", request.method, request.url.path)
        return error_page(request, 500, "Something went wrong on our side. It has been logged; try again later.")


def create_ui_app(parent: Any = None) -> FastAPI:
    """The dashboard app; ``parent`` is the API app whose ``state.engine`` it uses."""
    app = FastAPI(title="govern dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.parent = parent
    _install_handlers(app)

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '').rstrip('/')}/releases", status_code=303)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        path = _static_file(name)
        if path is None or not path.is_file():
            raise StarletteHTTPException(404)
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, session: SessionDep, next: str | None = None) -> Response:
        ui = deps.read_ui_session(request)
        if ui is not None and deps.principal_for(session, ui) is not None:
            return RedirectResponse(_safe_next(request, next), status_code=303)
        return _login_page(request, next=next)

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        session: SessionDep,
        api_key: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "",
    ) -> Response:
        secret = deps.session_secret()
        if not tokens_match(login_token_from_cookie(secret, request.cookies.get(LOGIN_COOKIE)), csrf_token):
            raise CsrfRejected()
        principal = authenticate(session, raw_key=api_key.strip()) if api_key.strip() else None
        if principal is None:
            return _login_page(request, next=next, status=401,
                               error="That API key is not valid (unknown, revoked or expired).")
        if principal.role not in deps.UI_ROLES or principal.user_id is None:
            return _login_page(request, next=next, status=403,
                               error=f"Keys of role {principal.role} are for automation and cannot sign in here.")
        ui = UiSession.new(user_id=principal.user_id, key_prefix=principal.key_prefix or "")
        audit.record(session, principal, action="ui.sign_in", subject_type="user", subject_id=principal.name,
                     payload={"via": "dashboard"})
        response = RedirectResponse(_safe_next(request, next), status_code=303)
        _set_cookie(request, response, SESSION_COOKIE, ui.to_cookie(secret), SESSION_TTL_SECONDS)
        response.delete_cookie(LOGIN_COOKIE, path=_cookie_path(request))
        return response

    @app.post("/logout", include_in_schema=False, dependencies=[CsrfDep])
    def logout(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
        audit.record(session, viewer.principal, action="ui.sign_out", subject_type="user",
                     subject_id=viewer.principal.name, payload={"via": "dashboard"})
        base = str(request.scope.get("root_path", "")).rstrip("/")
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request), secure=secure_cookies(request),
                               httponly=True, samesite="strict")
        return response

    for module in (releases, deployments, rollouts, drift, alerts, audit_log, users, dossiers):
        app.include_router(module.router)
    return app


def _cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/") or "/"


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=_cookie_path(request), httponly=True, samesite="strict",
        secure=secure_cookies(request),
    )


def _login_page(request: Request, *, next: str | None, status: int = 200, error: str | None = None) -> HTMLResponse:
    token, cookie = new_login_token(deps.session_secret())
    response = render(request, "login.html", None, http_status=status, csrf=token, next=next or "", error=error)
    _set_cookie(request, response, LOGIN_COOKIE, cookie, LOGIN_TTL_SECONDS)
    return response


UI_PREFIX = "/ui"


def install(app: Any, *, prefix: str = UI_PREFIX) -> None:
    """Mount the dashboard on a FastAPI/Starlette app at ``prefix`` (default ``/ui``).

    The dashboard reads ``app.state.engine`` (and calls ``app.state.publish_outbox(outgoing)`` after
    a commit that queued messages, when the app has it) at request time, so it can be
    installed before the app's lifespan has created them.
    """
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"the dashboard prefix must start with '/' and not end with one (got {prefix!r})")
    app.mount(prefix, SecurityHeaders(create_ui_app(parent=app)), name="dashboard")
