"""The watcher against forged Redis messages: no valid MAC, no effect; a signed generation is a hint.

Anyone who can PUBLISH on the deployment's channel can claim a generation: a message
without a valid MAC under the replica's push secrets is dropped and counted. A signed
one may still be a replay (or signed with a leaked secret), and generations only go up,
so a replica that adopted a huge one would ignore every real flip after it: the API
decides. These tests drive `TokenWatcher._on_message` (what the pub/sub thread calls)
and `reconcile_once` with a real engine on the tiny model and a fake control plane.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from governance.client import ActiveState
from governance.outbox import pushauth
from serving.engine import DecodeEngine
from serving.watcher import TokenWatcher, channel_name
from tests.serving.helpers import PUSH_SECRET, FakeControl, attached_copy, make_token

OLD_SECRET = "the-secret-being-rotated-out"


@pytest.fixture()
def setup(tiny: tuple[Any, Any, Any]) -> Iterator[tuple[TokenWatcher, FakeControl, DecodeEngine, list[Any]]]:
    model, tokenizer, digests = attached_copy(tiny)
    engine = DecodeEngine(model, tokenizer, max_batch=2, queue_size=4)
    tokens = [make_token(digests, seed=300 + i) for i in range(3)]
    control = FakeControl({t.sha256: t.to_bytes() for t in tokens}, ActiveState(1, tokens[0].sha256, 1))
    watcher = TokenWatcher(
        control=control,  # type: ignore[arg-type]
        deployment="d",
        engine=engine,
        base_digest=digests.weights,
        shape=digests.shape,
        redis_url=None,
        fence=False,
        prefetch=0,
        push_secrets=(PUSH_SECRET,),
    )
    engine.start()
    watcher.reconcile_once()
    wait_served(engine, 1)
    yield watcher, control, engine, tokens
    engine.stop()


def wait_served(engine: DecodeEngine, generation: int) -> None:
    deadline = time.monotonic() + 30
    while engine.current is None or engine.current.generation != generation:
        assert time.monotonic() < deadline, f"engine did not reach generation {generation}: {engine.current}"
        time.sleep(0.01)


def push(
    watcher: TokenWatcher, version_id: int, sha256: str, generation: int, *, secret: str | None = PUSH_SECRET
) -> None:
    """A message as the control plane publishes it (signed with `secret`; None: no MAC)."""
    payload = {"deployment": "d", "version_id": version_id, "sha256": sha256, "generation": generation}
    if secret is not None:
        payload = pushauth.sign(payload, channel_name("d"), secret)
    watcher._on_message(json.dumps(payload), time.time())


def test_the_next_generation_is_adopted_from_the_push_alone(setup: Any) -> None:
    watcher, control, engine, tokens = setup
    asked = control.active_calls
    control.answer = ActiveState(2, tokens[1].sha256, 2)
    push(watcher, 2, tokens[1].sha256, 2)
    wait_served(engine, 2)
    assert engine.current.version_id == 2
    assert control.active_calls == asked, "the steady state needs no API round trip"


def test_a_forged_huge_generation_is_never_adopted_and_real_flips_still_apply(setup: Any) -> None:
    watcher, control, engine, tokens = setup
    # A registered token, a generation far ahead: the API does not confirm it.
    push(watcher, 3, tokens[2].sha256, 10**12)
    assert watcher.unconfirmed_ignored == 1
    assert engine.known_generation == 1
    assert engine.current.version_id == 1
    # The next real promotion is generation 2, and it still swaps in from the push.
    control.answer = ActiveState(2, tokens[1].sha256, 2)
    push(watcher, 2, tokens[1].sha256, 2)
    wait_served(engine, 2)
    assert engine.current.version_id == 2


def test_a_jump_the_api_confirms_is_adopted(setup: Any) -> None:
    """A lost message makes a real jump: one question to the API, then the swap."""
    watcher, control, engine, tokens = setup
    control.answer = ActiveState(3, tokens[2].sha256, 5)
    push(watcher, 3, tokens[2].sha256, 5)
    wait_served(engine, 5)
    assert engine.current.version_id == 3
    assert watcher.unconfirmed_ignored == 0


def test_a_forged_next_generation_is_undone_by_the_reconcile_and_by_the_real_flip(setup: Any) -> None:
    """A forgery that looks like the next flip is served only until the API is asked again."""
    watcher, control, engine, tokens = setup
    push(watcher, 3, tokens[2].sha256, 2)  # forged: the API still says generation 1
    wait_served(engine, 2)
    assert engine.current.version_id == 3
    # The real flip claims the same generation with another token: the watcher asks the API.
    control.answer = ActiveState(2, tokens[1].sha256, 2)
    push(watcher, 2, tokens[1].sha256, 2)
    deadline = time.monotonic() + 30
    while engine.current.version_id != 2:
        assert time.monotonic() < deadline, engine.current
        time.sleep(0.01)
    assert engine.current.generation == 2


def test_the_reconcile_moves_a_replica_back_to_the_apis_generation(setup: Any) -> None:
    """Whatever a replica adopted, the API's answer to a later question wins, even a lower generation."""
    watcher, control, engine, tokens = setup
    # As if a forged message had got through by another path: adopted, unconfirmed.
    watcher.sync(ActiveState(3, tokens[2].sha256, 10**12), source="push")
    wait_served(engine, 10**12)
    watcher.reconcile_once()  # the API still says generation 1, version 1
    wait_served(engine, 1)
    assert engine.current.version_id == 1
    # ... and pushes of the following real generations apply again.
    control.answer = ActiveState(2, tokens[1].sha256, 2)
    push(watcher, 2, tokens[1].sha256, 2)
    wait_served(engine, 2)
    assert engine.current.version_id == 2


