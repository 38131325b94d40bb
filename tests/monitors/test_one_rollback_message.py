"""One drift, one rollback task message, counted on the real Redis broker.

The check's task commits the rollback task's outbox row with the check and then sends it
once, through the outbox's send-after-commit path, which marks the row sent; the outbox
sweep that runs afterwards finds nothing left to send. The messages are read from the
Redis list of the ``rollback`` queue (Celery's Redis transport keeps a queue as a list
named after it), so a second send by any path would show here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import select

from governance.db import unit_of_work
from governance.outbox.models import OutboxMessage
from governance.outbox.names import ROLLBACK_QUEUE, ROLLBACK_TASK
from monitors import tasks
from monitors.celery_app import app, configure
from tests.monitors.conftest import World


@pytest.fixture()
def broker(redis_url: str) -> Iterator[redis_lib.Redis]:
    configure(app, redis_url)  # the workers' app sends to this run's Redis too
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


def _rollback_messages(client: redis_lib.Redis, deployment_id: int) -> list[dict[str, Any]]:
    """The kwargs of every rollback task message of this deployment waiting on the queue."""
    found = []
    for raw in client.lrange(ROLLBACK_QUEUE, 0, -1):
        msg = json.loads(raw)
        if msg["headers"]["task"] != ROLLBACK_TASK:
            continue
        _, kwargs, _ = json.loads(base64.b64decode(msg["body"]))
        if kwargs["deployment_id"] == deployment_id:
            found.append(kwargs)
    return found


def test_one_drift_sends_exactly_one_rollback_message(world: World, broker: redis_lib.Redis) -> None:
    world.release()
    v2 = world.release()
    world.record(v2, 210)
    assert world.check("w1").detectors["_window"]["reason"] == "reference ready"
    world.record(v2, 40, violating_every=2)
    assert world.check("w2").verdict == "drift"  # one window: not yet (consecutive_windows: 2)
    world.record(v2, 40, violating_every=2)

    out = tasks.run_check_task(world.deployment_id, "w3")

    assert out["verdict"] == "drift" and out["rollback_queued"] is True
    expected = {"deployment_id": world.deployment_id, "expected_version_id": v2, "check_id": out["check_id"],
                "detector": "policy_violations"}
    assert _rollback_messages(broker, world.deployment_id) == [expected]
    tasks.sweep_outbox_task()  # the safety net finds the row already sent
    assert _rollback_messages(broker, world.deployment_id) == [expected]
    with unit_of_work(world.engine) as s:
        rows = [r for r in s.scalars(select(OutboxMessage).where(OutboxMessage.target == ROLLBACK_TASK))
                if r.payload["kwargs"]["deployment_id"] == world.deployment_id]
        assert len(rows) == 1 and rows[0].published_at is not None
