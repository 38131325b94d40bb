"""Rollouts on a replica: shadow twins and canary routing in the served batch, the watcher's part, the records.

The engine tests drive a `DecodeEngine` on the tiny model with an active token and a
candidate; the one promise they check everywhere is that a rollout changes no served
answer (text, token count, finish reason) and that a twin answers exactly what its token
answers alone. The watcher tests use a fake control plane; the last tests run the real
governance API, PostgreSQL and the recorder (the `stack` fixture of conftest).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import torch
from sqlalchemy import Engine, text

from governance.client import ActiveState, RolloutPlan
from governance.outbox import pushauth
from serving.engine import DecodeEngine, Delta, Finished, GenerationRequest, SamplingParams, Started
from serving.tokens import ServedRollout, ServedToken, unit_draw
from serving.watcher import TokenWatcher, channel_name
from tests.serving.helpers import (
    PUSH_SECRET,
    Collector,
    FakeControl,
    Stack,
    attached_copy,
    make_token,
    wait_for,
)


class Recorded:
    """The engine's `on_finish` hook: every finished row, served and twin."""

    def __init__(self) -> None:
        self.rows: list[tuple[GenerationRequest, Finished]] = []
        self.lock = threading.Lock()

    def __call__(self, req: GenerationRequest, done: Finished) -> None:
        with self.lock:
            self.rows.append((req, done))

    def twins(self) -> dict[str, Finished]:
        """served request id -> its twin's Finished."""
        with self.lock:
            return {d.twin_of: d for _, d in self.rows if d.role == "twin" and d.twin_of is not None}

    def twins_of(self, reqs: list[GenerationRequest]) -> dict[str, Finished]:
        """The twins of these requests, once all have finished (a twin may outlive its served row)."""
        ids = {r.request_id for r in reqs}
        wait_for(lambda: ids <= set(self.twins()), what="the twins")
        return {k: v for k, v in self.twins().items() if k in ids}

    def clear(self) -> None:
        with self.lock:
            self.rows.clear()


@pytest.fixture()
def decoder(tiny: tuple[Any, Any, Any]) -> Iterator[DecodeEngine]:
    model, tokenizer, digests = attached_copy(tiny)
    recorded = Recorded()
    eng = DecodeEngine(model, tokenizer, max_batch=4, queue_size=256, batch_wait_s=0.05, on_finish=recorded)
    eng.digests = digests  # type: ignore[attr-defined]
    eng.recorded = recorded  # type: ignore[attr-defined]
    eng.start()
    yield eng
    eng.stop()


class Tokens:
    """The active token and the candidate, as served tokens, and the generation counter."""

    def __init__(self, engine: DecodeEngine) -> None:
        digests = engine.digests  # type: ignore[attr-defined]
        self.active_token = make_token(digests, seed=11)
        self.candidate_token = make_token(digests, seed=12)
        self.generation = 0
        self.engine = engine

    def _next(self) -> int:
        self.generation += 1
        return self.generation

    def serve(self, which: str = "active", rollout: dict[str, Any] | None = None) -> ServedToken:
        """Propose the next generation: `which` token alone, or with a rollout of the candidate."""
        gen = self._next()
        tok = self.active_token if which == "active" else self.candidate_token
        served = ServedToken(1 if which == "active" else 2, tok.sha256, gen, tok)
        plan = None
        if rollout is not None:
            candidate = ServedToken(2, self.candidate_token.sha256, gen, self.candidate_token)
            plan = ServedRollout(rollout.pop("rollout_id", 7), rollout.pop("mode"), candidate, **rollout)
        assert self.engine.propose(served, rollout=plan)
        deadline = time.monotonic() + 30
        while self.engine.current is None or self.engine.current.generation != gen:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        return served


def _request(engine: DecodeEngine, text: str, *, user: str | None = None, stream: bool = False,
             **params: Any) -> tuple[GenerationRequest, Collector]:
    c = Collector()
    req = GenerationRequest(prompt_ids=engine.encode([{"role": "user", "content": text}]),
                            params=SamplingParams(**params), emit=c, stream=stream, user=user)
    return req, c


