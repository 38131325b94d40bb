"""``govern worker`` and ``govern beat``: the Celery worker (gates, monitoring, rollback queues)
and the beat scheduler, as ordinary processes with the run's GOVERN_ settings."""

from __future__ import annotations

import os

import typer
from celery import Celery
from prometheus_client import start_http_server

from governance.cli.common import TORCH_THREADS_HELP, clear_errors, fail, limit_torch_threads
from governance.embedded import resolve_redis_url
from governance.settings import get_settings
from monitors.celery_app import app, configure, default_queues


def _app(redis_url: str | None = None) -> Celery:
    return configure(app, redis_url or resolve_redis_url())


@clear_errors
def worker_cmd(
    queues: str = typer.Option("", "--queues", "-Q", help="comma-separated queues (default: gates, monitoring, "
                                                          "rollback)"),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="worker processes"),
    pool: str = typer.Option("prefork", "--pool", help="prefork, threads or solo"),
    metrics_port: int = typer.Option(
        0, "--metrics-port",
        help="serve this process's Prometheus metrics on this port (0: off; with --pool threads or solo the "
             "tasks run in this process)",
    ),
    loglevel: str = typer.Option("INFO", "--loglevel"),
    torch_threads: int = typer.Option(0, "--torch-threads", min=0, help=TORCH_THREADS_HELP + " (per worker process)"),
) -> None:
    """Run a Celery worker for the gate, monitoring and rollback queues."""
    limit_torch_threads(torch_threads)
    worker = _app()  # its `include` makes the worker import monitors.tasks, the gate's tasks with them
    chosen = [q.strip() for q in queues.split(",") if q.strip()] or default_queues()
    if pool not in ("prefork", "solo", "threads"):
        fail(f"unknown pool {pool!r}; use prefork, solo or threads")
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    worker.worker_main([
        "worker", f"--queues={','.join(chosen)}", f"--concurrency={concurrency}", f"--pool={pool}",
        f"--loglevel={loglevel}", "--without-gossip", "--without-mingle", "-n", f"govern-{os.getpid()}@%h",
    ])


@clear_errors
def beat_cmd(
    loglevel: str = typer.Option("INFO", "--loglevel"),
) -> None:
    """Run the beat scheduler (drift-check dispatch, outbox sweep, audit checkpoints)."""
    beat = _app()
    state = get_settings().ensure_state_dir() / "beat"
    state.mkdir(parents=True, exist_ok=True)

    # each beat process keeps its own schedule file: several beats may run at once
    beat.start(["beat", f"--loglevel={loglevel}", f"--schedule={state / f'schedule-{os.getpid()}'}"])
