"""The transactional outbox: rows written with a change, sent only after it committed.

`enqueue_task` / `enqueue_publish` add a row inside the caller's transaction, so a
rolled-back change never announces anything. `publish_pending` sends committed rows
in id order: Redis PUBLISH for ``publish`` rows, Celery ``send_task`` (through a plain
``celery.Celery(broker=...)`` client: governance never imports the workers) for
``task`` rows, and marks them published; a periodic sweep calls it to catch anything
left (a crash between commit and send). One sweep runs at a time (a transaction-scoped
advisory lock) and sends in id order.

The fast path: every enqueued row is also kept in the session's memory (`take_outgoing`),
and the edge that committed (an API request; a Celery task, through
`unit_of_work_then_publish`) hands them to `publish_committed` right after the commit:
one PUBLISH (or `send_task`) per row on a pooled connection, with no database round
trip before it; the rows are marked published afterwards in one UPDATE. Measured under
load, the old path (a second transaction: pool ping, advisory lock, SELECT ... FOR
UPDATE, then the PUBLISH) put 23 ms p50 / 68 ms p99 between the commit and the replicas
receiving the message (docs/benchmarks.md). A row whose send
fails, or that is not marked because the process dies, stays unpublished and the sweep
sends it. Delivery is at least once and, on the fast path, not serialised between
concurrent commits; subscribers order and de-duplicate by generation (replicas ignore
a generation at or below the one they serve), so neither a duplicate nor a late stale
message changes what a replica serves. Every published message carries an HMAC-SHA256
under the push secret (`governance.outbox.pushauth`), added as it is sent: replicas drop
a message without a valid one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis as redis_lib
from celery import Celery
from sqlalchemy import Engine, event, select, text, update
from sqlalchemy.orm import Session

from governance import metrics
from governance.db import unit_of_work, utcnow
from governance.embedded import resolve_push_secret
from governance.outbox import pushauth
from governance.outbox.models import OutboxMessage
from governance.outbox.names import GATE_TASK, QUEUE_OF, REGATE_TASK

log = logging.getLogger(__name__)

OUTBOX_LOCK_KEY = 0x6F75_7462_6F78  # "outbox"
FRESH_KEY = "govern_outbox_fresh"  # session.info: rows enqueued in this transaction
STALE_KEY = "govern_outbox_unsure"  # session.info: a rollback dropped some of them


@dataclass(frozen=True)
class Fresh:
    """An outbox row written in this session's transaction, with what to send kept in memory."""

    id: int
    kind: str  # publish | task
    target: str
    payload: dict[str, Any]


def deployment_channel(name: str) -> str:
    return f"govern:deployment:{name}"


def _mark(session: Session, msg: OutboxMessage) -> None:
    # the edge takes these after the commit and sends them at once (`publish_committed`)
    session.info.setdefault(FRESH_KEY, []).append(Fresh(msg.id, msg.kind, msg.target, dict(msg.payload)))


@event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(session: Session, previous_transaction: Any) -> None:
    # A rollback (even of a savepoint) may have undone some of these rows: send none of
    # them from memory. Whatever did commit is still in the table, and the sweep (or the
    # edge's `publish_pending` fallback) sends it.
    if session.info.pop(FRESH_KEY, None):
        session.info[STALE_KEY] = True


def enqueue_task(
    session: Session,
    *,
    name: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    extra: dict[str, Any] | None = None,
) -> OutboxMessage:
    """Queue task ``name`` (by default to its queue in `governance.outbox.names`) after the commit."""
    queue = queue or QUEUE_OF.get(name)
    payload: dict[str, Any] = {**(extra or {}), "args": list(args or []), "kwargs": dict(kwargs or {}), "queue": queue}
    msg = OutboxMessage(kind="task", target=name, payload=payload)
    session.add(msg)
    session.flush()
    _mark(session, msg)
    return msg


def enqueue_gate(session: Session, *, version_id: int) -> OutboxMessage:
    return enqueue_task(session, name=GATE_TASK, args=[version_id], extra={"version_id": version_id})


def enqueue_regate(session: Session, *, gate_run_id: int, version_id: int) -> OutboxMessage:
    return enqueue_task(session, name=REGATE_TASK, args=[gate_run_id], extra={"version_id": version_id})


def enqueue_publish(session: Session, *, channel: str, payload: dict[str, Any]) -> OutboxMessage:
    msg = OutboxMessage(kind="publish", target=channel, payload=payload)
    session.add(msg)
    session.flush()
    _mark(session, msg)
    return msg


@dataclass
class Outgoing:
    """What one committed transaction has to send (`take_outgoing`)."""

    rows: list[Fresh] = field(default_factory=list)
    unsure: bool = False  # a rollback inside the session dropped rows from memory: sweep instead

    def __bool__(self) -> bool:
        return bool(self.rows) or self.unsure


