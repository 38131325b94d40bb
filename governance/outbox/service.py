"""The transactional outbox: rows written with a change, sent only after it committed.

`enqueue_task` / `enqueue_publish` add a row inside the caller's transaction, so a
rolled-back change never announces anything. `publish_pending` sends committed rows
in id order: Redis PUBLISH for ``publish`` rows, Celery ``send_task`` (through a plain
``celery.Celery(broker=...)`` client: governance never imports the workers) for
``task`` rows, and marks them published. The API calls it right after each commit
that wrote a row; a periodic sweep calls it to catch anything left (a crash between
commit and send). One publisher runs at a time (a transaction-scoped advisory lock),
which keeps the per-channel order equal to the commit order: promotions lock their
deployment row before they allocate an outbox id, so ids follow generations. Delivery
is at least once; subscribers de-duplicate by generation.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

import redis as redis_lib
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from governance.api import metrics
from governance.db import unit_of_work, utcnow
from governance.outbox.models import OutboxMessage

log = logging.getLogger(__name__)

GATE_TASK = "evaluators.run_gate"
GATE_QUEUE = "gates"  # the queue monitors.celery_app routes gate runs to
OUTBOX_LOCK_KEY = 0x6F75_7462_6F78  # "outbox"
PENDING_FLAG = "govern_outbox_pending"


def deployment_channel(name: str) -> str:
    return f"govern:deployment:{name}"


def _mark(session: Session) -> None:
    # the edge looks at this after commit to publish right away
    session.info[PENDING_FLAG] = True


def enqueue_task(
    session: Session,
    *,
    name: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    extra: dict[str, Any] | None = None,
) -> OutboxMessage:
    payload: dict[str, Any] = {**(extra or {}), "args": list(args or []), "kwargs": dict(kwargs or {}), "queue": queue}
    msg = OutboxMessage(kind="task", target=name, payload=payload)
    session.add(msg)
    session.flush()
    _mark(session)
    return msg


def enqueue_gate(session: Session, *, version_id: int) -> OutboxMessage:
    return enqueue_task(session, name=GATE_TASK, args=[version_id], queue=GATE_QUEUE, extra={"version_id": version_id})


def enqueue_publish(session: Session, *, channel: str, payload: dict[str, Any]) -> OutboxMessage:
    msg = OutboxMessage(kind="publish", target=channel, payload=payload)
    session.add(msg)
    session.flush()
    _mark(session)
    return msg


def has_pending(session: Session) -> bool:
    return bool(session.info.pop(PENDING_FLAG, False))


@lru_cache(maxsize=8)
def _redis(url: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


@lru_cache(maxsize=8)
def _celery(url: str) -> Any:
    from celery import Celery

    app = Celery("governance-outbox", broker=url)
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_connection_timeout = 5
    return app


def _send(msg: OutboxMessage, redis_url: str) -> None:
    if msg.kind == "publish":
        _redis(redis_url).publish(msg.target, json.dumps(msg.payload, sort_keys=True))
    else:
        p = msg.payload
        _celery(redis_url).send_task(
            msg.target, args=p.get("args") or [], kwargs=p.get("kwargs") or {}, queue=p.get("queue"), retry=False
        )


def publish_pending(engine: Engine, redis_url: str, *, batch: int = 200) -> int:
    """Send committed, unsent outbox rows in id order; return how many were sent.

    Stops at the first failure (keeping order); the failed row's ``attempts`` goes up
    and the next call retries it.
    """
    sent = 0
    while True:
        with unit_of_work(engine) as session:
            session.execute(text("select pg_advisory_xact_lock(:k)"), {"k": OUTBOX_LOCK_KEY})
            rows = list(
                session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.published_at.is_(None))
                    .order_by(OutboxMessage.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            )
            failed = False
            for msg in rows:
                msg.attempts += 1
                try:
                    _send(msg, redis_url)
                except Exception as exc:
                    log.warning("outbox message %s (%s %s) not sent yet: %s", msg.id, msg.kind, msg.target, exc)
                    failed = True
                    break
                msg.published_at = utcnow()
                metrics.OUTBOX_PUBLISHED.labels(kind=msg.kind).inc()
                sent += 1
        if failed or len(rows) < batch:
            return sent
