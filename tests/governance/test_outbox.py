"""The outbox's fast path: what a transaction enqueued is sent from memory right after its commit.

Real PostgreSQL and Redis. The sweep (`publish_pending`) stays the safety net: a send
that fails, or a session that rolled back part of its work, leaves the committed rows to it.
Every published message is signed (`governance.outbox.pushauth`) with the push secret,
whichever path sends it; the secret comes from the settings or, by default, the state folder.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from pydantic import SecretStr
from sqlalchemy import select

from governance import embedded
from governance.db import unit_of_work
from governance.outbox import pushauth
from governance.outbox import service as outbox
from governance.outbox.models import OutboxMessage
from governance.outbox.names import GATE_TASK, QUEUE_OF, QUEUES
from governance.settings import Settings, get_settings
from tests.governance.conftest import uid

SECRET = "outbox-test-push-secret-0123456789"


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
    assert outbox.publish_committed(engine, redis_url, outgoing, push_secret=SECRET) == 2
    received = _messages(pubsub)
    assert [m["generation"] for m in received] == [1, 2]
    assert all(pushauth.verify(m, channel, [SECRET]) is None for m in received), "signed as they leave"
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
    outbox.publish_committed(engine, redis_url, outgoing, push_secret=SECRET)
    assert _messages(pubsub, timeout=0.5) == []


def test_a_failed_send_leaves_the_row_to_the_sweep(engine: Any, redis_url: str) -> None:
    channel = outbox.deployment_channel(uid("dep"))
    pubsub = _subscribe(redis_url, channel)
    with unit_of_work(engine) as s:
        msg = outbox.enqueue_publish(s, channel=channel, payload={"generation": 7})
    dead = "redis://127.0.0.1:1/0"  # nothing listens there
    assert outbox.publish_committed(engine, dead, outbox.take_outgoing(s), push_secret=SECRET) == 0
    assert _messages(pubsub, timeout=0.5) == []
    row = _row(engine, msg.id)
    assert row.published_at is None, "still pending: the sweep (publish_pending) sends it"


def test_the_task_edge_sends_after_commit_once_and_never_after_a_rollback(engine: Any, redis_url: str) -> None:
    """`unit_of_work_then_publish`: the Celery tasks' send-after-commit path."""
    channel = outbox.deployment_channel(uid("dep"))
    pubsub = _subscribe(redis_url, channel)
    with outbox.unit_of_work_then_publish(engine, lambda: redis_url, lambda: SECRET) as s:
        msg = outbox.enqueue_publish(s, channel=channel, payload={"generation": 3})
    received = _messages(pubsub)
    assert [m["generation"] for m in received] == [3]
    assert pushauth.verify(received[0], channel, [SECRET]) is None
    assert _row(engine, msg.id).published_at is not None, "marked: the sweep does not send it again"

    asked: list[str] = []

    def url() -> str:
        asked.append("url")
        return redis_url

    with pytest.raises(RuntimeError), outbox.unit_of_work_then_publish(engine, url, lambda: SECRET) as s:
        outbox.enqueue_publish(s, channel=channel, payload={"generation": 4})
        raise RuntimeError("the change fails after the row was written")
    with outbox.unit_of_work_then_publish(engine, url, lambda: SECRET):
        pass  # nothing enqueued: nothing to send, Redis not even looked up
    assert _messages(pubsub, timeout=0.5) == [] and asked == []


def test_the_task_edge_leaves_a_failed_send_to_the_sweep(engine: Any) -> None:
    def no_services() -> str:
        raise RuntimeError("no GOVERN_REDIS_URL set and the embedded redis is not running")

    # does not raise: the commit stands
    with outbox.unit_of_work_then_publish(engine, no_services, lambda: SECRET) as s:
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


def test_the_sweep_signs_too_with_the_settings_secret_by_default(
    engine: Any, redis_url: str, settings_env: None
) -> None:
    """A row left to the sweep leaves signed; unset, the secret is the state folder's (made once, 0600)."""
    channel = outbox.deployment_channel(uid("dep"))
    pubsub = _subscribe(redis_url, channel)
    with unit_of_work(engine) as s:
        outbox.enqueue_publish(s, channel=channel, payload={"generation": 5})
    outbox.take_outgoing(s)  # as if the process died before its fast path: only the sweep sends it
    assert outbox.publish_pending(engine, redis_url) >= 1
    received = _messages(pubsub)
    assert [m["generation"] for m in received] == [5]
    settings = get_settings()
    assert settings.push_secret is None
    secret_file = settings.state_path / embedded.PUSH_SECRET_FILE
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert pushauth.verify(received[0], channel, [secret_file.read_text()]) is None


# ---------------------------------------------------------------- sign / verify


def _signed(channel: str = "govern:deployment:a", secret: str = SECRET) -> dict[str, Any]:
    payload = {"deployment": "a", "version_id": 7, "sha256": "ab" * 32, "generation": 3, "kind": "promote"}
    return pushauth.sign(payload, channel, secret)