# Each shape: (prompt, sampling params) submitted together; "join" submits the last one into the running batch.
SHAPES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "one request": [("hello there", {"max_tokens": 12, "temperature": 0})],
    "three prompt lengths, one streamed": [
        ("hi", {"max_tokens": 10, "temperature": 0}),
        ("tell me a long story about a cat and a dog", {"max_tokens": 14, "temperature": 0, "stream": True}),
        ("what is 2+2?", {"max_tokens": 6, "temperature": 0}),
    ],
    "seeded sampling": [
        ("pick words", {"max_tokens": 12, "temperature": 1.0, "top_p": 0.9, "seed": 42}),
        ("pick words", {"max_tokens": 12, "temperature": 0.8, "seed": 7}),
    ],
    "joining a running batch": [
        ("tell me a long story about a cat and a dog", {"max_tokens": 60, "temperature": 0}),
        ("hi", {"max_tokens": 6, "temperature": 0}),
    ],
}


def _run(engine: DecodeEngine, shape: str, *, user: str | None = None
         ) -> list[tuple[GenerationRequest, Collector]]:
    specs = SHAPES[shape]
    pairs = []
    for prompt, params in specs:
        p = dict(params)
        pairs.append(_request(engine, prompt, user=user, stream=p.pop("stream", False), **p))
    if shape == "joining a running batch":
        (first, c1), (second, _) = pairs
        engine.submit(first)
        while not any(isinstance(e, Started) for e in c1.events):
            time.sleep(0.001)
        time.sleep(0.02)  # a few steps in
        engine.submit(second)
    else:
        for req, _ in pairs:
            engine.submit(req)
    for _, c in pairs:
        assert c.done.wait(60)
    return pairs


def _answer(f: Finished) -> tuple[str, int, str]:
    return f.text, f.completion_tokens, f.finish_reason


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shadow_changes_no_served_answer_and_twins_answer_as_the_candidate_alone(
    decoder: DecodeEngine, shape: str
) -> None:
    tokens = Tokens(decoder)
    recorded: Recorded = decoder.recorded  # type: ignore[attr-defined]
    tokens.serve("active")
    without = [c.finished for _, c in _run(decoder, shape)]
    assert not recorded.twins()

    tokens.serve("active", rollout={"mode": "shadow", "sample": 1.0})
    with_shadow = _run(decoder, shape)
    served = [c.finished for _, c in with_shadow]
    assert [_answer(f) for f in served] == [_answer(f) for f in without], "the shadow changed a served answer"
    assert all(f.token.version_id == 1 and f.role == "served" and f.rollout_id == 7 for f in served)
    for (req, c), f in zip(with_shadow, served, strict=True):
        assert sum(isinstance(e, Finished) for e in c.events) == 1, "the twin's answer never reaches the caller"
        if req.stream:
            assert "".join(e.text for e in c.events if isinstance(e, Delta)) == f.text
    twins = recorded.twins_of([req for req, _ in with_shadow])
    assert decoder.stats.pairs_started == {"shadow": len(with_shadow)}
    if shape == "joining a running batch":
        assert decoder.stats.batches == 2, "each time, the second request (and its twin) joined the running batch"

    tokens.serve("candidate")
    alone = [c.finished for _, c in _run(decoder, shape)]
    assert any(_answer(a) != _answer(b) for a, b in zip(alone, without, strict=True)), "the candidate differs"
    for (req, _), want in zip(with_shadow, alone, strict=True):
        twin = twins[req.request_id]
        assert twin.token.version_id == 2 and twin.rollout_id == 7
        assert _answer(twin) == _answer(want), "the twin answers what the candidate answers alone"
    assert decoder.stats.twin_failures == 0 and decoder.stats.twins_skipped == {}


def test_an_unseeded_request_keeps_its_draws_from_the_global_rng(decoder: DecodeEngine) -> None:
    """A twin of an unseeded request samples from an RNG of its own, never from the global one."""
    tokens = Tokens(decoder)

    def sampled() -> list[tuple[str, int, str]]:
        torch.manual_seed(1234)
        pairs = [_request(decoder, p, max_tokens=12, temperature=1.0) for p in ("pick words", "say something")]
        for req, _ in pairs:
            decoder.submit(req)
        return [_answer(c.finished) for _, c in pairs]

    tokens.serve("active")
    without = sampled()
    tokens.serve("active", rollout={"mode": "shadow", "sample": 1.0})
    assert sampled() == without
    assert decoder.stats.pairs_started == {"shadow": 2}


