"""Authenticated pushes end to end: real Redis, the real API, two serving replicas.

Whoever can PUBLISH on `govern:deployment:<name>` can send a well-formed message naming
an approved, never promoted version as the next generation. Here every such forgery (no
MAC, a MAC under a secret nobody configured, a signed message with a field changed, a
message signed for another deployment's channel) is dropped by both replicas, counted
once per message on each (`serving_push_rejected_total{reason}`), and no request is ever
answered with the forged version. The replicas reconcile once at start and then only
every hour, without the per-batch fence: after start a push is the only way they change
what they serve, so a forgery that got through would be served.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis as redis_lib
from sqlalchemy import Engine

from governance import embedded
from governance.outbox import pushauth
from governance.settings import Settings
from serving.app import ServingConfig, create_app
from serving.watcher import channel_name
from tests.serving.helpers import (
    PUSH_SECRET,
    ServerThread,
    World,
    attached_copy,
    governance_app,
    make_world,
    promote,
    wait_for,
)

OLD_SECRET = "the-push-secret-being-rotated-out"


@contextmanager
def replicas(
    world: World, api_url: str, redis_url: str, tiny: Any, state: Path, secrets: tuple[str, ...]
) -> Iterator[list[ServerThread]]:
    """Two replicas of `world`'s deployment accepting `secrets`, ready and subscribed."""
    with ExitStack() as stack:
        servers = []
        for i in range(2):
            config = ServingConfig(
                deployment=world.deployment,
                model="tiny-random-llama",
                max_batch=2,
                queue_size=16,
                api_url=api_url,
                api_key=world.keys["service"],
                redis_url=redis_url,
                push_secrets=secrets,
                state_dir=state / f"replica-{i}",
                reconcile_interval=3600,  # once at start, then pushes only
                fence=False,
                default_max_tokens=1,
            )
            servers.append(stack.enter_context(ServerThread(create_app(config, loaded=attached_copy(tiny)))))
        for s in servers:
            wait_for(lambda s=s: httpx.get(f"{s.url}/readyz").status_code == 200, what="replica ready")
            wait_for(lambda s=s: status(s).get("pubsub_connected") is True, what="replica subscribed")
        yield servers


def status(server: ServerThread) -> dict[str, Any]:
    return dict(httpx.get(f"{server.url}/v1/serving/status", timeout=10).json())


def fingerprint(server: ServerThread, deployment: str) -> str:
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": deployment, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["system_fingerprint"])


def rejected_metric(server: ServerThread, reason: str) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f'serving_push_rejected_total{{reason="{reason}"}} '):
            return float(line.split()[-1])
    return 0.0


def at(servers: list[ServerThread], vid: int, gen: int) -> bool:
    return all((st.get("version_id"), st.get("generation")) == (vid, gen) for st in map(status, servers))


