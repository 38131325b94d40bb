"""The outbox's fast path: what a transaction enqueued is sent from memory right after its commit.

Real PostgreSQL and Redis. The sweep (`publish_pending`) stays the safety net: a send
that fails, or a session that rolled back part of its work, leaves the committed rows to it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis as redis_lib
from sqlalchemy import select

from governance.db import unit_of_work
from governance.outbox import service as outbox
from governance.outbox.models import OutboxMessage
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
