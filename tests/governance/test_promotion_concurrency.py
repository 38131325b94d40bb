"""Concurrent promotions serialize on the deployment row; replicas see every generation once.

Real HTTP through the app (TestClient from many threads) against the real PostgreSQL,
and a real Redis subscriber on ``govern:deployment:<name>``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import redis as redis_lib
from fastapi.testclient import TestClient
from sqlalchemy import select

from governance.db import unit_of_work
from governance.deployments.models import Deployment, Promotion
from governance.registry.models import TokenVersion
from tests.governance.conftest import World


def _drain(pubsub: Any, want: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg and msg["type"] == "message":
            out.append(json.loads(msg["data"]))
    return out


def _subscribe(redis_url: str, channel: str) -> Any:
    client = redis_lib.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=2)  # the subscribe confirmation
    pubsub._owner = client  # keep the client alive: collecting it closes the pool under the pubsub
    return pubsub


def _run_threads(n: int, fn: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def work(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_twenty_concurrent_promotions_of_different_versions(client: TestClient, world: World, redis_url: str) -> None:
    versions = [world.approved() for _ in range(20)]
    pubsub = _subscribe(redis_url, f"govern:deployment:{world.deployment}")
    eng = world.actor("ml_engineer")

    def promote(i: int) -> tuple[int, Any]:
        r = client.post(
            f"/v1/deployments/{world.deployment}/promote", json={"version_id": versions[i]}, headers=eng.headers
        )
        return r.status_code, r.json()

    results = _run_threads(20, promote)
    assert all(code == 200 for code, _ in results), results
    with unit_of_work(world.engine) as s:
        dep = s.scalars(select(Deployment).where(Deployment.name == world.deployment)).one()
        active = list(
            s.scalars(select(TokenVersion).where(TokenVersion.deployment_id == dep.id, TokenVersion.state == "active"))
        )
        rows = s.execute(select(TokenVersion.id, TokenVersion.state).where(TokenVersion.id.in_(versions))).all()
        states = {vid: state for vid, state in rows}
        history = list(
            s.scalars(select(Promotion).where(Promotion.deployment_id == dep.id).order_by(Promotion.generation))
        )
    assert len(active) == 1
    assert dep.generation == 20
    assert [p.generation for p in history] == list(range(1, 21))
    # a consistent chain: each promotion superseded exactly the previous generation's version
    assert history[0].previous_version_id is None
    for prev, cur in itertools.pairwise(history):
        assert cur.previous_version_id == prev.version_id
    assert history[-1].version_id == active[0].id
    assert sorted(p.version_id for p in history) == sorted(versions)
    assert sorted(states.values()) == ["active"] + ["superseded"] * 19
    # every generation reached the subscriber exactly once. Each request publishes right after
    # its own commit (no lock between commit and send), so two promotions that commit back to
    # back may reach Redis swapped; subscribers order by generation and ignore older ones.
    messages = sorted(_drain(pubsub, 20), key=lambda m: int(m["generation"]))
    assert [m["generation"] for m in messages] == list(range(1, 21))
    assert [m["version_id"] for m in messages] == [p.version_id for p in history]
    assert _drain(pubsub, 1, timeout=1.0) == []


def test_concurrent_promotions_of_the_same_version_have_one_winner(client: TestClient, world: World) -> None:
    vid = world.approved()
    eng = world.actor("ml_engineer")
    results = _run_threads(
        10,
        lambda i: (
            client.post(
                f"/v1/deployments/{world.deployment}/promote", json={"version_id": vid}, headers=eng.headers
            ).status_code
        ),
    )
    assert sorted(results) == [200] + [409] * 9
    r = client.get(f"/v1/deployments/{world.deployment}/active", headers=eng.headers).json()
    assert r["version_id"] == vid and r["generation"] == 1


def test_subscriber_sees_promotions_and_rollbacks_in_order_and_a_late_one_catches_up(
    client: TestClient, world: World, redis_url: str
) -> None:
    channel = f"govern:deployment:{world.deployment}"
    early = _subscribe(redis_url, channel)
    eng, officer = world.actor("ml_engineer"), world.actor("compliance_officer")
    a, b, c = world.approved(), world.approved(), world.approved()
    for vid in (a, b):
        assert (
            client.post(
                f"/v1/deployments/{world.deployment}/promote", json={"version_id": vid}, headers=eng.headers
            ).status_code
            == 200
        )
    late = _subscribe(redis_url, channel)  # a replica that was down for generations 1-2
    r = client.post(f"/v1/deployments/{world.deployment}/rollback", json={"reason": "drift"}, headers=officer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["version_id"] == a
    assert (
        client.post(
            f"/v1/deployments/{world.deployment}/promote", json={"version_id": c}, headers=eng.headers
        ).status_code
        == 200
    )
    seen = _drain(early, 4)
    assert [(m["generation"], m["version_id"], m["kind"]) for m in seen] == [
        (1, a, "promote"),
        (2, b, "promote"),
        (3, a, "rollback"),
        (4, c, "promote"),
    ]
    late_seen = _drain(late, 2)
    assert [m["generation"] for m in late_seen] == [3, 4]
    # the late replica reconciles from /active: the same version and generation as the newest message
    active = client.get(f"/v1/deployments/{world.deployment}/active", headers=world.actor("service").headers).json()
    assert active == {"deployment": world.deployment, "version_id": c, "sha256": seen[-1]["sha256"], "generation": 4,
                      "rollout": None}
