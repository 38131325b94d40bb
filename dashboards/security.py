"""Signed session cookies, CSRF tokens and the security headers of every dashboard response.

A signed-in browser holds one cookie: ``<base64url(json)>.<base64url(hmac-sha256)>``,
signed with ``Settings.session_secret``. It names the user and the API key the person
signed in with (by its public prefix, never the key itself), an absolute expiry and
the per-session CSRF token. Nothing secret is in it; the signature makes it
unforgeable, and every request re-checks the key against the database, so revoking a
key or disabling a user ends their browser sessions at once. Before sign-in a second,
short-lived signed cookie carries the CSRF token of the sign-in form itself.

The HMAC is written here (stdlib ``hmac``) because ``itsdangerous`` is not installed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

SESSION_COOKIE = "gov_ui_session"
LOGIN_COOKIE = "gov_ui_login"
SESSION_TTL_SECONDS = 8 * 3600
LOGIN_TTL_SECONDS = 15 * 60
CSRF_FIELD = "csrf_token"

# No inline script anywhere: the dashboard's JavaScript is served from /ui/static. Plotly
# injects <style> elements at run time, hence 'unsafe-inline' for styles only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# A stored Evidently report is a self-contained HTML page with its own inline scripts. It is
# served under a sandbox without allow-same-origin: it runs in an opaque origin, so it can
# neither read the dashboard's cookies nor call the API as the signed-in user.
REPORT_CSP = (
    "sandbox allow-scripts allow-popups; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data:; font-src data:; connect-src 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class BadSignature(ValueError):
    """A cookie that was not signed by us, was altered, or has expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, purpose: str, body: str) -> str:
    # the purpose is part of the MAC: a login cookie can never pass as a session cookie
    key = hashlib.sha256(f"govern-ui:{purpose}:{secret}".encode()).digest()
    return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())


def sign(secret: str, purpose: str, data: dict[str, Any]) -> str:
    body = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return f"{body}.{_mac(secret, purpose, body)}"


def unsign(secret: str, purpose: str, token: str, *, now: float | None = None) -> dict[str, Any]:
    """The signed data, or BadSignature; an ``exp`` field in the past counts as bad."""
    body, sep, mac = (token or "").partition(".")
    if not sep or not hmac.compare_digest(mac, _mac(secret, purpose, body)):
        raise BadSignature("signature does not match")
    try:
        data = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        raise BadSignature("malformed cookie") from None
    if not isinstance(data, dict):
        raise BadSignature("malformed cookie")
    exp = data.get("exp")
    if not isinstance(exp, (int, float)) or exp <= (now if now is not None else time.time()):
        raise BadSignature("expired")
    return data


@dataclass(frozen=True)
class UiSession:
    """What the session cookie says: who, with which key, until when, and the CSRF token."""

    user_id: int
    key_prefix: str
    csrf: str
    expires_at: float

    def to_cookie(self, secret: str) -> str:
        return sign(
            secret, "session", {"u": self.user_id, "k": self.key_prefix, "c": self.csrf, "exp": int(self.expires_at)}
        )

    @classmethod
    def new(cls, *, user_id: int, key_prefix: str, ttl: int = SESSION_TTL_SECONDS) -> UiSession:
        return cls(user_id, key_prefix, secrets.token_urlsafe(32), time.time() + ttl)

    @classmethod
    def from_cookie(cls, secret: str, value: str) -> UiSession:
        data = unsign(secret, "session", value)
        try:
            return cls(int(data["u"]), str(data["k"]), str(data["c"]), float(data["exp"]))
        except (KeyError, TypeError, ValueError):
            raise BadSignature("malformed session") from None


def new_login_token(secret: str) -> tuple[str, str]:
    """(the CSRF token for the sign-in form, the signed cookie that carries it)."""
    token = secrets.token_urlsafe(32)
    return token, sign(secret, "login", {"c": token, "exp": int(time.time()) + LOGIN_TTL_SECONDS})


def login_token_from_cookie(secret: str, value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(unsign(secret, "login", value)["c"])
    except (BadSignature, KeyError):
        return None


def tokens_match(expected: str | None, presented: str | None) -> bool:
    return bool(expected) and bool(presented) and hmac.compare_digest(str(expected), str(presented))


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SecurityHeaders:
    """ASGI wrapper that adds the security headers to every response of the wrapped app.

    It wraps the whole UI sub-application (outside its error middleware), so 403, 404 and
    500 pages carry the headers too. A response that set its own Content-Security-Policy
    (the sandboxed Evidently report) keeps it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = dict(SECURITY_HEADERS)
                if b"content-security-policy" not in present:
                    extra["Content-Security-Policy"] = CSP
                if b"cache-control" not in present:
                    # pages show who may do what; never let a shared cache keep them
                    extra["Cache-Control"] = "no-store"
                for name, value in extra.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
