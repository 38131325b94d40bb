"""``govern api``: run the HTTP API (uvicorn on `create_app`). Other process commands live elsewhere."""

from __future__ import annotations

import typer
import uvicorn

from governance.api.app import create_app
from governance.cli.common import clear_errors
from governance.db import check_database
from governance.settings import get_settings


@clear_errors
def api_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on"),
    port: int = typer.Option(8400, "--port", help="TCP port (GOVERN_API_URL of clients must match)"),
    workers: int = typer.Option(1, "--workers", help="uvicorn worker processes"),
) -> None:
    """Run the governance HTTP API."""
    app = create_app(get_settings())
    check_database(app.state.engine)
    if workers > 1:
        uvicorn.run(
            "governance.api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info"
        )
    else:
        uvicorn.run(app, host=host, port=port, log_level="info")