@pytest.mark.parametrize("n_tokens", [2, 3])
def test_per_row_tokens_are_bit_exact_against_a_shared_token(decoder: DecodeEngine, n_tokens: int) -> None:
    """The numbers behind the promise: a row's logits do not depend on its neighbour's token
    (of the same length, or longer: its padded prefix slots are masked)."""
    from aligner.batching import decode_step, prefill

    adapter = decoder.adapter
    assert adapter is not None
    a = Tokens(decoder).active_token
    c = make_token(decoder.digests, seed=13, n_tokens=n_tokens)  # type: ignore[attr-defined]
    ids = decoder.encode([{"role": "user", "content": "tell me a story"}])

    def run(set_tokens: Any) -> list[torch.Tensor]:
        with torch.inference_mode():
            set_tokens()
            cache, mask, pos, logits = prefill(decoder.model, [ids, ids], decoder.pad_id, "cpu")
            out = [logits[0].clone()]
            for _ in range(4):
                mask, pos, logits = decode_step(decoder.model, logits.argmax(-1).tolist(), mask, pos, cache)
                out.append(logits[0].clone())
        return out

    def rows() -> None:
        with torch.inference_mode(False):
            adapter.set_row_tokens([a, c])

    decoder.stop()  # the model is ours for this test
    shared = run(lambda: adapter.set_token(a))
    per_row = run(rows)
    assert all(torch.equal(x, y) for x, y in zip(shared, per_row, strict=True))


def test_canary_keeps_a_caller_on_one_version_and_pairs_it_with_the_active_answer(decoder: DecodeEngine) -> None:
    tokens = Tokens(decoder)
    recorded: Recorded = decoder.recorded  # type: ignore[attr-defined]
    tokens.serve("active")
    active_alone = _run(decoder, "three prompt lengths, one streamed")
    tokens.serve("candidate")
    candidate_alone = _run(decoder, "three prompt lengths, one streamed")
    served = tokens.serve("active", rollout={"mode": "canary", "weight": 0.5, "rollout_id": 9})
    plan = decoder.rollout
    assert plan is not None and plan.mode == "canary"
    inside = next(u for u in (f"user-{i}" for i in range(100)) if plan.routes_to_candidate(u))
    outside = next(u for u in (f"user-{i}" for i in range(100)) if not plan.routes_to_candidate(u))
    recorded.clear()

    for _ in range(2):  # the same caller gets the same version every time
        canary = _run(decoder, "three prompt lengths, one streamed", user=inside)
        for (req, c), (_, want), (_, active) in zip(canary, candidate_alone, active_alone, strict=True):
            got = c.finished
            assert got.token.version_id == 2 and got.rollout_id == 9, "a caller in the canary gets the candidate"
            assert isinstance(c.events[0], Started) and c.events[0].token.version_id == 2  # headers name it
            assert _answer(got) == _answer(want.finished)
            twin = recorded.twins_of([req])[req.request_id]
            assert twin.token.version_id == 1 and twin.token is served and twin.twin_of == req.request_id
            assert _answer(twin) == _answer(active.finished), "the twin is the active token's answer"
        rest = _run(decoder, "three prompt lengths, one streamed", user=outside)
        for (req, c), (_, active) in zip(rest, active_alone, strict=True):
            assert c.finished.token.version_id == 1 and c.finished.rollout_id is None
            assert _answer(c.finished) == _answer(active.finished)
            assert req.request_id not in recorded.twins()


def test_canary_weight_splits_distinct_callers_and_a_step_keeps_them_in(decoder: DecodeEngine) -> None:
    tokens = Tokens(decoder)
    tokens.serve("active", rollout={"mode": "canary", "weight": 0.5, "rollout_id": 21})
    users = [f"caller-{i}" for i in range(200)]
    pairs = [_request(decoder, "x", user=u, max_tokens=1, temperature=0) for u in users]
    for req, _ in pairs:
        decoder.submit(req)
    on_candidate = {u for u, (_, c) in zip(users, pairs, strict=True) if c.finished.token.version_id == 2}
    assert 70 <= len(on_candidate) <= 130, len(on_candidate)
    assert decoder.stats.pairs_started == {"canary": len(on_candidate)}
    plan = decoder.rollout
    assert plan is not None
    # the next step raises the weight: everyone in stays in
    wider = replace(plan, weight=0.75)
    assert on_candidate <= {u for u in users if wider.routes_to_candidate(u)}
    assert all(plan.routes_to_candidate(u) == (unit_draw(f"canary:21:{u}") < 0.5) for u in users)
    # without a `user`, the request id is the key
    req, c = _request(decoder, "x", max_tokens=1, temperature=0)
    decoder.submit(req)
    assert (c.finished.token.version_id == 2) == plan.routes_to_candidate(req.request_id)


