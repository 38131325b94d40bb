"""The serving app against the real governance API, PostgreSQL and Redis, through the official openai client.

Both servers run in this process (uvicorn in threads, real sockets); the multi-process
scenarios (replicas as subprocesses, Redis and PostgreSQL restarts) are in test_e2e.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import Engine, select, text

from serving.app import ServingConfig, create_app
from tests.serving.helpers import ServerThread, Stack, attached_copy, wait_for


def test_openai_client_plain_and_streaming(stack: Stack) -> None:
    client = stack.client
    assert stack.world.deployment in [m.id for m in client.models.list().data]
    raw = client.chat.completions.with_raw_response.create(
        model=stack.world.deployment, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, temperature=0
    )
    plain = raw.parse()
    assert raw.headers["X-Govern-Generation"] == "0" and raw.headers["X-Govern-Version"] == "base"
    assert plain.system_fingerprint == "govern-vbase-g0"
    assert plain.usage is not None and 0 < plain.usage.completion_tokens <= 8 and plain.usage.prompt_tokens > 0
    assert plain.choices[0].finish_reason in ("stop", "length")

    stream = client.chat.completions.create(
        model=stack.world.deployment,
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text_out = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text_out == plain.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.system_fingerprint == "govern-vbase-g0" for c in chunks)


def test_bad_requests_get_openai_errors(stack: Stack) -> None:
    client = stack.client
    dep = stack.world.deployment
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=dep, messages=[{"role": "user", "content": "x"}], n=2)
    assert bad.value.param == "n" and "n=1" in bad.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=dep, messages=[])
    assert bad.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=dep, messages=[{"role": "user", "content": "x"}], temperature=5)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-nothing", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as long:
        client.chat.completions.create(model=dep, messages=[{"role": "user", "content": "x"}], max_tokens=100_000)
    assert long.value.code == "context_length_exceeded"
    r = httpx.post(f"{stack.serving.url}/v1/chat/completions", content=b"{not json", timeout=10)
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_outputs_are_recorded_with_version_and_generation(stack: Stack, engine: Engine) -> None:
    vid = stack.world.approved()
    gen = stack.promote(vid)
    ids = []
    for i in range(5):
        r = stack.client.chat.completions.create(
            model=stack.world.deployment, messages=[{"role": "user", "content": f"q{i}"}], max_tokens=4, temperature=0
        )
        assert r.system_fingerprint == f"govern-v{vid}-g{gen}"
        ids.append(r.id)
    recorder = stack.app.state.serving.recorder
    assert recorder.flush()

    def rows() -> list[Any]:
        with engine.connect() as c:
            return list(
                c.execute(
                    text(
                        "select request_id, version_id, generation, output, completion_tokens, messages from outputs "
                        "where request_id = any(:ids)"
                    ),
                    {"ids": ids},
                )
            )

    wait_for(lambda: len(rows()) == 5, what="5 recorded outputs")
    for row in rows():
        assert (row.version_id, row.generation) == (vid, gen)
        assert row.messages[-1]["role"] == "user"
    metrics = httpx.get(f"{stack.serving.url}/metrics").text
    assert f"serving_active_generation {float(gen)}" in metrics
    assert 'serving_requests_total{status="200"}' in metrics


def test_swaps_under_load_never_fail_and_never_serve_stale(stack: Stack) -> None:
    """Promote, roll back, promote again while clients send requests."""
    v1, v2, v3 = stack.world.approved(), stack.world.approved(), stack.world.approved()
    flips: list[tuple[float, int, int]] = [(time.monotonic(), 0, 0)]  # (returned at, generation, version)
    results: list[tuple[float, int, str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client_loop(n: int) -> None:
        client = stack.client
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = client.chat.completions.create(
                    model=stack.world.deployment,
                    messages=[{"role": "user", "content": f"c{n}"}],
                    max_tokens=6,
                    temperature=0,
                )
                results.append((t0, int(r.system_fingerprint.rsplit("-g", 1)[1]), r.system_fingerprint))
            except BaseException as exc:  # any failure is a test failure
                errors.append(exc)

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        for action in (
            lambda: (stack.promote(v1), v1),
            lambda: (stack.promote(v2), v2),
            lambda: (stack.rollback(), v1),
            lambda: (stack.promote(v3), v3),
        ):
            time.sleep(0.3)
            gen, version = action()
            flips.append((time.monotonic(), gen, version))
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]
    assert len(results) > 10
    version_of = {gen: version for _, gen, version in flips}
    for t0, gen, fp in results:
        committed = max(g for t, g, _ in flips if t < t0)
        assert gen >= committed, f"request started after generation {committed} committed but ran on {gen}"
        want = f"govern-v{version_of[gen] if version_of[gen] else 'base'}-g{gen}"
        assert fp == want
    assert {gen for _, gen, _ in results} >= {flips[-1][1]}


def test_a_token_that_fails_verification_is_never_served(
    stack: Stack, engine: Engine, tmp_path: Path, database_url: str
) -> None:
    """A replica whose base model differs (bf16 weights: another digest) refuses the token, keeps its
    previous one and raises one alert; the matching replica swaps as usual."""
    from aligner import attach
    from aligner.providers import load_base_model

    model, tokenizer, digests = load_base_model("tiny-random-llama", state_dir=tmp_path.parent, dtype="bfloat16")
    attach(model, base_digest=digests.weights).set_token(None)
    config = ServingConfig(
        deployment=stack.world.deployment,
        model="tiny-random-llama",
        api_url=stack.api.url,
        api_key=stack.world.keys["service"],
        redis_url=None,
        database_url=database_url,
        state_dir=tmp_path / "other",
        reconcile_interval=0.3,
        default_max_tokens=4,
    )
    with ServerThread(create_app(config, loaded=(model, tokenizer, digests))) as other:
        wait_for(lambda: httpx.get(f"{other.url}/readyz").status_code == 200, what="second replica ready")
        good = stack.world.approved()
        gen = stack.promote(good)
        from governance.alerts.models import Alert

        def alerted() -> bool:
            with engine.connect() as c:
                return (
                    c.execute(
                        select(Alert.id).where(
                            Alert.kind == "token_verification_failed",
                            Alert.incident_key.contains(stack.world.deployment),
                        )
                    ).first()
                    is not None
                )

        wait_for(alerted, what="a verification alert")
        bf16 = openai.OpenAI(base_url=f"{other.url}/v1", api_key="unused", max_retries=0)
        r = bf16.chat.completions.create(
            model=stack.world.deployment, messages=[{"role": "user", "content": "x"}], max_tokens=3, temperature=0
        )
        assert r.system_fingerprint == "govern-vbase-g0", "the refused token is never served"
        status = httpx.get(f"{other.url}/v1/serving/status").json()
        assert status["generation"] == 0 and list(status["rejected"]) == [stack.world.tokens[good].sha256]
        assert "base model" in next(iter(status["rejected"].values()))
        assert "serving_token_rejections_total 1.0" in httpx.get(f"{other.url}/metrics").text
        r = stack.client.chat.completions.create(
            model=stack.world.deployment, messages=[{"role": "user", "content": "x"}], max_tokens=3, temperature=0
        )
        assert r.system_fingerprint == f"govern-v{good}-g{gen}"


def test_an_overloaded_replica_answers_429_with_retry_after(
    stack: Stack, tiny: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    config = ServingConfig(
        deployment=stack.world.deployment,
        model="tiny-random-llama",
        max_batch=1,
        queue_size=1,
        api_url=stack.api.url,
        api_key=stack.world.keys["service"],
        state_dir=tmp_path / "small",
        default_max_tokens=64,
    )
    with ServerThread(create_app(config, loaded=attached_copy(tiny))) as small:
        wait_for(lambda: httpx.get(f"{small.url}/readyz").status_code == 200, what="small replica ready")
        answers: list[httpx.Response] = []

        def ask() -> None:
            answers.append(
                httpx.post(
                    f"{small.url}/v1/chat/completions",
                    timeout=60,
                    json={
                        "model": stack.world.deployment,
                        "messages": [{"role": "user", "content": "hi"}],
                        "temperature": 0,
                        "max_tokens": 64,
                    },
                )
            )

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    codes = sorted(r.status_code for r in answers)
    assert len(codes) == 8 and set(codes) <= {200, 429} and 429 in codes and 200 in codes
    refused = next(r for r in answers if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "server_overloaded"
