"""The Celery application of the workers: Redis broker and result backend from the settings.

Queues and task names come from `governance.outbox.names` (the one table of them):
``gates`` (evaluation gate runs), ``monitoring`` (dispatch, drift checks, rollout
analyses, outbox sweep, audit checkpoints) and ``rollback`` (guarded automatic rollbacks, kept apart so a
backlog of checks never delays one). Delivery is at least once: ``acks_late`` with
``task_reject_on_worker_lost`` and a prefetch of one mean a task whose worker dies runs
again (on a restart, or on another worker once the Redis visibility timeout passes), so
every task body is idempotent.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Queue

from governance.embedded import resolve_redis_url
from governance.outbox.names import MONITORING_QUEUE, QUEUE_OF, QUEUES
from monitors.schedule import beat_schedule

# Seconds before Redis hands an unacknowledged task of a vanished worker to another one.
# Longer than any task runs (a gate run on CPU takes minutes), else a running task would
# be handed out a second time; a crashed rollback is retried after it (or at once, when
# the worker restarts and finds it older than this).
VISIBILITY_ENV = "GOVERN_CELERY_VISIBILITY_TIMEOUT"
DEFAULT_VISIBILITY = 3600


def default_queues() -> list[str]:
    return list(QUEUES)


def _redis_url() -> str | None:
    try:
        return resolve_redis_url()
    except Exception:  # no services yet: configured when the worker starts (configure())
        return None


def configure(app: Celery, redis_url: str | None) -> Celery:
    visibility = int(os.environ.get(VISIBILITY_ENV, DEFAULT_VISIBILITY))
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
        broker_transport_options={"visibility_timeout": visibility},
        result_backend_transport_options={"visibility_timeout": visibility},
        result_expires=24 * 3600,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=MONITORING_QUEUE,
        task_queues=[Queue(q) for q in default_queues()],
        task_routes=routes(),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.conf.beat_schedule = beat_schedule()
    return app


def routes() -> dict[str, dict[str, Any]]:
    return {task: {"queue": queue} for task, queue in QUEUE_OF.items()}


app = configure(Celery("govern", include=["monitors.tasks"]), _redis_url())
