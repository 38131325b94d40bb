"""The outbox's fast path: what a transaction enqueued is sent from memory right after its commit.

Real PostgreSQL and Redis. The sweep (`publish_pending`) stays the safety net: a send
that fails, or a session that rolled back part of its work, leaves the committed rows to it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import select

from governance.db import unit_of_work
from governance.outbox import service as outbox
from governance.outbox.models import OutboxMessage
from governance.outbox.names import GATE_TASK, QUEUE_OF, QUEUES
from tests.governance.conftest import uid


def _subscribe(redis_url: str, channel: str) -> Any:
    client = redis_lib.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=2)  # the subscribe confirmation
    pubsub._owner = client  # keep the client alive while the pubsub is used
    return pubsub


def _messages(pubsub: Any, timeout: float = 2.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg and msg["type"] == "message":
            out.append(json.loads(msg["data"]))
    return out


def _row(engine: Any, msg_id: int) -> OutboxMessage:
    with unit_of_work(engine) as s:
        return s.scalars(select(OutboxMessage).where(OutboxMessage.id == msg_id)).one()


def test_committed_rows_are_sent_from_memory_and_marked(engine: Any, redis_url: str) -> None:
    channel = outbox.deployment_channel(uid("dep"))
    pubsub = _subscribe(redis_url, channel)
    with unit_of_work(engine) as s:
        first = outbox.enqueue_publish(s, channel=channel, payload={"generation": 1})
        second = outbox.enqueue_publish(s, channel=channel, payload={"generation": 2})
    outgoing = outbox.take_outgoing(s)
    assert [m.id for m in outgoing.rows] == [first.id, second.id] and not outgoing.unsure
    assert outbox.take_outgoing(s).rows == [], "taken once"
    assert outbox.publish_committed(engine, redis_url, outgoing) == 2
    assert [m["generation"] for m in _messages(pubsub)] == [1, 2]
    for msg_id in (first.id, second.id):
        row = _row(engine, msg_id)
        assert row.published_at is not None and row.attempts == 1
    # the sweep finds nothing left to send: no duplicate
    with unit_of_work(engine) as s:
        pending = s.scalars(
            select(OutboxMessage.id).where(
                OutboxMessage.id.in_([first.id, second.id]), OutboxMessage.published_at.is_(None)
            )
        ).all()
    assert pending == []


def test_a_rolled_back_transaction_sends_nothing(engine: Any, redis_url: str) -> None:
    channel = outbox.deployment_channel(uid("dep"))
    pubsub = _subscribe(redis_url, channel)
    session = None
    try:
        with unit_of_work(engine) as s:
            session = s
            outbox.enqueue_publish(s, channel=channel, payload={"generation": 1})
            raise RuntimeError("the change fails after the row was written")
    except RuntimeError:
        pass
    assert session is not None
    outgoing = outbox.take_outgoing(session)
    assert outgoing.rows == []  # dropped on rollback: never sent from memory
    outbox.publish_committed(engine, redis_url, outgoing)
    assert _messages(pubsub, timeout=0.5) == []


def test_a_failed_send_leaves_the_row_to_the_sweep(engine: Any, redis_url: str) -> None:
    channel = outbox.deployment_channel(uid("dep"))
    pubsub = _subscribe(redis_url, channel)
    with unit_of_work(engine) as s:
        msg = outbox.enqueue_publish(s, channel=channel, payload={"generation": 7})
    dead = "redis://127.0.0.1:1/0"  # nothing listens there
    assert outbox.publish_committed(engine, dead, outbox.take_outgoing(s)) == 0
    assert _messages(pubsub, timeout=0.5) == []
    row = _row(engine, msg.id)
    assert row.published_at is None, "still pending: the sweep (publish_pending) sends it"


def test_the_task_edge_sends_after_commit_once_and_never_after_a_rollback(engine: Any, redis_url: str) -> None:
    """`unit_of_work_then_publish`: the Celery tasks' send-after-commit path."""
    channel = outbox.deployment_channel(uid("dep"))
    pubsub = _subscribe(redis_url, channel)
    with outbox.unit_of_work_then_publish(engine, lambda: redis_url) as s:
        msg = outbox.enqueue_publish(s, channel=channel, payload={"generation": 3})
    assert [m["generation"] for m in _messages(pubsub)] == [3]
    assert _row(engine, msg.id).published_at is not None, "marked: the sweep does not send it again"

    asked: list[str] = []

    def url() -> str:
        asked.append("url")
        return redis_url

    with pytest.raises(RuntimeError), outbox.unit_of_work_then_publish(engine, url) as s:
        outbox.enqueue_publish(s, channel=channel, payload={"generation": 4})
        raise RuntimeError("the change fails after the row was written")
    with outbox.unit_of_work_then_publish(engine, url):
        pass  # nothing enqueued: nothing to send, Redis not even looked up
    assert _messages(pubsub, timeout=0.5) == [] and asked == []


def test_the_task_edge_leaves_a_failed_send_to_the_sweep(engine: Any) -> None:
    def no_services() -> str:
        raise RuntimeError("no GOVERN_REDIS_URL set and the embedded redis is not running")

    with outbox.unit_of_work_then_publish(engine, no_services) as s:  # does not raise: the commit stands
        msg = outbox.enqueue_publish(s, channel=outbox.deployment_channel(uid("dep")), payload={"generation": 1})
    assert _row(engine, msg.id).published_at is None, "still pending: the sweep sends it"


def test_a_task_goes_to_its_own_queue_unless_told_otherwise(engine: Any) -> None:
    with pytest.raises(RuntimeError), unit_of_work(engine) as s:  # rolled back: never sent
        assert outbox.enqueue_gate(s, version_id=0).payload["queue"] == QUEUE_OF[GATE_TASK] == "gates"
        assert outbox.enqueue_task(s, name=GATE_TASK, queue="elsewhere").payload["queue"] == "elsewhere"
        raise RuntimeError("roll back")


def test_every_task_has_one_queue_and_the_workers_listen_on_exactly_those() -> None:
    from monitors.celery_app import app, default_queues, routes
    from monitors.schedule import beat_schedule
    from monitors.tasks import run_check_task  # registers the tasks

    assert set(QUEUE_OF.values()) == set(QUEUES) == set(default_queues())  # no queue nobody sends to
    registered = {name for name in app.tasks if not name.startswith("celery.")}
    assert registered == set(QUEUE_OF)
    assert all(app.tasks[name].queue == QUEUE_OF[name] == routes()[name]["queue"] for name in QUEUE_OF)
    assert all(entry["options"]["queue"] == QUEUE_OF[entry["task"]] for entry in beat_schedule().values())
    assert run_check_task.name == "monitors.run_check"