class Traffic:
    """Requests to every replica, back to back, from start to stop: every fingerprint answered."""

    def __init__(self, servers: list[ServerThread], deployment: str) -> None:
        self.servers, self.deployment = servers, deployment
        self.seen: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for s in self.servers:
                try:
                    self.seen.append(fingerprint(s, self.deployment))
                except (AssertionError, httpx.HTTPError) as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def test_a_forged_push_is_never_served(
    engine: Engine, database_url: str, redis_url: str, tiny: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    world = make_world(engine, tiny[2])
    real, forged, later = world.approved(), world.approved(), world.approved()  # all prefetched by the replicas
    channel = channel_name(world.deployment)
    bus = redis_lib.Redis.from_url(redis_url)
    with ServerThread(governance_app(database_url, redis_url, tmp_path / "gov")) as api:
        g1 = promote(api, world, real)
        with replicas(world, api.url, redis_url, tiny, tmp_path, (PUSH_SECRET,)) as servers:
            wait_for(lambda: at(servers, real, g1), what="replicas on the active version")
            lie = {
                "deployment": world.deployment,
                "version_id": forged,
                "sha256": world.tokens[forged].sha256,
                "generation": g1 + 1,  # the next generation: adopted from a valid push alone
                "kind": "promote",
            }
            honest = {**lie, "version_id": later, "sha256": world.tokens[later].sha256}
            honest = pushauth.sign(honest, channel, PUSH_SECRET)
            forgeries = [
                (lie, pushauth.MISSING),
                (pushauth.sign(lie, channel, "a-secret-nobody-configured"), pushauth.INVALID),
                ({**honest, "version_id": forged, "sha256": world.tokens[forged].sha256}, pushauth.INVALID),
                (pushauth.sign(lie, channel_name("another-deployment"), PUSH_SECRET), pushauth.INVALID),
            ]
            expected: dict[str, int] = {}
            with Traffic(servers, world.deployment) as traffic:
                for message, reason in forgeries:
                    bus.publish(channel, json.dumps(message))
                    expected[reason] = expected.get(reason, 0) + 1
                    for s in servers:
                        wait_for(lambda s=s: status(s)["push_rejected"] == expected, what=f"{reason} counted")
                        assert fingerprint(s, world.deployment) == f"govern-v{real}-g{g1}"
                g2 = promote(api, world, later)  # the real next flip still arrives by push
                wait_for(lambda: at(servers, later, g2), what="the real promotion pushed")
            assert traffic.seen and not traffic.errors, traffic.errors[:3]
            assert not [f for f in traffic.seen if f.startswith(f"govern-v{forged}-")], "the forgery was served"
            assert set(traffic.seen) <= {f"govern-v{real}-g{g1}", f"govern-v{later}-g{g2}"}
            for s in servers:
                assert status(s)["push_rejected"] == {pushauth.MISSING: 1, pushauth.INVALID: 3}
                assert status(s)["unconfirmed_ignored"] == 0, "dropped before anything was asked"
                assert rejected_metric(s, pushauth.MISSING) == 1.0 and rejected_metric(s, pushauth.INVALID) == 3.0
    bus.close()


def test_a_rotated_secret_works_during_the_overlap_and_not_after(
    engine: Engine, database_url: str, redis_url: str, tiny: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    world = make_world(engine, tiny[2])
    v1, v2, v3 = world.approved(), world.approved(), world.approved()
    # what `govern serve` reads from GOVERN_PUSH_SECRET and GOVERN_PUSH_SECRET_PREVIOUS
    overlap = embedded.push_secrets(
        Settings(state_dir=tmp_path, push_secret=PUSH_SECRET, push_secret_previous=OLD_SECRET)
    )
    after = embedded.push_secrets(Settings(state_dir=tmp_path, push_secret=PUSH_SECRET))
    assert overlap == (PUSH_SECRET, OLD_SECRET) and after == (PUSH_SECRET,)
    # The replicas are rotated first; the control plane still signs with the old secret.
    with ServerThread(governance_app(database_url, redis_url, tmp_path / "gov", push_secret=OLD_SECRET)) as old_api:
        with replicas(world, old_api.url, redis_url, tiny, tmp_path / "overlap", overlap) as servers:
            g1 = promote(old_api, world, v1)
            wait_for(lambda: at(servers, v1, g1), what="the old secret's push accepted during the overlap")
            assert all(status(s)["push_rejected"] == {} for s in servers)
        # The overlap ends (GOVERN_PUSH_SECRET_PREVIOUS removed, replicas restarted) before the
        # control plane was rotated: its pushes are dropped now.
        with replicas(world, old_api.url, redis_url, tiny, tmp_path / "after", after) as servers:
            wait_for(lambda: at(servers, v1, g1), what="restarted replicas on the active version")
            g2 = promote(old_api, world, v2)
            for s in servers:
                wait_for(lambda s=s: status(s)["push_rejected"] == {pushauth.INVALID: 1}, what="old secret refused")
                assert fingerprint(s, world.deployment) == f"govern-v{v1}-g{g1}"
                assert rejected_metric(s, pushauth.INVALID) == 1.0
            # The control plane restarted with the new secret: its pushes are accepted.
            with ServerThread(governance_app(database_url, redis_url, tmp_path / "gov2")) as new_api:
                g3 = promote(new_api, world, v3)
                assert g3 == g2 + 1
                wait_for(lambda: at(servers, v3, g3), what="the new secret's push accepted")
            assert all(status(s)["push_rejected"] == {pushauth.INVALID: 1} for s in servers)