def take_outgoing(session: Session) -> Outgoing:
    """The rows this session enqueued, taken once after its commit (and cleared)."""
    return Outgoing(list(session.info.pop(FRESH_KEY, None) or []), bool(session.info.pop(STALE_KEY, False)))


@lru_cache(maxsize=8)
def _redis(url: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


@lru_cache(maxsize=8)
def _celery(url: str) -> Celery:
    app = Celery("governance-outbox", broker=url)
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_connection_timeout = 5
    return app


def _send(msg: OutboxMessage | Fresh, redis_url: str, push_secret: str | None) -> None:
    if msg.kind == "publish":
        # signed as it leaves, whichever path sends it (fast path or sweep), with the current secret
        signed = pushauth.sign(msg.payload, msg.target, push_secret or resolve_push_secret())
        _redis(redis_url).publish(msg.target, json.dumps(signed, sort_keys=True))
    else:
        p = msg.payload
        _celery(redis_url).send_task(
            msg.target, args=p.get("args") or [], kwargs=p.get("kwargs") or {}, queue=p.get("queue"), retry=False
        )


def publish_pending(engine: Engine, redis_url: str, *, batch: int = 200, push_secret: str | None = None) -> int:
    """Send committed, unsent outbox rows in id order; return how many were sent.

    Stops at the first failure (keeping order); the failed row's ``attempts`` goes up
    and the next call retries it. ``push_secret`` signs the published messages (unset:
    `resolve_push_secret` of this process's settings).
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
                    _send(msg, redis_url, push_secret)
                except Exception as exc:
                    log.warning("outbox message %s (%s %s) not sent yet: %s", msg.id, msg.kind, msg.target, exc)
                    failed = True
                    break
                msg.published_at = utcnow()
                metrics.OUTBOX_PUBLISHED.labels(kind=msg.kind).inc()
                sent += 1
        if failed or len(rows) < batch:
            return sent


def publish_committed(engine: Engine, redis_url: str, outgoing: Outgoing, *, push_secret: str | None = None) -> int:
    """Send what a transaction enqueued, right after its commit returned, from memory.

    The sends come first (no database round trip before them), in id order; one UPDATE
    then marks the sent rows published. A failed send stops the run and leaves that row
    and the rest to the sweep; a crash before the UPDATE means the sweep sends them again
    (at least once). When a rollback inside the session made the in-memory list unsure,
    `publish_pending` sends what actually committed instead. Returns how many were sent.
    """
    if outgoing.unsure:
        return publish_pending(engine, redis_url, push_secret=push_secret)
    sent = send_committed(redis_url, outgoing, push_secret=push_secret)
    mark_published(engine, sent)
    return len(sent)


def send_committed(redis_url: str, outgoing: Outgoing, *, push_secret: str | None = None) -> list[int]:
    """The sending half of `publish_committed`: returns the ids sent, in order."""
    sent: list[int] = []
    for msg in sorted(outgoing.rows, key=lambda m: m.id):
        try:
            _send(msg, redis_url, push_secret)
        except Exception as exc:
            log.warning("outbox message %s (%s %s) not sent yet: %s; the sweep will", msg.id, msg.kind, msg.target, exc)
            break
        sent.append(msg.id)
        metrics.OUTBOX_PUBLISHED.labels(kind=msg.kind).inc()
    return sent


def mark_published(engine: Engine, ids: list[int]) -> None:
    """The marking half of `publish_committed`: the sweep will not send these rows again."""
    if not ids:
        return
    with unit_of_work(engine) as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.published_at.is_(None))
            .values(published_at=utcnow(), attempts=OutboxMessage.attempts + 1)
        )


@contextmanager
def unit_of_work_then_publish(
    engine: Engine, redis_url: Callable[[], str], push_secret: Callable[[], str] = resolve_push_secret
) -> Iterator[Session]:
    """A unit of work whose outbox rows are sent right after its commit (`publish_committed`).

    The task edge's counterpart of the API's request transaction: one send-after-commit
    path for every queued task. Nothing is sent when the transaction rolls back; a failed
    send (Redis down, no URL) is logged and left to the sweep. ``redis_url`` and
    ``push_secret`` are only called when there is something to send.
    """
    with unit_of_work(engine) as session:
        yield session
    outgoing = take_outgoing(session)  # only reached once the commit returned
    if not outgoing:
        return
    try:
        publish_committed(engine, redis_url(), outgoing, push_secret=push_secret())
    except Exception as exc:  # the periodic sweep sends what is left
        log.warning("outbox not published after commit (%s); the sweep will", exc)