def test_an_answer_older_than_the_adopted_state_does_not_move_it_back(setup: Any) -> None:
    """A push that overtook a reconcile's request is newer than its answer: it stays."""
    watcher, control, engine, tokens = setup
    asked = time.time()
    control.answer = ActiveState(2, tokens[1].sha256, 2)
    push(watcher, 2, tokens[1].sha256, 2)  # received after the request below was sent
    wait_served(engine, 2)
    watcher.sync(ActiveState(1, tokens[0].sha256, 1), source="reconcile", asked_at=asked)
    time.sleep(0.05)
    assert engine.current.generation == 2
    assert engine.current.version_id == 2


def test_a_message_without_a_valid_mac_is_dropped_and_counted(setup: Any) -> None:
    watcher, control, engine, tokens = setup
    asked = control.active_calls
    push(watcher, 3, tokens[2].sha256, 2, secret=None)  # the next generation, a registered token, no MAC
    push(watcher, 3, tokens[2].sha256, 2, secret="a-secret-nobody-configured")
    tampered = pushauth.sign({"deployment": "d", "version_id": 2, "sha256": tokens[1].sha256, "generation": 2},
                             channel_name("d"), PUSH_SECRET)
    watcher._on_message(json.dumps({**tampered, "version_id": 3, "sha256": tokens[2].sha256}), time.time())
    other = pushauth.sign({"deployment": "d", "version_id": 3, "sha256": tokens[2].sha256, "generation": 2},
                          channel_name("e"), PUSH_SECRET)  # signed for another deployment's channel
    watcher._on_message(json.dumps(other), time.time())
    watcher._on_message(b"\xff not json", time.time())
    assert watcher.push_rejected == {pushauth.MISSING: 1, pushauth.INVALID: 3, pushauth.MALFORMED: 1}
    assert engine.known_generation == 1 and engine.current.version_id == 1
    assert control.active_calls == asked, "a dropped message is not even worth a question to the API"
    # the replica is where it was: the next real (signed) flip still swaps in from the push alone
    control.answer = ActiveState(2, tokens[1].sha256, 2)
    push(watcher, 2, tokens[1].sha256, 2)
    wait_served(engine, 2)
    assert engine.current.version_id == 2 and control.active_calls == asked


def test_the_previous_secret_is_accepted_while_it_is_configured(setup: Any) -> None:
    watcher, control, engine, tokens = setup
    watcher.push_secrets = (PUSH_SECRET, OLD_SECRET)  # the overlap of a rotation
    control.answer = ActiveState(2, tokens[1].sha256, 2)
    push(watcher, 2, tokens[1].sha256, 2, secret=OLD_SECRET)  # a control plane not rotated yet
    wait_served(engine, 2)
    assert watcher.push_rejected == {}
    watcher.push_secrets = (PUSH_SECRET,)  # the rotation is over: the old secret is gone
    control.answer = ActiveState(3, tokens[2].sha256, 3)
    push(watcher, 3, tokens[2].sha256, 3, secret=OLD_SECRET)
    assert watcher.push_rejected == {pushauth.INVALID: 1}
    assert engine.known_generation == 2
    push(watcher, 3, tokens[2].sha256, 3)  # signed with the current secret
    wait_served(engine, 3)