def test_the_mac_covers_the_channel_and_the_payload_in_canonical_form() -> None:
    assert pushauth.canonical_bytes({"b": 1, "a": None, "mac": "x"}, "c") == b'["c",{"a":null,"b":1}]'
    msg = _signed()
    assert set(msg) == {"deployment", "version_id", "sha256", "generation", "kind", "mac"}
    assert pushauth.verify(msg, "govern:deployment:a", [SECRET]) is None
    # what travels is JSON: another key order or spacing on the wire verifies the same
    rewired = json.loads(json.dumps(dict(reversed(list(msg.items()))), indent=2))
    assert pushauth.verify(rewired, "govern:deployment:a", [SECRET]) is None
    assert pushauth.sign(msg, "govern:deployment:a", SECRET) == msg, "re-signing replaces the MAC"


def test_a_tampered_field_another_channel_or_another_secret_fails() -> None:
    msg = _signed()
    for field, value in (("version_id", 8), ("generation", 4), ("sha256", "cd" * 32), ("kind", "rollback")):
        assert pushauth.verify({**msg, field: value}, "govern:deployment:a", [SECRET]) == pushauth.INVALID, field
    assert pushauth.verify({**msg, "extra": 1}, "govern:deployment:a", [SECRET]) == pushauth.INVALID
    assert pushauth.verify(msg, "govern:deployment:b", [SECRET]) == pushauth.INVALID, "no replay on another channel"
    assert pushauth.verify(msg, "govern:deployment:a", ["another-secret-entirely"]) == pushauth.INVALID
    assert pushauth.verify(msg, "govern:deployment:a", []) == pushauth.INVALID, "no secret: nothing verifies"
    for bad in (123, "zz" * 32, msg["mac"].upper(), msg["mac"][:-1], "é" * 64):
        assert pushauth.verify({**msg, "mac": bad}, "govern:deployment:a", [SECRET]) == pushauth.INVALID, bad


def test_a_missing_mac_or_a_malformed_message_fails() -> None:
    msg = _signed()
    unsigned = {k: v for k, v in msg.items() if k != "mac"}
    assert pushauth.verify(unsigned, "govern:deployment:a", [SECRET]) == pushauth.MISSING
    assert pushauth.verify({**unsigned, "mac": ""}, "govern:deployment:a", [SECRET]) == pushauth.MISSING
    assert pushauth.verify([msg], "govern:deployment:a", [SECRET]) == pushauth.MALFORMED
    assert pushauth.verify({**msg, "generation": float("nan")}, "govern:deployment:a", [SECRET]) == pushauth.MALFORMED
    with pytest.raises(ValueError):
        pushauth.sign(unsigned, "govern:deployment:a", "")


def test_any_configured_secret_verifies_and_signing_uses_the_current_one(tmp_path: Path) -> None:
    old = _signed(secret="the-previous-push-secret")
    assert pushauth.verify(old, "govern:deployment:a", [SECRET, "the-previous-push-secret"]) is None
    assert pushauth.verify(old, "govern:deployment:a", [SECRET]) == pushauth.INVALID
    settings = Settings(
        state_dir=tmp_path, push_secret=SecretStr(SECRET), push_secret_previous=SecretStr("the-previous-push-secret")
    )
    assert embedded.push_secrets(settings) == (SECRET, "the-previous-push-secret")
    assert embedded.resolve_push_secret(settings) == SECRET
    assert not (tmp_path / embedded.PUSH_SECRET_FILE).exists(), "a configured secret is never written down"
    assert embedded.push_secrets(Settings(state_dir=tmp_path, push_secret=SECRET, push_secret_previous="")) == (SECRET,)


# ---------------------------------------------------------------- the push secret in the settings


def test_production_refuses_to_start_without_a_push_secret() -> None:
    prod = {
        "environment": "production",
        "database_url": "postgresql+psycopg://u@h/db",
        "redis_url": "redis://h:6379/0",
        "session_secret": SecretStr("s" * 32),
    }
    with pytest.raises(ValueError, match="GOVERN_PUSH_SECRET"):
        Settings(**prod)
    with pytest.raises(ValueError, match="GOVERN_PUSH_SECRET"):
        Settings(**prod, push_secret="")
    assert Settings(**prod, push_secret=SECRET).push_secret is not None
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(push_secret="short")
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(push_secret=SECRET, push_secret_previous="short")


def test_the_embedded_default_generates_one_secret_once_readable_only_by_its_owner(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    first = embedded.resolve_push_secret(settings)
    path = tmp_path / "state" / embedded.PUSH_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) >= 32
    assert embedded.resolve_push_secret(Settings(state_dir=tmp_path / "state")) == first, "every process shares it"
    assert embedded.push_secrets(settings) == (first,)
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file left behind"
    assert embedded.resolve_push_secret(Settings(state_dir=tmp_path / "other")) != first
