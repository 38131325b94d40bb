"""`govern serve`: run one serving replica for a deployment (OpenAI-compatible, hot-swapping tokens).

The replica reaches the API with GOVERN_API_URL / GOVERN_API_KEY (a service-role key),
Redis for push notifications and PostgreSQL for recording outputs through the same
settings as every other process (the embedded servers when the URLs are unset); it
accepts a pushed message only with a valid MAC under the push secret (GOVERN_PUSH_SECRET,
or the state folder's, and GOVERN_PUSH_SECRET_PREVIOUS during a rotation).
"""

from __future__ import annotations

import gc
import logging
import socket
import sys

import typer
import uvicorn

from governance.cli.common import TORCH_THREADS_HELP, clear_errors, console, fail, limit_torch_threads
from governance.embedded import push_secrets, resolve_database_url, resolve_redis_url
from governance.settings import get_settings


@clear_errors
def serve_cmd(
    deployment: str = typer.Option(..., "--deployment", "-d", help="deployment whose active token to serve"),
    port: int = typer.Option(8500, "--port", "-p", help="port to listen on"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to bind"),
    model: str | None = typer.Option(
        None, "--model", help="base model (provider name or local dir); default: settings"
    ),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="requests decoded together"),
    max_twins: int | None = typer.Option(None, "--max-twins", min=0,
                                         help="rollout twin rows decoding at once beside them (default: --max-batch)"),
    queue_size: int = typer.Option(64, "--queue-size", min=1, help="waiting requests before answering 429"),
    reconcile_interval: float = typer.Option(5.0, "--reconcile-interval", min=0.05, help="seconds between API checks"),
    fence: bool = typer.Option(True, "--fence/--no-fence", help="check the active generation before each batch"),
    fence_timeout: float = typer.Option(0.5, "--fence-timeout", min=0.01, help="seconds the fence waits for the API"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16"),
    replica_id: str | None = typer.Option(
        None, "--replica-id", help="names this replica's spool file (default: host-port)"
    ),
    torch_threads: int = typer.Option(0, "--torch-threads", min=0, help=TORCH_THREADS_HELP),
) -> None:
    """Serve the deployment's active Aligner token over an OpenAI-compatible API."""
    limit_torch_threads(torch_threads)
    from serving.app import ServingConfig, create_app  # defers torch (its thread count is set just above)

    settings = get_settings()
    settings.ensure_state_dir()
    if settings.api_key is None:
        fail("GOVERN_API_KEY is not set: create a service user (`govern users create NAME --role service`)")
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServingConfig(
        deployment=deployment,
        model=model or settings.base_model,
        dtype=dtype,
        max_batch=max_batch,
        max_twins=max_twins,
        queue_size=queue_size,
        api_url=settings.api_url,
        api_key=settings.api_key.get_secret_value(),
        redis_url=resolve_redis_url(settings),
        push_secrets=push_secrets(settings),
        database_url=resolve_database_url(settings),
        state_dir=settings.state_path,
        reconcile_interval=reconcile_interval,
        fence=fence,
        fence_timeout=fence_timeout,
    )
    # A stable id per host and port: a restarted replica finds and replays its own spool.
    config.replica_id = replica_id or f"{socket.gethostname()}-{port}"
    console.print(f"loading {config.model} for deployment [bold]{deployment}[/] ...")
    app = create_app(config)
    # The model, transformers and the app are ~400k long-lived objects: a full collection
    # walks them all (about 0.3 s on a busy 2-core machine), stalling swaps and requests.
    # Frozen, they are never scanned again; only what serving allocates is collected.
    gc.collect()
    gc.freeze()
    # The model thread holds the GIL between torch calls; the pub/sub thread that receives a
    # promotion waits for it up to the switch interval (5 ms by default) at each step it takes.
    sys.setswitchinterval(0.001)
    console.print(f"serving on http://{host}:{port}/v1 (replica {config.replica_id})")
    uvicorn.run(app, host=host, port=port, log_level="warning")