def test_twins_beyond_the_bound_are_skipped_and_counted(tiny: tuple[Any, Any, Any]) -> None:
    model, tokenizer, digests = attached_copy(tiny)
    recorded = Recorded()
    eng = DecodeEngine(model, tokenizer, max_batch=4, queue_size=8, batch_wait_s=0.05, on_finish=recorded,
                       max_twins=1)
    eng.digests = digests  # type: ignore[attr-defined]
    eng.start()
    try:
        Tokens(eng).serve("active", rollout={"mode": "shadow", "sample": 1.0})
        pairs = _run(eng, "three prompt lengths, one streamed")
        assert all(c.finished.token.version_id == 1 for _, c in pairs)
        assert eng.stats.pairs_started == {"shadow": 1} and eng.stats.twins_skipped == {"bound": 2}
        assert len(recorded.twins_of([r for r, c in pairs if c.finished.rollout_id is not None])) == 1
        # a shadow request without a twin is not part of the rollout
        assert sorted(c.finished.rollout_id is not None for _, c in pairs) == [False, False, True]
    finally:
        eng.stop()


def test_a_failing_twin_never_fails_or_changes_its_served_row(
    decoder: DecodeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving import engine as engine_module

    tokens = Tokens(decoder)
    tokens.serve("active")
    without = [c.finished for _, c in _run(decoder, "three prompt lengths, one streamed")]
    tokens.serve("active", rollout={"mode": "shadow", "sample": 1.0})
    push = engine_module._Row.push

    def fragile(row: Any, token_id: int) -> None:
        if row.role == "twin":
            raise RuntimeError("a bug in a twin's bookkeeping")
        push(row, token_id)

    monkeypatch.setattr(engine_module._Row, "push", fragile)
    pairs = _run(decoder, "three prompt lengths, one streamed")
    assert [_answer(c.finished) for _, c in pairs] == [_answer(f) for f in without]
    assert decoder.stats.twin_failures == 3 and not decoder.recorded.twins()  # type: ignore[attr-defined]


def test_a_candidate_the_adapter_refuses_is_never_decoded(decoder: DecodeEngine) -> None:
    from types import SimpleNamespace

    tokens = Tokens(decoder)
    tokens.serve("active")
    without = [c.finished for _, c in _run(decoder, "one request")]
    shape = decoder.digests.shape  # type: ignore[attr-defined]
    bad = SimpleNamespace(prefix=torch.zeros(2, shape.hidden_size), gates=torch.zeros(shape.num_layers + 1, 1))
    active = ServedToken(1, tokens.active_token.sha256, 99, tokens.active_token)
    rollout = ServedRollout(5, "shadow", ServedToken(2, "f" * 64, 99, bad), sample=1.0)
    assert decoder.propose(active, rollout=rollout)
    wait_for(lambda: decoder.current is not None and decoder.current.generation == 99, what="generation 99")
    assert decoder.rollout is None and decoder.stats.twin_failures == 1
    pairs = _run(decoder, "one request")
    assert [_answer(c.finished) for _, c in pairs] == [_answer(f) for f in without]
    assert pairs[0][1].finished.rollout_id is None and decoder.stats.pairs_started == {}


# ---------------------------------------------------------------- the watcher


@pytest.fixture()
def watched(tiny: tuple[Any, Any, Any]) -> Iterator[tuple[TokenWatcher, FakeControl, DecodeEngine, list[Any]]]:
    model, tokenizer, digests = attached_copy(tiny)
    recorded = Recorded()
    engine = DecodeEngine(model, tokenizer, max_batch=2, queue_size=4, on_finish=recorded)
    engine.recorded = recorded  # type: ignore[attr-defined]
    # active, a good candidate, and one bound to another base model (fails verification)
    tokens = [make_token(digests, seed=500), make_token(digests, seed=501),
              make_token(digests, seed=502, base_digest="0" * 64)]
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
    wait_for(lambda: engine.current is not None and engine.current.generation == 1, what="generation 1")
    yield watcher, control, engine, tokens
    engine.stop()


def _plan(token: Any, *, rollout_id: int = 3, version_id: int = 2, sample: float = 1.0) -> RolloutPlan:
    return RolloutPlan(rollout_id, "shadow", version_id, token.sha256, sample=sample, weight=0.0)


def _ask(engine: DecodeEngine) -> tuple[Finished, Finished | None]:
    """One request: its answer and its twin (None without one)."""
    before = sum(engine.stats.pairs_started.values())
    req, c = _request(engine, "hello", max_tokens=4, temperature=0)
    engine.submit(req)
    done = c.finished
    if sum(engine.stats.pairs_started.values()) == before:
        return done, None
    return done, engine.recorded.twins_of([req])[req.request_id]  # type: ignore[attr-defined]


def test_a_candidate_that_fails_verification_is_never_decoded(watched: Any) -> None:
    watcher, control, engine, tokens = watched
    control.answer = ActiveState(1, tokens[0].sha256, 2, rollout=_plan(tokens[2]))
    assert watcher.reconcile_once()  # the new generation, with the active token alone
    wait_for(lambda: engine.current.generation == 2, what="generation 2")
    assert engine.rollout is None and watcher.desired_rollout == control.answer.rollout
    assert watcher.candidate_rejections == 1 and tokens[2].sha256 in watcher.rejected
    assert watcher.rollout_problem is not None and "base model" in watcher.rollout_problem
    (alert,) = control.alerts
    assert alert["details"]["rollout_id"] == 3 and "without twins" in alert["message"]
    done, twin = _ask(engine)
    assert twin is None and done.token.version_id == 1 and done.rollout_id is None
    # the reconcile goes on asking; the refused candidate is neither verified again nor alerted twice
    assert not watcher.reconcile_once()
    assert watcher.candidate_rejections == 1 and len(control.alerts) == 1 and engine.rollout is None


def test_a_candidate_the_api_could_not_send_joins_its_generation_later(watched: Any) -> None:
    watcher, control, engine, tokens = watched
    control.unreachable.add(tokens[1].sha256)
    control.answer = ActiveState(1, tokens[0].sha256, 2, rollout=_plan(tokens[1]))
    assert watcher.reconcile_once()
    wait_for(lambda: engine.current.generation == 2, what="generation 2")
    assert engine.rollout is None and "not fetched" in (watcher.rollout_problem or "")
    assert _ask(engine)[1] is None
    control.unreachable.clear()
    assert watcher.reconcile_once(), "the next reconcile of the same state brings the candidate in"
    wait_for(lambda: engine.rollout is not None, what="the rollout applied")
    assert engine.current.generation == 2 and watcher.rollout_problem is None
    assert watcher.candidate_rejections == 0
    done, twin = _ask(engine)
    assert twin is not None and twin.token.version_id == 2 and done.rollout_id == 3


def _push(watcher: TokenWatcher, state: ActiveState) -> None:
    payload: dict[str, Any] = {"deployment": "d", "version_id": state.version_id, "sha256": state.sha256,
                               "generation": state.generation,
                               "rollout": state.rollout.as_json() if state.rollout else None}
    watcher._on_message(json.dumps(pushauth.sign(payload, channel_name("d"), PUSH_SECRET)), time.time())


def test_a_rollout_comes_and_goes_with_its_generation(watched: Any) -> None:
    """Started and ended by pushes (the steady state, no API call); a replica that restarts
    mid-rollout rejoins at the current step through its reconcile."""
    watcher, control, engine, tokens = watched
    asked = control.active_calls
    started = ActiveState(1, tokens[0].sha256, 2, rollout=_plan(tokens[1]))
    control.answer = started
    _push(watcher, started)
    wait_for(lambda: engine.rollout is not None, what="the rollout applied")
    assert engine.rollout.candidate.version_id == 2 and engine.rollout.candidate.generation == 2
    done, twin = _ask(engine)
    assert twin is not None and twin.twin_of is not None and done.rollout_id == 3
    ended = ActiveState(1, tokens[0].sha256, 3)
    control.answer = ended
    _push(watcher, ended)
    wait_for(lambda: engine.current.generation == 3, what="generation 3")
    assert engine.rollout is None
    done, twin = _ask(engine)
    assert twin is None and done.rollout_id is None, "the rollout ended: no more twins"
    assert control.active_calls == asked
    # the same generation pushed with another plan is not adopted without the API's word
    _push(watcher, replace(started, generation=3))
    assert engine.rollout is None and watcher.unconfirmed_ignored == 1


def test_a_replica_that_restarts_mid_rollout_rejoins_at_the_current_step(watched: Any) -> None:
    watcher, control, engine, tokens = watched
    plan = RolloutPlan(4, "canary", 2, tokens[1].sha256, sample=0.0, weight=0.25, step=1)
    control.answer = ActiveState(1, tokens[0].sha256, 9, rollout=plan)
    assert watcher.reconcile_once()
    wait_for(lambda: engine.rollout is not None, what="the canary applied")
    assert (engine.rollout.mode, engine.rollout.weight, engine.rollout.step) == ("canary", 0.25, 1)
    assert engine.current.generation == 9 and engine.rollout.candidate.generation == 9


# ---------------------------------------------------------------- recorded through the app


def _start_rollout(stack: Stack, vid: int, mode: str, **body: Any) -> int:
    with stack.gov("ml_engineer") as c:
        r = c.post(f"/v1/deployments/{stack.world.deployment}/rollouts",
                   json={"version_id": vid, "mode": mode, **body})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _abort(stack: Stack) -> None:
    with stack.gov("ml_engineer") as c:
        r = c.post(f"/v1/deployments/{stack.world.deployment}/rollouts/current/abort", json={"reason": "test"})
    assert r.status_code == 200, r.text


def _outputs(db: Engine, ids: list[str]) -> dict[str, Any]:
    with db.connect() as c:
        rows = c.execute(
            text("select request_id, version_id, generation, rollout_id, twin_of, output, completion_tokens, "
                 "messages from outputs where request_id = any(:ids)"), {"ids": ids})
        return {r.request_id: r for r in rows}


def _applied(stack: Stack, rollout_id: int | None) -> bool:
    status = httpx.get(f"{stack.serving.url}/v1/serving/status").json()
    applied = (status["rollout"] or {}).get("applied") or {}
    return applied.get("rollout_id") == rollout_id


def test_pairs_are_recorded_with_their_rollout_twin_and_versions(stack: Stack, engine: Engine) -> None:
    world, client = stack.world, stack.client
    v1, v2 = world.approved(), world.approved()
    stack.promote(v1)
    shadow = _start_rollout(stack, v2, "shadow", sample=1.0)
    wait_for(lambda: _applied(stack, shadow), what="the shadow rollout applied")
    messages = [{"role": "user", "content": "Hello!"}]
    r = client.chat.completions.with_raw_response.create(model=world.deployment, messages=messages,
                                                          max_tokens=6, temperature=0)
    answer = r.parse()
    assert r.headers["X-Govern-Version"] == str(v1) and answer.system_fingerprint.startswith(f"govern-v{v1}-")

    _abort(stack)
    canary = _start_rollout(stack, v2, "canary", steps=[50, 100])
    wait_for(lambda: _applied(stack, canary), what="the canary applied")
    inside = next(u for u in (f"user-{i}" for i in range(100)) if unit_draw(f"canary:{canary}:{u}") < 0.5)
    r = client.chat.completions.with_raw_response.create(model=world.deployment, messages=messages,
                                                          max_tokens=6, temperature=0, user=inside)
    on_candidate = r.parse()
    assert r.headers["X-Govern-Version"] == str(v2), "the headers name the token that answered"
    assert on_candidate.system_fingerprint.startswith(f"govern-v{v2}-")

    ids = [answer.id, f"{answer.id}~twin", on_candidate.id, f"{on_candidate.id}~twin"]
    assert stack.app.state.serving.recorder.flush()
    wait_for(lambda: len(_outputs(engine, ids)) == 4, what="both pairs recorded")
    rows = _outputs(engine, ids)
    served, twin = rows[answer.id], rows[f"{answer.id}~twin"]
    assert (served.version_id, served.rollout_id, served.twin_of) == (v1, shadow, None)
    assert served.output == answer.choices[0].message.content
    assert (twin.version_id, twin.rollout_id, twin.twin_of) == (v2, shadow, answer.id)
    assert twin.messages == served.messages == messages and twin.generation == served.generation
    served, twin = rows[on_candidate.id], rows[f"{on_candidate.id}~twin"]
    assert (served.version_id, served.rollout_id, served.twin_of) == (v2, canary, None)
    assert (twin.version_id, twin.rollout_id, twin.twin_of) == (v1, canary, on_candidate.id)
    # the active answer to the same prompt is what the twin recorded
    assert twin.output == answer.choices[0].message.content

    metrics = httpx.get(f"{stack.serving.url}/metrics").text
    assert f'serving_rollout_info{{mode="canary",rollout_id="{canary}",step="0",version_id="{v2}"}} 1.0' in metrics
    assert "serving_rollout_weight 0.5" in metrics
    assert 'serving_rollout_pairs_started_total{mode="shadow"} 1.0' in metrics
    assert 'serving_rollout_pairs_recorded_total{mode="canary"} 1.0' in metrics
    assert "serving_shadow_failures_total 0.0" in metrics
    status = httpx.get(f"{stack.serving.url}/v1/serving/status").json()
    assert status["rollout"]["applied"]["mode"] == "canary" and status["rollout"]["problem"] is None
