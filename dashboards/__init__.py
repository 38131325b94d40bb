"""The compliance officers' web UI, served by the API process under ``/ui``.

Server-rendered pages (Jinja2, a little plain JavaScript, plotly.js served locally) for
releases and their gate reports, four-eyes review, deployments and rollback, drift,
alerts and the audit log. The pages call the governance services, so they obey the same
roles, lifecycle table and audit trail as the HTTP API. `install(app)` is the one line
the API's app factory adds; governance itself never imports this package.
"""

from __future__ import annotations

from typing import Any

from dashboards.app import create_ui_app
from dashboards.security import SecurityHeaders

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


__all__ = ["UI_PREFIX", "install"]
